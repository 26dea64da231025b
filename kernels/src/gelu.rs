//! The GELU contract: the tanh form of GELU, elementwise, bfloat16 in and out, built on the
//! contract's exponential and reciprocal ([`crate::aie_math`]).
//!
//! Whisper's GELU is the exact one, `x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))`; the kernel
//! computes the tanh form `0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`
//! (Hendrycks and Gimpel, "Gaussian Error Linear Units", 2016, section 2), written as
//! `x / (1 + exp(-2u))`, which is the same function and loses no accuracy where
//! `1 + tanh(u)` would cancel.
//!
//! # Numerics
//!
//! With `b(v)` the rounding to bfloat16 under the contract's [`Rounding`]:
//!
//! 1. `xb = b(x)` (entry); if `xb >= 7` the result is `xb` (also for `+inf`), if `xb <= -7`
//!    it is `-0` (also for `-inf`): beyond 7 the tanh form is `x` to float32 precision, and
//!    below -7 its magnitude is under `3e-15` (the exact GELU's, under `1e-11`);
//! 2. `s = xb * xb`, `sh = b(s)`, `sl = b(s - sh)` (when `s` is normal, all three are exact
//!    and `s == sh + sl`);
//! 3. `g = GELU_A + (sh * GELU_B_HI + (sl * GELU_B_HI + sh * GELU_B_LO))`, about
//!    `-2 sqrt(2/pi) (1 + 0.044715 x^2)`; `gh = b(g)`, `gl = b(g - gh)`;
//! 4. `w = xb * gl + xb * gh` (`= -2u`, `|w| < 36`);
//! 5. `d = 1 + exp(w)` with the contract's exponential; `(rh, rl)` = the contract's
//!    reciprocal of `d`;
//! 6. the result is `b(xb * rl + xb * rh)` (exit); a NaN input gives the canonical NaN.
//!
//! Measured over every bfloat16 input in `[-10, 10]`: before the exit rounding the value is
//! within `1.1e-4` absolute and `2.2e-4` (`2^-12.2`) relative of the float64 tanh form with
//! nearest-even rounding (`2.0e-4` and `7.3e-4` with truncation), and the output is within
//! one bfloat16 ulp of the correctly rounded tanh form. The tanh form itself differs from the
//! exact GELU by at most `4.73e-4` (at `x = 2.70`); the output differs from the exact GELU of
//! the bfloat16 input by at most `8.2e-3` (nearest even, at `x = 2.75`, where half a bfloat16
//! ulp is `7.8e-3`) or `3.1e-2` (truncation, at `x = 6.97`, one ulp).

use rayon::prelude::*;

use crate::aie_math::{self, Isa, LANES, lanes};
use crate::bf16::Rounding;

/// `-2 sqrt(2/pi)` (float32; added, never a multiplication operand).
pub const GELU_A: f32 = -1.595_769_2;
/// `-2 sqrt(2/pi) * 0.044715` rounded to bfloat16 (nearest even): the cubic coefficient of
/// the tanh form times `-2`, high part.
pub const GELU_B_HI: f32 = -0.071_289_06;
/// `-2 sqrt(2/pi) * 0.044715 - GELU_B_HI` rounded to bfloat16 (nearest even); the two parts
/// sum to the coefficient within `5e-8`.
pub const GELU_B_LO: f32 = -6.580_353e-5;
/// Inputs at or beyond this magnitude saturate: `x` for positive, `-0` for negative.
pub const GELU_SATURATION: f32 = 7.0;

/// Elements per rayon task.
const TASK_ELEMENTS: usize = 1 << 15;

/// GELU of every value of `x` in place, under the contract above; the results are bfloat16
/// values held in float32. Chunks are spread over rayon's current pool; the bits do not
/// depend on the number of threads.
pub fn gelu(rounding: Rounding, x: &mut [f32]) {
    let isa = Isa::detect();
    x.par_chunks_mut(TASK_ELEMENTS)
        .for_each(|chunk| match rounding {
            Rounding::NearestEven => run::<false>(isa, chunk),
            Rounding::Truncate => run::<true>(isa, chunk),
        });
}

fn run<const TRUNC: bool>(isa: Isa, x: &mut [f32]) {
    match isa {
        Isa::Portable => body::<TRUNC, false>(x),
        // SAFETY: `Isa::detect` found AVX2 and FMA on the running CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { body_avx2::<TRUNC>(x) },
        // SAFETY: `Isa::detect` found AVX-512F on the running CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { body_avx512::<TRUNC>(x) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2<const TRUNC: bool>(x: &mut [f32]) {
    body::<TRUNC, true>(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn body_avx512<const TRUNC: bool>(x: &mut [f32]) {
    body::<TRUNC, true>(x)
}

/// Elements processed together: eight 16-lane vectors whose independent dependency chains the
/// CPU overlaps.
const BLOCK: usize = 8 * LANES;

#[inline(always)]
fn body<const TRUNC: bool, const FMA: bool>(x: &mut [f32]) {
    let mut blocks = x.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        let block: &mut [f32; BLOCK] = block.try_into().unwrap();
        *block = gelu_lanes::<TRUNC, FMA, BLOCK>(*block);
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let mut padded = [0.0f32; BLOCK];
        padded[..tail.len()].copy_from_slice(tail);
        let y = gelu_lanes::<TRUNC, FMA, BLOCK>(padded);
        tail.copy_from_slice(&y[..tail.len()]);
    }
}

/// `N` lanes: entry, the tanh form, exit, saturation.
#[inline(always)]
fn gelu_lanes<const TRUNC: bool, const FMA: bool, const N: usize>(x: [f32; N]) -> [f32; N] {
    let rb = aie_math::rb::<TRUNC>;
    let madd = aie_math::madd::<FMA>;
    let xb = lanes!(N, |x| aie_math::entry::<TRUNC>(x));
    let sh = lanes!(N, |xb| rb(xb * xb));
    let sl = lanes!(N, |xb, sh| rb(xb * xb - sh));
    let g = lanes!(N, |sh, sl| GELU_A
        + madd(sh, GELU_B_HI, madd(sl, GELU_B_HI, sh * GELU_B_LO)));
    let gh = lanes!(N, |g| rb(g));
    let gl = lanes!(N, |g, gh| rb(g - gh));
    let w = lanes!(N, |xb, gh, gl| madd(xb, gl, xb * gh));
    let e = aie_math::exp_lanes::<TRUNC, FMA, N>(w);
    let d = lanes!(N, |e| 1.0 + e);
    let (rh, rl) = aie_math::recip_lanes::<TRUNC, FMA, N>(d);
    lanes!(N, |xb, rh, rl| {
        let y = aie_math::exit::<TRUNC>(madd(xb, rl, xb * rh));
        if xb >= GELU_SATURATION {
            xb
        } else if xb <= -GELU_SATURATION {
            -0.0
        } else {
            y
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aie_math::reference;
    use crate::bf16;
    use proptest::prelude::*;

    const ROUNDINGS: [Rounding; 2] = [Rounding::NearestEven, Rounding::Truncate];

    /// The tanh form as the documentation states it, before the exit rounding.
    fn reference_unrounded(rounding: Rounding, xb: f32) -> f32 {
        let b = |v: f32| bf16::round(v, rounding);
        let s = xb * xb;
        let sh = b(s);
        let sl = b(s - sh);
        let g = GELU_A + (sh * GELU_B_HI + (sl * GELU_B_HI + sh * GELU_B_LO));
        let gh = b(g);
        let gl = b(g - gh);
        let w = xb * gl + xb * gh;
        let d = 1.0 + reference::exp(rounding, w);
        let (rh, rl) = reference::recip(rounding, d);
        xb * rl + xb * rh
    }

    /// The contract as plainly as possible, one value at a time.
    fn reference(rounding: Rounding, x: f32) -> f32 {
        let xb = bf16::round(x, rounding);
        if xb >= GELU_SATURATION {
            xb
        } else if xb <= -GELU_SATURATION {
            -0.0
        } else {
            reference::out(rounding, reference_unrounded(rounding, xb))
        }
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Every bfloat16 bit pattern (NaNs, infinities, subnormals included).
    fn every_bf16() -> Vec<f32> {
        (0..=0xffffu32).map(|h| f32::from_bits(h << 16)).collect()
    }

    #[test]
    fn constants_are_what_they_claim() {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let b = -2.0 * c * 0.044715;
        let round = |v: f64| bf16::round(v as f32, Rounding::NearestEven) as f64;
        assert_eq!(GELU_A, (-2.0 * c) as f32);
        assert_eq!(GELU_B_HI as f64, round(b));
        assert_eq!(GELU_B_LO as f64, round(b - GELU_B_HI as f64));
        assert!((b - GELU_B_HI as f64 - GELU_B_LO as f64).abs() < 5e-8);
    }

    /// Every specialised inner loop is the reference to the bit on every bfloat16 input and
    /// on float32 inputs that are not bfloat16 values, with either rounding.
    #[test]
    fn every_isa_is_the_contract_to_the_bit_on_every_bf16() {
        let mut x = every_bf16();
        x.extend((0..70_000u32).map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761))));
        x.extend((0..20_000).map(|i| i as f32 * 1e-3 - 10.0));
        for rounding in ROUNDINGS {
            let expected: Vec<f32> = x.iter().map(|v| reference(rounding, *v)).collect();
            for isa in Isa::available() {
                let mut y = x.clone();
                match rounding {
                    Rounding::NearestEven => run::<false>(isa, &mut y),
                    Rounding::Truncate => run::<true>(isa, &mut y),
                }
                let bad = y
                    .iter()
                    .zip(&expected)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(
                    bad.is_none(),
                    "{isa:?} {rounding:?} at {}: {} vs {}",
                    x[bad.unwrap()],
                    y[bad.unwrap()],
                    expected[bad.unwrap()]
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Bit-exact against the reference for lengths that are not multiples of 16.
        #[test]
        fn gelu_is_the_contract_to_the_bit(
            values in prop::collection::vec(prop_oneof![
                8 => -8.0f32..8.0, 1 => -1e6f32..1e6, 1 => -1e-30f32..1e-30,
                1 => Just(f32::NEG_INFINITY), 1 => Just(f32::INFINITY),
            ], 1..3000),
            truncate in any::<bool>(),
        ) {
            let rounding = if truncate { Rounding::Truncate } else { Rounding::NearestEven };
            let mut y = values.clone();
            gelu(rounding, &mut y);
            let expected: Vec<f32> = values.iter().map(|v| reference(rounding, *v)).collect();
            prop_assert!(same_bits(&y, &expected));
        }
    }

    /// `erfc` in float64 to about 1e-15: the power series of `erf` below 3, Laplace's
    /// continued fraction above.
    fn erfc(z: f64) -> f64 {
        if z < 0.0 {
            return 2.0 - erfc(-z);
        }
        if z < 3.0 {
            let (mut sum, mut term, mut n) = (0.0, z, 0.0);
            loop {
                let t = term / (2.0 * n + 1.0);
                sum += t;
                if t.abs() <= 1e-17 * sum.abs() {
                    break;
                }
                n += 1.0;
                term *= -z * z / n;
            }
            1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            let mut k = z;
            for i in (1..100).rev() {
                k = z + (i as f64 / 2.0) / k;
            }
            (-z * z).exp() / std::f64::consts::PI.sqrt() / k
        }
    }

    /// The exact GELU, `x * Phi(x)`.
    fn gelu_erf(x: f64) -> f64 {
        0.5 * x * erfc(-x / std::f64::consts::SQRT_2)
    }

    /// The tanh form in float64.
    fn gelu_tanh(x: f64) -> f64 {
        let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        x / (1.0 + (-2.0 * u).exp())
    }

    #[test]
    fn erfc_is_accurate() {
        // Values from the standard tables (Abramowitz and Stegun, table 7.1).
        for (z, e) in [
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 4.677_734_981_047_266e-3),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
        ] {
            assert!(
                (erfc(z) - e).abs() <= 1e-15 + 1e-12 * e,
                "erfc({z}) = {}",
                erfc(z)
            );
        }
    }

    /// The documented error figures, over every bfloat16 input in `[-10, 10]`.
    #[test]
    fn error_against_float64() {
        let mut tanh_vs_erf = 0f64;
        let mut x = -10.0f64;
        while x <= 10.0 {
            tanh_vs_erf = tanh_vs_erf.max((gelu_tanh(x) - gelu_erf(x)).abs());
            x += 1e-4;
        }
        eprintln!("tanh form vs exact GELU: max abs {tanh_vs_erf:.3e}");
        assert!(tanh_vs_erf < 4.74e-4);
        // Bounds: the documented (measured) figures, rounded up in their last digit.
        for (rounding, out_bound, abs_bound, rel_bound) in [
            (Rounding::NearestEven, 8.2e-3, 1.1e-4, 2.2e-4),
            (Rounding::Truncate, 3.13e-2, 2.0e-4, 7.3e-4),
        ] {
            let (mut pre_abs, mut pre_rel, mut out_abs, mut ulps) = (0f64, 0f64, 0f64, 0i64);
            for x in every_bf16().into_iter().filter(|x| x.abs() <= 10.0) {
                let y = {
                    let mut y = [x];
                    gelu(rounding, &mut y);
                    y[0]
                };
                out_abs = out_abs.max((y as f64 - gelu_erf(x as f64)).abs());
                if x.abs() < GELU_SATURATION {
                    let t = gelu_tanh(x as f64);
                    let pre = reference_unrounded(rounding, x) as f64;
                    pre_abs = pre_abs.max((pre - t).abs());
                    if t.abs() > 1e-30 {
                        pre_rel = pre_rel.max(((pre - t) / t).abs());
                    }
                    // Distance in bfloat16 ulps to the correctly rounded tanh form.
                    let c = bf16::round(t as f32, rounding);
                    if c != 0.0 && y != 0.0 {
                        assert_eq!(c.signum(), y.signum());
                        ulps = ulps.max((c.to_bits() as i64 - y.to_bits() as i64).abs() >> 16);
                    }
                }
            }
            eprintln!(
                "gelu {rounding:?}: before rounding {pre_abs:.3e} abs, {pre_rel:.3e} rel; \
                 output vs exact GELU {out_abs:.3e}; {ulps} ulp from the rounded tanh form"
            );
            assert!(
                pre_abs <= abs_bound && pre_rel <= rel_bound,
                "{pre_abs} {pre_rel}"
            );
            assert!(out_abs <= out_bound, "{out_abs}");
            assert!(ulps <= 1);
        }
    }

    #[test]
    fn nan_infinities_and_signs() {
        for rounding in ROUNDINGS {
            let mut x = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                100.0,
                -100.0,
            ];
            gelu(rounding, &mut x);
            assert_eq!(x[0].to_bits(), f32::NAN.to_bits());
            assert_eq!(&x[1..3], &[f32::INFINITY, -0.0]);
            assert_eq!(x[3].to_bits(), 0.0f32.to_bits());
            assert_eq!(x[4].to_bits(), (-0.0f32).to_bits());
            assert_eq!(x[5], 100.0);
            assert_eq!(x[6].to_bits(), (-0.0f32).to_bits());
        }
    }

    #[test]
    fn same_bits_on_one_and_two_threads() {
        let x: Vec<f32> = (0..100_003)
            .map(|i| ((i * 7919) % 2003) as f32 / 150.0 - 6.5)
            .collect();
        let run_on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = x.clone();
            pool.install(|| gelu(Rounding::NearestEven, &mut y));
            y
        };
        assert!(same_bits(&run_on(1), &run_on(2)));
    }
}
