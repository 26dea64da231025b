//! Float32 arithmetic for the CPU's own kernels (not the NPU contract's, which is
//! [`crate::vmath`]): exponential, log-sum-exp, error function, GELU and softmax, in
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

/// `erf(x)` within 1.5e-7 (absolute), odd in `x`, in two pieces computed side by side (so
/// that the choice vectorises):
/// - `|x| < 1`: `x` times the first twelve terms of the Taylor series of `erf(x) / x` in
///   `x^2` (`2 / sqrt(pi) * (-1)^n / (n! (2n + 1))`; the first term left out is below 2e-9);
/// - `|x| >= 1`: `1 - erfc(|x|)`, `erfc` by the Chebyshev fit of Numerical Recipes' `erfcc`
///   (W. H. Press et al., Numerical Recipes, 2nd ed., 6.2: fractional error below 1.2e-7;
///   here `erfc(1)` is 0.157, so its absolute error is below 2e-8).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const TAYLOR: [f32; 12] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_389_031_837_5,
        0.112_837_916_709_551_26,
        -0.026_866_170_645_131_252,
        0.005_223_977_625_442_188,
        -0.000_854_832_702_345_085_2,
        0.000_120_553_329_817_896_64,
        -1.492_565_035_840_625e-5,
        1.646_211_436_588_924_6e-6,
        -1.636_584_469_123_492_4e-7,
        1.480_719_281_587_921_8e-8,
        -1.229_055_530_171_792_6e-9,
    ];
    const ERFCC: [f32; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let ax = x.abs();
    let z = x * x;
    let mut p = TAYLOR[11];
    for c in TAYLOR[..11].iter().rev() {
        p = p.mul_add(z, *c);
    }
    let small = x * p;
    let t = 1.0 / 0.5f32.mul_add(ax, 1.0);
    let mut q = ERFCC[9];
    for c in ERFCC[..9].iter().rev() {
        q = q.mul_add(t, *c);
    }
    let erfc = t * exp(q - z);
    let large = 1.0 - erfc;
    let large = if x < 0.0 { -large } else { large };
    if ax < 1.0 { small } else { large }
}

/// GELU as `0.5 x (1 + erf(x / sqrt 2))` (PyTorch's `gelu`, tract's `GeluExact`), with
/// [`erf`]: within `7.5e-8 |x|` (half of erf's error) plus two float32 roundings of the
/// result, of the exact function.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu`] of every value, in place.
pub fn gelu_slice(x: &mut [f32]) {
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

/// The unnormalised softmax down each column of a row-major `[rows, cols]` `src`: `max[c]`
/// receives the column's largest value, `dst` the values `exp(src - max)` written transposed
/// in groups of `group` columns, as the GEMM micro-kernel reads its left operand
/// (`dst[(g * rows + j) * group + r]` is column `g * group + r` of row `j`; the places of
/// columns past `cols` in the last group are left as they are), `sums[c]` the column's sum of
/// them (over up to 1500 keys: eight terms at a time in float32, those partial sums in
/// float64).
pub fn exp_into_groups(
    src: &[f32],
    cols: usize,
    max: &mut [f32],
    group: usize,
    dst: &mut [f32],
    sums: &mut [f32],
) {
    assert!(cols > 0 && group > 0, "columns in groups");
    let rows = src.len() / cols;
    assert!(
        max.len() >= cols && sums.len() >= cols,
        "a max and a sum a column"
    );
    assert!(
        dst.len() >= cols.div_ceil(group) * group * rows,
        "whole groups of dst"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { exp_into_groups_avx512(src, cols, max, group, dst, sums) };
    }
    exp_into_groups_body(src, cols, max, group, dst, sums)
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
    const MAGIC: f32 = 12_582_912.0;
    let min = _mm512_set1_ps(-87.336_55);
    let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, min);
    let x = _mm512_min_ps(_mm512_max_ps(x, min), _mm512_set1_ps(88.0));
    let magic = _mm512_set1_ps(MAGIC);
    let k = _mm512_add_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        magic,
    );
    let n = _mm512_sub_ps(k, magic);
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
    let bits = _mm512_sub_epi32(_mm512_castps_si512(k), _mm512_castps_si512(magic));
    let two_n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        bits,
        _mm512_set1_epi32(127),
    )));
    _mm512_maskz_mov_ps(!underflow, _mm512_mul_ps(y, two_n))
}

/// Sixteen columns at a time (whole vectors, whatever the group): their maxima down the
/// rows, then for every row their exponentials, stored into the one or two groups the
/// sixteen columns fall in (masked stores), and summed: eight rows in float32 lanes, then
/// into float64 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_into_groups_avx512(
    src: &[f32],
    cols: usize,
    max: &mut [f32],
    group: usize,
    dst: &mut [f32],
    sums: &mut [f32],
) {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    if group < LANES / 2 {
        // A vector would fall in more than two groups.
        return exp_into_groups_body(src, cols, max, group, dst, sums);
    }
    let rows = src.len() / cols;
    for c0 in (0..cols).step_by(LANES) {
        let width = LANES.min(cols - c0);
        let mask: __mmask16 = ((1u32 << width) - 1) as u16;
        // The groups these columns fall in: (group, lanes in it).
        let first = c0 / group;
        let last = (c0 + width - 1) / group;
        let split = |g: usize| -> __mmask16 {
            let lo = (g * group).max(c0) - c0;
            let hi = ((g + 1) * group).min(c0 + width) - c0;
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
        };
        let targets = [(first, split(first)), (last, split(last))];
        // SAFETY: the masked loads read columns `c0 .. c0 + width` (< cols) of `max` and of
        // each row of `src`; the masked stores write, for a target group `g`, only the lanes
        // of columns `c` in that group, at `dst[(g * rows + j) * group + c - g * group]`,
        // inside `dst` (whole groups); the base pointer of a store may point up to a group
        // before its first written lane, never outside `dst` (`wrapping_add`, never
        // dereferenced there).
        unsafe {
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            for j in 0..rows {
                m = _mm512_max_ps(
                    m,
                    _mm512_maskz_loadu_ps(mask, src.as_ptr().add(j * cols + c0)),
                );
            }
            _mm512_mask_storeu_ps(max.as_mut_ptr().add(c0), mask, m);
            let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
            for j0 in (0..rows).step_by(8) {
                let mut part = _mm512_setzero_ps();
                for j in j0..(j0 + 8).min(rows) {
                    let x = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(j * cols + c0));
                    let e = _mm512_maskz_mov_ps(mask, exp_avx512(_mm512_sub_ps(x, m)));
                    for (g, lanes) in targets {
                        let base = dst
                            .as_mut_ptr()
                            .wrapping_add((g * rows + j) * group + c0)
                            .wrapping_sub(g * group);
                        _mm512_mask_storeu_ps(base, lanes, e);
                    }
                    part = _mm512_add_ps(part, e);
                }
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(part)));
                hi = _mm512_add_pd(
                    hi,
                    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                        _mm512_castps_pd(part),
                    ))),
                );
            }
            let mut total = [0f64; LANES];
            _mm512_storeu_pd(total.as_mut_ptr(), lo);
            _mm512_storeu_pd(total.as_mut_ptr().add(8), hi);
            for (s, t) in sums[c0..c0 + width].iter_mut().zip(total) {
                *s = t as f32;
            }
        }
    }
}

#[inline(always)]
fn exp_into_groups_body(
    src: &[f32],
    cols: usize,
    max: &mut [f32],
    group: usize,
    dst: &mut [f32],
    sums: &mut [f32],
) {
    const LANES: usize = 16;
    let rows = src.len() / cols;
    let whole = cols / LANES * LANES;
    max[..cols].fill(f32::NEG_INFINITY);
    for x in src.chunks_exact(cols) {
        for (m, v) in max.iter_mut().zip(x) {
            *m = if *v > *m { *v } else { *m };
        }
    }
    let mut sum = vec![0f64; cols.div_ceil(LANES) * LANES];
    let mut e = vec![0f32; cols.div_ceil(LANES) * LANES];
    for (j, x) in src.chunks_exact(cols).enumerate() {
        for c0 in (0..whole).step_by(LANES) {
            let x: &[f32; LANES] = x[c0..c0 + LANES].try_into().unwrap();
            let m: &[f32; LANES] = max[c0..c0 + LANES].try_into().unwrap();
            let ev: &mut [f32; LANES] = (&mut e[c0..c0 + LANES]).try_into().unwrap();
            let sv: &mut [f64; LANES] = (&mut sum[c0..c0 + LANES]).try_into().unwrap();
            for l in 0..LANES {
                ev[l] = exp(x[l] - m[l]);
                sv[l] += ev[l] as f64;
            }
        }
        for c in whole..cols {
            e[c] = exp(x[c] - max[c]);
            sum[c] += e[c] as f64;
        }
        for (g, chunk) in e[..cols].chunks(group).enumerate() {
            dst[(g * rows + j) * group..][..chunk.len()].copy_from_slice(chunk);
        }
    }
    for (s, v) in sums[..cols].iter_mut().zip(&sum) {
        *s = *v as f32;
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
                (ours - g).abs() <= 7.5e-8 * x.abs() + g.abs() * 2f64.powi(-22),
                "gelu({x}): {ours} vs {g}"
            );
            worst_gelu = worst_gelu.max((ours - g).abs());
            x += 0.000_731;
        }
        assert!(worst_erf <= 1.5e-7, "erf within {worst_erf:e}");
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
