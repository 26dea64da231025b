//! Speed of the audio frontend: `cargo bench --bench frontend`.
//!
//! Prints, on one thread:
//! - log-mel of one 30 s window (80 and 128 bins), median of repeated runs;
//! - decode + downmix + resample to 16 kHz of about 60 s of 44.1 kHz stereo flac and mp3;
//!
//! with realtime factors; the log-mel against openai-whisper's own `log_mel_spectrogram` (torch
//! on one thread, a Python process kept running beside this one, runs interleaved), which
//! needs python3 with `openai-whisper` (`pip install openai-whisper`; set AMANUENSIS_PYTHON
//! to use another Python).
//!
//! The flac input is `tests/data/reference/audio/jfk.flac` (11 s, 44.1 kHz stereo 24-bit),
//! the mp3 one the repository's own
//! `tests/data/speech-44k1-stereo.mp3` (9.4 s, 44.1 kHz stereo, 128 kbit/s); each is decoded
//! as many times as it takes to reach 60 s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::PythonBaseline;

use amanuensis::audio::{AudioStream, Decoder, Input, LogMel, N_SAMPLES, SAMPLE_RATE};

/// openai-whisper's `log_mel_spectrogram` (torch, one thread) on 30 s of noise of the same
/// level, as a server: prints its version, then one timed run per line read.
const TORCH_SCRIPT: &str = r#"
import sys, time
import numpy as np
import torch
import whisper
from whisper.audio import log_mel_spectrogram, N_SAMPLES
torch.set_num_threads(1)
n_mels = int(sys.argv[1])
x = torch.from_numpy((np.random.default_rng(0).uniform(-0.1, 0.1, N_SAMPLES)).astype(np.float32))
for _ in range(5):
    log_mel_spectrogram(x, n_mels)
print(f"openai-whisper {whisper.__version__}, torch {torch.__version__}", flush=True)
for _ in sys.stdin:
    t = time.perf_counter()
    log_mel_spectrogram(x, n_mels)
    print(f"{(time.perf_counter() - t) * 1e3:.4f}", flush=True)
"#;

/// Median and minimum, in ms.
fn median_min(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(times[times.len() / 2]), ms(times[0]))
}

fn bench_log_mel(n_mels: usize) {
    // 30 s of deterministic broadband noise with a speech-like level.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let samples: Vec<f32> = (0..N_SAMPLES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect();
    let mel = LogMel::new(n_mels);
    let mut out = vec![0.0; mel.window_len()];
    for _ in 0..5 {
        mel.compute_into(&samples, &mut out);
    }
    let mut torch = PythonBaseline::start(
        TORCH_SCRIPT,
        &[n_mels.to_string()],
        "openai-whisper torch numpy",
    );
    // Rounds of one run each, in turn: both see the same state of the machine.
    let (mut ours, mut theirs, mut paired) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..40 {
        let t = Instant::now();
        mel.compute_into(&samples, &mut out);
        let ours_t = t.elapsed();
        let theirs_t = torch.run();
        paired.push(ours_t.as_secs_f64() / theirs_t.as_secs_f64());
        ours.push(ours_t);
        theirs.push(theirs_t);
    }
    paired.sort_by(f64::total_cmp);
    let ((ms, min), (torch_ms, torch_min)) = (median_min(ours), median_min(theirs));
    println!(
        "log-mel, one 30 s window, {n_mels:>3} bins, 1 thread: {ms:6.2} ms (min {min:.2}; {:>5.0}x \
         realtime); {}: {torch_ms:.2} ms (min {torch_min:.2}); ours / theirs {:.2}x (medians), \
         {:.2}x (minima), {:.2}x (median of the rounds' ratios)",
        30e3 / ms,
        torch.version,
        ms / torch_ms,
        min / torch_min,
        paired[paired.len() / 2]
    );
}

/// Decodes `path` repeatedly until `seconds` of audio went through decode and resample;
/// returns (decode-only time, decode+resample time, audio seconds).
fn bench_decode(path: &Path, seconds: f64) -> (Duration, Duration, f64) {
    let input = Input::Path(path.to_path_buf());
    let mut audio_seconds = 0.0;
    let mut decode_only = Duration::ZERO;
    let mut full = Duration::ZERO;
    let mut buf = Vec::new();
    while audio_seconds < seconds {
        let t = Instant::now();
        let mut decoder = Decoder::open(&input).expect("bench input decodes");
        while decoder.decode_next(&mut buf).expect("bench input decodes") {
            buf.clear();
        }
        decode_only += t.elapsed();

        let t = Instant::now();
        let mut stream = AudioStream::open(&input).expect("bench input decodes");
        while stream.next_window().expect("bench input decodes").is_some() {}
        full += t.elapsed();
        audio_seconds += stream.seconds();
    }
    (decode_only, full, audio_seconds)
}

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .ok();
    println!("amanuensis frontend benchmark (release build, one thread)");
    bench_log_mel(80);
    bench_log_mel(128);

    let flac = reference_dir().join("audio/jfk.flac");
    let mp3 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/speech-44k1-stereo.mp3");
    for (label, path) in [
        ("flac 44.1 kHz stereo 24-bit", flac),
        ("mp3 44.1 kHz stereo", mp3),
    ] {
        if !path.is_file() {
            eprintln!("cannot benchmark {label}: {} is missing", path.display());
            std::process::exit(1);
        }
        let (decode, full, secs) = bench_decode(&path, 60.0);
        let resample = full.saturating_sub(decode);
        println!(
            "decode+resample {label}, {secs:.1} s -> {} Hz mono: {:7.1} ms ({:5.0}x realtime; \
             decode {:.1} ms, resample {:.1} ms)",
            SAMPLE_RATE,
            full.as_secs_f64() * 1e3,
            secs / full.as_secs_f64(),
            decode.as_secs_f64() * 1e3,
            resample.as_secs_f64() * 1e3,
        );
    }
}
