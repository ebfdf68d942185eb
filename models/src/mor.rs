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

/// Which tokens an expert-choice recursion step keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Expert choice: top-k by score per sequence (sees the whole sequence).
    TopK,
    /// Inference: tokens with `σ(score) ≥ 0.5` stay (causal).
    Threshold,
}

/// How tokens are assigned to recursion depths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Each step chooses its tokens (routers `routers.{r}.weight [1, d]`).
    ExpertChoice,
    /// Each token chooses its depth once, from `router.weight [R, d]` on the
    /// stack input `h¹`: depth `i = argmax softmax(logits)`; intermediate steps
    /// replace `h` by `block(h)`, the last gives `h¹ + p_i·block(h)`; output
    /// `balance_loss = Σ_j P_j·f_j`, weighted by [`BALANCE_LOSS_COEF`].
    TokenChoice,
}

/// Weight of the token-choice balancing loss in the training objective.
pub const BALANCE_LOSS_COEF: f64 = 0.1;

/// Hyperparameters of a MoR model.
#[derive(Clone, Debug, PartialEq)]
pub struct MorConfig {
    /// Embeddings, block structure, head.
    pub base: TransformerConfig,
    /// Capacity of each recursion step; `R = capacities.len()`, non-increasing.
    /// Token choice uses only `R`.
    pub capacities: Vec<f64>,
    /// Update of selected tokens (expert choice).
    pub update: Update,
    /// Replace `σ(score)` (token choice: `p_i`) by 1; MoR then equals a weight-shared stack.
    pub gate_forced_one: bool,
    /// Expert or token choice.
    pub routing: Routing,
    /// Recursive KV sharing: the first recursion's keys and values (of every
    /// token) serve all later recursions, and decoding keeps one cache.
    pub kv_sharing: bool,
}

impl MorConfig {
    /// `tiny` or `small`: the transformer config of that name, R = 4,
    /// capacities (1.0, 0.75, 0.5, 0.25), expert choice, gated residual.
    pub fn named(config: &str) -> Option<MorConfig> {
        Some(MorConfig {
            base: TransformerConfig { rope_base: None, ..TransformerConfig::named(config, false)? },
            capacities: vec![1.0, 0.75, 0.5, 0.25],
            update: Update::GatedResidual,
            gate_forced_one: false,
            routing: Routing::ExpertChoice,
            kv_sharing: false,
        })
    }

    fn recursions(&self) -> usize {
        self.capacities.len()
    }

    fn check(&self, b: &ModelBuilder) {
        let sorted = self.capacities.windows(2).all(|w| w[0] >= w[1]);
        if self.capacities.is_empty() || !sorted || self.capacities.iter().any(|&c| !(c > 0.0 && c <= 1.0)) {
            b.fail(format!("MoR capacities {:?} must be non-empty, non-increasing and in (0, 1]", self.capacities));
        }
        if self.base.n_local_heads != 0 {
            b.fail("MoR's shared block uses full causal heads only".into());
        }
        if self.kv_sharing && self.capacities[0] < 1.0 {
            b.fail("KV sharing needs every token in the first recursion (capacity 1.0)".into());
        }
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
        let routers = match cfg.routing {
            Routing::ExpertChoice => (0..cfg.recursions())
                .map(|r| b.param(&format!("routers.{r}.weight"), DType::F32, &[1usize.into(), d.into()]))
                .collect(),
            Routing::TokenChoice => vec![b.param("router.weight", DType::F32, &[cfg.recursions().into(), d.into()])],
        };
        Shell {
            embed: Embedding::new(b, "embed", cfg.base.vocab, d),
            pos_embed: b.param("pos_embed.weight", DType::F32, &[cfg.base.max_pos.into(), d.into()]),
            routers,
            norm_f: RmsNorm::new(b, "norm_f", d, cfg.base.norm_eps),
            lm_head: Linear::new(b, "lm_head", d, cfg.base.vocab, false),
        }
    }

    /// Expert-choice router scores `[B, T]` for step `r`.
    fn score(&self, h: &Tensor, r: usize) -> Tensor {
        h.matmul_t(&self.routers[r]).reshape(&[h.dim(0), h.dim(1)])
    }

    fn logits(&self, h: &Tensor) -> Tensor {
        self.lm_head.forward(&self.norm_f.forward(h))
    }
}

fn f32_ty(dims: &[Dim]) -> TensorType {
    TensorType::new(DType::F32, dims.iter().cloned())
}

fn cache_type(cfg: &MorConfig, batch: &Dim, slots: Dim) -> TensorType {
    let heads = cfg.base.n_heads;
    TensorType::new(DType::F32, [batch.clone(), heads.into(), slots, (cfg.base.d_model / heads).into()])
}

/// `[B, T, 1]` view of a `[B, T]` tensor, to select or scale rows of `h`.
fn rows(x: &Tensor) -> Tensor {
    x.reshape(&[x.dim(0), x.dim(1), Dim::new(1)])
}

/// Defines the shared-block functions (for decoding, only `@block_kv`, and only
/// with KV sharing; decoding's own step is [`define_block_step`]). Each declares `shared.*` once; every
/// call passes those parameters (lifted to trailing arguments):
/// - `@block(h [B,N,d], active bool[B,N])`: token `i` attends to `j ≤ i` if `j` is active or `j = i`;
/// - `@kv(h)`: the first recursion's keys and values (KV sharing);
/// - `@block_kv(h, qpos i64[B,N], k, v [B,H,S,hd])`: queries at positions `qpos` over shared keys `j ≤ qpos`.
fn define_blocks(b: &ModelBuilder, cfg: &MorConfig, decoding: bool) {
    let (bd, n, s) = (Dim::sym("B"), Dim::sym("N"), Dim::sym("S"));
    let h_ty = f32_ty(&[bd.clone(), n.clone(), Dim::new(cfg.base.d_model as i64)]);
    let mask_ty = TensorType::new(DType::Bool, [bd.clone(), n.clone()]);
    let base = cfg.base.clone();
    let (bd2, n2) = (bd.clone(), n.clone());
    if !cfg.kv_sharing && decoding {
        return;
    }
    if !decoding {
        b.function("block", &[("h", h_ty.clone()), ("active", mask_ty)], move |fb, a| {
            let block = Block::new(fb, "shared", &base);
            let square = [n2.clone(), n2.clone()];
            let itself = fb.iota(DType::I64, &square, 0).eq(&fb.iota(DType::I64, &square, 1));
            let one = Dim::new(1);
            let allowed = a[1].reshape(&[bd2.clone(), one.clone(), one, n2.clone()]).or(&itself);
            vec![("out".to_string(), block.forward_with_mask(&a[0], &allowed))]
        });
    }
    if !cfg.kv_sharing {
        return;
    }
    let base = cfg.base.clone();
    if !decoding {
        b.function("kv", &[("h", h_ty.clone())], move |fb, a| {
            let block = Block::new(fb, "shared", &base);
            let (k, v) = block.attn.keys_values(&block.attn_norm.forward(&a[0]));
            vec![("k".to_string(), k), ("v".to_string(), v)]
        });
    }
    let base = cfg.base.clone();
    let kv_ty = cache_type(cfg, &bd, s.clone());
    let qpos_ty = TensorType::new(DType::I64, [bd.clone(), n.clone()]);
    b.function("block_kv", &[("h", h_ty), ("qpos", qpos_ty), ("k", kv_ty.clone()), ("v", kv_ty)], move |fb, a| {
        let block = Block::new(fb, "shared", &base);
        let one = Dim::new(1);
        let keys = fb.iota(DType::I64, std::slice::from_ref(&s), 0).reshape(&[
            one.clone(),
            one.clone(),
            one.clone(),
            s.clone(),
        ]);
        let allowed = keys.le(&a[1].reshape(&[bd.clone(), one.clone(), n.clone(), one]));
        let attn = block.attn.attend_over(&block.attn_norm.forward(&a[0]), &a[2], &a[3], &allowed);
        vec![("out".to_string(), block.mlp_residual(&(&a[0] + &attn)))]
    });
}

/// Defines `@block_step(h, active, pos, k, v, valid)`: the shared block over new
/// tokens with one depth's KV cache (`[B,H,S,hd]`) and slot validity (`[B,S]`).
fn define_block_step(b: &ModelBuilder, cfg: &MorConfig) {
    let base = cfg.base.clone();
    let (bd, n) = (Dim::sym("B"), Dim::sym("N"));
    let cache_ty = cache_type(cfg, &bd, Dim::new(base.max_pos as i64));
    let args = [
        ("h", f32_ty(&[bd.clone(), n.clone(), Dim::new(base.d_model as i64)])),
        ("active", TensorType::new(DType::Bool, [bd.clone(), n])),
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
        let c = &new_cache[0];
        vec![
            ("out".into(), out),
            ("k".into(), c.k.clone()),
            ("v".into(), c.v.clone()),
            ("valid".into(), valid.cache_update(1, active, pos)),
        ]
    });
}

/// Expert choice's update of tokens `h` with block output `out` and scores `score`.
fn update(cfg: &MorConfig, h: &Tensor, out: &Tensor, score: &Tensor) -> Tensor {
    let gate = rows(&if cfg.gate_forced_one { score.full_like(1.0) } else { score.sigmoid() });
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

/// Token choice's routing, computed once from the stack input `h¹`.
struct TokenChoice {
    /// `[B, T]` i64: the last step each token runs.
    depth: Tensor,
    /// `[B, T]`: the chosen depth's probability.
    p: Tensor,
    /// `Σ_j P_j·f_j`.
    balance_loss: Tensor,
}

impl TokenChoice {
    fn new(b: &ModelBuilder, m: &Shell, h1: &Tensor, recursions: usize) -> TokenChoice {
        let probs = h1.matmul_t(&m.routers[0]).softmax(-1);
        let depth = probs.argmax(-1, false);
        let p = probs.gather(2, &rows(&depth)).reshape(&[h1.dim(0), h1.dim(1)]);
        let shape = [h1.dim(0), h1.dim(1), recursions.into()];
        let onehot = b.iota(DType::I64, &shape, 2).eq(&rows(&depth));
        let share = probs.mean(&[0, 1], false);
        let fraction = &onehot.cast(DType::F32).mean(&[0, 1], false) * recursions as f64;
        TokenChoice { depth, p, balance_loss: (&share * &fraction).sum(&[0], false) }
    }

    /// `[B, T]`: tokens that run step `r`.
    fn active(&self, r: usize) -> Tensor {
        self.depth.ge(&self.depth.full_like_scalar(r as f64))
    }

    /// After step `r`: `block(h)` for tokens going deeper, `h¹ + p·block(h)` at their last step.
    fn update(&self, cfg: &MorConfig, r: usize, h1: &Tensor, out: &Tensor) -> Tensor {
        let finishing = rows(&self.depth.eq(&self.depth.full_like_scalar(r as f64)));
        let last = if cfg.gate_forced_one { out.clone() } else { h1 + &(&rows(&self.p) * out) };
        finishing.select(&last, out)
    }
}

/// Builds the full-sequence graph: `input_ids: i64[B,T]` → `logits`, the
/// per-step active masks `route.{r}: bool[B,T]`, and the router loss:
/// `aux_loss` (expert choice, top-k rule) or `balance_loss` (token choice).
/// `rule` applies to expert choice.
pub fn build(cfg: &MorConfig, rule: Rule) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    cfg.check(&b);
    let (bd, t) = (Dim::sym("B"), Dim::sym("T"));
    let ids = b.input("input_ids", DType::I64, &[bd.clone(), t.clone()]);
    let m = Shell::new(&b, cfg);
    define_blocks(&b, cfg, false);
    let d = Dim::new(cfg.base.d_model as i64);
    let h1 = &m.embed.forward(&ids) + &m.pos_embed.slice(0, 0i64, t.clone());
    let mut h = h1.clone();
    let positions = b.iota(DType::I64, &[bd.clone(), t.clone()], 1);
    let shared_kv = cfg.kv_sharing.then(|| b.call("kv", &[&h]));
    let token_choice = (cfg.routing == Routing::TokenChoice).then(|| TokenChoice::new(&b, &m, &h1, cfg.recursions()));
    // The shared block on tokens `x` at positions `qpos`, which may see the `active` tokens' own keys.
    let run_block = |r: usize, x: &Tensor, active: &Tensor, qpos: &Tensor| match &shared_kv {
        Some(kv) if r > 0 => b.call("block_kv", &[x, qpos, &kv[0], &kv[1]]).remove(0),
        _ => b.call("block", &[x, active]).remove(0),
    };
    let mut active = b.constant(1.0, DType::Bool, &[]).broadcast_to(&[bd.clone(), t.clone()]);
    let mut aux = b.constant(0.0, DType::F32, &[]);
    for (r, &cap) in cfg.capacities.iter().enumerate() {
        match (&token_choice, rule) {
            (Some(tc), _) => {
                active = tc.active(r);
                let out = run_block(r, &h, &active, &positions);
                h = rows(&active).select(&tc.update(cfg, r, &h1, &out), &h);
            }
            (None, Rule::TopK) => {
                let score = m.score(&h, r);
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
                let picked = rows(&idx).broadcast_to(&[bd.clone(), k.clone(), d.clone()]);
                let hs = h.gather(1, &picked);
                let out = run_block(r, &hs, &ones, &idx);
                h = h.scatter(1, &picked, &update(cfg, &hs, &out, &score.gather(1, &idx)));
            }
            (None, Rule::Threshold) => {
                let score = m.score(&h, r);
                if cap < 1.0 {
                    active = active.and(&score.sigmoid().ge(&score.full_like_scalar(0.5)));
                }
                let out = run_block(r, &h, &active, &positions);
                h = rows(&active).select(&update(cfg, &h, &out, &score), &h);
            }
        }
        b.output(&format!("route.{r}"), &active);
    }
    b.output("logits", &m.logits(&h));
    match (&token_choice, rule) {
        (Some(tc), _) => b.output("balance_loss", &tc.balance_loss),
        (None, Rule::TopK) => b.output("aux_loss", &aux),
        (None, Rule::Threshold) => {}
    }
    b.finish()
}

/// Builds the decoding graph (expert choice under [`Rule::Threshold`], or token
/// choice): per depth `r`, caches `cache.depth.{r}.{k,v}` and the validity of
/// their slots `cache.depth.{r}.valid` (recursion-wise caching: a depth's keys
/// are only its active tokens); with KV sharing, depth 0's cache serves all depths.
pub fn build_decode(cfg: &MorConfig) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    cfg.check(&b);
    let io = DecodeInputs::new(&b);
    let m = Shell::new(&b, cfg);
    define_blocks(&b, cfg, true);
    define_block_step(&b, cfg);
    let (bd, t) = (Dim::sym("B"), Dim::sym("T"));
    let h1 = &m.embed.forward(&io.ids) + &m.pos_embed.embedding(&io.positions(&b));
    let mut h = h1.clone();
    let qpos = io.positions(&b).reshape(&[Dim::new(1), t.clone()]).broadcast_to(&[bd.clone(), t.clone()]);
    let token_choice = (cfg.routing == Routing::TokenChoice).then(|| TokenChoice::new(&b, &m, &h1, cfg.recursions()));
    let cache_ty = cache_type(cfg, &bd, Dim::new(cfg.base.max_pos as i64));
    let mut active = b.constant(1.0, DType::Bool, &[]).broadcast_to(&[bd.clone(), t.clone()]);
    let mut shared: Option<(Tensor, Tensor)> = None;
    for (r, &cap) in cfg.capacities.iter().enumerate() {
        let score = (token_choice.is_none()).then(|| m.score(&h, r));
        match (&token_choice, &score) {
            (Some(tc), _) => active = tc.active(r),
            (None, Some(score)) if cap < 1.0 => active = active.and(&score.sigmoid().ge(&score.full_like_scalar(0.5))),
            _ => {}
        }
        let out = match &shared {
            Some((k, v)) => b.call("block_kv", &[&h, &qpos, k, v]).remove(0),
            None => {
                let name = |what: &str| format!("{CACHE_PREFIX}depth.{r}.{what}");
                let k = b.input(&name("k"), DType::F32, &cache_ty.shape);
                let v = b.input(&name("v"), DType::F32, &cache_ty.shape);
                let valid = b.input(&name("valid"), DType::Bool, &[bd.clone(), Dim::new(cfg.base.max_pos as i64)]);
                let outs = b.call("block_step", &[&h, &active, &io.pos, &k, &v, &valid]);
                b.output(&name("k"), &outs[1]);
                b.output(&name("v"), &outs[2]);
                b.output(&name("valid"), &outs[3]);
                if cfg.kv_sharing {
                    shared = Some((outs[1].clone(), outs[2].clone()));
                }
                outs[0].clone()
            }
        };
        let new = match (&token_choice, &score) {
            (Some(tc), _) => tc.update(cfg, r, &h1, &out),
            (None, Some(score)) => update(cfg, &h, &out, score),
            (None, None) => out,
        };
        h = rows(&active).select(&new, &h);
        b.output(&format!("route.{r}"), &active);
    }
    b.output("logits", &m.logits(&h));
    b.finish()
}
