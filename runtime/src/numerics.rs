//! The numerics contract: the one `allclose` every test in the project uses,
//! and the finiteness checks that keep NaN from passing as a result.
//!
//! `allclose(a, b)` holds when `max|a − b| ≤ atol + rtol · max|b|`, with `b`
//! the reference. The tolerance is chosen by the dtype the values were computed in:
//!
//! | dtype | rtol | atol |
//! |---|---|---|
//! | f64 | 1e-9 | 1e-12 |
//! | f32 | 1e-4 | 1e-5 |
//! | bf16 | 2e-2 | 1e-2 |
//! | f16 | 4e-3 | 1e-3 |

use lsc_interp::{Buffer, Tensors, Value};
use lsc_ir::DType;

/// The first tensor of `tensors` holding NaN or ±Inf, by name.
pub fn first_non_finite(tensors: &Tensors<f32>) -> Option<&str> {
    tensors.iter().find(|(_, v)| non_finite_at(v).is_some()).map(|(n, _)| n.as_str())
}

/// The index (per dimension) of the first NaN or ±Inf element of `v`, if any.
pub fn non_finite_at(v: &Value<f32>) -> Option<Vec<usize>> {
    let Buffer::Float(x) = &v.data else { return None };
    let mut flat = x.iter().position(|f| !f.is_finite())?;
    let mut index = vec![0; v.shape.len()];
    for (i, &d) in v.shape.iter().enumerate().rev() {
        index[i] = flat % d.max(1);
        flat /= d.max(1);
    }
    Some(index)
}

/// Relative and absolute tolerance of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Scales with the reference's largest magnitude.
    pub rtol: f64,
    /// Absolute floor.
    pub atol: f64,
}

/// The tolerance for values computed in `dtype` (f64 for the f64 interpreter mode).
pub fn tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::BF16 => Tolerance { rtol: 2e-2, atol: 1e-2 },
        DType::F16 => Tolerance { rtol: 4e-3, atol: 1e-3 },
        _ => Tolerance { rtol: 1e-4, atol: 1e-5 },
    }
}

/// The f64 tolerance (interpreter f64 mode, gradient checks).
pub const F64_TOLERANCE: Tolerance = Tolerance { rtol: 1e-9, atol: 1e-12 };

/// Result of a comparison, for messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// `max|a − b|`.
    pub max_abs_diff: f64,
    /// `atol + rtol·max|b|`.
    pub bound: f64,
}

impl Comparison {
    /// Whether the contract holds.
    pub fn ok(&self) -> bool {
        self.max_abs_diff <= self.bound
    }
}

/// Compares `actual` against the reference `expected`. Lengths must agree and
/// NaN never compares close.
pub fn compare(actual: &[f64], expected: &[f64], tol: Tolerance) -> Comparison {
    let scale = expected.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut diff = if actual.len() == expected.len() { 0.0f64 } else { f64::INFINITY };
    for (a, b) in actual.iter().zip(expected) {
        let d = (a - b).abs();
        diff = if d.is_nan() || a.is_nan() != b.is_nan() { f64::INFINITY } else { diff.max(d) };
    }
    Comparison { max_abs_diff: diff, bound: tol.atol + tol.rtol * scale }
}

/// `max|a − b| ≤ atol + rtol·max|b|`.
pub fn allclose(actual: &[f64], expected: &[f64], tol: Tolerance) -> bool {
    compare(actual, expected, tol).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_scales_with_the_reference() {
        let t = tolerance(DType::F32);
        assert!(allclose(&[1000.05], &[1000.0], t), "0.05 ≤ 1e-5 + 1e-4·1000");
        assert!(!allclose(&[1.001], &[1.0], t));
        assert!(!allclose(&[f64::NAN], &[1.0], t));
        assert!(!allclose(&[1.0, 2.0], &[1.0], t), "length mismatch is never close");
        assert!(allclose(&[1.0 + 1e-10], &[1.0], F64_TOLERANCE));
    }
}
