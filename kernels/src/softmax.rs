//! The Softmax contract: row-wise over the last axis, bfloat16 in and out, with the
//! contract's exponential ([`crate::aie_math::exp`]).
//!
//! # Numerics
//!
//! For a row `x[0..cols]`, with `b(v)` the rounding to bfloat16 under the contract's
//! [`Rounding`]:
//!
//! 1. `xb[i] = b(x[i])` (entry);
//! 2. `m = max(xb)`, exact (bfloat16 values; the order does not matter);
//! 3. `e[i] = b(exp(xb[i] - m))`, the difference a float32 subtraction, `exp` the contract's
//!    exponential (`+0` below `-44`);
//! 4. `s` = the sum of the `e[i]` in float32 over 16 lanes: lane `j` adds `e[j], e[j+16], ...`
//!    in increasing order to `+0`, and the lanes are combined by [`crate::aie_math::tree_sum`];
//! 5. `r = 1 / s`, an IEEE float32 division (once per row, on the scalar unit);
//!    `rh = b(r)`, `rl = b(r - rh)`;
//! 6. `y[i] = b(e[i] * rl + e[i] * rh)` (exit).
//!
//! Since `exp(0) = 1` exactly, `1 <= s <= cols`. A row holding a NaN or `+inf`, or only
//! `-inf`, gives a row of NaN (as the mathematical definition and PyTorch do: `inf - inf`
//! and `0 / 0`); `-inf` elements of other rows give `0` (masking). Every NaN output is the
//! canonical quiet NaN.
//!
//! Against the exact softmax of the bfloat16 inputs, each output is within a relative
//! `3 * 2^-8` plus `1e-19` (nearest even; `e`, `s` and `y` each carry one bfloat16 rounding)
//! or `2 * 2^-7` plus `1e-19` (truncation; the roundings of `e` and `s` go the same way and
//! partly cancel). Measured on rows of 2 to 1500 logits: at most `7.0e-3` relative (nearest
//! even) and `1.1e-2` (truncation).

use rayon::prelude::*;

use crate::aie_math::{self, Isa, LANES};
use crate::bf16::Rounding;

/// Elements per rayon task, about: enough to amortise a task, few enough to balance cores.
const TASK_ELEMENTS: usize = 1 << 15;

/// Softmax of each row of `x` (`rows x cols`, row-major, `rows = x.len() / cols`) in place,
/// under the contract above; the results are bfloat16 values held in float32. Rows are spread
/// over rayon's current pool; the bits do not depend on the number of threads.
///
/// Panics if `cols` is zero or does not divide `x.len()`.
pub fn softmax_rows(rounding: Rounding, x: &mut [f32], cols: usize) {
    assert!(cols >= 1, "softmax over an empty axis");
    assert_eq!(
        x.len() % cols,
        0,
        "softmax input of {} values is not a whole number of rows of {cols}",
        x.len()
    );
    let rows_per_task = (TASK_ELEMENTS / cols).max(1);
    let isa = Isa::detect();
    x.par_chunks_mut(rows_per_task * cols)
        .for_each(|rows| match rounding {
            Rounding::NearestEven => run::<false>(isa, rows, cols),
            Rounding::Truncate => run::<true>(isa, rows, cols),
        });
}

/// [`softmax_rows`] on the calling thread only: the same bits.
pub fn softmax_rows_here(rounding: Rounding, x: &mut [f32], cols: usize) {
    assert!(cols >= 1, "softmax over an empty axis");
    assert_eq!(x.len() % cols, 0, "whole rows of {cols}");
    let isa = Isa::detect();
    match rounding {
        Rounding::NearestEven => run::<false>(isa, x, cols),
        Rounding::Truncate => run::<true>(isa, x, cols),
    }
}

fn run<const TRUNC: bool>(isa: Isa, rows: &mut [f32], cols: usize) {
    match isa {
        Isa::Portable => rows_body::<TRUNC, false>(rows, cols),
        // SAFETY: `Isa::detect` found AVX2 and FMA on the running CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { rows_avx2::<TRUNC>(rows, cols) },
        // SAFETY: `Isa::detect` found AVX-512F on the running CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { rows_avx512::<TRUNC>(rows, cols) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const TRUNC: bool>(rows: &mut [f32], cols: usize) {
    rows_body::<TRUNC, true>(rows, cols)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512<const TRUNC: bool>(rows: &mut [f32], cols: usize) {
    rows_body::<TRUNC, true>(rows, cols)
}

#[inline(always)]
fn rows_body<const TRUNC: bool, const FMA: bool>(rows: &mut [f32], cols: usize) {
    for row in rows.chunks_exact_mut(cols) {
        row_body::<TRUNC, FMA>(row);
    }
}

/// One row, in three passes over 16-lane chunks; the tail is a chunk padded with lanes that
/// take no part in the max or the sum.
#[inline(always)]
fn row_body<const TRUNC: bool, const FMA: bool>(row: &mut [f32]) {
    // Rounding is monotone, so the largest rounded value is the rounded largest value.
    let mut lanes_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        max_into(&mut lanes_max, chunk.try_into().unwrap());
    }
    let mut tail = [f32::NEG_INFINITY; LANES];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    max_into(&mut lanes_max, &tail);
    let m = aie_math::entry::<TRUNC>(
        lanes_max
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a }),
    );

    let mut sums = [0.0f32; LANES];
    let mut blocks = row.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        exp_block::<TRUNC, FMA>(block.try_into().unwrap(), m, &mut sums);
    }
    let mut chunks = blocks.into_remainder().chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        exp_chunk::<TRUNC, FMA>(chunk.try_into().unwrap(), m, &mut sums, LANES);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut padded = [0.0f32; LANES];
        padded[..tail.len()].copy_from_slice(tail);
        exp_chunk::<TRUNC, FMA>(&mut padded, m, &mut sums, tail.len());
        tail.copy_from_slice(&padded[..tail.len()]);
    }

    let r = 1.0 / aie_math::tree_sum(sums);
    let rh = aie_math::rb::<TRUNC>(r);
    let rl = aie_math::rb::<TRUNC>(r - rh);
    for v in row.iter_mut() {
        *v = aie_math::exit::<TRUNC>(aie_math::madd::<FMA>(*v, rl, *v * rh));
    }
}

/// `lanes[j] = max(lanes[j], x[j])`.
#[inline(always)]
fn max_into(lanes: &mut [f32; LANES], x: &[f32; LANES]) {
    for (lane, v) in lanes.iter_mut().zip(x) {
        *lane = if *v > *lane { *v } else { *lane };
    }
}

/// Elements of the exponential pass processed together: four 16-lane chunks whose
/// independent dependency chains the CPU overlaps.
const BLOCK: usize = 4 * LANES;

/// `x[j] = b(exp(b(x[j]) - m))` for a block of chunks, each chunk's lanes then added to
/// `sums`, chunk after chunk.
#[inline(always)]
fn exp_block<const TRUNC: bool, const FMA: bool>(
    x: &mut [f32; BLOCK],
    m: f32,
    sums: &mut [f32; LANES],
) {
    let t = aie_math::lanes!(BLOCK, |x| aie_math::entry::<TRUNC>(x) - m);
    let e = aie_math::exp_lanes::<TRUNC, FMA, BLOCK>(t);
    *x = aie_math::lanes!(BLOCK, |e| aie_math::rb::<TRUNC>(e));
    for chunk in x.chunks_exact(LANES) {
        for (s, e) in sums.iter_mut().zip(chunk) {
            *s += e;
        }
    }
}

/// `x[j] = b(exp(b(x[j]) - m))` for 16 lanes, added to `sums[j]` for the first `used` lanes.
#[inline(always)]
fn exp_chunk<const TRUNC: bool, const FMA: bool>(
    x: &mut [f32; LANES],
    m: f32,
    sums: &mut [f32; LANES],
    used: usize,
) {
    let t = aie_math::lanes!(LANES, |x| aie_math::entry::<TRUNC>(x) - m);
    let e = aie_math::exp_lanes::<TRUNC, FMA, LANES>(t);
    *x = aie_math::lanes!(LANES, |e| aie_math::rb::<TRUNC>(e));
    for (j, (s, e)) in sums.iter_mut().zip(x.iter()).enumerate() {
        *s += if j < used { *e } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aie_math::reference;
    use crate::bf16;
    use proptest::prelude::*;

    /// The contract as plainly as possible: one row at a time, one element at a time, in the
    /// documented order.
    fn reference(rounding: Rounding, x: &[f32], cols: usize) -> Vec<f32> {
        let b = |v: f32| bf16::round(v, rounding);
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            let xb: Vec<f32> = row.iter().map(|v| b(*v)).collect();
            let m = xb
                .iter()
                .copied()
                .filter(|v| !v.is_nan())
                .fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = xb
                .iter()
                .map(|v| b(reference::exp(rounding, v - m)))
                .collect();
            let s = reference::sum(&e);
            let r = 1.0 / s;
            let rh = b(r);
            let rl = b(r - rh);
            out.extend(e.iter().map(|e| reference::out(rounding, e * rh + e * rl)));
        }
        out
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Values of the kinds attention rows hold: ordinary logits, large and tiny magnitudes,
    /// masked (`-inf`) entries, and repeats.
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -12.0f32..12.0,
            2 => -1.0e4f32..1.0e4,
            1 => -1.0e-30f32..1.0e-30,
            1 => Just(f32::NEG_INFINITY),
            1 => Just(3.0f32),
        ]
    }

    fn rounding() -> impl Strategy<Value = Rounding> {
        prop_oneof![Just(Rounding::NearestEven), Just(Rounding::Truncate)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Bit-exact against the plain reference, for shapes that are not multiples of 16.
        #[test]
        fn softmax_is_the_contract_to_the_bit(
            rows in 1usize..20, cols in 1usize..300, seed in prop::collection::vec(value(), 1..64),
            all_equal in prop::bool::weighted(0.1), rounding in rounding(),
        ) {
            let x: Vec<f32> = (0..rows * cols)
                .map(|i| if all_equal { seed[0] } else { seed[(i * 7 + i / 3) % seed.len()] + (i % 13) as f32 * 0.37 })
                .collect();
            let mut y = x.clone();
            softmax_rows(rounding, &mut y, cols);
            let expected = reference(rounding, &x, cols);
            prop_assert!(same_bits(&y, &expected), "[{}x{}] {:?}", rows, cols, rounding);
        }
    }

    /// Every specialised inner loop this CPU can run gives the contract's bits, including on
    /// subnormal, huge and infinite inputs.
    #[test]
    fn every_isa_is_the_contract_to_the_bit() {
        let mut special = vec![
            0.0,
            -0.0,
            1e-45,
            -1e-40,
            3e38,
            -3e38,
            88.0,
            -88.0,
            43.99,
            -44.0,
            -44.1,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ];
        special.extend((0..500).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0));
        for rounding in [Rounding::NearestEven, Rounding::Truncate] {
            for cols in [1, 7, 16, 33, 100, 513] {
                let x: Vec<f32> = (0..cols * 9)
                    .map(|i| special[(i * 31 + i / cols) % special.len()])
                    .collect();
                let expected = reference(rounding, &x, cols);
                for isa in Isa::available() {
                    let mut y = x.clone();
                    match rounding {
                        Rounding::NearestEven => run::<false>(isa, &mut y, cols),
                        Rounding::Truncate => run::<true>(isa, &mut y, cols),
                    }
                    assert!(same_bits(&y, &expected), "{isa:?} {rounding:?} cols {cols}");
                }
            }
        }
    }

    /// Exact softmax (float64) of the bfloat16 inputs.
    fn exact(rounding: Rounding, row: &[f32]) -> Vec<f64> {
        let xb: Vec<f64> = row
            .iter()
            .map(|v| bf16::round(*v, rounding) as f64)
            .collect();
        let m = xb.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = xb.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|e| e / s).collect()
    }

    /// Against the exact softmax: within `3 * 2^-8` relative (nearest even: one bfloat16
    /// rounding each of `e`, `s` and `y`, plus the exponential's `2^-13.8`) or `2 * 2^-7`
    /// (truncation), plus `1e-19` absolute for the terms flushed below `exp(-44)`.
    #[test]
    fn error_against_float64() {
        for (rounding, rel) in [
            (Rounding::NearestEven, 3.0 * 2f64.powi(-8) + 2e-4),
            (Rounding::Truncate, 2.0 * 2f64.powi(-7) + 3e-4),
        ] {
            let mut worst = 0f64;
            for (cols, spread) in [(1500, 8.0f32), (1500, 30.0), (64, 3.0), (5, 60.0), (2, 1.0)] {
                let x: Vec<f32> = (0..cols * 40)
                    .map(|i| {
                        let h = (i as u32).wrapping_mul(2_654_435_761) >> 8;
                        (h as f32 / (1u32 << 24) as f32 - 0.5) * 2.0 * spread
                    })
                    .collect();
                let mut y = x.clone();
                softmax_rows(rounding, &mut y, cols);
                for (row, out) in x.chunks(cols).zip(y.chunks(cols)) {
                    for (e, o) in exact(rounding, row).iter().zip(out) {
                        let err = (*o as f64 - e).abs();
                        assert!(err <= e * rel + 1e-19, "{rounding:?}: {o} vs {e}");
                        if *e > 1e-15 {
                            worst = worst.max(err / e);
                        }
                    }
                }
            }
            eprintln!("softmax {rounding:?}: max relative error {worst:.3e}");
        }
    }

    #[test]
    fn rows_sum_to_one_and_one_hot_is_exact() {
        let mut x: Vec<f32> = (0..1500 * 3).map(|i| (i % 97) as f32 * 0.05).collect();
        softmax_rows(Rounding::NearestEven, &mut x, 1500);
        for row in x.chunks(1500) {
            let s: f64 = row.iter().map(|v| *v as f64).sum();
            assert!((s - 1.0).abs() < 2e-3, "row sums to {s}");
        }
        let mut x = vec![0.0, -100.0, f32::NEG_INFINITY, -50.0];
        softmax_rows(Rounding::NearestEven, &mut x, 4);
        assert_eq!(x, [1.0, 0.0, 0.0, 0.0]);
        let mut x = vec![5.0; 10];
        softmax_rows(Rounding::NearestEven, &mut x, 10);
        assert!(x.iter().all(|v| (*v - 0.1).abs() < 1e-3));
    }

    /// NaN or `+inf` in a row, or a row of only `-inf`, gives a row of NaN and no panic; the
    /// other rows are untouched by it.
    #[test]
    fn nan_and_infinities() {
        for rounding in [Rounding::NearestEven, Rounding::Truncate] {
            let mut x = vec![
                1.0,
                f32::NAN,
                2.0, // NaN row
                1.0,
                f32::INFINITY,
                2.0, // +inf row
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY, // all masked
                0.0,
                f32::NEG_INFINITY,
                0.0, // partly masked
            ];
            softmax_rows(rounding, &mut x, 3);
            assert!(
                x[..9].iter().all(|v| v.to_bits() == f32::NAN.to_bits()),
                "{x:?}"
            );
            assert_eq!(&x[9..], &[0.5, 0.0, 0.5]);
        }
    }

    #[test]
    fn same_bits_on_one_and_two_threads() {
        let x: Vec<f32> = (0..37 * 1501)
            .map(|i| ((i * 7919) % 2003) as f32 / 50.0 - 20.0)
            .collect();
        let run_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = x.clone();
            pool.install(|| softmax_rows(Rounding::NearestEven, &mut y, 1501));
            y
        };
        assert!(same_bits(&run_on(1), &run_on(2)));
        assert!(same_bits(
            &run_on(1),
            &reference(Rounding::NearestEven, &x, 1501)
        ));
    }

    #[test]
    #[should_panic(expected = "whole number of rows")]
    fn ragged_input_panics() {
        softmax_rows(Rounding::NearestEven, &mut [0.0; 10], 3);
    }
}
