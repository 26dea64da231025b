//! Encoder speed against ONNX Runtime: `cargo bench --bench encoder`.
//!
//! For tiny.en and base (fetched through the catalog on first use), at 1 and 2 threads, prints
//! the median time of one 30 s window in the `tract` plan (tract untouched), the `cpu` plan
//! (with this project's CPU fusions), the `emu` plan (the NPU plan, kernels emulated) and ONNX
//! Runtime (Python `onnxruntime`, CPU provider, same .onnx file, same thread count), all
//! measured in this run, and their ratios; then where each plan's time goes, per op kind. Needs python3 with `onnxruntime`
//! and `numpy` (`pip install onnxruntime numpy`); set AMANUENSIS_PYTHON to use another Python.
//! `AMANUENSIS_BENCH_MODELS=tiny.en` restricts the models.

use std::process::Command;
use std::time::{Duration, Instant};

use amanuensis::audio::N_FRAMES;
use amanuensis::backend::Backend;
use amanuensis::model::{Encoder, EncoderOptions, resolve_model};

const RUNS: usize = 5;

const ORT_SCRIPT: &str = r#"
import sys, time
import numpy as np
import onnxruntime as ort
path, threads, n_mels, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
x = (np.random.default_rng(0).standard_normal((1, n_mels, 3000)) * 0.5).astype(np.float32)
sess.run(None, {name: x})
times = []
for _ in range(runs):
    t = time.perf_counter()
    sess.run(None, {name: x})
    times.append(time.perf_counter() - t)
times.sort()
print(f"{times[len(times) // 2] * 1e3:.3f} {ort.__version__}")
"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median ms of ONNX Runtime on `path`, and its version.
fn onnxruntime_ms(path: &std::path::Path, threads: usize, n_mels: usize) -> (f64, String) {
    let python = std::env::var("AMANUENSIS_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", ORT_SCRIPT])
        .arg(path)
        .args([threads.to_string(), n_mels.to_string(), RUNS.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    if !out.status.success() {
        eprintln!(
            "ONNX Runtime baseline failed: {}\ninstall it with `{python} -m pip install \
             onnxruntime numpy` (or set AMANUENSIS_PYTHON)",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        std::process::exit(1);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let ms = parts
        .next()
        .and_then(|v| v.parse().ok())
        .expect("the script prints ms");
    (ms, parts.next().unwrap_or("?").to_string())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let models = std::env::var("AMANUENSIS_BENCH_MODELS").unwrap_or_else(|_| "tiny.en,base".into());
    println!("amanuensis encoder benchmark: one 30 s window, median of {RUNS} runs");
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "model",
        "threads",
        "tract ms",
        "cpu ms",
        "emu ms",
        "ORT ms",
        "cpu/ORT",
        "emu/cpu",
        "cpu/tract"
    );
    let mut profiles = Vec::new();
    for name in models.split(',') {
        let dir = resolve_model(name, &mut |line| eprintln!("{line}"))
            .unwrap_or_else(|e| panic!("cannot obtain {name}: {e:#}"));
        for threads in [1, 2] {
            let mut ms = Vec::new();
            let mut files = None;
            let mut n_mels = 80;
            for backend in [Backend::Tract, Backend::Cpu, Backend::Emu] {
                let options = EncoderOptions {
                    threads,
                    backend,
                    ..EncoderOptions::default()
                };
                let encoder = Encoder::load(&dir, &options).expect("the model loads");
                n_mels = encoder.dims().n_mels;
                let mel: Vec<f32> = (0..n_mels * N_FRAMES)
                    .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                    .collect();
                encoder.encode(&mel).expect("the encoder runs");
                let times = (0..RUNS)
                    .map(|_| {
                        let t = Instant::now();
                        encoder.encode(&mel).expect("the encoder runs");
                        t.elapsed()
                    })
                    .collect();
                ms.push(median(times).as_secs_f64() * 1e3);
                if threads == 2 {
                    profiles.push((
                        format!("{name}, {backend}"),
                        encoder.profile(&mel).expect("profiled run").ops,
                    ));
                }
                files = Some(encoder.files().encoder.clone());
            }
            let (ort_ms, version) = onnxruntime_ms(&files.unwrap(), threads, n_mels);
            let (tract_ms, cpu_ms, emu_ms) = (ms[0], ms[1], ms[2]);
            println!(
                "{name:<8} {threads:>7} {tract_ms:>9.1} {cpu_ms:>9.1} {emu_ms:>9.1} {ort_ms:>9.1} \
                 {:>9.2}x {:>9.2}x {:>9.2}x   (onnxruntime {version})",
                cpu_ms / ort_ms,
                emu_ms / cpu_ms,
                cpu_ms / tract_ms
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
