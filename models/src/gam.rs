//! `gam`: Gated Associative Memory (Acharya, 2025). The transformer with each
//! attention sub-layer replaced by a GAM mixer on the normed input `x`:
//!
//! ```text
//! local  = causal depthwise conv1d(x)              kernel 3, left zero padding 2, + bias
//! glob   = softmax(x · memoryᵀ over 64 slots) · memory   (no scaling)
//! g_local, g_global = sigmoid(gate_proj(x)) split in halves (first half local)
//! out    = g_local * local + g_global * glob
//! ```
//!
//! then the usual SwiGLU MLP. Linear in sequence length; its decoding state is
//! the last `k − 1 = 2` normed inputs of each layer.

use crate::decode::{DecodeInputs, CACHE_PREFIX};
use crate::transformer::TransformerConfig;
use lsc_frontend::modules::{Embedding, Linear, RmsNorm, SwiGlu};
use lsc_frontend::{DslError, ModelBuilder, Tensor};
use lsc_ir::{DType, Dim, Program};

/// Memory slots of the associative memory.
pub const MEMORY_SLOTS: usize = 64;
/// Kernel size of the causal depthwise convolution.
pub const CONV_KERNEL: usize = 3;

/// The GAM mixer of one layer.
pub struct GamMixer {
    /// `[d, 1, 3]` depthwise kernel.
    pub conv_weight: Tensor,
    /// `[d]`
    pub conv_bias: Tensor,
    /// `[64, d]`
    pub memory: Tensor,
    /// `[2d, d]` with bias.
    pub gate_proj: Linear,
}

impl GamMixer {
    /// Registers `{prefix}.conv.{weight,bias}`, `{prefix}.memory`, `{prefix}.gate_proj.{weight,bias}`.
    pub fn new(b: &ModelBuilder, prefix: &str, d: usize) -> GamMixer {
        GamMixer {
            conv_weight: b.param(
                &format!("{prefix}.conv.weight"),
                DType::F32,
                &[d.into(), 1usize.into(), CONV_KERNEL.into()],
            ),
            conv_bias: b.param(&format!("{prefix}.conv.bias"), DType::F32, &[d.into()]),
            memory: b.param(&format!("{prefix}.memory"), DType::F32, &[MEMORY_SLOTS.into(), d.into()]),
            gate_proj: Linear::new(b, &format!("{prefix}.gate_proj"), d, 2 * d, true),
        }
    }

    /// The global path: `softmax(x · memoryᵀ) · memory`, position-wise.
    pub fn global(&self, x: &Tensor) -> Tensor {
        x.matmul_t(&self.memory).softmax(-1).matmul(&self.memory)
    }

    /// The local path over a whole sequence: causal depthwise conv + bias.
    pub fn local(&self, x: &Tensor) -> Tensor {
        &x.causal_conv1d(&self.conv_weight) + &self.conv_bias
    }

    /// Gates the two paths (the gate depends only on `x`).
    fn mix(&self, x: &Tensor, local: &Tensor) -> Tensor {
        let d = x.dim(-1).as_const().unwrap_or(0);
        let gates = self.gate_proj.forward(x).sigmoid();
        let g_local = gates.slice(-1, 0i64, d);
        let g_global = gates.slice(-1, d, 2 * d);
        &(&g_local * local) + &(&g_global * &self.global(x))
    }

    /// The mixer over a whole sequence `x [B, T, d]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.mix(x, &self.local(x))
    }

    /// Decoding: `state [B, 2, d]` holds the previous two inputs (zeros at the
    /// start, like the convolution's padding). Returns the output and the new state.
    pub fn forward_cached(&self, x: &Tensor, state: &Tensor) -> (Tensor, Tensor) {
        let t = x.dim(1);
        let pad = Dim::new(CONV_KERNEL as i64 - 1);
        let window = state.concat(&[x], 1);
        let conv = window.causal_conv1d(&self.conv_weight).slice(1, pad.clone(), pad + t.clone());
        let local = &conv + &self.conv_bias;
        let new_state = window.slice(1, t.clone(), t + Dim::new(CONV_KERNEL as i64 - 1));
        (self.mix(x, &local), new_state)
    }
}

struct Layer {
    gam_norm: RmsNorm,
    gam: GamMixer,
    mlp_norm: RmsNorm,
    mlp: SwiGlu,
}

struct Gam {
    embed: Embedding,
    pos_embed: Tensor,
    layers: Vec<Layer>,
    norm_f: RmsNorm,
    lm_head: Linear,
}

impl Gam {
    fn new(b: &ModelBuilder, cfg: &TransformerConfig) -> Gam {
        let d = cfg.d_model;
        let layers = (0..cfg.n_layers)
            .map(|i| Layer {
                gam_norm: RmsNorm::new(b, &format!("layers.{i}.gam_norm"), d, cfg.norm_eps),
                gam: GamMixer::new(b, &format!("layers.{i}.gam"), d),
                mlp_norm: RmsNorm::new(b, &format!("layers.{i}.mlp_norm"), d, cfg.norm_eps),
                mlp: SwiGlu::new(b, &format!("layers.{i}.mlp"), d, cfg.d_hidden),
            })
            .collect();
        Gam {
            embed: Embedding::new(b, "embed", cfg.vocab, d),
            pos_embed: b.param("pos_embed.weight", DType::F32, &[cfg.max_pos.into(), d.into()]),
            layers,
            norm_f: RmsNorm::new(b, "norm_f", d, cfg.norm_eps),
            lm_head: Linear::new(b, "lm_head", d, cfg.vocab, false),
        }
    }
}

/// The forward graph: `input_ids: i64[B,T]` → `logits: f32[B,T,vocab]`.
pub fn build(cfg: &TransformerConfig) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let ids = b.input("input_ids", DType::I64, &[Dim::sym("B"), Dim::sym("T")]);
    let m = Gam::new(&b, cfg);
    let mut x = &m.embed.forward(&ids) + &m.pos_embed.slice(0, 0i64, Dim::sym("T"));
    for l in &m.layers {
        x = &x + &l.gam.forward(&l.gam_norm.forward(&x));
        x = &x + &l.mlp.forward(&l.mlp_norm.forward(&x));
    }
    b.output("logits", &m.lm_head.forward(&m.norm_f.forward(&x)));
    b.finish()
}

/// The decoding graph: per layer, the conv state `cache.layers.{i}.gam.conv: f32[B,2,d]`.
pub fn build_decode(cfg: &TransformerConfig) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let io = DecodeInputs::new(&b);
    let m = Gam::new(&b, cfg);
    let mut x = &m.embed.forward(&io.ids) + &m.pos_embed.embedding(&io.positions(&b));
    for (i, l) in m.layers.iter().enumerate() {
        let name = format!("{CACHE_PREFIX}layers.{i}.gam.conv");
        let state = b.input(&name, DType::F32, &[Dim::sym("B"), Dim::new(CONV_KERNEL as i64 - 1), cfg.d_model.into()]);
        let (out, new_state) = l.gam.forward_cached(&l.gam_norm.forward(&x), &state);
        x = &x + &out;
        x = &x + &l.mlp.forward(&l.mlp_norm.forward(&x));
        b.output(&name, &new_state);
    }
    b.output("logits", &m.lm_head.forward(&m.norm_f.forward(&x)));
    b.finish()
}
