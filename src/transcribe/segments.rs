//! One decoded window to its segments and the next window's start: the step of openai-whisper's
//! `transcribe()` (whisper/transcribe.py, release 20250625) that reads a window's tokens, as a
//! pure function of them.
//!
//! A window's tokens are cut at each pair of consecutive timestamps; a window that ends on a
//! single timestamp (the speech runs to its end) is consumed whole, else the next window starts
//! at the last complete timestamp. A window without a pair of timestamps is one segment, to its
//! last timestamp or to its end.

use std::ops::Range;

use crate::audio::{HOP_LENGTH, SAMPLE_RATE};

/// Where a window lies in the input, in mel frames (100 a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    /// The first frame.
    pub seek: usize,
    /// Frames of audio in the window (at most 3000; fewer at the input's end).
    pub size: usize,
}

impl WindowSpan {
    /// The window's start, in seconds.
    pub fn start(&self) -> f64 {
        seconds(self.seek)
    }

    /// The window's length, in seconds.
    pub fn duration(&self) -> f64 {
        seconds(self.size)
    }
}

/// Seconds of `frames` mel frames.
fn seconds(frames: usize) -> f64 {
    (frames * HOP_LENGTH) as f64 / SAMPLE_RATE as f64
}

/// A segment cut from a window: its times in seconds from the start of the input, and the
/// range of the window's tokens it holds (timestamps included).
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// The window's tokens that make the segment.
    pub tokens: Range<usize>,
}

/// The segments of one window and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowCuts {
    /// The segments, in order.
    pub cuts: Vec<Cut>,
    /// The next window's first frame (always past `window.seek`).
    pub next_seek: usize,
    /// Whether the tokens end on a single timestamp (no speech after it in the window).
    pub single_timestamp_ending: bool,
}

/// Cuts the sampled `tokens` of `window` (no prompt, no `<|endoftext|>`) into segments, where
/// tokens from `timestamp_begin` on are timestamps of `input_stride` mel frames each (2: one
/// timestamp step is 0.02 s).
///
/// One rule departs from openai-whisper: where the only complete segment ends at `<|0.00|>`,
/// its loop would decode the same window again forever; the next window starts after this one.
pub fn cut_window(
    tokens: &[u32],
    timestamp_begin: u32,
    window: WindowSpan,
    input_stride: usize,
) -> WindowCuts {
    let is_ts = |i: usize| tokens[i] >= timestamp_begin;
    let position = |i: usize| (tokens[i] - timestamp_begin) as usize;
    let precision = seconds(input_stride);
    let offset = window.start();
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(n - 2) && is_ts(n - 1);
    let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts(i - 1) && is_ts(i)).collect();

    let mut cuts = Vec::new();
    let mut next_seek = window.seek;
    if !consecutive.is_empty() {
        let mut slices = consecutive;
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last = 0;
        for &slice in &slices {
            cuts.push(Cut {
                start: offset + position(last) as f64 * precision,
                end: offset + position(slice - 1) as f64 * precision,
                tokens: last..slice,
            });
            last = slice;
        }
        if single_timestamp_ending {
            next_seek += window.size;
        } else {
            next_seek += position(last - 1) * input_stride;
        }
    } else {
        let mut duration = window.duration();
        if let Some(i) = (0..n).rev().find(|&i| is_ts(i))
            && tokens[i] != timestamp_begin
        {
            duration = position(i) as f64 * precision;
        }
        cuts.push(Cut {
            start: offset,
            end: offset + duration,
            tokens: 0..n,
        });
        next_seek += window.size;
    }
    if next_seek == window.seek {
        next_seek += window.size;
    }
    WindowCuts {
        cuts,
        next_seek,
        single_timestamp_ending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps from 1000: `ts(k)` is `<|k * 0.02|>`; text tokens below.
    const TB: u32 = 1000;
    fn ts(k: u32) -> u32 {
        TB + k
    }
    const A: u32 = 11;
    const B: u32 = 12;
    const C: u32 = 13;

    fn cut(tokens: &[u32], seek: usize, size: usize) -> WindowCuts {
        cut_window(tokens, TB, WindowSpan { seek, size }, 2)
    }

    fn cuts(spans: &[(f64, f64, Range<usize>)]) -> Vec<Cut> {
        spans
            .iter()
            .map(|(start, end, tokens)| Cut {
                start: *start,
                end: *end,
                tokens: tokens.clone(),
            })
            .collect()
    }

    #[test]
    fn a_window_ending_on_a_single_timestamp_is_consumed_whole() {
        // <|0.00|> a b <|1.00|><|1.00|> c <|2.00|>: two segments, the speech runs on.
        let w = cut(&[ts(0), A, B, ts(50), ts(50), C, ts(100)], 1000, 3000);
        assert_eq!(w.cuts, cuts(&[(10.0, 11.0, 0..4), (11.0, 12.0, 4..7)]));
        assert_eq!(w.next_seek, 4000);
    }

    #[test]
    fn a_window_ending_on_a_pair_resumes_at_its_last_timestamp() {
        // <|0.00|> a <|1.00|><|1.00|> b <|1.60|><|1.60|>: the next window starts at 1.60 s.
        let w = cut(&[ts(0), A, ts(50), ts(50), B, ts(80), ts(80)], 0, 3000);
        assert_eq!(w.cuts, cuts(&[(0.0, 1.0, 0..3), (1.0, 1.6, 3..6)]));
        assert_eq!(w.next_seek, 160);
    }

    #[test]
    fn a_window_without_a_pair_is_one_segment() {
        // To its last timestamp ...
        let w = cut(&[ts(0), A, B, ts(40)], 500, 3000);
        assert_eq!(w.cuts, cuts(&[(5.0, 5.8, 0..4)]));
        assert_eq!(w.next_seek, 3500);
        // ... or, without one past <|0.00|>, to the window's end (here the input's end).
        let w = cut(&[ts(0), A], 3000, 1200);
        assert_eq!(w.cuts, cuts(&[(30.0, 42.0, 0..2)]));
        assert_eq!(w.next_seek, 4200);
        let w = cut(&[A, B], 0, 3000);
        assert_eq!(w.cuts, cuts(&[(0.0, 30.0, 0..2)]));
        assert_eq!(w.next_seek, 3000);
        let w = cut(&[], 0, 3000);
        assert_eq!(w.cuts, cuts(&[(0.0, 30.0, 0..0)]));
    }

    #[test]
    fn a_window_whose_only_segment_ends_at_zero_moves_on() {
        let w = cut(&[ts(0), ts(0), A, B], 300, 3000);
        assert_eq!(w.cuts, cuts(&[(3.0, 3.0, 0..1)]));
        assert_eq!(w.next_seek, 3300);
    }
}
