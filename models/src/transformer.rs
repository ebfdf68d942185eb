//! `transformer` (MHSA baseline) and `ls-transformer` (LS-attention): the
//! same pre-norm decoder, differing only in the attention masks per head.

use lsc_frontend::modules::{CausalSelfAttention, Embedding, HeadMask, Linear, RmsNorm, SwiGlu};
use lsc_frontend::{DslError, ModelBuilder};
use lsc_ir::{DType, Dim, Program};

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
    /// Learned absolute positions (the longest sequence the model accepts).
    pub max_pos: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// RMSNorm on queries and keys per head.
    pub qk_norm: bool,
}

impl TransformerConfig {
    /// The named config of `transformer` (`local = false`) or `ls-transformer`.
    pub fn named(config: &str, local: bool) -> Option<TransformerConfig> {
        let (d_model, n_layers, n_heads, d_hidden, max_pos, window) = match config {
            "tiny" => (32, 2, 4, 64, 64, 4),
            "small" => (256, 4, 8, 768, 256, 64),
            "long" => (256, 4, 8, 768, 4096, 64),
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
            norm_eps: 1e-5,
            qk_norm: false,
        })
    }

    /// The per-head masks of one layer: local heads first, then global.
    pub fn head_masks(&self) -> Vec<HeadMask> {
        (0..self.n_heads)
            .map(|h| if h < self.n_local_heads { HeadMask::Window(self.window) } else { HeadMask::Causal })
            .collect()
    }
}

/// Builds the forward graph: `input_ids: i64[B,T]` → `logits: f32[B,T,vocab]`.
pub fn build(cfg: &TransformerConfig) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let (batch, time) = (Dim::sym("B"), Dim::sym("T"));
    let ids = b.input("input_ids", DType::I64, &[batch.clone(), time.clone()]);
    let embed = Embedding::new(&b, "embed", cfg.vocab, cfg.d_model);
    let pos = b.param("pos_embed.weight", DType::F32, &[cfg.max_pos.into(), cfg.d_model.into()]);
    let mut x = &embed.forward(&ids) + &pos.slice(0, 0i64, time);
    for i in 0..cfg.n_layers {
        let p = format!("layers.{i}");
        let attn_norm = RmsNorm::new(&b, &format!("{p}.attn_norm"), cfg.d_model, cfg.norm_eps);
        let attn = CausalSelfAttention::new(&b, &format!("{p}.attn"), cfg.d_model, cfg.head_masks(), cfg.qk_norm);
        let mlp_norm = RmsNorm::new(&b, &format!("{p}.mlp_norm"), cfg.d_model, cfg.norm_eps);
        let mlp = SwiGlu::new(&b, &format!("{p}.mlp"), cfg.d_model, cfg.d_hidden);
        x = &x + &attn.forward(&attn_norm.forward(&x));
        x = &x + &mlp.forward(&mlp_norm.forward(&x));
    }
    let norm_f = RmsNorm::new(&b, "norm_f", cfg.d_model, cfg.norm_eps);
    let lm_head = Linear::new(&b, "lm_head", cfg.d_model, cfg.vocab, false);
    b.output("logits", &lm_head.forward(&norm_f.forward(&x)));
    b.finish()
}
