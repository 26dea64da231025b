//! Throughput of the emulated Softmax and GELU kernels at Whisper base's shapes, against a
//! plain float32 loop with std's `exp` measured in the same run:
//! `cargo bench -p amanuensis-kernels --bench elementwise`.

use std::time::{Duration, Instant};

use amanuensis_kernels::bf16::Rounding;
use amanuensis_kernels::gelu::gelu;
use amanuensis_kernels::softmax::softmax_rows;
use rayon::prelude::*;

/// Float32 softmax of each row with std's `exp`, rows spread over rayon like the kernel's.
fn plain_softmax(x: &mut [f32], cols: usize) {
    x.par_chunks_mut(cols).for_each(|row| {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        let r = 1.0 / s;
        row.iter_mut().for_each(|v| *v *= r);
    });
}

/// `erf` in float32 by Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7), with
/// std's `exp`.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

/// The exact (erf) GELU in float32, chunks spread over rayon like the kernel's.
fn plain_gelu(x: &mut [f32]) {
    x.par_chunks_mut(1 << 15).for_each(|chunk| {
        for v in chunk.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// Median time of `runs` calls of `f`, each on a fresh copy of `input` (the copy not timed).
fn time(input: &[f32], runs: usize, mut f: impl FnMut(&mut [f32])) -> Duration {
    let mut work = input.to_vec();
    f(&mut work);
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            work.copy_from_slice(input);
            let t = Instant::now();
            f(&mut work);
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn values(len: usize, spread: f32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761) >> 8;
            (h as f32 / (1u32 << 24) as f32 - 0.5) * 2.0 * spread
        })
        .collect()
}

fn report(label: &str, elements: usize, kernel: Duration, plain: Duration) {
    let rate = |d: Duration| elements as f64 / d.as_secs_f64() / 1e9;
    println!(
        "{label:<30} {:8.2} ms {:6.2} G elem/s | plain f32 {:8.2} ms {:6.2} G elem/s | plain / kernel {:5.2}",
        kernel.as_secs_f64() * 1e3,
        rate(kernel),
        plain.as_secs_f64() * 1e3,
        rate(plain),
        plain.as_secs_f64() / kernel.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounding = Rounding::NearestEven;
    for threads in [rayon::current_num_threads(), 1] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool");
        println!("emulated Softmax and GELU (bf16 contract, {threads} threads)");
        pool.install(|| {
            let (rows, cols) = (8 * 1500, 1500);
            let x = values(rows * cols, 8.0);
            let kernel = time(&x, 9, |x| softmax_rows(rounding, x, cols));
            let plain = time(&x, 9, |x| plain_softmax(x, cols));
            report("softmax [8*1500, 1500]", rows * cols, kernel, plain);
            for (rows, cols) in [(1500, 2048), (1500, 5120)] {
                let x = values(rows * cols, 5.0);
                let kernel = time(&x, 11, |x| gelu(rounding, x));
                let plain = time(&x, 11, plain_gelu);
                report(
                    &format!("gelu [{rows}, {cols}]"),
                    rows * cols,
                    kernel,
                    plain,
                );
            }
        });
    }
}
