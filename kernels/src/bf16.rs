//! bfloat16: the upper 16 bits of an IEEE float32 (8 exponent bits, 7 stored mantissa bits).

/// How a float32 is brought to bfloat16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rounding {
    /// Round to nearest, ties to even: IEEE's default, ml_dtypes' and PyTorch's conversion,
    /// and the AIE API's `rounding_mode::conv_even` when a kernel selects it.
    #[default]
    NearestEven,
    /// Drop the low 16 bits (toward zero), as a conversion without rounding does; kernels
    /// that leave the AIE's rounding mode at its default behave this way (to be confirmed
    /// on a device by the device-versus-emulator test).
    Truncate,
}

crate::named_variants!(Rounding { NearestEven => "nearest-even", Truncate => "truncate" });

/// The bfloat16 bits of `x`. NaN stays a (quiet) NaN; values beyond the largest bfloat16
/// round to infinity under [`Rounding::NearestEven`], as IEEE rounding does.
#[inline(always)]
pub fn to_bits(x: f32, rounding: Rounding) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    match rounding {
        Rounding::Truncate => (bits >> 16) as u16,
        Rounding::NearestEven => {
            let lsb = (bits >> 16) & 1;
            (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
        }
    }
}

/// The float32 value of bfloat16 bits (exact).
#[inline(always)]
pub fn from_bits(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to the nearest bfloat16 value under `rounding`, as a float32.
#[inline(always)]
pub fn round(x: f32, rounding: Rounding) -> f32 {
    from_bits(to_bits(x, rounding))
}

/// Rounds every value of `xs` in place.
pub fn round_slice(xs: &mut [f32], rounding: Rounding) {
    match rounding {
        Rounding::NearestEven => xs
            .iter_mut()
            .for_each(|x| *x = round(*x, Rounding::NearestEven)),
        Rounding::Truncate => xs
            .iter_mut()
            .for_each(|x| *x = round(*x, Rounding::Truncate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(round(1.0 + 2f32.powi(-8), Rounding::NearestEven), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(
            round(1.0 + 3.0 * 2f32.powi(-8), Rounding::NearestEven),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(
            round(1.0 + 3.0 * 2f32.powi(-8), Rounding::Truncate),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(
            round(-1.0 - 3.0 * 2f32.powi(-8), Rounding::Truncate),
            -1.0 - 2f32.powi(-7)
        );
        assert_eq!(round(f32::MAX, Rounding::NearestEven), f32::INFINITY);
        assert_eq!(round(f32::INFINITY, Rounding::NearestEven), f32::INFINITY);
        assert!(round(f32::NAN, Rounding::NearestEven).is_nan());
        assert!(round(f32::NAN, Rounding::Truncate).is_nan());
        assert_eq!(to_bits(-0.0, Rounding::NearestEven), 0x8000);
    }

    proptest! {
        /// Nearest-even rounding lands on one of the two neighbouring bfloat16 values, the
        /// nearer one, and on the even one at a tie; truncation never grows the magnitude.
        #[test]
        fn rounding_is_nearest_even(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite() && x.abs() < 3.0e38);
            let down = from_bits((bits >> 16) as u16);
            let up = from_bits(((bits >> 16) + 1) as u16);
            let r = round(x, Rounding::NearestEven);
            let (dd, du) = ((x as f64 - down as f64).abs(), (up as f64 - x as f64).abs());
            if dd < du {
                prop_assert_eq!(r, down);
            } else if du < dd {
                prop_assert_eq!(r, up);
            } else {
                let even = if (bits >> 16) & 1 == 0 { down } else { up };
                prop_assert_eq!(r, even);
            }
            prop_assert!(round(x, Rounding::Truncate).abs() <= x.abs());
            // Relative error bound of bf16: half an ulp of an 8-bit significand.
            if x.abs() > f32::MIN_POSITIVE * 256.0 {
                prop_assert!(((r - x) / x).abs() <= 2f32.powi(-8));
            }
        }
    }
}
