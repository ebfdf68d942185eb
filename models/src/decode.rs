//! Shared pieces of the incremental-decoding graphs: the `input_ids`/`pos`
//! interface and the naming of cache inputs and outputs. A decode graph takes
//! each cache as input `cache.NAME` and returns its update under the same name.

use lsc_frontend::modules::{AttentionCache, CausalSelfAttention};
use lsc_frontend::{ModelBuilder, Tensor};
use lsc_ir::{DType, Dim};

/// The name prefix of every cache input and output.
pub const CACHE_PREFIX: &str = "cache.";

/// `input_ids: i64[B,T]` (the new tokens) and `pos: i64[]` (their first position).
pub struct DecodeInputs {
    /// New tokens.
    pub ids: Tensor,
    /// Absolute position of the first new token.
    pub pos: Tensor,
}

impl DecodeInputs {
    /// Declares the two inputs.
    pub fn new(b: &ModelBuilder) -> DecodeInputs {
        DecodeInputs {
            ids: b.input("input_ids", DType::I64, &[Dim::sym("B"), Dim::sym("T")]),
            pos: b.input("pos", DType::I64, &[]),
        }
    }

    /// Absolute positions `pos..pos+T` as `i64[T]`.
    pub fn positions(&self, b: &ModelBuilder) -> Tensor {
        &b.iota(DType::I64, &[Dim::sym("T")], 0) + &self.pos
    }
}

/// Declares the KV-cache inputs of one attention layer: `cache.{prefix}.{k,v}.{g}`.
pub fn declare_caches(
    b: &ModelBuilder,
    prefix: &str,
    attn: &CausalSelfAttention,
    capacity: usize,
) -> Vec<AttentionCache> {
    attn.cache_types(&Dim::sym("B"), capacity)
        .into_iter()
        .enumerate()
        .map(|(g, ty)| AttentionCache {
            k: b.input(&format!("{CACHE_PREFIX}{prefix}.k.{g}"), ty.dtype, &ty.shape),
            v: b.input(&format!("{CACHE_PREFIX}{prefix}.v.{g}"), ty.dtype, &ty.shape),
        })
        .collect()
}

/// Declares the updated caches as outputs under the inputs' names.
pub fn output_caches(b: &ModelBuilder, prefix: &str, caches: &[AttentionCache]) {
    for (g, c) in caches.iter().enumerate() {
        b.output(&format!("{CACHE_PREFIX}{prefix}.k.{g}"), &c.k);
        b.output(&format!("{CACHE_PREFIX}{prefix}.v.{g}"), &c.v);
    }
}
