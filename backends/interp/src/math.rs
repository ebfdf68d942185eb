//! Scalar math shared by every float width: the `Real` trait, erf, GELU and
//! round-half-to-even.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A float type the interpreter computes in (`f32` normally, `f64` for checks).
pub trait Real:
    Copy
    + PartialOrd
    + Debug
    + Default
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Converts (rounding to nearest) from f64.
    fn from_f64(v: f64) -> Self;
    /// Widens to f64.
    fn to_f64(self) -> f64;
    /// Whether this is NaN (NaN propagates through max/min like PyTorch).
    fn is_nan(self) -> bool;
    /// `e^x`
    fn exp(self) -> Self;
    /// Natural log.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// `self^e`
    fn powf(self, e: Self) -> Self;
}

macro_rules! impl_real {
    ($t:ty, $name:literal) => {
        impl Real for $t {
            const NAME: &'static str = $name;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
        }
    };
}

impl_real!(f32, "f32");
impl_real!(f64, "f64");

/// The error function, accurate to about 1e-15 (Taylor series near 0, a
/// continued fraction for erfc in the tails).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 3.0 {
        let (x2, mut term, mut sum) = (ax * ax, ax, ax);
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax < 7.0 {
        // erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
        let mut frac = ax;
        for k in (1..=80).rev() {
            frac = ax + (k as f64 / 2.0) / frac;
        }
        1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * frac)
    } else {
        1.0
    };
    r.copysign(x)
}

/// Exact GELU `x·Φ(x) = x/2·(1 + erf(x/√2))`.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))
}

/// Logistic sigmoid, stable for large |x|.
pub fn sigmoid<T: Real>(x: T) -> T {
    let one = T::from_f64(1.0);
    if x >= T::default() {
        one / (one + (-x).exp())
    } else {
        let e = x.exp();
        e / (one + e)
    }
}

/// Rounds half to even, like `torch.round`.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Reference values from the definition (Abramowitz & Stegun table 7.1).
        let table = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
        ];
        for (x, want) in table {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {} want {want}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-14);
        }
        assert!((erf(2.999_999) - erf(3.000_001)).abs() < 1e-9, "branches join continuously");
    }

    #[test]
    fn round_is_half_to_even() {
        let cases = [(0.5, 0.0), (1.5, 2.0), (2.5, 2.0), (-0.5, -0.0), (-1.5, -2.0), (1.4, 1.0), (-2.6, -3.0)];
        for (x, want) in cases {
            assert_eq!(round_half_even(x), want, "round({x})");
        }
    }
}
