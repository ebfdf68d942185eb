//! `transformer` (MHSA baseline) and `ls-transformer` (LS-attention): the
//! same pre-norm decoder, differing only in the attention masks per head.
//! Each has a full-sequence graph and an incremental-decoding graph.

use crate::decode::{declare_caches, DecodeInputs};
use lsc_frontend::modules::{CausalSelfAttention, Embedding, HeadMask, Linear, RmsNorm, SwiGlu, WeightQuant};
use lsc_frontend::{DslError, ModelBuilder, Tensor};
use lsc_ir::{DType, Dim, Program};

/// RoPE's (and LLaMA's) wavelength base.
pub const ROPE_BASE: f64 = 10_000.0;

/// Hyperparameters of the decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerConfig {
    /// Vocabulary size (256 for bytes).
    pub vocab: usize,
    /// Model width.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Attention heads per layer.
    pub n_heads: usize,
    /// Leading heads restricted to a causal window (0 for MHSA).
    pub n_local_heads: usize,
    /// Window of the local heads: query `i` sees keys `i − window < j ≤ i`.
    pub window: usize,
    /// SwiGLU hidden width.
    pub d_hidden: usize,
    /// The longest sequence the model accepts (rows of the learned position
    /// table, or the decoding caches' capacity).
    pub max_pos: usize,
    /// Rotary position embeddings of this wavelength base in every attention
    /// layer; `None` adds learned absolute positions to the token embeddings.
    pub rope_base: Option<f64>,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// RMSNorm on queries and keys per head.
    pub qk_norm: bool,
    /// Forward-pass quantisation of every Linear inside the blocks (TriLM:
    /// ternary); embeddings, `lm_head` and norms stay f32.
    pub linear_quant: WeightQuant,
}

impl TransformerConfig {
    /// The named config of `transformer` (`local = false`) or `ls-transformer`.
    pub fn named(config: &str, local: bool) -> Option<TransformerConfig> {
        let (d_model, n_layers, n_heads, d_hidden, max_pos, window) = match config {
            "tiny" => (32, 2, 4, 64, 64, 4),
            "small" => (256, 4, 8, 768, 256, 64),
            "long" => (256, 4, 8, 768, 4096, 64),
            // GPU-sized: about 155 M parameters.
            "medium" => (1024, 12, 16, 2816, 2048, 256),
            _ => return None,
        };
        Some(TransformerConfig {
            vocab: 256,
            d_model,
            n_layers,
            n_heads,
            n_local_heads: if local { n_heads / 2 } else { 0 },
            window,
            d_hidden,
            max_pos,
            rope_base: Some(ROPE_BASE),
            norm_eps: 1e-5,
            qk_norm: false,
            linear_quant: WeightQuant::None,
        })
    }

    /// The quantised weights and their format (empty without `linear_quant`).
    pub fn quantized_weights(&self) -> Vec<(String, WeightQuant)> {
        if self.linear_quant == WeightQuant::None {
            return Vec::new();
        }
        let mut out = Vec::new();
        for i in 0..self.n_layers {
            for p in ["q", "k", "v", "o"] {
                out.push((format!("layers.{i}.attn.{p}_proj.weight"), self.linear_quant));
            }
            for p in ["gate", "up", "down"] {
                out.push((format!("layers.{i}.mlp.{p}_proj.weight"), self.linear_quant));
            }
        }
        out
    }

    /// The per-head masks of one layer: local heads first, then global.
    pub fn head_masks(&self) -> Vec<HeadMask> {
        (0..self.n_heads)
            .map(|h| if h < self.n_local_heads { HeadMask::Window(self.window) } else { HeadMask::Causal })
            .collect()
    }
}

/// One pre-norm block: `x += attn(attn_norm(x)); x += mlp(mlp_norm(x))`.
pub struct Block {
    /// RMSNorm before attention.
    pub attn_norm: RmsNorm,
    /// The attention mixer.
    pub attn: CausalSelfAttention,
    /// RMSNorm before the MLP.
    pub mlp_norm: RmsNorm,
    /// SwiGLU MLP.
    pub mlp: SwiGlu,
}

impl Block {
    /// Registers the parameters of a block under `prefix` (`layers.{i}` or `shared`).
    pub fn new(b: &ModelBuilder, prefix: &str, cfg: &TransformerConfig) -> Block {
        let attn_norm = RmsNorm::new(b, &format!("{prefix}.attn_norm"), cfg.d_model, cfg.norm_eps);
        let attn = CausalSelfAttention::quantized(
            b,
            &format!("{prefix}.attn"),
            cfg.d_model,
            cfg.head_masks(),
            cfg.qk_norm,
            cfg.linear_quant,
        );
        Block {
            attn_norm,
            attn: match cfg.rope_base {
                Some(base) => attn.with_rotary(b, base),
                None => attn,
            },
            mlp_norm: RmsNorm::new(b, &format!("{prefix}.mlp_norm"), cfg.d_model, cfg.norm_eps),
            mlp: SwiGlu::quantized(b, &format!("{prefix}.mlp"), cfg.d_model, cfg.d_hidden, cfg.linear_quant),
        }
    }

    /// Applies the block to the whole sequence.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + &self.attn.forward(&self.attn_norm.forward(x));
        self.mlp_residual(&x)
    }

    /// [`Block::forward`] plus the attention's per-head max logit `[H]`.
    pub fn forward_monitored(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (a, head_max) = self.attn.forward_monitored(&self.attn_norm.forward(x));
        (self.mlp_residual(&(x + &a)), head_max)
    }

    /// The block with attention further restricted by `allowed` (see
    /// [`CausalSelfAttention::forward_with_mask`]).
    pub fn forward_with_mask(&self, x: &Tensor, allowed: &Tensor) -> Tensor {
        let x = x + &self.attn.forward_with_mask(&self.attn_norm.forward(x), allowed);
        self.mlp_residual(&x)
    }

    /// `x + mlp(mlp_norm(x))`.
    pub fn mlp_residual(&self, x: &Tensor) -> Tensor {
        x + &self.mlp.forward(&self.mlp_norm.forward(x))
    }
}

/// The whole model's modules, declared in a fixed order.
struct Decoder {
    embed: Embedding,
    /// Learned absolute positions, without rotary embeddings.
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    norm_f: RmsNorm,
    lm_head: Linear,
}

impl Decoder {
    fn new(b: &ModelBuilder, cfg: &TransformerConfig) -> Decoder {
        let embed = Embedding::new(b, "embed", cfg.vocab, cfg.d_model);
        let pos_embed = cfg
            .rope_base
            .is_none()
            .then(|| b.param("pos_embed.weight", DType::F32, &[cfg.max_pos.into(), cfg.d_model.into()]));
        let blocks = (0..cfg.n_layers).map(|i| Block::new(b, &format!("layers.{i}"), cfg)).collect();
        let norm_f = RmsNorm::new(b, "norm_f", cfg.d_model, cfg.norm_eps);
        let lm_head = Linear::new(b, "lm_head", cfg.d_model, cfg.vocab, false);
        Decoder { embed, pos_embed, blocks, norm_f, lm_head }
    }

    /// Token embeddings of `ids`, plus the learned positions `positions` when
    /// the model has them.
    fn embed(&self, ids: &Tensor, positions: impl FnOnce(&Tensor) -> Tensor) -> Tensor {
        let x = self.embed.forward(ids);
        match &self.pos_embed {
            Some(table) => &x + &positions(table),
            None => x,
        }
    }

    fn head(&self, x: &Tensor) -> Tensor {
        self.lm_head.forward(&self.norm_f.forward(x))
    }
}

/// Builds the forward graph: `input_ids: i64[B,T]` → `logits: f32[B,T,vocab]`,
/// plus `max_logit.layers.{i}: f32[H]`, each head's largest pre-softmax logit.
pub fn build(cfg: &TransformerConfig) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let ids = b.input("input_ids", DType::I64, &[Dim::sym("B"), Dim::sym("T")]);
    let m = Decoder::new(&b, cfg);
    let mut x = m.embed(&ids, |table| table.slice(0, 0i64, Dim::sym("T")));
    let mut monitors = Vec::new();
    for block in &m.blocks {
        let (y, head_max) = block.forward_monitored(&x);
        x = y;
        monitors.push(head_max);
    }
    b.output("logits", &m.head(&x));
    for (i, h) in monitors.iter().enumerate() {
        b.output(&format!("max_logit.layers.{i}"), h);
    }
    b.finish()
}

/// Builds the incremental-decoding graph: new tokens `input_ids: i64[B,T]` at
/// positions `pos..pos+T` (`pos: i64[]`), with per-layer, per-head-group KV
/// caches `cache.layers.{i}.attn.{k,v}.{g}` as inputs and (updated) outputs.
pub fn build_decode(cfg: &TransformerConfig) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let io = DecodeInputs::new(&b);
    let m = Decoder::new(&b, cfg);
    let mut x = m.embed(&io.ids, |table| table.embedding(&io.positions(&b)));
    for (i, block) in m.blocks.iter().enumerate() {
        let caches = declare_caches(&b, &format!("layers.{i}.attn"), &block.attn, cfg.max_pos);
        let (a, new) = block.attn.forward_cached(&block.attn_norm.forward(&x), &io.pos, &caches);
        x = block.mlp_residual(&(&x + &a));
        crate::decode::output_caches(&b, &format!("layers.{i}.attn"), &new);
    }
    b.output("logits", &m.head(&x));
    b.finish()
}
