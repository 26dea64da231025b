//! Word timestamps: openai-whisper's whisper/timing.py (release 20250625), from the
//! cross-attention scores of the alignment heads to each word's start, end and probability.
//!
//! [`find_alignment`] takes the scores of one window's alignment pass
//! ([`crate::model::DecoderSession::cross_scores`]) through a softmax over the window's frames,
//! a normalisation over the tokens, a median filter of width 7 along time and the mean over
//! the heads, then aligns tokens with frames by dynamic time warping; a word starts where its
//! first token's row of the path starts. [`add_word_timestamps`] spreads the words over the
//! window's segments with openai-whisper's corrections (long words at sentence and segment
//! edges clamped, punctuation merged into its neighbours).
//!
//! Numerics follow PyTorch's and NumPy's on the CPU where the path can change with them:
//! scores in float32, the normalisation's mean and deviation accumulated in float64 (as
//! PyTorch's CPU `std_mean`), the DTW's inputs in float64 and its costs stored in float32 (as
//! `dtw_cpu`), times in float64, rounded as Python's `round(x, 2)`.

use serde::Serialize;

use crate::audio::{HOP_LENGTH, SAMPLE_RATE};
use crate::vad::round2;

/// Time steps of the alignment a second (openai-whisper's `TOKENS_PER_SECOND`: one per
/// encoder position, 20 ms).
const TOKENS_PER_SECOND: f64 = (SAMPLE_RATE as usize / (HOP_LENGTH * 2)) as f64;

/// openai-whisper's default `prepend_punctuations`: merged into the word that follows.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// openai-whisper's default `append_punctuations`: merged into the word before.
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";

/// One word of a segment, as openai-whisper's `transcribe(word_timestamps=True)` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Word {
    /// The word with its leading space and merged punctuation.
    pub word: String,
    /// Start, in seconds (0.01 s steps).
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// The mean probability of its tokens.
    pub probability: f64,
}

/// A word of one window's alignment, times from the window's start.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    /// The word's text (empty once merged into a neighbour).
    pub word: String,
    /// Its tokens.
    pub tokens: Vec<u32>,
    /// Start, in seconds from the window's start.
    pub start: f64,
    /// End.
    pub end: f64,
    /// The mean probability of its tokens.
    pub probability: f64,
}

/// The median of each run of `width` values of `row` (reflected at the ends), PyTorch's
/// `unfold(...).sort()[0][..., width // 2]` as openai-whisper's `median_filter` computes it;
/// rows of at most `width / 2` values are left as they are. NaN sorts last.
pub fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; row.len()];
    median_filter_into(row, width, &mut out);
    out
}

/// [`median_filter`] into `out` (as long as `row`).
fn median_filter_into(row: &[f32], width: usize, out: &mut [f32]) {
    let pad = width / 2;
    let n = row.len();
    if n <= pad {
        out.copy_from_slice(row);
        return;
    }
    let at = |i: isize| -> f32 {
        // Reflection without repeating the edge: -1 -> 1, n -> n - 2.
        let j = if i < 0 {
            -i
        } else if i >= n as isize {
            2 * (n as isize - 1) - i
        } else {
            i
        };
        row[j as usize]
    };
    let nan_last = |a: &f32, b: &f32| {
        a.partial_cmp(b)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
    };
    let mut window = vec![0.0f32; width];
    for (i, o) in out.iter_mut().enumerate() {
        for (k, w) in window.iter_mut().enumerate() {
            *w = at(i as isize + k as isize - pad as isize);
        }
        *o = *window.select_nth_unstable_by(pad, nan_last).1;
    }
}

/// The path of least cost through `x` (`[n, m]`, row-major) from its first cell to its last,
/// by openai-whisper's `dtw_cpu` and `backtrace`: diagonal, down or right steps, the diagonal
/// preferred only when strictly cheaper than both others, then down when strictly cheaper than
/// both, else right; costs summed in float64 and stored in float32. Returns the row and column
/// of each step of the path, in order.
pub fn dtw(x: &[f64], n: usize, m: usize) -> (Vec<isize>, Vec<isize>) {
    let w = m + 1;
    let mut cost = vec![f32::INFINITY; (n + 1) * w];
    let mut trace = vec![-1i8; (n + 1) * w];
    cost[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let c0 = cost[(i - 1) * w + j - 1];
            let c1 = cost[(i - 1) * w + j];
            let c2 = cost[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i * w + j] = (x[(i - 1) * m + j - 1] + c as f64) as f32;
            trace[i * w + j] = t;
        }
    }
    trace[..=m].fill(2);
    for i in 0..=n {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (n, m);
    let mut path = Vec::new();
    while i > 0 || j > 0 {
        path.push((i as isize - 1, j as isize - 1));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    path.into_iter().unzip()
}

/// The inputs of one window's alignment.
pub struct AlignmentInput<'a> {
    /// Per alignment head, `[tokens, frames]` cross-attention scores of the pass over
    /// `sot_sequence`, `<|notimestamps|>`, the text tokens and `<|endoftext|>`.
    pub scores: &'a [Vec<f32>],
    /// Columns of each row of `scores` (the encoder's positions).
    pub frames: usize,
    /// Tokens of the start sequence (`<|startoftranscript|>`, language, task).
    pub sot_len: usize,
    /// The probability of each text token (after the one before it).
    pub token_probs: &'a [f64],
    /// Mel frames of audio in the window (its positions are half as many).
    pub num_frames: usize,
    /// The words of the text tokens followed by `<|endoftext|>` and their tokens
    /// (openai-whisper's `split_to_word_tokens`).
    pub words: Vec<(String, Vec<u32>)>,
}

/// openai-whisper's `find_alignment` after its forward pass: the words of a window's text
/// tokens, times from the window's start.
pub fn find_alignment(input: AlignmentInput<'_>) -> Vec<WordTiming> {
    let AlignmentInput {
        scores,
        frames,
        sot_len,
        token_probs,
        num_frames,
        words,
    } = input;
    let n_text = token_probs.len();
    if n_text == 0 || scores.is_empty() {
        return Vec::new();
    }
    let tokens = sot_len + n_text + 2;
    let cols = (num_frames / 2).min(frames);
    if cols == 0 || words.len() <= 1 {
        return Vec::new();
    }
    // Per head: softmax over the window's positions, then each position normalised over the
    // tokens, then the median filter along time; summed over heads.
    let mut sum = vec![0.0f32; tokens * cols];
    for head in scores {
        let mut w = vec![0.0f32; tokens * cols];
        for t in 0..tokens {
            let row = &head[t * frames..][..cols];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
            let total: f32 = exps.iter().sum();
            for (o, e) in w[t * cols..][..cols].iter_mut().zip(exps) {
                *o = e / total;
            }
        }
        for c in 0..cols {
            let mean = (0..tokens).map(|t| w[t * cols + c] as f64).sum::<f64>() / tokens as f64;
            let var = (0..tokens)
                .map(|t| (w[t * cols + c] as f64 - mean).powi(2))
                .sum::<f64>()
                / tokens as f64;
            let (mean, std) = (mean as f32, var.sqrt() as f32);
            for t in 0..tokens {
                let v = &mut w[t * cols + c];
                *v = (*v - mean) / std;
            }
        }
        let mut filtered = vec![0.0f32; cols];
        for t in 0..tokens {
            median_filter_into(&w[t * cols..][..cols], 7, &mut filtered);
            for (s, f) in sum[t * cols..][..cols].iter_mut().zip(&filtered) {
                *s += f;
            }
        }
    }
    let heads = scores.len() as f32;
    // The rows of `<|notimestamps|>` and the text tokens.
    let rows = n_text + 1;
    let matrix: Vec<f64> = sum[sot_len * cols..(sot_len + rows) * cols]
        .iter()
        .map(|&s| -((s / heads) as f64))
        .collect();
    let (text_indices, time_indices) = dtw(&matrix, rows, cols);
    // The time where each row of the path starts.
    let jump_times: Vec<f64> = text_indices
        .iter()
        .enumerate()
        .filter(|&(k, &t)| k == 0 || t != text_indices[k - 1])
        .map(|(k, _)| time_indices[k] as f64 / TOKENS_PER_SECOND)
        .collect();
    let mut boundaries = vec![0usize];
    for (_, t) in &words[..words.len() - 1] {
        boundaries.push(boundaries.last().expect("not empty") + t.len());
    }
    let mut timings = Vec::with_capacity(words.len() - 1);
    for (k, (word, tokens)) in words.into_iter().enumerate().take(boundaries.len() - 1) {
        let (i, j) = (boundaries[k], boundaries[k + 1]);
        let (Some(&start), Some(&end)) = (jump_times.get(i), jump_times.get(j)) else {
            break;
        };
        let probs = &token_probs[i.min(n_text)..j.min(n_text)];
        let probability = if probs.is_empty() {
            f64::NAN
        } else {
            probs.iter().sum::<f64>() / probs.len() as f64
        };
        timings.push(WordTiming {
            word,
            tokens,
            start,
            end,
            probability,
        });
    }
    timings
}

/// openai-whisper's `merge_punctuations`: a word of `prepended` (after its space) joins the
/// word after it, a word of `appended` the word before it, leaving an empty word behind. As
/// there, "of" is Python's `in` on strings: a substring of the list.
pub fn merge_punctuations(alignment: &mut [WordTiming], prepended: &str, appended: &str) {
    let n = alignment.len();
    if n >= 2 {
        let mut j = n - 1;
        for i in (0..n - 1).rev() {
            let previous = &alignment[i];
            if previous.word.starts_with(' ') && prepended.contains(previous.word.trim()) {
                let (word, tokens) = (
                    std::mem::take(&mut alignment[i].word),
                    std::mem::take(&mut alignment[i].tokens),
                );
                let following = &mut alignment[j];
                following.word = word + &following.word;
                following.tokens = [tokens, std::mem::take(&mut following.tokens)].concat();
            } else {
                j = i;
            }
        }
    }
    let mut i = 0;
    for j in 1..n {
        if !alignment[i].word.ends_with(' ') && appended.contains(alignment[j].word.as_str()) {
            let (word, tokens) = (
                std::mem::take(&mut alignment[j].word),
                std::mem::take(&mut alignment[j].tokens),
            );
            let previous = &mut alignment[i];
            previous.word.push_str(&word);
            previous.tokens.extend(tokens);
        } else {
            i = j;
        }
    }
}

/// A segment as word timestamps see it: its times (which they may move), its tokens, and the
/// words they give it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedSegment {
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// Its text tokens (below `<|endoftext|>`).
    pub text_tokens: Vec<u32>,
    /// The words.
    pub words: Vec<Word>,
}

/// openai-whisper's `add_word_timestamps` after `find_alignment`: the words of `alignment`
/// (one window's, times from `time_offset`) spread over `segments`, with its corrections of
/// long words at sentence edges and after pauses, and of segment edges; `last_speech` is the
/// end of the speech before the window. Returns the new end of speech.
pub fn add_word_timestamps(
    segments: &mut [TimedSegment],
    mut alignment: Vec<WordTiming>,
    time_offset: f64,
    prepended: &str,
    appended: &str,
    mut last_speech: f64,
) -> f64 {
    let mut durations: Vec<f64> = alignment
        .iter()
        .map(|t| t.end - t.start)
        .filter(|&d| d != 0.0)
        .collect();
    let median = if durations.is_empty() {
        0.0
    } else {
        median_f64(&mut durations)
    };
    let median = median.min(0.7);
    let max_duration = median * 2.0;
    if !durations.is_empty() {
        const SENTENCE_END: &str = ".。!！?？";
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if SENTENCE_END.contains(alignment[i].word.as_str()) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if SENTENCE_END.contains(alignment[i - 1].word.as_str()) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(&mut alignment, prepended, appended);

    let mut word_index = 0;
    for segment in segments.iter_mut() {
        let mut saved_tokens = 0;
        let mut words: Vec<Word> = Vec::new();
        while word_index < alignment.len() && saved_tokens < segment.text_tokens.len() {
            let timing = &alignment[word_index];
            if !timing.word.is_empty() {
                words.push(Word {
                    word: timing.word.clone(),
                    start: round2(time_offset + timing.start),
                    end: round2(time_offset + timing.end),
                    probability: timing.probability,
                });
            }
            saved_tokens += timing.tokens.len();
            word_index += 1;
        }
        if !words.is_empty() {
            // The first and second words after a pause no longer than twice the median.
            let long_first = words[0].end - words[0].start > max_duration;
            let long_pair = words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0;
            if words[0].end - last_speech > median * 4.0 && (long_first || long_pair) {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            // The segment's start when the first word is too long, else the first word's.
            if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median).min(segment.start).max(0.0);
            } else {
                segment.start = words[0].start;
            }
            let last = words.len() - 1;
            if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median).max(segment.end);
            } else {
                segment.end = words[last].end;
            }
            last_speech = segment.end;
        }
        segment.words = words;
    }
    last_speech
}

/// The end of the last word of `segments`, else the last segment's end (openai-whisper's
/// `get_end`).
pub fn last_end(segments: &[TimedSegment]) -> Option<f64> {
    segments
        .iter()
        .rev()
        .find_map(|s| s.words.last().map(|w| w.end))
        .or_else(|| segments.last().map(|s| s.end))
}

/// How anomalous a word is (openai-whisper's `word_anomaly_score` in `transcribe()`): very
/// improbable, very short or very long words score.
pub fn word_anomaly_score(word: &Word) -> f64 {
    let duration = word.end - word.start;
    let mut score = 0.0;
    if word.probability < 0.15 {
        score += 1.0;
    }
    if duration < 0.133 {
        score += (0.133 - duration) * 15.0;
    }
    if duration > 2.0 {
        score += duration - 2.0;
    }
    score
}

/// Whether a segment's words look like a hallucination (openai-whisper's
/// `is_segment_anomaly`): its first 8 words other than punctuation score 3, or about one a
/// word. A segment without words is not.
pub fn is_segment_anomaly(words: &[Word]) -> bool {
    if words.is_empty() {
        return false;
    }
    // openai-whisper's list (prepended then appended punctuation); "not in" it is a
    // substring test.
    const PUNCTUATION: &str = "\"'“¿([{-\"'.。,，!！?？:：”)]}、";
    let words: Vec<&Word> = words
        .iter()
        .filter(|w| !PUNCTUATION.contains(w.word.as_str()))
        .take(8)
        .collect();
    let score: f64 = words.iter().map(|w| word_anomaly_score(w)).sum();
    score >= 3.0 || score + 0.01 >= words.len() as f64
}

/// NumPy's `median`: the middle value, or the mean of the two middle ones.
fn median_f64(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_filter_reflects_at_the_edges() {
        // Width 3 over [1, 5, 2, 8]: windows [5,1,5] [1,5,2] [5,2,8] [2,8,2].
        assert_eq!(
            median_filter(&[1.0, 5.0, 2.0, 8.0], 3),
            vec![5.0, 2.0, 5.0, 2.0]
        );
        // Too short to pad: unchanged.
        assert_eq!(median_filter(&[3.0, 1.0, 2.0], 7), vec![3.0, 1.0, 2.0]);
    }

    #[test]
    fn dtw_follows_the_cheap_cells() {
        // A diagonal of zeros in ones: the path takes it.
        let x = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let (rows, cols) = dtw(&x, 3, 3);
        assert_eq!(rows, vec![0, 1, 2]);
        assert_eq!(cols, vec![0, 1, 2]);
        // Two rows over four columns: right steps where the row is cheap.
        let x = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        let (rows, cols) = dtw(&x, 2, 4);
        assert_eq!(rows, vec![0, 0, 1, 1]);
        assert_eq!(cols, vec![0, 1, 2, 3]);
    }

    fn timing(word: &str, tokens: usize) -> WordTiming {
        WordTiming {
            word: word.into(),
            tokens: vec![0; tokens],
            start: 0.0,
            end: 0.0,
            probability: 1.0,
        }
    }

    #[test]
    fn punctuation_joins_its_neighbours() {
        let mut a = vec![
            timing(" \"", 1),
            timing(" Hello", 1),
            timing(",", 1),
            timing(" world", 1),
            timing(".\"", 1),
        ];
        merge_punctuations(&mut a, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let words: Vec<&str> = a.iter().map(|t| t.word.as_str()).collect();
        // ".\"" is not a substring of the appended list: it stays a word.
        assert_eq!(words, vec!["", " \" Hello,", "", " world", ".\""]);
        assert_eq!(a[1].tokens.len(), 3);
    }
}
