//! Tensor types: a dtype and a symbolic shape.

use crate::dim::{Bindings, Dim};
use crate::dtype::DType;
use std::fmt;

/// The largest tensor lsc will ever allocate (2^34 elements, 64 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 34;

/// The largest tensor this machine could hold: [`MAX_ELEMENTS`], or fewer
/// where physical memory (`MemTotal`) holds fewer f32 elements, so that a shape
/// no allocation could satisfy is a type error rather than an aborted process.
pub fn max_elements() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            line["MemTotal:".len()..].trim().trim_end_matches("kB").trim().parse::<usize>().ok()
        });
        total.map_or(MAX_ELEMENTS, |kib| MAX_ELEMENTS.min(kib.saturating_mul(1024) / 4))
    })
}

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
    /// tensors beyond [`max_elements`].
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
            Some(n) if n <= max_elements() => Ok(shape),
            _ => Err(format!(
                "{} = {} has more than {} elements, the most this machine's memory holds",
                brief(&self.to_string(), 200),
                brief(&format!("{shape:?}"), 200),
                max_elements()
            )),
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

/// `text` cut to at most about `max` characters, keeping its start and its
/// end around a note of what was left out, so that an error quoting a type of
/// rank 5000 stays one readable line.
pub fn brief(text: &str, max: usize) -> String {
    let keep = max / 2;
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 2 * keep {
        return text.to_string();
    }
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{head} … ({} characters left out) … {tail}", chars.len() - 2 * keep)
}
