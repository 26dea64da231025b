//! Speech probabilities to speech chunks, chunks merged into windows, and times in the audio
//! that keeps only the speech mapped back to the original: faster-whisper 1.2.1's
//! `get_speech_timestamps`, `collect_chunks` and `SpeechTimestampsMap` (faster_whisper/vad.py,
//! itself adapted from Silero VAD's `utils_vad.py`), with their arithmetic: sample counts from
//! milliseconds are real numbers, compared with whole sample positions, and truncated where
//! Python's `int()` truncates.

use super::{FRAME_SAMPLES, SAMPLE_RATE, VadOptions};

/// A stretch of speech, in 16 kHz samples of the original audio: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpeechChunk {
    /// First sample.
    pub start: usize,
    /// One past the last sample.
    pub end: usize,
}

impl SpeechChunk {
    /// Samples in the chunk.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the chunk holds no samples.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The speech in `n_samples` of audio whose frames of [`FRAME_SAMPLES`] have speech
/// probabilities `probs` (frame `i` covers samples `512 i .. 512 (i + 1)`), as
/// `get_speech_timestamps` finds it:
///
/// - speech starts at a frame whose probability reaches `threshold`, and ends where the
///   probability stays below `neg_threshold` for `min_silence_duration_ms` (a frame between
///   the two thresholds neither starts nor ends speech);
/// - speech longer than `max_speech_duration_s` is cut at the start of the last silence of
///   more than 98 ms in it, else just before the limit;
/// - chunks not longer than `min_speech_duration_ms` are dropped;
/// - each chunk is padded by `speech_pad_ms` on both sides, or, where the silence between two
///   chunks is shorter than twice that, the silence is shared between them.
pub fn speech_timestamps(
    probs: &[f32],
    n_samples: usize,
    options: &VadOptions,
) -> Vec<SpeechChunk> {
    let sr = SAMPLE_RATE as f64;
    let window = FRAME_SAMPLES as f64;
    let threshold = options.threshold as f64;
    let neg_threshold = options
        .neg_threshold
        .map(|t| t as f64)
        .unwrap_or_else(|| (threshold - 0.15).max(0.01));
    let min_speech_samples = sr * options.min_speech_duration_ms as f64 / 1000.0;
    let speech_pad_samples = sr * options.speech_pad_ms as f64 / 1000.0;
    let max_speech_samples = sr * options.max_speech_duration_s - window - 2.0 * speech_pad_samples;
    let min_silence_samples = sr * options.min_silence_duration_ms as f64 / 1000.0;
    let min_silence_samples_at_max_speech = sr * 98.0 / 1000.0;

    // Sample positions are whole numbers in Python; 0 stands for "unset" as there.
    let mut speeches: Vec<(i64, i64)> = Vec::new();
    let mut triggered = false;
    let mut current_start: Option<i64> = None;
    let mut temp_end: i64 = 0;
    let (mut prev_end, mut next_start): (i64, i64) = (0, 0);

    for (i, &p) in probs.iter().enumerate() {
        let p = p as f64;
        let here = (FRAME_SAMPLES * i) as i64;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = here;
            }
        }
        if p >= threshold && !triggered {
            triggered = true;
            current_start = Some(here);
            continue;
        }
        if triggered
            && let Some(start) = current_start
            && (here - start) as f64 > max_speech_samples
        {
            if prev_end != 0 {
                speeches.push((start, prev_end));
                current_start = None;
                // Silence was reached (below neg_threshold) and speech has not come back.
                if next_start < prev_end {
                    triggered = false;
                } else {
                    current_start = Some(next_start);
                }
                (prev_end, next_start, temp_end) = (0, 0, 0);
            } else {
                speeches.push((start, here));
                current_start = None;
                (prev_end, next_start, temp_end) = (0, 0, 0);
                triggered = false;
                continue;
            }
        }
        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = here;
            }
            // Not cut in a very short silence.
            if (here - temp_end) as f64 > min_silence_samples_at_max_speech {
                prev_end = temp_end;
            }
            if ((here - temp_end) as f64) < min_silence_samples {
                continue;
            }
            if let Some(start) = current_start
                && (temp_end - start) as f64 > min_speech_samples
            {
                speeches.push((start, temp_end));
            }
            current_start = None;
            (prev_end, next_start, temp_end) = (0, 0, 0);
            triggered = false;
        }
    }
    let length = n_samples as i64;
    if let Some(start) = current_start
        && (length - start) as f64 > min_speech_samples
    {
        speeches.push((start, length));
    }

    // Padding, in place as in Python: a chunk's start may already have been moved by the
    // chunk before it.
    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[0].0 = (speeches[0].0 as f64 - speech_pad_samples).max(0.0) as i64;
        }
        if i + 1 < n {
            let silence = speeches[i + 1].0 - speeches[i].1;
            if (silence as f64) < 2.0 * speech_pad_samples {
                speeches[i].1 += silence.div_euclid(2);
                speeches[i + 1].0 = (speeches[i + 1].0 - silence.div_euclid(2)).max(0);
            } else {
                speeches[i].1 =
                    (length as f64).min(speeches[i].1 as f64 + speech_pad_samples) as i64;
                speeches[i + 1].0 = (speeches[i + 1].0 as f64 - speech_pad_samples).max(0.0) as i64;
            }
        } else {
            speeches[i].1 = (length as f64).min(speeches[i].1 as f64 + speech_pad_samples) as i64;
        }
    }
    speeches
        .into_iter()
        .map(|(start, end)| SpeechChunk {
            start: start.max(0) as usize,
            end: end.max(0) as usize,
        })
        .collect()
}

/// Speech chunks joined end to end into one stretch of audio of at most `max_duration`
/// seconds (faster-whisper's `collect_chunks`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkGroup {
    /// Seconds of kept audio before this group.
    pub offset: f64,
    /// Seconds of audio in the group.
    pub duration: f64,
    /// The chunks joined, in the original audio.
    pub chunks: Vec<SpeechChunk>,
}

/// `chunks` joined in order into groups of at most `max_duration` seconds, as
/// `collect_chunks` joins them: a chunk that would take a group past the limit starts the
/// next one. No chunks give one empty group.
pub fn collect_chunks(chunks: &[SpeechChunk], max_duration: f64) -> Vec<ChunkGroup> {
    let sr = SAMPLE_RATE as f64;
    let limit = max_duration * sr;
    let mut groups = Vec::new();
    let mut current: Vec<SpeechChunk> = Vec::new();
    let mut current_samples = 0usize;
    let mut total_samples = 0usize;
    for &chunk in chunks {
        if (current_samples + chunk.len()) as f64 > limit {
            groups.push(ChunkGroup {
                offset: total_samples as f64 / sr,
                duration: current_samples as f64 / sr,
                chunks: std::mem::take(&mut current),
            });
            total_samples += current_samples;
            current_samples = 0;
        }
        current.push(chunk);
        current_samples += chunk.len();
    }
    groups.push(ChunkGroup {
        offset: total_samples as f64 / sr,
        duration: current_samples as f64 / sr,
        chunks: current,
    });
    groups
}

/// Times in the audio that keeps only `chunks` mapped back to times in the original
/// (faster-whisper's `SpeechTimestampsMap`, at two decimals).
#[derive(Debug, Clone)]
pub struct TimestampsMap {
    /// Where each chunk ends in the kept audio, in samples.
    chunk_end: Vec<usize>,
    /// Seconds of audio dropped before each chunk.
    silence_before: Vec<f64>,
}

impl TimestampsMap {
    /// The map of `chunks` (in order, not overlapping).
    pub fn new(chunks: &[SpeechChunk]) -> TimestampsMap {
        let (mut previous_end, mut silent) = (0usize, 0usize);
        let mut chunk_end = Vec::with_capacity(chunks.len());
        let mut silence_before = Vec::with_capacity(chunks.len());
        for c in chunks {
            silent += c.start - previous_end;
            previous_end = c.end;
            chunk_end.push(c.end - silent);
            silence_before.push(silent as f64 / SAMPLE_RATE as f64);
        }
        TimestampsMap {
            chunk_end,
            silence_before,
        }
    }

    /// The chunk a time in the kept audio falls in: the first that ends after it, or, for
    /// an end time, the one that ends exactly there.
    pub fn chunk_index(&self, time: f64, is_end: bool) -> usize {
        let sample = (time * SAMPLE_RATE as f64) as usize;
        if is_end && let Some(i) = self.chunk_end.iter().position(|&e| e == sample) {
            return i;
        }
        self.chunk_end
            .partition_point(|&e| e <= sample)
            .min(self.chunk_end.len().saturating_sub(1))
    }

    /// `time` in the kept audio, in chunk `chunk` (else the chunk it falls in), as a time in
    /// the original audio, rounded to 0.01 s as Python's `round(x, 2)` rounds.
    pub fn original_time(&self, time: f64, chunk: Option<usize>, is_end: bool) -> f64 {
        if self.chunk_end.is_empty() {
            return time;
        }
        let chunk = chunk.unwrap_or_else(|| self.chunk_index(time, is_end));
        round2(self.silence_before[chunk] + time)
    }
}

/// `round(x, 2)` of Python: the decimal nearest to the exact value of `x` (ties to even).
pub(crate) fn round2(x: f64) -> f64 {
    format!("{x:.2}").parse().expect("a formatted number")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> VadOptions {
        VadOptions::default()
    }

    /// Frames of `p` speech probability: `(probability, frames)` runs.
    fn runs(runs: &[(f32, usize)]) -> Vec<f32> {
        runs.iter()
            .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
            .collect()
    }

    #[test]
    fn one_stretch_of_speech_is_padded_within_the_audio() {
        // 10 frames of silence, 50 of speech, 100 of silence.
        let probs = runs(&[(0.1, 10), (0.9, 50), (0.1, 100)]);
        let n = probs.len() * FRAME_SAMPLES;
        let chunks = speech_timestamps(&probs, n, &options());
        // Starts at frame 10 minus 400 ms (6400 samples), clamped at 0; ends at frame 60 (where
        // silence began) plus 6400.
        assert_eq!(
            chunks,
            [SpeechChunk {
                start: 0,
                end: 60 * 512 + 6400
            }]
        );
    }

    #[test]
    fn short_silences_do_not_split_and_long_ones_do() {
        // 2 s of silence is 62.5 frames: 60 frames stay one chunk, 70 split.
        let o = VadOptions {
            speech_pad_ms: 0,
            ..options()
        };
        let probs = runs(&[(0.9, 20), (0.1, 60), (0.9, 20), (0.1, 70), (0.9, 20)]);
        let n = probs.len() * FRAME_SAMPLES;
        let chunks = speech_timestamps(&probs, n, &o);
        assert_eq!(
            chunks,
            [
                SpeechChunk {
                    start: 0,
                    end: 100 * 512
                },
                SpeechChunk {
                    start: 170 * 512,
                    end: n
                },
            ]
        );
    }

    #[test]
    fn between_the_thresholds_neither_starts_nor_ends_speech() {
        let o = VadOptions {
            speech_pad_ms: 0,
            min_silence_duration_ms: 100,
            ..options()
        };
        // 0.4 is between neg_threshold (0.35) and threshold (0.5).
        let probs = runs(&[(0.4, 10), (0.9, 10), (0.4, 30), (0.1, 10), (0.4, 10)]);
        let chunks = speech_timestamps(&probs, probs.len() * 512, &o);
        assert_eq!(
            chunks,
            [SpeechChunk {
                start: 10 * 512,
                end: 50 * 512
            }]
        );
    }

    #[test]
    fn long_speech_is_cut_at_its_last_silence_or_at_the_limit() {
        let o = VadOptions {
            speech_pad_ms: 0,
            max_speech_duration_s: 4.0,
            ..options()
        };
        // 4 s is 125 frames, minus one frame: a stretch is cut once it is longer than 123.
        // A 5-frame silence (160 ms > 98 ms) inside: the cut goes there.
        let probs = runs(&[(0.9, 80), (0.1, 5), (0.9, 100)]);
        let chunks = speech_timestamps(&probs, probs.len() * 512, &o);
        assert_eq!(
            chunks[0],
            SpeechChunk {
                start: 0,
                end: 80 * 512
            }
        );
        assert_eq!(chunks[1].start, 85 * 512);
        // No silence: cut where the stretch passes the limit, and speech starts again at the
        // next frame.
        let probs = runs(&[(0.9, 300)]);
        let chunks = speech_timestamps(&probs, probs.len() * 512, &o);
        assert_eq!(
            chunks[0],
            SpeechChunk {
                start: 0,
                end: 125 * 512
            }
        );
        assert_eq!(chunks[1].start, 126 * 512);
    }

    #[test]
    fn short_speech_is_dropped_and_close_chunks_share_the_silence() {
        let o = VadOptions {
            min_speech_duration_ms: 250,
            min_silence_duration_ms: 100,
            ..options()
        };
        // 5 frames (160 ms) of speech are dropped; two chunks 10 frames apart (320 ms, less
        // than twice 400 ms) share it: 160 ms each.
        let probs = runs(&[
            (0.1, 50),
            (0.9, 5),
            (0.1, 50),
            (0.9, 20),
            (0.1, 10),
            (0.9, 20),
            (0.1, 50),
        ]);
        let chunks = speech_timestamps(&probs, probs.len() * 512, &o);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert_eq!(chunks[0].end, chunks[1].start);
        assert_eq!(chunks[0].end, 125 * 512 + 5 * 512);
    }

    #[test]
    fn chunks_are_grouped_up_to_the_limit() {
        let s = 16_000;
        let chunks = [
            SpeechChunk {
                start: 0,
                end: 10 * s,
            },
            SpeechChunk {
                start: 12 * s,
                end: 27 * s,
            },
            SpeechChunk {
                start: 30 * s,
                end: 40 * s,
            },
        ];
        let groups = collect_chunks(&chunks, 30.0);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].offset, groups[0].duration), (0.0, 25.0));
        assert_eq!((groups[1].offset, groups[1].duration), (25.0, 10.0));
        assert_eq!(groups[1].chunks, &chunks[2..]);
        assert_eq!(collect_chunks(&[], 30.0).len(), 1);
    }

    #[test]
    fn kept_times_map_back_to_the_original() {
        let s = 16_000;
        let chunks = [
            SpeechChunk {
                start: 2 * s,
                end: 5 * s,
            },
            SpeechChunk {
                start: 9 * s,
                end: 10 * s,
            },
        ];
        let map = TimestampsMap::new(&chunks);
        assert_eq!(map.original_time(1.0, None, false), 3.0);
        // 3 s is the first chunk's end: an end stays there, a start goes to the next chunk.
        assert_eq!(map.original_time(3.0, None, true), 5.0);
        assert_eq!(map.original_time(3.0, None, false), 9.0);
        assert_eq!(map.original_time(3.5, None, false), 9.5);
        assert_eq!(map.original_time(30.0, None, false), 36.0);
        assert_eq!(round2(0.125), 0.12);
        assert_eq!(round2(2.675), 2.67);
    }
}
