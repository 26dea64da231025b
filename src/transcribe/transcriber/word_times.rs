//! Word timestamps in the transcription loop: the alignment pass of a window and
//! openai-whisper's rules that read its words (whisper/transcribe.py, release 20250625): where
//! the next window starts, and the silences skipped before likely hallucinations.

use std::ops::ControlFlow;

use super::{Progress, Segment, TranscribeError, Transcriber};
use crate::audio::{HOP_LENGTH, N_FRAMES, SAMPLE_RATE};
use crate::model::DecoderSession;
use crate::transcribe::WordOptions;
use crate::transcribe::segments::WindowSpan;
use crate::transcribe::timing::{
    AlignmentInput, TimedSegment, Word, add_word_timestamps, find_alignment, is_segment_anomaly,
};
use crate::transcribe::tokenizer::Task;
use crate::vad::TimestampsMap;

/// Alignment heads: (decoder layer, head).
pub(super) type AlignmentHeads = Vec<(usize, usize)>;

/// Where the alignment heads of a model come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadsSource {
    /// `alignment_heads` of `generation_config.json` or `config.json`.
    Config,
    /// OpenAI's table for the model of this name.
    Table(&'static str),
}

/// OpenAI's alignment heads of its models, `(layer, head)`: `_ALIGNMENT_HEADS` of
/// openai-whisper's whisper/__init__.py (release 20250625), decoded from its base85 gzip
/// masks. Hugging Face's `generation_config.json` files carry the same lists.
#[rustfmt::skip]
pub(super) const OPENAI_ALIGNMENT_HEADS: &[(&str, &[(u8, u8)])] = &[
    ("tiny.en", &[(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]),
    ("tiny", &[(2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)]),
    ("base.en", &[(3, 3), (4, 7), (5, 1), (5, 5), (5, 7)]),
    ("base", &[(3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)]),
    ("small.en", &[
        (6, 6), (7, 0), (7, 3), (7, 8), (8, 2), (8, 5), (8, 7), (9, 0), (9, 4), (9, 8),
        (9, 10), (10, 0), (10, 1), (10, 2), (10, 3), (10, 6), (10, 11), (11, 2), (11, 4),
    ]),
    ("small", &[(5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9), (10, 5)]),
    ("medium.en", &[
        (11, 4), (14, 1), (14, 12), (14, 14), (15, 4), (16, 0), (16, 4), (16, 9), (17, 12),
        (17, 14), (18, 7), (18, 10), (18, 15), (20, 0), (20, 3), (20, 9), (20, 14), (21, 12),
    ]),
    ("medium", &[(13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4)]),
    ("large-v1", &[
        (9, 19), (11, 2), (11, 4), (11, 17), (22, 7), (22, 11), (22, 17), (23, 2), (23, 15),
    ]),
    ("large-v2", &[
        (10, 12), (13, 17), (16, 11), (16, 12), (16, 13), (17, 15), (17, 16), (18, 4),
        (18, 11), (18, 19), (19, 11), (21, 2), (21, 3), (22, 3), (22, 9), (22, 12), (23, 5),
        (23, 7), (23, 13), (25, 5), (26, 1), (26, 12), (27, 15),
    ]),
    ("large-v3", &[
        (7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4), (24, 1),
        (25, 6),
    ]),
    ("large-v3-turbo", &[(2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)]),
];

/// The alignment heads of the model in `dir`: `alignment_heads` of its
/// `generation_config.json`, else of its `config.json` (CTranslate2's), else OpenAI's table
/// when the directory is named after one of its models (as `amanuensis models` names them).
/// `None`: the decoder's upper half, known once it is loaded.
pub(super) fn configured_heads(
    dir: &std::path::Path,
) -> Result<Option<(AlignmentHeads, HeadsSource)>, TranscribeError> {
    for name in ["generation_config.json", "config.json"] {
        let path = dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| TranscribeError::Config {
                path: path.clone(),
                detail: format!("not valid JSON ({e}); fix or remove it"),
            })?;
        let Some(heads) = value.get("alignment_heads") else {
            continue;
        };
        let heads: Vec<(usize, usize)> =
            serde_json::from_value(heads.clone()).map_err(|e| TranscribeError::Config {
                path: path.clone(),
                detail: format!(
                    "alignment_heads is not a list of [layer, head] pairs ({e}); fix or remove it"
                ),
            })?;
        if !heads.is_empty() {
            return Ok(Some((heads, HeadsSource::Config)));
        }
    }
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    Ok(OPENAI_ALIGNMENT_HEADS
        .iter()
        .find(|(model, _)| *model == name)
        .map(|(model, heads)| {
            let heads = heads
                .iter()
                .map(|&(l, h)| (l as usize, h as usize))
                .collect();
            (heads, HeadsSource::Table(model))
        }))
}

/// The alignment passes' shared part, when `options` ask for word timestamps (with `heads`).
pub(super) fn word_pass<'a>(
    options: &'a crate::transcribe::TranscribeOptions,
    heads: Option<&'a [(usize, usize)]>,
    language: &'a str,
) -> Option<WordPass<'a>> {
    Some(WordPass {
        heads: heads?,
        language,
        task: options.decoding.task,
        options: options.word_timestamps.as_ref()?,
    })
}

/// Seconds of `frames` mel frames.
fn seconds(frames: usize) -> f64 {
    (frames * HOP_LENGTH) as f64 / SAMPLE_RATE as f64
}

/// The mel frame of `seconds`, as openai-whisper rounds it (`round(t * FRAMES_PER_SECOND)`).
fn frame(seconds: f64) -> usize {
    (seconds.max(0.0) * 100.0).round_ties_even() as usize
}

/// The end of the last word of `segments`, else the last segment's end (openai-whisper's
/// `get_end`).
pub(super) fn words_end(segments: &[Segment]) -> Option<f64> {
    segments
        .iter()
        .rev()
        .find_map(|s| s.words.as_ref().and_then(|w| w.last()).map(|w| w.end))
        .or_else(|| segments.last().map(|s| s.end))
}

/// The words of a segment (none when it has none).
fn words_of(segment: &Segment) -> &[Word] {
    segment.words.as_deref().unwrap_or(&[])
}

/// openai-whisper's pairs of `clip_timestamps` in mel frames: `(start, end)`, the last end
/// `content_frames` when the list is odd, everything when it is empty. Ends past the input
/// are its end.
pub(super) fn seek_clips(clip_timestamps: &[f64], content_frames: usize) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = clip_timestamps.iter().map(|&t| frame(t)).collect();
    if points.is_empty() {
        points.push(0);
    }
    if points.len() % 2 == 1 {
        points.push(content_frames);
    }
    points
        .chunks(2)
        .map(|p| (p[0], p[1].min(content_frames)))
        .collect()
}

/// A window's place, for the rules that move the next window's start after its words.
pub(super) struct WindowSeek {
    /// The window.
    pub span: WindowSpan,
    /// Whether its tokens ended on a single timestamp.
    pub single_timestamp_ending: bool,
    /// Mel frames of the input.
    pub content_frames: usize,
    /// The end of the speech before the window.
    pub last_speech: f64,
}

impl WindowSeek {
    /// Where the next window starts once the words of the window's segments `current` are
    /// known (`seek` without them), as openai-whisper's `transcribe()` moves it: to the last
    /// word's end, unless the speech ran to the window's end; and with a hallucination silence
    /// threshold, past silences before segments that look like hallucinations, dropping those
    /// segments. `Break`: the whole window is dropped, and decoding starts again there.
    pub fn after_words(
        &self,
        current: &mut Vec<Segment>,
        mut seek: usize,
        options: &WordOptions,
    ) -> ControlFlow<usize, usize> {
        let span = self.span;
        let time_offset = span.start();
        let window_end = seconds(span.seek + N_FRAMES);
        if !self.single_timestamp_ending
            && let Some(end) = words_end(current)
            && end > time_offset
        {
            seek = frame(end);
        }
        if let Some(threshold) = options.hallucination_silence_threshold {
            if !self.single_timestamp_ending
                && let Some(end) = words_end(current)
                && end > time_offset
            {
                seek = if window_end - end > threshold {
                    frame(end)
                } else {
                    span.seek + span.size
                };
            }
            // A first segment that looks like a hallucination: skip the silence before it.
            let with_words =
                |segments: &[Segment]| segments.iter().position(|s| !words_of(s).is_empty());
            if let Some(first) = with_words(current)
                && is_segment_anomaly(words_of(&current[first]))
            {
                let gap = current[first].start - time_offset;
                if gap > threshold {
                    return ControlFlow::Break(span.seek + frame(gap));
                }
            }
            // Skip the silence before a hallucination with silence or more hallucinations
            // around it.
            let mut last_end = self.last_speech;
            for si in 0..current.len() {
                let segment = &current[si];
                if words_of(segment).is_empty() {
                    continue;
                }
                if is_segment_anomaly(words_of(segment)) {
                    let next = with_words(&current[si + 1..]).map(|i| &current[si + 1 + i]);
                    let next_start = match next {
                        Some(n) => words_of(n)[0].start,
                        None => time_offset + span.duration(),
                    };
                    let silence_before = segment.start - last_end > threshold
                        || segment.start < threshold
                        || segment.start - time_offset < 2.0;
                    let silence_after = next_start - segment.end > threshold
                        || next.is_some_and(|n| is_segment_anomaly(words_of(n)))
                        || window_end - segment.end < 2.0;
                    if silence_before && silence_after {
                        seek = frame((time_offset + 1.0).max(segment.start));
                        if seconds(self.content_frames) - segment.end < threshold {
                            seek = self.content_frames;
                        }
                        current.truncate(si);
                        break;
                    }
                }
                last_end = segment.end;
            }
        }
        // Always forward (openai-whisper would decode the same window again forever).
        ControlFlow::Continue(seek.max(span.seek + 1))
    }
}

/// A segment's times (and its words') in the speech as times in the input, faster-whisper's
/// `restore_speech_timestamps`: each word in the speech chunk of its middle, the segment from
/// its first word to its last (without words, its own times).
pub(super) fn map_segment(segment: &mut Segment, map: &TimestampsMap) {
    match segment.words.as_mut().filter(|w| !w.is_empty()) {
        Some(words) => {
            for word in words.iter_mut() {
                let chunk = map.chunk_index((word.start + word.end) / 2.0, false);
                word.start = map.original_time(word.start, Some(chunk), false);
                word.end = map.original_time(word.end, Some(chunk), true);
            }
            segment.start = words[0].start;
            segment.end = words[words.len() - 1].end;
        }
        None => {
            segment.start = map.original_time(segment.start, None, false);
            segment.end = map.original_time(segment.end, None, true);
        }
    }
}

/// What every window's alignment pass of one transcription shares.
#[derive(Clone, Copy)]
pub(super) struct WordPass<'a> {
    /// The alignment heads.
    pub heads: &'a [(usize, usize)],
    /// The language's code.
    pub language: &'a str,
    /// The task.
    pub task: Task,
    /// The options of word timestamps.
    pub options: &'a WordOptions,
}

impl Transcriber {
    /// The alignment heads of word timestamps: the model's, else those of the upper half of
    /// the decoder's layers (said to `progress`).
    pub(super) fn alignment_heads(
        &self,
        progress: &mut dyn Progress,
    ) -> Result<Vec<(usize, usize)>, TranscribeError> {
        match &self.alignment_heads {
            Some((heads, source)) => {
                if let HeadsSource::Table(name) = source {
                    progress.note(&format!(
                        "word timestamps: the model has no alignment_heads; using OpenAI's for \
                         {name}"
                    ));
                }
                Ok(heads.clone())
            }
            None => {
                let shape = *self.decoder()?.shape();
                progress.note(
                    "word timestamps: the model has no alignment_heads (generation_config.json); \
                     using every head of the decoder's upper half of layers, as openai-whisper \
                     does for unknown models: times may be less precise",
                );
                Ok((shape.n_layers / 2..shape.n_layers)
                    .flat_map(|l| (0..shape.n_heads).map(move |h| (l, h)))
                    .collect())
            }
        }
    }

    /// openai-whisper's `add_word_timestamps` for the segments of one window (`span`), decoded
    /// on `session`: the alignment pass over their text tokens, then their words (`last_speech`
    /// is the end of the speech before the window).
    pub(super) fn add_words(
        &self,
        session: &mut DecoderSession<'_>,
        pass: &WordPass<'_>,
        segments: &mut [Segment],
        span: WindowSpan,
        last_speech: f64,
    ) -> Result<(), TranscribeError> {
        let WordPass {
            heads,
            language,
            task,
            options,
        } = *pass;
        if segments.is_empty() {
            return Ok(());
        }
        let tokenizer = &self.tokenizer;
        let special = *tokenizer.special();
        let mut timed: Vec<TimedSegment> = segments
            .iter()
            .map(|s| TimedSegment {
                start: s.start,
                end: s.end,
                text_tokens: s
                    .tokens
                    .iter()
                    .copied()
                    .filter(|&t| t < special.eot)
                    .collect(),
                words: Vec::new(),
            })
            .collect();
        let text: Vec<u32> = timed.iter().flat_map(|s| s.text_tokens.clone()).collect();
        let alignment = if text.is_empty() {
            Vec::new()
        } else {
            let mut tokens = tokenizer.sot_sequence(Some(language), task);
            let sot_len = tokens.len();
            tokens.push(special.no_timestamps);
            tokens.extend(&text);
            tokens.push(special.eot);
            session.reset();
            let scores = session.cross_scores(&tokens, heads)?;
            let n_vocab = scores.logits.len() / scores.tokens;
            let eot = special.eot as usize;
            let token_probs: Vec<f64> = text
                .iter()
                .enumerate()
                .map(|(k, &token)| {
                    let row = &scores.logits[(sot_len + k) * n_vocab..][..eot];
                    softmax_at(row, token as usize)
                })
                .collect();
            let mut with_eot = text.clone();
            with_eot.push(special.eot);
            find_alignment(AlignmentInput {
                scores: &scores.scores,
                frames: scores.frames,
                sot_len,
                token_probs: &token_probs,
                num_frames: span.size,
                words: tokenizer.split_to_word_tokens(&with_eot, language),
            })
        };
        add_word_timestamps(
            &mut timed,
            alignment,
            span.start(),
            &options.prepend_punctuations,
            &options.append_punctuations,
            last_speech,
        );
        for (segment, t) in segments.iter_mut().zip(timed) {
            segment.start = t.start;
            segment.end = t.end;
            segment.words = Some(t.words);
        }
        Ok(())
    }
}

/// The probability of `token` under the softmax of `logits`, in float32 as PyTorch's.
fn softmax_at(logits: &[f32], token: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&x| (x - max).exp()).sum();
    ((logits[token] - max).exp() / sum) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's tiny.en heads are those of Hugging Face's own generation_config.json for
    /// openai/whisper-tiny.en (tests/data/reference/tiny.en), which its directory gives first.
    #[test]
    fn alignment_heads_from_the_config_then_the_table() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference/tiny.en");
        let (heads, source) = configured_heads(&dir).unwrap().expect("heads");
        assert_eq!(source, HeadsSource::Config);
        let table: AlignmentHeads = OPENAI_ALIGNMENT_HEADS[0]
            .1
            .iter()
            .map(|&(l, h)| (l as usize, h as usize))
            .collect();
        assert_eq!(OPENAI_ALIGNMENT_HEADS[0].0, "tiny.en");
        assert_eq!(heads, table);
        // A directory named after an OpenAI model, without configuration: its table.
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let (heads, source) = configured_heads(&base).unwrap().expect("heads");
        assert_eq!(source, HeadsSource::Table("base"));
        assert_eq!(heads.len(), 8);
        // Another name: none (the decoder's upper half, once it is loaded).
        let other = tmp.path().join("my-model");
        std::fs::create_dir(&other).unwrap();
        assert!(configured_heads(&other).unwrap().is_none());
        // A malformed list is an error that names the file.
        std::fs::write(
            other.join("generation_config.json"),
            r#"{"alignment_heads": [1, 2]}"#,
        )
        .unwrap();
        let err = configured_heads(&other).unwrap_err().to_string();
        assert!(
            err.contains("generation_config.json") && err.contains("[layer, head]"),
            "{err}"
        );
    }

    #[test]
    fn clips_pair_up_as_openai_whispers() {
        // Nothing given: everything.
        assert_eq!(seek_clips(&[], 1000), vec![(0, 1000)]);
        // An odd list ends at the input's end; ends past it are its end.
        assert_eq!(
            seek_clips(&[1.5, 3.0, 7.25], 1000),
            vec![(150, 300), (725, 1000)]
        );
        assert_eq!(seek_clips(&[2.0, 50.0], 1000), vec![(200, 1000)]);
        // Frames are rounded half to even, as Python's round().
        assert_eq!(seek_clips(&[0.125, 0.135], 1000), vec![(12, 14)]);
    }
}
