//! Float32 arithmetic for the CPU's own kernels (not the NPU contract's, which is
//! [`crate::aie_math`]): exponential, log-sum-exp, error function, GELU and softmax, in
//! straight-line code that vectorises.

/// `e^x` to within 2 ulp for `x <= 88`, 0 below `-87.34` (where it is no longer a normal
/// float32), in straight-line code that vectorises: Cephes' `expf` (Stephen L. Moshier,
/// Cephes Math Library 2.2): `x = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by its degree-5
/// minimax polynomial, `2^n` from the exponent bits.
// The constants are Cephes' as published; clippy would truncate digits f32 cannot hold.
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_375;
    const C2: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_15e-4,
        1.398_199_950_7e-3,
        8.333_451_907_3e-3,
        4.166_579_589_4e-2,
        1.666_666_545_9e-1,
        5.000_000_120_1e-1,
    ];
    const MIN: f32 = -87.336_55;
    const MAX: f32 = 88.0;
    // 1.5 * 2^23: adding it rounds to an integer (ties to even) kept in the low mantissa
    // bits, so that 2^n is built with integer operations only (a float-to-int conversion
    // would not vectorise).
    const MAGIC: f32 = 12_582_912.0;
    let underflow = x < MIN;
    let x = x.clamp(MIN, MAX);
    let k = x * LOG2E + MAGIC;
    let n = k - MAGIC;
    let r = n.mul_add(-C2, n.mul_add(-C1, x));
    let mut y = P[0];
    for c in &P[1..] {
        y = y.mul_add(r, *c);
    }
    let y = y.mul_add(r * r, r) + 1.0;
    let two_n = f32::from_bits(k.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    let e = y * two_n;
    if underflow { 0.0 } else { e }
}

/// `ln(sum e^x)` over `x`, with the largest value taken out first (so that no term
/// overflows) and the terms summed in float64; `-inf` when every value is `-inf` or `x` is
/// empty.
pub fn logsumexp(x: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { logsumexp_fma(x) };
    }
    logsumexp_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn logsumexp_fma(x: &[f32]) -> f64 {
    logsumexp_body(x)
}

#[inline(always)]
fn logsumexp_body(x: &[f32]) -> f64 {
    const LANES: usize = 16;
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return max as f64;
    }
    let mut total = 0.0f64;
    for block in x.chunks(1024) {
        let mut lanes = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l += exp(v - max);
            }
        }
        let mut sum = lanes.iter().map(|&l| l as f64).sum::<f64>();
        for &v in chunks.remainder() {
            sum += exp(v - max) as f64;
        }
        total += sum;
    }
    max as f64 + total.ln()
}

/// `erf(x)` within 4e-7 (absolute; measured 2.6e-7 over [-6, 6] by
/// `erf_and_gelu_are_within_their_bounds`), odd in `x`, in straight-line code with one
/// division that vectorises: `x` clamped to [-4, 4] (beyond, erf is 1 in float32 to within
/// 2e-8), then `x P(x^2) / Q(x^2)`, a rational fit of degrees 13 and 8 whose own error is
/// 6.5e-8; the rest is float32 rounding in the two Horner sums and the quotient. The
/// coefficients are those of Eigen's `generic_fast_erf_float` (also XLA's `ErfImpl32`).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let z = x * x;
    let mut p = ERF_NUM[0];
    for c in &ERF_NUM[1..] {
        p = p.mul_add(z, *c);
    }
    let mut q = ERF_DEN[0];
    for c in &ERF_DEN[1..] {
        q = q.mul_add(z, *c);
    }
    x * p / q
}

/// The numerator of [`erf`]'s fit, in `x^2`, highest power first (times `x`).
#[allow(clippy::excessive_precision)]
const ERF_NUM: [f32; 7] = [
    -2.726_142_258_013_06e-10,
    2.770_681_424_959_02e-08,
    -2.101_024_020_825_08e-06,
    -5.692_506_394_623_46e-05,
    -7.349_906_303_268_55e-04,
    -2.954_599_808_540_25e-03,
    -1.609_603_332_624_15e-02,
];

/// The denominator of [`erf`]'s fit, in `x^2`, highest power first.
#[allow(clippy::excessive_precision)]
const ERF_DEN: [f32; 5] = [
    -1.456_607_184_649_96e-05,
    -2.133_740_552_789_05e-04,
    -1.682_826_974_382_03e-03,
    -7.373_329_167_204_68e-03,
    -1.426_473_905_141_89e-02,
];

/// [`gelu`] of 16 lanes at once, the same operations in the same order, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn gelu_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let u = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let u = _mm512_min_ps(_mm512_max_ps(u, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
    let z = _mm512_mul_ps(u, u);
    let mut p = _mm512_set1_ps(ERF_NUM[0]);
    for c in &ERF_NUM[1..] {
        p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(*c));
    }
    let mut q = _mm512_set1_ps(ERF_DEN[0]);
    for c in &ERF_DEN[1..] {
        q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(*c));
    }
    let erf = _mm512_div_ps(_mm512_mul_ps(u, p), q);
    _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.5), x),
        _mm512_add_ps(_mm512_set1_ps(1.0), erf),
    )
}

/// GELU as `0.5 x (1 + erf(x / sqrt 2))` (PyTorch's `gelu`, tract's `GeluExact`), with
/// [`erf`]: within `2e-7 |x|` (half of erf's error) plus two float32 roundings of the
/// result, of the exact function.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu`] of every value, in place.
pub fn gelu_slice(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { gelu_slice_avx512(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { gelu_slice_fma(x) };
    }
    x.iter_mut().for_each(|v| *v = gelu(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_fma(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu(*v));
}

/// [`gelu_slice`] sixteen values at a time ([`gelu_avx512`]: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_slice_avx512(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = x.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds 16 values.
        unsafe {
            let v = _mm512_loadu_ps(chunk.as_ptr());
            _mm512_storeu_ps(chunk.as_mut_ptr(), gelu_avx512(v));
        }
    }
    chunks
        .into_remainder()
        .iter_mut()
        .for_each(|v| *v = gelu(*v));
}

/// Softmax of every row of `x` (`cols` values a row), in place: the maximum taken out, [`exp`]
/// of the rest summed in float32 lanes, each value divided by the sum. A row whose values are
/// all `-inf` becomes NaN, as `torch.softmax` gives.
pub fn softmax_rows(x: &mut [f32], cols: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { softmax_rows_fma(x, cols) };
    }
    softmax_rows_body(x, cols)
}

/// [`softmax_rows`] with the rows shared out over rayon's current pool (the same values).
pub fn softmax_rows_par(x: &mut [f32], cols: usize) {
    use rayon::prelude::*;
    if cols == 0 {
        return;
    }
    x.par_chunks_mut(cols * 16.max(4096 / cols))
        .for_each(|rows| softmax_rows(rows, cols));
}

/// [`gelu_slice`] with the values shared out over rayon's current pool (the same values).
pub fn gelu_par(x: &mut [f32]) {
    use rayon::prelude::*;
    x.par_chunks_mut(1 << 14).for_each(gelu_slice);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_fma(x: &mut [f32], cols: usize) {
    softmax_rows_body(x, cols)
}

/// The unnormalised softmax of each row of a row-major `[rows, cols]` `x`, in place: each
/// value becomes `exp(x - max)` with `max` the row's largest value, and `sums[r]` receives
/// row `r`'s sum of them (float32 partial sums of 128 values, those carried in float64).
/// The exponentials are [`exp`]'s bits, whichever path runs.
pub fn exp_rows(x: &mut [f32], cols: usize, sums: &mut [f32]) {
    assert!(cols > 0, "rows of at least one column");
    let rows = x.len() / cols;
    assert!(sums.len() >= rows, "a sum a row");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { exp_rows_avx512(x, cols, sums) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { exp_rows_avx2(x, cols, sums) };
        }
    }
    exp_rows_body(x, cols, sums)
}

/// [`exp_rows_body`] compiled for AVX2 and FMA: its `mul_add`s become the CPU's fused
/// multiply-adds (elsewhere a library call each, which made the encoder's attention four
/// times slower), the same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_rows_avx2(x: &mut [f32], cols: usize, sums: &mut [f32]) {
    exp_rows_body(x, cols, sums)
}

/// [`exp`] of 16 lanes at once, the same operations in the same order, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::excessive_precision)]
pub(crate) fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    const P: [f32; 6] = [
        1.987_569_15e-4,
        1.398_199_950_7e-3,
        8.333_451_907_3e-3,
        4.166_579_589_4e-2,
        1.666_666_545_9e-1,
        5.000_000_120_1e-1,
    ];
    let min = _mm512_set1_ps(-87.336_55);
    let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, min);
    let x = _mm512_min_ps(_mm512_max_ps(x, min), _mm512_set1_ps(88.0));
    // `n`: the product rounded to the nearest integer, ties to even, as adding 1.5 * 2^23
    // rounds it in `exp`.
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693_359_375), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.121_944_4e-4), r);
    let mut y = _mm512_set1_ps(P[0]);
    for c in &P[1..] {
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(*c));
    }
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r),
        _mm512_set1_ps(1.0),
    );
    // `y * 2^n` in one rounding, as `exp`'s product with 2^n built from its exponent bits
    // (`n >= -126`: 2^n is a normal float32), zero where `exp` underflows.
    _mm512_maskz_scalef_ps(!underflow, y, n)
}

/// [`exp_rows`] sixteen values at a time, the row's tail in masked lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_rows_avx512(x: &mut [f32], cols: usize, sums: &mut [f32]) {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    let tail = cols % LANES;
    let whole = cols - tail;
    let tail_mask: __mmask16 = ((1u32 << tail) - 1) as u16;
    for (row, sum) in x.chunks_exact_mut(cols).zip(sums.iter_mut()) {
        let p = row.as_mut_ptr();
        // SAFETY: the loads and stores read and write `row[c .. c + 16]` for `c + 16 <=
        // whole <= cols`, and the tail's lanes `whole .. cols` through the mask only.
        unsafe {
            // Four maxima side by side: one would wait on each comparison before the next.
            let mut ms = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
            let mut c = 0;
            while c + 4 * LANES <= whole {
                for (i, m) in ms.iter_mut().enumerate() {
                    *m = _mm512_max_ps(*m, _mm512_loadu_ps(p.add(c + i * LANES)));
                }
                c += 4 * LANES;
            }
            while c < whole {
                ms[0] = _mm512_max_ps(ms[0], _mm512_loadu_ps(p.add(c)));
                c += LANES;
            }
            let mut m = _mm512_max_ps(_mm512_max_ps(ms[0], ms[1]), _mm512_max_ps(ms[2], ms[3]));
            if tail > 0 {
                let t = _mm512_mask_loadu_ps(m, tail_mask, p.add(whole));
                m = _mm512_max_ps(m, t);
            }
            let m = _mm512_set1_ps(_mm512_reduce_max_ps(m));
            let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
            let mut part = _mm512_setzero_ps();
            let mut fold = |part: &mut __m512| {
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(*part)));
                hi = _mm512_add_pd(
                    hi,
                    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                        _mm512_castps_pd(*part),
                    ))),
                );
                *part = _mm512_setzero_ps();
            };
            for (i, c) in (0..whole).step_by(LANES).enumerate() {
                let e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(p.add(c)), m));
                _mm512_storeu_ps(p.add(c), e);
                part = _mm512_add_ps(part, e);
                if i % 8 == 7 {
                    fold(&mut part);
                }
            }
            if tail > 0 {
                let x = _mm512_maskz_loadu_ps(tail_mask, p.add(whole));
                let e = _mm512_maskz_mov_ps(tail_mask, exp_avx512(_mm512_sub_ps(x, m)));
                _mm512_mask_storeu_ps(p.add(whole), tail_mask, e);
                part = _mm512_add_ps(part, e);
            }
            fold(&mut part);
            *sum = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)) as f32;
        }
    }
}

/// [`exp_rows`] in scalar code: the same exponentials, summed in float32 over the same
/// 128-value blocks (in another order), those sums in float64.
#[inline(always)]
fn exp_rows_body(x: &mut [f32], cols: usize, sums: &mut [f32]) {
    const LANES: usize = 16;
    for (row, sum) in x.chunks_exact_mut(cols).zip(sums.iter_mut()) {
        let max = max_of(row);
        let mut total = 0f64;
        for block in row.chunks_mut(LANES * 8) {
            let mut part = 0f32;
            for v in block.iter_mut() {
                *v = exp(*v - max);
                part += *v;
            }
            total += part as f64;
        }
        *sum = total as f32;
    }
}

/// The largest value (`-inf` for none), in lanes that vectorise (NaN is not looked for).
#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = if v > *l { v } else { *l };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(chunks.remainder()) {
        max = if v > max { v } else { max };
    }
    max
}

#[inline(always)]
fn softmax_rows_body(x: &mut [f32], cols: usize) {
    const LANES: usize = 16;
    for row in x.chunks_exact_mut(cols) {
        let max = max_of(row);
        let mut lanes = [0.0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
                *v = exp(*v - max);
                *l += *v;
            }
        }
        let mut sum = lanes.iter().sum::<f32>();
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_the_scalar_exp_to_the_bit() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 on this CPU: the vector exp is not used here, nothing to test");
            return;
        }
        let mut x = -100.0f32;
        while x <= 100.0 {
            let lanes: [f32; 16] = std::array::from_fn(|i| x + i as f32 * 0.000_71);
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F is present (checked above); `lanes` and `got` hold 16 floats.
            unsafe {
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    exp_avx512(_mm512_loadu_ps(lanes.as_ptr())),
                )
            };
            for (g, l) in got.iter().zip(lanes) {
                assert_eq!(g.to_bits(), exp(l).to_bits(), "exp({l})");
            }
            x += 0.011_3;
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_std() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (ours, std) = (exp(x), x.exp());
            let ulp = f32::EPSILON * std.max(f32::MIN_POSITIVE);
            assert!((ours - std).abs() <= 2.0 * ulp, "exp({x}): {ours} vs {std}");
            x += 0.001_37;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn vector_gelu_is_the_scalar_gelu_to_the_bit() {
        let mut x: Vec<f32> = (0..40_000)
            .map(|i| (i as f32 - 20_000.0) * 0.000_71)
            .collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0, f32::MAX, f32::MIN]);
        let mut vector = x.clone();
        gelu_slice(&mut vector);
        for (v, x) in vector.iter().zip(&x) {
            assert_eq!(v.to_bits(), gelu(*x).to_bits(), "gelu({x})");
        }
    }

    #[test]
    fn erf_and_gelu_are_within_their_bounds() {
        let mut x = -6.0f64;
        let (mut worst_erf, mut worst_gelu) = (0.0f64, 0.0f64);
        while x <= 6.0 {
            let e = libm::erf(x);
            worst_erf = worst_erf.max((erf(x as f32) as f64 - e).abs());
            let g = 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let ours = gelu(x as f32) as f64;
            // Half of erf's error, scaled by |x|, and the result's roundings.
            assert!(
                (ours - g).abs() <= 2e-7 * x.abs() + g.abs() * 2f64.powi(-22),
                "gelu({x}): {ours} vs {g}"
            );
            worst_gelu = worst_gelu.max((ours - g).abs());
            x += 0.000_731;
        }
        // Measured 2.6e-7; the bound leaves half as much again.
        assert!(worst_erf <= 4e-7, "erf within {worst_erf:e}");
        eprintln!("erf within {worst_erf:e}, gelu within {worst_gelu:e}");
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut x: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let want: Vec<f64> = x
            .chunks(37)
            .flat_map(|r| {
                let m = r.iter().copied().fold(f32::MIN, f32::max) as f64;
                let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
                r.iter()
                    .map(move |&v| (v as f64 - m).exp() / s)
                    .collect::<Vec<_>>()
            })
            .collect();
        softmax_rows(&mut x, 37);
        for (a, b) in x.iter().zip(&want) {
            assert!((*a as f64 - b).abs() <= 2e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn logsumexp_matches_f64() {
        let x: Vec<f32> = (0..51_865)
            .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
            .chain([f32::NEG_INFINITY])
            .collect();
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        assert!(
            (logsumexp(&x) - want).abs() < 1e-6,
            "{} vs {want}",
            logsumexp(&x)
        );
        assert_eq!(logsumexp(&[f32::NEG_INFINITY; 3]), f64::NEG_INFINITY);
    }
}
