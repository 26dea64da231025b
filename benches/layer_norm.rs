//! `CpuLayerNorm` against tract's decomposed LayerNorm: `cargo bench --bench layer_norm`.
//!
//! For `[1500, 512]` (base) and `[1500, 1280]` (large), one thread each, the median time of
//! tract's optimised plan of an ONNX `LayerNormalization` (which decluttering spells out as
//! Reduce, Mul, Sub, RmsNorm, Mul, Add) and of the same model after the `fuse_layer_norm`
//! rewrite, measured in this run, and their ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use amanuensis::rewrite::{RewriteContext, Stage, rewrite};
use tract_onnx::prelude::*;

const RUNS: usize = 50;

fn median_ms(plan: &Arc<TypedRunnableModel>, x: &Tensor) -> f64 {
    let mut times: Vec<Duration> = (0..RUNS + 5)
        .map(|_| {
            let input = x.clone().into_tvalue();
            let t = Instant::now();
            plan.run(tvec!(input)).expect("runs");
            t.elapsed()
        })
        .skip(5)
        .collect();
    times.sort();
    times[RUNS / 2].as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    println!("LayerNorm, one thread, median of {RUNS} runs");
    println!(
        "{:<14} {:>14} {:>16} {:>9}",
        "shape", "tract ms", "CpuLayerNorm ms", "speed-up"
    );
    for d in [512, 1280] {
        let rows = 1500;
        let path = tmp.path().join(format!("ln{d}.onnx"));
        common::write_layer_norm_onnx(&path, rows, d, false);
        let model = common::decluttered(&path);
        let mut fused = model.clone();
        rewrite(&mut fused, &RewriteContext::new(None), &[Stage::Cpu]).unwrap();
        let x: Vec<f32> = common::Rng(3).vec(rows * d, 4.0);
        let x = Tensor::from_shape(&[rows, d], &x).unwrap();
        let tract = model.into_optimized().unwrap().into_runnable().unwrap();
        let ours = fused.into_optimized().unwrap().into_runnable().unwrap();
        let (t_ms, o_ms) = pool.install(|| (median_ms(&tract, &x), median_ms(&ours, &x)));
        println!(
            "{:<14} {t_ms:>14.3} {o_ms:>16.3} {:>8.2}x",
            format!("[{rows}, {d}]"),
            t_ms / o_ms
        );
    }
}
