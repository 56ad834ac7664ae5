//! Numeric conversions with their rounding and saturation spelled out (no silent `as`).

/// Rounds down to a `u32`: NaN and negatives give 0, values beyond `u32::MAX` give `u32::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // `as` from f64 saturates (Rust ≥ 1.45); NaN → 0
pub fn floor_u32(v: f64) -> u32 {
    v.floor() as u32
}

/// Rounds up to a `u32`, saturating like [`floor_u32`].
pub fn ceil_u32(v: f64) -> u32 {
    floor_u32(v.ceil())
}

/// Rounds up to a `u64`: NaN and negatives give 0, huge values `u64::MAX`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // `as` from f64 saturates; NaN → 0
pub fn ceil_u64(v: f64) -> u64 {
    v.ceil() as u64
}

/// `u64` to `f64` (exact below 2^53, nearest above).
#[allow(clippy::cast_precision_loss)] // documented: nearest representable value
pub fn u64_f64(v: u64) -> f64 {
    v as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn saturating_conversions() {
        assert_eq!(floor_u32(f64::NAN), 0);
        assert_eq!(floor_u32(-3.5), 0);
        assert_eq!(floor_u32(2.9), 2);
        assert_eq!(ceil_u32(2.1), 3);
        assert_eq!(floor_u32(1e20), u32::MAX);
        assert_eq!(floor_u32(f64::INFINITY), u32::MAX);
        assert_eq!(u64_f64(7), 7.0);
    }
}
