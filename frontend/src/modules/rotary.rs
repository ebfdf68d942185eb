//! Rotary position embeddings (RoPE, Su et al. 2021), the LLaMA family's
//! positional scheme: queries and keys are rotated by an angle proportional to
//! their position, so a query–key logit depends on the two tokens and on their
//! distance only. Attention then sees relative position from the first step,
//! where learned absolute positions must first learn it (a long plateau at
//! the bigram loss on byte-level text).

use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use lsc_ir::{DType, Dim};

/// Rotation of per-head features `[…, T, head_dim]` in the GPT-NeoX ("rotate
/// half") layout: feature `i` pairs with `i + head_dim/2`, and the pair turns by
/// `position · base^(−2i/head_dim)` radians.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rotary {
    /// Features per head (even).
    pub head_dim: usize,
    /// The wavelength base (10 000 in RoPE and LLaMA).
    pub base: f64,
}

/// `cos` and `sin` of every position's angles, each `[T, head_dim/2]`.
#[derive(Clone, Debug)]
pub struct RotaryTables {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// A rotation of `head_dim` features; an odd `head_dim` is a build error.
    #[track_caller]
    pub fn new(b: &ModelBuilder, head_dim: usize, base: f64) -> Rotary {
        if !head_dim.is_multiple_of(2) || head_dim == 0 {
            b.fail(format!("rotary embeddings need an even, non-zero head dimension, got {head_dim}"));
        }
        Rotary { head_dim, base }
    }

    /// The tables for `positions` (`i64[T]`, absolute token positions).
    #[track_caller]
    pub fn tables(&self, b: &ModelBuilder, positions: &Tensor) -> RotaryTables {
        let half = self.head_dim / 2;
        let t = positions.dim(0);
        // base^(−2i/d) = exp(i · (−2 ln(base)/d))
        let step = -2.0 * self.base.ln() / self.head_dim as f64;
        let inv_freq = (&b.iota(DType::F32, &[Dim::new(half as i64)], 0) * step).exp();
        let angles = &positions.cast(DType::F32).reshape(&[t, Dim::new(1)]) * &inv_freq;
        RotaryTables { cos: angles.cos(), sin: angles.sin() }
    }

    /// The tables for positions `0..T`.
    #[track_caller]
    pub fn tables_from_zero(&self, b: &ModelBuilder, t: &Dim) -> RotaryTables {
        self.tables(b, &b.iota(DType::I64, std::slice::from_ref(t), 0))
    }
}

impl RotaryTables {
    /// Rotates `x [.., T, head_dim]`: `(x₁, x₂) ↦ (x₁·cos − x₂·sin, x₂·cos + x₁·sin)`
    /// (one `rotary` op: a single pass, where slices and products would be eight).
    #[track_caller]
    pub fn apply(&self, x: &Tensor) -> Tensor {
        x.rotary(&self.cos, &self.sin)
    }
}
