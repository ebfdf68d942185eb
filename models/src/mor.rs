//! `mor`: Mixture-of-Recursions with expert-choice routing (Bae et al., 2025).
//!
//! The `transformer`'s embedding, `norm_f` and `lm_head`, and ONE shared block
//! (`shared.*`, the structure of a transformer layer) written once as the IR
//! function `@block` and called R times: weight sharing is explicit. At step
//! `r` a router `routers.{r}.weight [1, d]` scores `h·routerᵀ`; among the tokens
//! still active, each sequence keeps the top `k = max(1, round(cap_r·T))` (ties
//! to the lower position), sorted back into position order; the block runs on
//! just those tokens, which attend causally only to each other; they update
//! `h ← h + σ(score)·(block(h) − h)` (or the paper's `h + α·σ(score)·block(h)`);
//! the others pass through.
//!
//! Expert choice looks at the whole sequence, so two rules are offered:
//! [`Rule::TopK`] (training; also outputs the auxiliary BCE loss that teaches
//! the router logit to predict top-k membership, weighted by
//! [`AUX_LOSS_COEF`] in the training loss) and [`Rule::Threshold`] (inference:
//! a token stays active while `σ(logit) ≥ 0.5`, which is causal and decodes
//! incrementally with one KV cache per depth holding only that depth's tokens).

use crate::decode::{DecodeInputs, CACHE_PREFIX};
use crate::transformer::{Block, TransformerConfig};
use lsc_frontend::modules::{AttentionCache, Embedding, KeyValidity, Linear, RmsNorm};
use lsc_frontend::{DslError, ModelBuilder, Tensor};
use lsc_ir::{DType, Dim, Program, TensorType};

/// Weight of the auxiliary router loss in the training objective.
pub const AUX_LOSS_COEF: f64 = 0.001;
/// The paper's default router scale α for [`Update::Paper`].
pub const PAPER_ALPHA: f64 = 0.1;

/// How selected tokens are updated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// `h + σ(score)·(block(h) − h)`.
    GatedResidual,
    /// The paper's `h + α·σ(score)·block(h)`.
    Paper {
        /// Router scale α.
        alpha: f64,
    },
}

/// Which tokens a recursion step keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Expert choice: top-k by score per sequence (sees the whole sequence).
    TopK,
    /// Inference: tokens with `σ(score) ≥ 0.5` stay (causal).
    Threshold,
}

/// Hyperparameters of a MoR model.
#[derive(Clone, Debug, PartialEq)]
pub struct MorConfig {
    /// Embeddings, block structure, head.
    pub base: TransformerConfig,
    /// Capacity of each recursion step; `R = capacities.len()`. Non-increasing.
    pub capacities: Vec<f64>,
    /// Update of selected tokens.
    pub update: Update,
    /// Replace `σ(score)` by 1 (tests: MoR then equals a weight-shared stack).
    pub gate_forced_one: bool,
}

impl MorConfig {
    /// `tiny` or `small`: the transformer config of that name, R = 4,
    /// capacities (1.0, 0.75, 0.5, 0.25).
    pub fn named(config: &str) -> Option<MorConfig> {
        Some(MorConfig {
            base: TransformerConfig::named(config, false)?,
            capacities: vec![1.0, 0.75, 0.5, 0.25],
            update: Update::GatedResidual,
            gate_forced_one: false,
        })
    }

    fn recursions(&self) -> usize {
        self.capacities.len()
    }
}

struct Shell {
    embed: Embedding,
    pos_embed: Tensor,
    routers: Vec<Tensor>,
    norm_f: RmsNorm,
    lm_head: Linear,
}

impl Shell {
    fn new(b: &ModelBuilder, cfg: &MorConfig) -> Shell {
        let d = cfg.base.d_model;
        Shell {
            embed: Embedding::new(b, "embed", cfg.base.vocab, d),
            pos_embed: b.param("pos_embed.weight", DType::F32, &[cfg.base.max_pos.into(), d.into()]),
            routers: (0..cfg.recursions())
                .map(|r| b.param(&format!("routers.{r}.weight"), DType::F32, &[1usize.into(), d.into()]))
                .collect(),
            norm_f: RmsNorm::new(b, "norm_f", d, cfg.base.norm_eps),
            lm_head: Linear::new(b, "lm_head", d, cfg.base.vocab, false),
        }
    }

    /// Router scores `[B, T]` for step `r`.
    fn score(&self, h: &Tensor, r: usize) -> Tensor {
        h.matmul_t(&self.routers[r]).reshape(&[h.dim(0), h.dim(1)])
    }
}

fn f32_ty(dims: &[Dim]) -> TensorType {
    TensorType::new(DType::F32, dims.iter().cloned())
}

/// Defines `@block(h: f32[B,N,d], active: bool[B,N]) -> f32[B,N,d]`: the shared
/// block where token `i` may attend to `j ≤ i` if `j` is active (or `j = i`).
fn define_block(b: &ModelBuilder, cfg: &MorConfig) {
    let (bd, n, d) = (Dim::sym("B"), Dim::sym("N"), Dim::new(cfg.base.d_model as i64));
    let args =
        [("h", f32_ty(&[bd.clone(), n.clone(), d])), ("active", TensorType::new(DType::Bool, [bd.clone(), n.clone()]))];
    let base = cfg.base.clone();
    b.function("block", &args, move |fb, a| {
        let block = Block::new(fb, "shared", &base);
        let (h, active) = (&a[0], &a[1]);
        let square = [n.clone(), n.clone()];
        let itself = fb.iota(DType::I64, &square, 0).eq(&fb.iota(DType::I64, &square, 1));
        let one = Dim::new(1);
        let allowed = active.reshape(&[bd.clone(), one.clone(), one, n.clone()]).or(&itself);
        vec![("out".to_string(), block.forward_with_mask(h, &allowed))]
    });
}

/// `h_new` for tokens `h` with block output `out` and router scores `score [.., N]`.
fn update(cfg: &MorConfig, h: &Tensor, out: &Tensor, score: &Tensor) -> Tensor {
    let gate = if cfg.gate_forced_one { score.full_like(1.0) } else { score.sigmoid() };
    let gate = gate.reshape(&[score.dim(0), score.dim(1), Dim::new(1)]);
    match cfg.update {
        Update::GatedResidual => h + &(&gate * &(out - h)),
        Update::Paper { alpha } => h + &(&(&gate * alpha) * out),
    }
}

/// BCE with logits, per element: `max(x, 0) − x·y + log(1 + e^{−|x|})`.
fn bce_with_logits(x: &Tensor, y: &Tensor) -> Tensor {
    let zero = x.full_like_scalar(0.0);
    let softplus = (-&x.abs()).exp() + 1.0;
    &(&x.maximum(&zero) - &(x * y)) + &softplus.log()
}

/// Builds the full-sequence graph: `input_ids: i64[B,T]` → `logits`, the
/// per-step active masks `route.{r}: bool[B,T]`, and (top-k rule) `aux_loss: f32[]`.
pub fn build(cfg: &MorConfig, rule: Rule) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let (bd, t) = (Dim::sym("B"), Dim::sym("T"));
    let ids = b.input("input_ids", DType::I64, &[bd.clone(), t.clone()]);
    let m = Shell::new(&b, cfg);
    define_block(&b, cfg);
    let d = Dim::new(cfg.base.d_model as i64);
    let mut h = &m.embed.forward(&ids) + &m.pos_embed.slice(0, 0i64, t.clone());
    let all = b.constant(1.0, DType::Bool, &[]).broadcast_to(&[bd.clone(), t.clone()]);
    let mut active = all.clone();
    let mut aux = b.constant(0.0, DType::F32, &[]);
    for (r, &cap) in cfg.capacities.iter().enumerate() {
        let score = m.score(&h, r);
        match rule {
            Rule::TopK => {
                let k = if cap >= 1.0 { t.clone() } else { b.derived_symbol(&format!("K{r}"), t.clone(), cap, 1) };
                let neg_inf = score.full_like_scalar(f64::NEG_INFINITY);
                let (_, by_score) = active.select(&score, &neg_inf).topk(k.clone(), 1);
                let (neg_sorted, _) = (-&by_score).topk(k.clone(), 1);
                let idx = -&neg_sorted;
                let ones = b.constant(1.0, DType::Bool, &[]).broadcast_to(&[bd.clone(), k.clone()]);
                let none = b.constant(0.0, DType::Bool, &[]).broadcast_to(&[bd.clone(), t.clone()]);
                active = none.scatter(1, &idx, &ones);
                let target = active.cast(DType::F32).stop_gradient();
                aux = &aux + &bce_with_logits(&score, &target).mean(&[0, 1], false);
                let rows = idx.reshape(&[bd.clone(), k.clone(), Dim::new(1)]).broadcast_to(&[
                    bd.clone(),
                    k.clone(),
                    d.clone(),
                ]);
                let hs = h.gather(1, &rows);
                let out = b.call("block", &[&hs, &ones]).remove(0);
                let new = update(cfg, &hs, &out, &score.gather(1, &idx));
                h = h.scatter(1, &rows, &new);
            }
            Rule::Threshold => {
                if cap < 1.0 {
                    active = active.and(&score.sigmoid().ge(&score.full_like_scalar(0.5)));
                }
                let out = b.call("block", &[&h, &active]).remove(0);
                let new = update(cfg, &h, &out, &score);
                h = active.reshape(&[bd.clone(), t.clone(), Dim::new(1)]).select(&new, &h);
            }
        }
        b.output(&format!("route.{r}"), &active);
    }
    b.output("logits", &m.lm_head.forward(&m.norm_f.forward(&h)));
    if rule == Rule::TopK {
        b.output("aux_loss", &aux);
    }
    b.finish()
}

/// Defines `@block_step(h, active, pos, k, v, valid)`: the shared block over new
/// tokens with one depth's KV cache (`[B,H,S,hd]`) and slot validity (`[B,S]`).
fn define_block_step(b: &ModelBuilder, cfg: &MorConfig) {
    let base = cfg.base.clone();
    let (bd, n) = (Dim::sym("B"), Dim::sym("N"));
    let d = Dim::new(base.d_model as i64);
    let probe = ModelBuilder::new();
    let cache_ty = Block::new(&probe, "probe", &base).attn.cache_types(&bd, base.max_pos).remove(0);
    let args = [
        ("h", f32_ty(&[bd.clone(), n.clone(), d])),
        ("active", TensorType::new(DType::Bool, [bd.clone(), n.clone()])),
        ("pos", TensorType::scalar(DType::I64)),
        ("k", cache_ty.clone()),
        ("v", cache_ty),
        ("valid", TensorType::new(DType::Bool, [bd, Dim::new(base.max_pos as i64)])),
    ];
    b.function("block_step", &args, move |fb, a| {
        let block = Block::new(fb, "shared", &base);
        let (h, active, pos, valid) = (&a[0], &a[1], &a[2], &a[5]);
        let cache = [AttentionCache { k: a[3].clone(), v: a[4].clone() }];
        let keys = KeyValidity { cached: vec![valid.clone()], new: active.clone() };
        let (attn, new_cache) =
            block.attn.forward_cached_with_keys(&block.attn_norm.forward(h), pos, &cache, Some(&keys));
        let out = block.mlp_residual(&(h + &attn));
        let new_valid = valid.cache_update(1, active, pos);
        let c = &new_cache[0];
        vec![("out".into(), out), ("k".into(), c.k.clone()), ("v".into(), c.v.clone()), ("valid".into(), new_valid)]
    });
}

/// Builds the decoding graph under [`Rule::Threshold`]: per depth `r`, caches
/// `cache.depth.{r}.{k,v}` and the validity of their slots `cache.depth.{r}.valid`.
pub fn build_decode(cfg: &MorConfig) -> Result<Program, DslError> {
    if cfg.base.n_local_heads != 0 {
        let b = ModelBuilder::new();
        b.fail("MoR decoding supports full causal heads only".into());
        return b.finish();
    }
    let b = ModelBuilder::new();
    let io = DecodeInputs::new(&b);
    let m = Shell::new(&b, cfg);
    define_block_step(&b, cfg);
    let (bd, t) = (Dim::sym("B"), Dim::sym("T"));
    let mut h = &m.embed.forward(&io.ids) + &m.pos_embed.embedding(&io.positions(&b));
    let probe = ModelBuilder::new();
    let cache_ty = Block::new(&probe, "probe", &cfg.base).attn.cache_types(&bd, cfg.base.max_pos).remove(0);
    let mut active = b.constant(1.0, DType::Bool, &[]).broadcast_to(&[bd.clone(), t.clone()]);
    for (r, &cap) in cfg.capacities.iter().enumerate() {
        let score = m.score(&h, r);
        if cap < 1.0 {
            active = active.and(&score.sigmoid().ge(&score.full_like_scalar(0.5)));
        }
        let name = |what: &str| format!("{CACHE_PREFIX}depth.{r}.{what}");
        let k = b.input(&name("k"), DType::F32, &cache_ty.shape);
        let v = b.input(&name("v"), DType::F32, &cache_ty.shape);
        let valid = b.input(&name("valid"), DType::Bool, &[bd.clone(), Dim::new(cfg.base.max_pos as i64)]);
        let outs = b.call("block_step", &[&h, &active, &io.pos, &k, &v, &valid]);
        let new = update(cfg, &h, &outs[0], &score);
        h = active.reshape(&[bd.clone(), t.clone(), Dim::new(1)]).select(&new, &h);
        b.output(&name("k"), &outs[1]);
        b.output(&name("v"), &outs[2]);
        b.output(&name("valid"), &outs[3]);
        b.output(&format!("route.{r}"), &active);
    }
    b.output("logits", &m.lm_head.forward(&m.norm_f.forward(&h)));
    b.finish()
}
