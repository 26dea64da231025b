//! Vectorisable float32 arithmetic shared by the CPU ops and the decoding rules.

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
    let underflow = x < MIN;
    let x = x.clamp(MIN, MAX);
    let n = (x * LOG2E).round();
    let r = x - n * C1 - n * C2;
    let mut y = P[0];
    for c in &P[1..] {
        y = y.mul_add(r, *c);
    }
    let y = y.mul_add(r * r, r) + 1.0;
    let e = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
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

#[cfg(test)]
mod tests {
    use super::*;

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
