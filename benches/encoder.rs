//! Encoder speed against ONNX Runtime: `cargo bench --bench encoder`.
//!
//! For tiny.en and base (fetched through the catalog on first use), at 1 and 2 threads, times
//! one 30 s window in the `tract` plan (tract untouched), the `cpu` plan
//! (with this project's CPU fusions), the `emu` plan (the NPU plan, kernels emulated) and ONNX
//! Runtime (Python `onnxruntime`, CPU provider, same .onnx file, same thread count, a process
//! kept running beside this one), interleaved: each round runs each of them once. Prints the
//! median, minimum and maximum, GFLOP/s (the model's FLOPs from tract's
//! cost model), the share of this machine's float32 peak measured in the same run
//! ([`amanuensis_kernels::cpu::measure_fma_peak`]) and the ratios; then where each plan's time
//! goes, per op kind. Needs python3 with `onnxruntime`
//! and `numpy` (`pip install onnxruntime numpy`); set AMANUENSIS_PYTHON to use another Python.
//! `AMANUENSIS_BENCH_MODELS=tiny.en` restricts the models.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::PythonBaseline;

use amanuensis::audio::N_FRAMES;
use amanuensis::backend::Backend;
use amanuensis::model::{Encoder, EncoderOptions, resolve_model};

/// Rounds; each runs every plan and ONNX Runtime once, in turn, so that all of them see the
/// same state of the machine.
const RUNS: usize = 9;

/// ONNX Runtime as a server: loads the session, runs it once, prints its version; then one
/// timed run (printed in ms) for every line read, until the input ends.
const ORT_SCRIPT: &str = r#"
import sys, time
import numpy as np
import onnxruntime as ort
path, threads, n_mels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
x = (np.random.default_rng(0).standard_normal((1, n_mels, 3000)) * 0.5).astype(np.float32)
sess.run(None, {name: x})
print(ort.__version__, flush=True)
for _ in sys.stdin:
    t = time.perf_counter()
    sess.run(None, {name: x})
    print(f"{(time.perf_counter() - t) * 1e3:.3f}", flush=True)
"#;

/// Windows of the whole-process comparison's audio.
const WINDOWS: usize = 8;

/// What a user who picks ONNX Runtime instead runs: openai-whisper's frontend (torch) and the
/// same encoder file in ONNX Runtime, window by window, features saved as one .npy; the whole
/// Python process is timed from outside, imports included.
const ORT_PROCESS: &str = r#"
import sys, time
started = time.perf_counter()
import numpy as np
import onnxruntime as ort
import torch
from whisper.audio import load_audio, log_mel_spectrogram, pad_or_trim, N_SAMPLES
audio, model, threads, n_mels, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
imported = time.perf_counter() - started
x = load_audio(audio)
features = []
for start in range(0, len(x), N_SAMPLES):
    mel = log_mel_spectrogram(pad_or_trim(x[start:start + N_SAMPLES]), n_mels)
    features.append(sess.run(None, {name: mel.numpy()[None]})[0][0])
np.save(out, np.stack(features))
print(f"{imported:.4f}")
"#;

/// `WINDOWS` windows of audio, whole process: `amanuensis encode` with the `cpu` plan against
/// [`ORT_PROCESS`], in turn, `RUNS` times; prints median (min-max) seconds and the ratio.
fn whole_process(dir: &std::path::Path, encoder: &std::path::Path, n_mels: usize, threads: usize) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let audio = tmp.path().join("audio.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(&audio, spec).expect("a WAV");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..WINDOWS * 30 * 16_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let tone = (i as f32 * 0.07).sin() * 0.2;
        let noise = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        wav.write_sample(((tone + noise) * 32_000.0) as i16)
            .expect("a WAV");
    }
    wav.finalize().expect("a WAV");
    let python = std::env::var("AMANUENSIS_PYTHON").unwrap_or_else(|_| "python3".into());
    let ours = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_amanuensis"));
        command
            .args(["encode", "--backend", "cpu", "--threads"])
            .arg(threads.to_string())
            .arg("--model")
            .arg(dir)
            .arg("-o")
            .arg(tmp.path().join("ours.npy"))
            .arg(&audio);
        command
    };
    let theirs = || {
        let mut command = Command::new(&python);
        command
            .args(["-c", ORT_PROCESS])
            .arg(&audio)
            .arg(encoder)
            .args([threads.to_string(), n_mels.to_string()])
            .arg(tmp.path().join("theirs.npy"));
        command
    };
    let time = |mut command: Command, what: &str| {
        settle();
        let t = Instant::now();
        let out = command.output().expect("the process starts");
        let elapsed = t.elapsed();
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            elapsed,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (mut a, mut b, mut setup) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS.min(5) {
        a.push(time(ours(), "amanuensis encode").0);
        let (elapsed, stdout) = time(
            theirs(),
            "the ONNX Runtime script (needs onnxruntime and openai-whisper)",
        );
        b.push(elapsed);
        let seconds: f64 = stdout.parse().expect("the script prints its setup time");
        setup.push(Duration::from_secs_f64(seconds));
    }
    let setup = Ms::of(setup);
    let (a, b) = (Ms::of(a), Ms::of(b));
    println!(
        "  whole process, {WINDOWS} windows (model load, audio, log-mel, encoder, .npy): \
         amanuensis encode cpu {:.2} s ({:.2}-{:.2}), openai-whisper frontend + onnxruntime \
         {:.2} s ({:.2}-{:.2}; of which imports and session {:.2} s): {:.2}x; without the \
         Python side's imports and session: {:.2}x",
        a.median / 1e3,
        a.min / 1e3,
        a.max / 1e3,
        b.median / 1e3,
        b.min / 1e3,
        b.max / 1e3,
        setup.median / 1e3,
        a.median / b.median,
        a.median / (b.median - setup.median)
    );
}

/// Median, minimum and maximum of a run's times, in ms.
#[derive(Clone, Copy)]
struct Ms {
    median: f64,
    min: f64,
    max: f64,
}

impl Ms {
    fn of(mut v: Vec<Duration>) -> Ms {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ms {
            median: ms(v[v.len() / 2]),
            min: ms(v[0]),
            max: ms(v[v.len() - 1]),
        }
    }
}

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:7.1} ({:.0}-{:.0})", self.median, self.min, self.max)
    }
}

/// A pause before each timed run: the threads of the run before (ONNX Runtime's spin a while
/// after a run) are asleep again when the next starts.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

/// One line of the table: times, rate, share of the peak, and the ratio to the `cpu` plan.
fn print_row(label: &str, ms: Ms, flops: f64, peak: f64, cpu: Ms) {
    let rate = flops / (ms.median * 1e-3);
    println!(
        "  {label:<22} {ms} ms {:6.1} GFLOP/s {:4.0}% of peak   {:.2}x the cpu plan",
        rate / 1e9,
        100.0 * rate / peak,
        ms.median / cpu.median
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let models = std::env::var("AMANUENSIS_BENCH_MODELS").unwrap_or_else(|_| "tiny.en,base".into());
    println!(
        "amanuensis encoder benchmark: one 30 s window, median (min-max) ms of {RUNS} runs; \
         GFLOP/s and share of this machine's measured float32 multiply-add peak"
    );
    let mut profiles = Vec::new();
    for name in models.split(',') {
        let dir = resolve_model(name, &mut |line| eprintln!("{line}"))
            .unwrap_or_else(|e| panic!("cannot obtain {name}: {e:#}"));
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            let peak = pool.install(|| amanuensis_kernels::cpu::measure_fma_peak(0.5));
            println!(
                "\n{name}, {threads} thread(s): peak {:.1} GFLOP/s (measured)",
                peak / 1e9
            );
            let backends = [Backend::Tract, Backend::Cpu, Backend::Emu];
            let encoders: Vec<Encoder> = backends
                .iter()
                .map(|&backend| {
                    let options = EncoderOptions {
                        threads,
                        backend,
                        ..EncoderOptions::default()
                    };
                    Encoder::load(&dir, &options).expect("the model loads")
                })
                .collect();
            let n_mels = encoders[0].dims().n_mels;
            let flops = encoders[1].placement().total_flops as f64;
            let mel: Vec<f32> = (0..n_mels * N_FRAMES)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            for encoder in &encoders {
                encoder.encode(&mel).expect("the encoder runs");
            }
            let args = [
                encoders[0].files().encoder.display().to_string(),
                threads.to_string(),
                n_mels.to_string(),
            ];
            let mut ort = PythonBaseline::start(ORT_SCRIPT, &args, "onnxruntime numpy");
            let mut times = vec![Vec::new(); encoders.len() + 1];
            for _ in 0..RUNS {
                for (encoder, times) in encoders.iter().zip(&mut times) {
                    settle();
                    let t = Instant::now();
                    encoder.encode(&mel).expect("the encoder runs");
                    times.push(t.elapsed());
                }
                settle();
                times[encoders.len()].push(ort.run());
            }
            // cpu / ONNX Runtime round by round: both saw the same state of the machine.
            let mut paired: Vec<f64> = times[1]
                .iter()
                .zip(&times[3])
                .map(|(c, o)| c.as_secs_f64() / o.as_secs_f64())
                .collect();
            paired.sort_by(f64::total_cmp);
            let ms: Vec<Ms> = times.into_iter().map(Ms::of).collect();
            let cpu = ms[1];
            let labels = backends
                .iter()
                .map(|b| b.to_string())
                .chain([format!("onnxruntime {}", ort.version)]);
            for (label, ms) in labels.zip(&ms) {
                print_row(&label, *ms, flops, peak, cpu);
            }
            drop(ort);
            whole_process(&dir, &encoders[0].files().encoder, n_mels, threads);
            if threads == 2 {
                for (backend, encoder) in backends.iter().zip(&encoders) {
                    profiles.push((
                        format!("{name}, {backend}"),
                        encoder.profile(&mel).expect("profiled run").ops,
                    ));
                }
            }
            let ort_ms = ms[3];
            println!(
                "  cpu / onnxruntime: {:.2}x (medians), {:.2}x (minima), {:.2}x (median of the \
                 rounds' ratios)",
                cpu.median / ort_ms.median,
                cpu.min / ort_ms.min,
                paired[paired.len() / 2]
            );
        }
    }
    for (name, profile) in profiles {
        let total: Duration = profile.iter().map(|p| p.time).sum();
        println!(
            "\nwhere the time goes, {name}, 2 threads ({:.1} ms in nodes):",
            total.as_secs_f64() * 1e3
        );
        for p in profile.iter().take(12) {
            println!(
                "  {:<28} {:>4} nodes {:>8.1} ms {:>6.1}%",
                p.op,
                p.nodes,
                p.time.as_secs_f64() * 1e3,
                100.0 * p.time.as_secs_f64() / total.as_secs_f64()
            );
        }
    }
}
