//! Products of a few rows of float32 activations against weights held in bfloat16 or int8:
//! the decoder's lighter weights (`--decoder-precision`). A decoder's pass reads every weight
//! once for one token a sequence, so its time is the weights' bytes over the memory's rate;
//! half or a quarter of the bytes is that much less to wait for.
//!
//! Numerics (stated in kernels/NUMERICS.md, section 8):
//! - `bf16`: each weight rounded to the nearest bfloat16 (ties to even), a relative error of
//!   at most 2^-8 (half a unit in the last of 8 significant bits); the activations stay float32, and each output is one float32 fused sum
//!   over the reduction, in order, as the float32 product's ([`crate::packed_gemm::gemv_f32`]).
//! - `int8`: each output column `j` (an output channel) has a scale `s_j = max_k |w_kj| / 127`
//!   and the weights are `q_kj = round(w_kj / s_j)` (ties away from zero), integers in
//!   [-127, 127], an absolute error of at most `s_j / 2`; the output is `s_j` times the
//!   float32 fused sum of `a_k q_kj` over the reduction, in order, then the bias.
//!
//! The weights are converted to float32 in registers: the sums are those of the float32
//! product over the converted weights, on every CPU.

use crate::bf16::{self, Rounding};

/// Columns of a panel.
const NR: usize = 16;

/// How a linear layer's weights are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightPrecision {
    /// float32, as the model has them.
    #[default]
    F32,
    /// bfloat16: half the bytes.
    Bf16,
    /// int8 with a float32 scale an output channel: a quarter of the bytes.
    Int8,
}

crate::named_variants!(WeightPrecision { F32 => "f32", Bf16 => "bf16", Int8 => "int8" });

enum Values {
    Bf16(Vec<u16>),
    Int8 { q: Vec<i8>, scales: Vec<f32> },
}

/// A `[k, n]` matrix of weights in bfloat16 or int8, in panels of 16 columns: the weight
/// `(kk, p * 16 + j)` at `(p * k + kk) * 16 + j`, zeros past `n`.
pub struct LowPrecisionB {
    k: usize,
    n: usize,
    values: Values,
}

impl LowPrecisionB {
    /// `w` (`[k, n]` row-major, or `[n, k]` when `transposed`) held as `precision` says;
    /// `None` for [`WeightPrecision::F32`].
    pub fn new(
        w: &[f32],
        k: usize,
        n: usize,
        transposed: bool,
        precision: WeightPrecision,
    ) -> Option<LowPrecisionB> {
        assert_eq!(w.len(), k * n, "the weights hold k * n values");
        let at = |kk: usize, col: usize| {
            if transposed {
                w[col * k + kk]
            } else {
                w[kk * n + col]
            }
        };
        let panels = n.div_ceil(NR);
        let index = |kk: usize, col: usize| ((col / NR) * k + kk) * NR + col % NR;
        let values = match precision {
            WeightPrecision::F32 => return None,
            WeightPrecision::Bf16 => {
                let mut v = vec![0u16; panels * k * NR];
                for col in 0..n {
                    for kk in 0..k {
                        let r = bf16::round(at(kk, col), Rounding::NearestEven);
                        v[index(kk, col)] = (r.to_bits() >> 16) as u16;
                    }
                }
                Values::Bf16(v)
            }
            WeightPrecision::Int8 => {
                let mut q = vec![0i8; panels * k * NR];
                let mut scales = vec![0f32; n];
                for (col, scale) in scales.iter_mut().enumerate() {
                    let max = (0..k).map(|kk| at(kk, col).abs()).fold(0f32, f32::max);
                    *scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    for kk in 0..k {
                        q[index(kk, col)] =
                            (at(kk, col) / *scale).round().clamp(-127.0, 127.0) as i8;
                    }
                }
                Values::Int8 { q, scales }
            }
        };
        Some(LowPrecisionB { k, n, values })
    }

    /// Rows of the matrix (the reduction).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of the matrix.
    pub fn n(&self) -> usize {
        self.n
    }

    /// How the weights are held.
    pub fn precision(&self) -> WeightPrecision {
        match self.values {
            Values::Bf16(_) => WeightPrecision::Bf16,
            Values::Int8 { .. } => WeightPrecision::Int8,
        }
    }

    /// The bytes the weights take (scales included).
    pub fn bytes(&self) -> usize {
        match &self.values {
            Values::Bf16(v) => 2 * v.len(),
            Values::Int8 { q, scales } => q.len() + 4 * scales.len(),
        }
    }

    /// The weight `(kk, col)` as the products use it (the int8 value times its scale).
    pub fn value(&self, kk: usize, col: usize) -> f32 {
        let i = ((col / NR) * self.k + kk) * NR + col % NR;
        match &self.values {
            Values::Bf16(v) => f32::from_bits((v[i] as u32) << 16),
            Values::Int8 { q, scales } => q[i] as f32 * scales[col],
        }
    }
}

/// `c = a @ b (+ bias)`, then GELU with `gelu`: `a` is `[rows, k]`, `c` `[rows, n]`, for any
/// number of rows (meant for a few: the panels of `b` are spread over rayon's pool and each is
/// read once for every row). The numerics are the module's.
pub fn gemv_low_precision(
    a: &[f32],
    rows: usize,
    b: &LowPrecisionB,
    bias: Option<&[f32]>,
    gelu: bool,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    assert_eq!(a.len(), rows * k, "A holds rows * k values");
    assert_eq!(c.len(), rows * n, "C holds rows * n values");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "the bias holds n values");
    }
    if rows == 0 || n == 0 {
        return;
    }
    // Two panels a step (the AVX2 tile's); about 64 K weights a task.
    crate::packed_gemm::over_panel_tasks(k, n, 2, 65_536, c, |p0, p1, c| {
        panels_product(a, rows, b, bias, gelu, p0, p1, c)
    });
}

/// Panels `p0 .. p1` of `b` against every row of `a`, into C's columns `p0 * 16 ..`.
#[allow(clippy::too_many_arguments)]
fn panels_product(
    a: &[f32],
    rows: usize,
    b: &LowPrecisionB,
    bias: Option<&[f32]>,
    gelu: bool,
    p0: usize,
    p1: usize,
    c: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let whole = p0 + (p1 - p0) / 2 * 2;
        for p in (p0..whole).step_by(2) {
            let mut r = 0;
            while r < rows {
                // SAFETY: AVX2 and FMA are present (checked above); rows `r .. r + R` and
                // panels `p, p + 1` are inside `a` and `b`.
                r += unsafe {
                    match rows - r {
                        1 => tile_avx2::<1>(a, r, b, p, bias, gelu, c),
                        2 => tile_avx2::<2>(a, r, b, p, bias, gelu, c),
                        _ => tile_avx2::<3>(a, r, b, p, bias, gelu, c),
                    }
                };
            }
        }
        return panels_scalar(a, rows, b, bias, gelu, whole, p1, c);
    }
    panels_scalar(a, rows, b, bias, gelu, p0, p1, c)
}

/// The products of panels `p0 .. p1`, one weight at a time.
#[allow(clippy::too_many_arguments)]
fn panels_scalar(
    a: &[f32],
    rows: usize,
    b: &LowPrecisionB,
    bias: Option<&[f32]>,
    gelu: bool,
    p0: usize,
    p1: usize,
    c: &mut [f32],
) {
    let k = b.k;
    for p in p0..p1 {
        for r in 0..rows {
            let x = &a[r * k..][..k];
            let mut lanes = [0f32; NR];
            for (kk, &av) in x.iter().enumerate() {
                let i = (p * k + kk) * NR;
                for (j, l) in lanes.iter_mut().enumerate() {
                    let w = match &b.values {
                        Values::Bf16(v) => f32::from_bits((v[i + j] as u32) << 16),
                        Values::Int8 { q, .. } => q[i + j] as f32,
                    };
                    *l = av.mul_add(w, *l);
                }
            }
            store(&mut lanes, b, bias, gelu, p * NR, &mut c[r * b.n..][..b.n]);
        }
    }
}

/// A panel's sums for one row: the int8 scales, the bias, GELU, then the columns from `col0`
/// that exist into `c_row`.
#[inline(always)]
fn store(
    lanes: &mut [f32; NR],
    b: &LowPrecisionB,
    bias: Option<&[f32]>,
    gelu: bool,
    col0: usize,
    c_row: &mut [f32],
) {
    let cols = NR.min(c_row.len() - col0);
    if let Values::Int8 { scales, .. } = &b.values {
        for (l, s) in lanes.iter_mut().zip(&scales[col0..col0 + cols]) {
            *l *= s;
        }
    }
    if let Some(bias) = bias {
        for (l, b) in lanes.iter_mut().zip(&bias[col0..col0 + cols]) {
            *l += b;
        }
    }
    if gelu {
        for l in lanes.iter_mut() {
            *l = crate::cpu_math::gelu(*l);
        }
    }
    c_row[col0..col0 + cols].copy_from_slice(&lanes[..cols]);
}

/// `R` rows of `a` from `r0` against panels `p` and `p + 1` (32 columns): twelve float32 sums
/// in flight, the weights widened to float32 in registers. Returns `R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const R: usize>(
    a: &[f32],
    r0: usize,
    b: &LowPrecisionB,
    p: usize,
    bias: Option<&[f32]>,
    gelu: bool,
    c: &mut [f32],
) -> usize {
    use std::arch::x86_64::*;
    let (k, n) = (b.k, b.n);
    assert!(a.len() >= (r0 + R) * k);
    let rows = a[r0 * k..].as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    // For every step of the reduction: 32 weights of the two panels widened to float32 by
    // `$load` (8 at index `$i`), then the rows' fused multiply-adds.
    macro_rules! run {
        ($len:expr, |$i:ident| $load:expr) => {{
            assert!($len >= (p + 2) * k * NR);
            for kk in 0..k {
                let i0 = (p * k + kk) * NR;
                let i1 = ((p + 1) * k + kk) * NR;
                // SAFETY: `kk < k`, panels `p` and `p + 1` exist (asserted), rows `R * k`.
                unsafe {
                    let w = [i0, i0 + 8, i1, i1 + 8].map(|$i| $load);
                    for (r, s) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*rows.add(r * k + kk));
                        for (v, wv) in s.iter_mut().zip(&w) {
                            *v = _mm256_fmadd_ps(av, *wv, *v);
                        }
                    }
                }
            }
        }};
    }
    match &b.values {
        Values::Bf16(v) => {
            let base = v.as_ptr();
            run!(v.len(), |i| {
                let h = _mm_loadu_si128(base.add(i) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            });
        }
        Values::Int8 { q, .. } => {
            let base = q.as_ptr();
            run!(q.len(), |i| {
                let h = _mm_loadl_epi64(base.add(i) as *const __m128i);
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(h))
            });
        }
    }
    for (r, s) in acc.iter().enumerate() {
        let c_row = &mut c[(r0 + r) * n..][..n];
        for half in 0..2 {
            let mut lanes = [0f32; NR];
            // SAFETY: `lanes` holds 16 floats, two vectors of 8.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), s[2 * half]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), s[2 * half + 1]);
            }
            store(&mut lanes, b, bias, gelu, (p + half) * NR, c_row);
        }
    }
    R
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Each output against a float64 sum over the weights as held (bfloat16 values, int8
    /// values times their scale): the float32 sums differ from it by rounding only, bounded by
    /// k ulps of the sum of absolute products; the widened AVX2 path and the scalar one give
    /// the same bits.
    #[test]
    fn products_over_the_held_weights() {
        for (rows, k, n, transposed) in
            [(1, 384, 1000, false), (8, 64, 40, true), (5, 7, 33, false)]
        {
            let (a, w, bias) = (values(rows * k, 1), values(k * n, 2), values(n, 3));
            for precision in [WeightPrecision::Bf16, WeightPrecision::Int8] {
                let b = LowPrecisionB::new(&w, k, n, transposed, precision).unwrap();
                let mut c = vec![f32::NAN; rows * n];
                gemv_low_precision(&a, rows, &b, Some(&bias), false, &mut c);
                let mut scalar = vec![f32::NAN; rows * n];
                panels_scalar(
                    &a,
                    rows,
                    &b,
                    Some(&bias),
                    false,
                    0,
                    n.div_ceil(NR),
                    &mut scalar,
                );
                assert!(
                    c.iter()
                        .zip(&scalar)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{precision}: AVX2 and scalar differ"
                );
                for r in 0..rows {
                    for col in 0..n {
                        let (mut sum, mut abs) = (bias[col] as f64, bias[col].abs() as f64);
                        for kk in 0..k {
                            let p = a[r * k + kk] as f64 * b.value(kk, col) as f64;
                            sum += p;
                            abs += p.abs();
                        }
                        let err = (c[r * n + col] as f64 - sum).abs();
                        assert!(
                            err <= (k + 2) as f64 * f32::EPSILON as f64 * abs,
                            "{precision} [{r}, {col}]: {err} of {abs}"
                        );
                    }
                }
            }
        }
    }

    /// The held weights are within the precision's bound of the originals: 2^-8 relative for
    /// bfloat16, half a step of the column's scale for int8.
    #[test]
    fn held_weights_are_within_their_rounding() {
        let (k, n) = (50, 20);
        let w = values(k * n, 4);
        let bf = LowPrecisionB::new(&w, k, n, false, WeightPrecision::Bf16).unwrap();
        let q = LowPrecisionB::new(&w, k, n, false, WeightPrecision::Int8).unwrap();
        assert_eq!(bf.bytes(), 2 * 2 * 16 * k);
        for col in 0..n {
            let max = (0..k).map(|kk| w[kk * n + col].abs()).fold(0f32, f32::max);
            for kk in 0..k {
                let x = w[kk * n + col];
                assert!((bf.value(kk, col) - x).abs() <= x.abs() * 2f32.powi(-8));
                assert!((q.value(kk, col) - x).abs() <= max / 127.0 / 2.0 * (1.0 + 1e-6));
            }
        }
        assert!(LowPrecisionB::new(&w, k, n, false, WeightPrecision::F32).is_none());
    }
}
