//! One hour of 44.1 kHz stereo audio streams through decode, resample and log-mel with bounded
//! memory. The input is generated on the fly as a WAV stream (635 MB as 16-bit PCM, 1.3 GB as
//! f32 at its own rate), so only a streaming frontend stays far below those figures.
//!
//! This file holds a single test so that the process's peak memory is this test's alone.

use std::io::Read;

use amanuensis::audio::{AudioStream, Decoder, LogMel, N_SAMPLES};
use symphonia::core::formats::probe::Hint;
use symphonia::core::io::ReadOnlySource;

const RATE: u32 = 44_100;
const SECONDS: u64 = 3_600;

/// A 16-bit stereo WAV of a slow chirp, produced as it is read.
struct ChirpWav {
    pending: Vec<u8>,
    at: usize,
    next_frame: u64,
    frames: u64,
}

impl ChirpWav {
    fn new() -> ChirpWav {
        let frames = RATE as u64 * SECONDS;
        let data_len = (frames * 4) as u32;
        let mut h = Vec::new();
        h.extend(b"RIFF");
        h.extend((36 + data_len).to_le_bytes());
        h.extend(b"WAVEfmt ");
        h.extend(16u32.to_le_bytes());
        h.extend(1u16.to_le_bytes());
        h.extend(2u16.to_le_bytes());
        h.extend(RATE.to_le_bytes());
        h.extend((RATE * 4).to_le_bytes());
        h.extend(4u16.to_le_bytes());
        h.extend(16u16.to_le_bytes());
        h.extend(b"data");
        h.extend(data_len.to_le_bytes());
        ChirpWav {
            pending: h,
            at: 0,
            next_frame: 0,
            frames,
        }
    }

    /// Generates the next 4096 frames (left and right equal).
    fn refill(&mut self) {
        self.pending.clear();
        self.at = 0;
        let end = (self.next_frame + 4096).min(self.frames);
        for frame in self.next_frame..end {
            let t = frame as f64 / RATE as f64;
            let f = 300.0 + (t % 60.0) * 50.0;
            let v = (0.25 * (2.0 * std::f64::consts::PI * f * t).sin() * 32767.0) as i16;
            self.pending.extend(v.to_le_bytes());
            self.pending.extend(v.to_le_bytes());
        }
        self.next_frame = end;
    }
}

impl Read for ChirpWav {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            self.refill();
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc");
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

#[test]
fn one_hour_streams_in_bounded_memory() {
    let source = Box::new(ReadOnlySource::new(ChirpWav::new()));
    let decoder = Decoder::from_source("chirp.wav".into(), source, &Hint::new()).unwrap();
    let mut stream = AudioStream::new(decoder).unwrap();
    let mel = LogMel::new(80);
    let mut out = vec![0.0; mel.window_len()];
    let mut windows = 0;
    while let Some(window) = stream.next_window().unwrap() {
        assert_eq!(window.index, windows);
        assert_eq!(
            window.samples.len(),
            N_SAMPLES,
            "every window of an exact hour is full"
        );
        mel.compute_into(&window.samples, &mut out);
        windows += 1;
    }
    assert_eq!(windows, 120);
    assert_eq!(stream.seconds(), SECONDS as f64);
    let peak = peak_rss_mib();
    eprintln!("peak resident memory after one hour of audio: {peak:.1} MiB");
    // One window of samples is 1.9 MB; decoding the hour to memory would take >= 635 MB.
    assert!(peak < 100.0, "peak resident memory {peak:.1} MiB");
}
