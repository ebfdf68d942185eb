//! Tensor types: a dtype and a symbolic shape.

use crate::dim::{Bindings, Dim};
use crate::dtype::DType;
use std::fmt;

/// The largest tensor lsc will allocate (2^34 elements, 64 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 34;

/// The type of one tensor value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// A tensor type from a dtype and dimensions.
    pub fn new(dtype: DType, shape: impl IntoIterator<Item = Dim>) -> TensorType {
        TensorType { dtype, shape: shape.into_iter().collect() }
    }

    /// A rank-0 tensor.
    pub fn scalar(dtype: DType) -> TensorType {
        TensorType { dtype, shape: Vec::new() }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The same shape with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType { dtype, shape: self.shape.clone() }
    }

    /// Concrete dimensions under `bindings`; errors on negative sizes and on
    /// tensors beyond [`MAX_ELEMENTS`].
    pub fn concrete_shape(&self, bindings: &Bindings) -> Result<Vec<usize>, String> {
        let shape = self
            .shape
            .iter()
            .map(|d| {
                let v = d.eval(bindings)?;
                usize::try_from(v).map_err(|_| format!("dimension {d} evaluates to {v} < 0"))
            })
            .collect::<Result<Vec<usize>, String>>()?;
        let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match n {
            Some(n) if n <= MAX_ELEMENTS => Ok(shape),
            _ => Err(format!("{self} = {shape:?} has more than {MAX_ELEMENTS} elements")),
        }
    }
}

/// Writes `[d0,d1,...]`.
pub fn fmt_shape(shape: &[Dim], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str("[")?;
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{d}")?;
    }
    f.write_str("]")
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dtype)?;
        fmt_shape(&self.shape, f)
    }
}
