//! Causal self-attention with per-head masks (MHSA, LS-attention), for the
//! full sequence and for incremental decoding over KV caches.

use super::{join, Linear, RmsNorm, Rotary, RotaryTables, WeightQuant};
use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use lsc_ir::{DType, Dim, TensorType};

/// Which keys a head may attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadMask {
    /// Full causal attention: query `i` sees keys `j ≤ i`.
    Causal,
    /// A causal window of `w` tokens: query `i` sees keys `i − w < j ≤ i`.
    Window(usize),
}

/// Causal multi-head self-attention whose heads each have a [`HeadMask`]:
/// all `Causal` is MHSA; `Window` heads followed by `Causal` heads is
/// LS-attention. Scale `1/sqrt(head_dim)`; head `h` uses features
/// `h·head_dim..(h+1)·head_dim`; projections `{q,k,v,o}_proj` without bias.
/// With [`CausalSelfAttention::with_rotary`], queries and keys are rotated by
/// their positions (after the optional q/k norm).
pub struct CausalSelfAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    /// Optional RMSNorm of queries and keys per head (`q_norm`, `k_norm`).
    pub qk_norm: Option<(RmsNorm, RmsNorm)>,
    /// One mask per head, in head order.
    pub masks: Vec<HeadMask>,
    /// Features per head.
    pub head_dim: usize,
    /// Rotary position embedding of queries and keys, if any.
    pub rotary: Option<Rotary>,
}

impl CausalSelfAttention {
    /// Attention with one mask per head (`masks.len()` heads of `d_model / heads`).
    #[track_caller]
    pub fn new(
        b: &ModelBuilder,
        prefix: &str,
        d_model: usize,
        masks: Vec<HeadMask>,
        qk_norm: bool,
    ) -> CausalSelfAttention {
        Self::quantized(b, prefix, d_model, masks, qk_norm, WeightQuant::None)
    }

    /// The same with quantised projection weights (TriLM, QuantLinear).
    #[track_caller]
    pub fn quantized(
        b: &ModelBuilder,
        prefix: &str,
        d_model: usize,
        masks: Vec<HeadMask>,
        qk_norm: bool,
        quant: WeightQuant,
    ) -> CausalSelfAttention {
        let heads = masks.len().max(1);
        let head_dim = d_model / heads;
        let lin = |name: &str| Linear::quantized(b, &join(prefix, name), d_model, d_model, false, quant);
        let (q_proj, k_proj, v_proj, o_proj) = (lin("q_proj"), lin("k_proj"), lin("v_proj"), lin("o_proj"));
        let qk_norm = qk_norm.then(|| {
            (
                RmsNorm::new(b, &join(prefix, "q_norm"), head_dim, 1e-5),
                RmsNorm::new(b, &join(prefix, "k_norm"), head_dim, 1e-5),
            )
        });
        if masks.is_empty() || head_dim * heads != d_model {
            b.fail(format!(
                "attention needs at least one head and d_model ({d_model}) divisible by the head count ({})",
                masks.len()
            ));
        }
        CausalSelfAttention { q_proj, k_proj, v_proj, o_proj, qk_norm, masks, head_dim, rotary: None }
    }

    /// The same attention with rotary position embeddings of wavelength `base`.
    #[track_caller]
    pub fn with_rotary(self, b: &ModelBuilder, base: f64) -> CausalSelfAttention {
        let rotary = Some(Rotary::new(b, self.head_dim, base));
        CausalSelfAttention { rotary, ..self }
    }

    /// MHSA: `heads` full causal heads.
    #[track_caller]
    pub fn mhsa(b: &ModelBuilder, prefix: &str, d_model: usize, heads: usize, qk_norm: bool) -> CausalSelfAttention {
        Self::new(b, prefix, d_model, vec![HeadMask::Causal; heads], qk_norm)
    }

    /// LS-attention: `n_local` heads with a causal window of `window` tokens,
    /// then `n_global` full causal heads.
    #[track_caller]
    pub fn ls(
        b: &ModelBuilder,
        prefix: &str,
        d_model: usize,
        n_local: usize,
        n_global: usize,
        window: usize,
        qk_norm: bool,
    ) -> CausalSelfAttention {
        let mut masks = vec![HeadMask::Window(window); n_local];
        masks.extend(vec![HeadMask::Causal; n_global]);
        Self::new(b, prefix, d_model, masks, qk_norm)
    }

    /// `[T, T]` bool mask for one head kind.
    #[track_caller]
    fn mask(b: &ModelBuilder, t: &Dim, kind: HeadMask) -> Tensor {
        let shape = [t.clone(), t.clone()];
        let i = b.iota(DType::I64, &shape, 0);
        let j = b.iota(DType::I64, &shape, 1);
        let causal = j.le(&i);
        match kind {
            HeadMask::Causal => causal,
            HeadMask::Window(w) => {
                let w = b.constant(w as f64, DType::I64, &[]);
                causal.and(&(&i - &j).lt(&w))
            }
        }
    }

    /// `[H, T, T]` (or `[T, T]` when all heads agree) mask, grouping runs of equal heads.
    #[track_caller]
    fn head_masks(&self, b: &ModelBuilder, t: &Dim) -> Tensor {
        let mut runs: Vec<(HeadMask, usize)> = Vec::new();
        for &m in &self.masks {
            match runs.last_mut() {
                Some((k, n)) if *k == m => *n += 1,
                _ => runs.push((m, 1)),
            }
        }
        if runs.len() == 1 {
            return Self::mask(b, t, runs[0].0);
        }
        let parts: Vec<Tensor> = runs
            .iter()
            .map(|&(kind, n)| Self::mask(b, t, kind).broadcast_to(&[Dim::new(n as i64), t.clone(), t.clone()]))
            .collect();
        let rest: Vec<&Tensor> = parts[1..].iter().collect();
        parts[0].concat(&rest, 0)
    }

    /// Splits `[B, T, D]` into heads `[B, H, T, hd]`.
    #[track_caller]
    fn split_heads(&self, x: &Tensor, b: &Dim, t: &Dim) -> Tensor {
        let h = Dim::new(self.masks.len() as i64);
        x.reshape(&[b.clone(), t.clone(), h, Dim::new(self.head_dim as i64)]).transpose(&[0, 2, 1, 3])
    }

    /// Attends over `x [B, T, d_model]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.attend(x, None).0
    }

    /// [`CausalSelfAttention::forward`] plus the largest pre-softmax logit of each
    /// head `[H]` (over batch and unmasked positions): the LS-attention paper's
    /// instability monitor. It is a reduction of the masked scores, so a fused
    /// attention kernel can return it as its running row maximum.
    #[track_caller]
    pub fn forward_monitored(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.attend(x, None)
    }

    /// Attention whose keys are further restricted by `allowed` (bool,
    /// broadcastable to `[B, H, T, T]`), ANDed with each head's mask. Mixture-of-
    /// Recursions uses it to let tokens attend only to the tokens active at a depth.
    #[track_caller]
    pub fn forward_with_mask(&self, x: &Tensor, allowed: &Tensor) -> Tensor {
        self.attend(x, Some(allowed)).0
    }

    /// Projects `x [B, T, d]` to per-head queries, keys and values `[B, H, T, hd]`,
    /// rotating queries and keys by `tables` when given.
    #[track_caller]
    fn project(&self, x: &Tensor, tables: Option<&RotaryTables>) -> (Tensor, Tensor, Tensor) {
        let (k, v) = self.keys_values_rotated(x, tables);
        (self.queries(x, tables), k, v)
    }

    fn builder(x: &Tensor) -> ModelBuilder {
        ModelBuilder { inner: x.b.clone(), graph: x.graph }
    }

    /// The rotary tables of a whole sequence `x [B, T, d]` (positions `0..T`).
    #[track_caller]
    fn tables_from_zero(&self, x: &Tensor) -> Option<RotaryTables> {
        self.rotary.map(|r| r.tables_from_zero(&Self::builder(x), &x.dim(1)))
    }

    /// Per-head queries `[B, H, T, hd]`, rotated by `tables` when given.
    #[track_caller]
    fn queries(&self, x: &Tensor, tables: Option<&RotaryTables>) -> Tensor {
        let mut q = self.split_heads(&self.q_proj.forward(x), &x.dim(0), &x.dim(1));
        if let Some((qn, _)) = &self.qk_norm {
            q = qn.forward(&q);
        }
        Self::rotate(q, tables)
    }

    fn rotate(x: Tensor, tables: Option<&RotaryTables>) -> Tensor {
        match tables {
            Some(t) => t.apply(&x),
            None => x,
        }
    }

    /// Merges heads `[B, H, T, hd]` back to `[B, T, d]` and applies `o_proj`.
    #[track_caller]
    fn merge(&self, heads: &Tensor, x: &Tensor) -> Tensor {
        let out = heads.transpose(&[0, 2, 1, 3]).reshape(&[x.dim(0), x.dim(1), x.dim(2)]);
        self.o_proj.forward(&out)
    }

    /// Keys and values `[B, H, T, hd]` of the whole sequence `x [B, T, d]`
    /// (MoR's recursive KV sharing computes them once, at the first recursion).
    #[track_caller]
    pub fn keys_values(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.keys_values_rotated(x, self.tables_from_zero(x).as_ref())
    }

    #[track_caller]
    fn keys_values_rotated(&self, x: &Tensor, tables: Option<&RotaryTables>) -> (Tensor, Tensor) {
        let (bd, t) = (x.dim(0), x.dim(1));
        let mut k = self.split_heads(&self.k_proj.forward(x), &bd, &t);
        let v = self.split_heads(&self.v_proj.forward(x), &bd, &t);
        if let Some((_, kn)) = &self.qk_norm {
            k = kn.forward(&k);
        }
        (Self::rotate(k, tables), v)
    }

    /// Queries from `x [B, N, d]` attend over given keys and values `[B, H, S, hd]`
    /// where `allowed` (bool, broadcastable to `[B, H, N, S]`) says which keys each
    /// query may see; the heads' own masks do not apply (the caller knows positions).
    /// The queries' positions are not known here, so rotary attention is a build error.
    #[track_caller]
    pub fn attend_over(&self, x: &Tensor, k: &Tensor, v: &Tensor, allowed: &Tensor) -> Tensor {
        let builder = Self::builder(x);
        if self.rotary.is_some() {
            builder.fail(
                "`attend_over` takes queries without their positions, so it cannot apply rotary embeddings".into(),
            );
        }
        let scores = &self.queries(x, None).matmul_t(k) * (1.0 / (self.head_dim as f64).sqrt());
        let neg_inf = builder.constant(f64::NEG_INFINITY, DType::F32, &[]);
        let probs = allowed.select(&scores, &neg_inf).softmax(-1);
        self.merge(&probs.matmul(v), x)
    }

    #[track_caller]
    fn attend(&self, x: &Tensor, allowed: Option<&Tensor>) -> (Tensor, Tensor) {
        let builder = Self::builder(x);
        let (q, k, v) = self.project(x, self.tables_from_zero(x).as_ref());
        let scores = &q.matmul_t(&k) * (1.0 / (self.head_dim as f64).sqrt());
        let mut mask = self.head_masks(&builder, &x.dim(1));
        if let Some(extra) = allowed {
            mask = mask.and(extra);
        }
        let neg_inf = builder.constant(f64::NEG_INFINITY, DType::F32, &[]);
        let masked = mask.select(&scores, &neg_inf);
        let head_max = masked.max(&[0, 2, 3], false).stop_gradient();
        (self.merge(&masked.softmax(-1).matmul(&v), x), head_max)
    }
}

/// Extra key validity for cached attention (Mixture-of-Recursions: only the
/// tokens active at a depth may be attended to). A query always sees itself.
#[derive(Clone, Debug)]
pub struct KeyValidity {
    /// Per head group, `[B, C]`: whether each cache slot may be attended to.
    pub cached: Vec<Tensor>,
    /// `[B, T]`: whether each new token may be attended to by later ones.
    pub new: Tensor,
}

/// The KV cache of one head group during incremental decoding: `[B, n, C, hd]`
/// keys and values, where `C` is the model's capacity for causal heads and the
/// window `w` for local heads (a ring buffer: position `p` lives in slot `p mod w`).
#[derive(Clone, Debug)]
pub struct AttentionCache {
    /// Keys `[B, n, C, hd]`.
    pub k: Tensor,
    /// Values `[B, n, C, hd]`.
    pub v: Tensor,
}

impl CausalSelfAttention {
    /// Runs of consecutive heads with the same mask: `(first head, count, mask)`.
    /// Each run has its own cache.
    pub fn head_groups(&self) -> Vec<(usize, usize, HeadMask)> {
        let mut runs: Vec<(usize, usize, HeadMask)> = Vec::new();
        for (h, &m) in self.masks.iter().enumerate() {
            match runs.last_mut() {
                Some((_, n, k)) if *k == m => *n += 1,
                _ => runs.push((h, 1, m)),
            }
        }
        runs
    }

    /// The cache type of each head group, for batch `batch` and `capacity` positions.
    pub fn cache_types(&self, batch: &Dim, capacity: usize) -> Vec<TensorType> {
        self.head_groups()
            .into_iter()
            .map(|(_, n, mask)| {
                let c = match mask {
                    HeadMask::Causal => capacity,
                    HeadMask::Window(w) => w,
                };
                TensorType::new(DType::F32, [batch.clone(), n.into(), c.into(), self.head_dim.into()])
            })
            .collect()
    }

    /// `[T, C+T]` mask over (cache slots, new tokens) for queries at `pos..pos+T`.
    #[track_caller]
    fn cached_mask(b: &ModelBuilder, t: &Dim, c: usize, kind: HeadMask, pos: &Tensor) -> Tensor {
        let shape = [t.clone(), t.clone() + Dim::new(c as i64)];
        let i = b.iota(DType::I64, &shape, 0);
        let j = b.iota(DType::I64, &shape, 1);
        let is_cache = j.lt(&b.constant(c as f64, DType::I64, &[]));
        let q_abs = &i + pos;
        let a_new = &(&j + pos) - c as f64;
        let (a_cache, cache_valid) = match kind {
            HeadMask::Causal => (j.clone(), j.lt(pos)),
            HeadMask::Window(w) => {
                // Slot s holds the latest position p < pos with p ≡ s (mod w), if p ≥ 0.
                let w = w as f64;
                let wraps = &(&(&(pos - 1.0) - &j) + w) / w;
                let a = &j + &(&(&wraps - 1.0) * w);
                let valid = a.ge(&b.constant(0.0, DType::I64, &[]));
                (a, valid)
            }
        };
        let a = is_cache.select(&a_cache, &a_new);
        let base = is_cache.select(&cache_valid, &b.constant(1.0, DType::Bool, &[]));
        let visible = base.and(&a.le(&q_abs));
        match kind {
            HeadMask::Causal => visible,
            HeadMask::Window(w) => visible.and(&(&q_abs - &a).lt(&b.constant(w as f64, DType::I64, &[]))),
        }
    }

    /// `[T, C]` over a causal group's updated cache (slot `j` holds position
    /// `j`) for queries at `pos..pos+T`: slot `j` is seen by query `i` iff `j ≤ pos + i`.
    #[track_caller]
    fn slots_seen(b: &ModelBuilder, t: &Dim, c: usize, pos: &Tensor) -> Tensor {
        let shape = [t.clone(), Dim::new(c as i64)];
        let q_abs = &b.iota(DType::I64, &shape, 0) + pos;
        b.iota(DType::I64, &shape, 1).le(&q_abs)
    }

    /// `[B, 1, T, C]` over a causal group's updated cache: slots valid for group
    /// `g` once the new tokens' validity is written at `pos`, or the query itself.
    #[track_caller]
    fn updated_validity(b: &ModelBuilder, ok: &KeyValidity, g: usize, batch: &Dim, t: &Dim, pos: &Tensor) -> Tensor {
        let cached = &ok.cached[g.min(ok.cached.len().saturating_sub(1))];
        let c = cached.dim(1);
        let slots = cached.cache_update(1, &ok.new, pos);
        let one = Dim::new(1);
        let slot_ok = slots.reshape(&[batch.clone(), one.clone(), one.clone(), c.clone()]);
        let shape = [t.clone(), c];
        let itself = b.iota(DType::I64, &shape, 1).eq(&(&b.iota(DType::I64, &shape, 0) + pos));
        slot_ok.or(&itself)
    }

    /// `[B, 1, T, C+T]`: cache slots valid for group `g`; new tokens valid or the query itself.
    #[track_caller]
    fn validity_mask(b: &ModelBuilder, ok: &KeyValidity, g: usize, batch: &Dim, t: &Dim) -> Tensor {
        let cached = &ok.cached[g.min(ok.cached.len().saturating_sub(1))];
        let c = cached.dim(1);
        let one = Dim::new(1);
        let cache_part = cached.reshape(&[batch.clone(), one.clone(), one.clone(), c.clone()]).broadcast_to(&[
            batch.clone(),
            one.clone(),
            t.clone(),
            c,
        ]);
        let square = [t.clone(), t.clone()];
        let itself = b.iota(DType::I64, &square, 0).eq(&b.iota(DType::I64, &square, 1));
        let new_part = ok.new.reshape(&[batch.clone(), one.clone(), one, t.clone()]).or(&itself);
        cache_part.concat(&[&new_part], 3)
    }

    /// Writes new keys or values `[B, n, T, hd]` into a group's cache.
    #[track_caller]
    fn write_cache(b: &ModelBuilder, cache: &Tensor, new: &Tensor, kind: HeadMask, pos: &Tensor) -> Tensor {
        match kind {
            HeadMask::Causal => cache.cache_update(2, new, pos),
            HeadMask::Window(w) => {
                // Ring buffer: position p goes to slot p mod w; for T > w the later tokens win.
                let t = new.dim(2);
                let p = &b.iota(DType::I64, std::slice::from_ref(&t), 0) + pos;
                let slot = &p - &(&(&p / w as f64) * w as f64);
                let idx = slot.reshape(&[Dim::new(1), Dim::new(1), t, Dim::new(1)]).broadcast_to(&new.shape());
                cache.scatter(2, &idx, new)
            }
        }
    }

    /// Incremental decoding: attends the new tokens `x [B, T, d_model]` at
    /// absolute positions `pos..pos+T` (`pos` an i64 scalar) over the caches of
    /// each head group and the new tokens themselves; returns the output and
    /// the updated caches. Equals [`CausalSelfAttention::forward`] on the whole
    /// sequence, position by position.
    #[track_caller]
    pub fn forward_cached(&self, x: &Tensor, pos: &Tensor, caches: &[AttentionCache]) -> (Tensor, Vec<AttentionCache>) {
        self.forward_cached_with_keys(x, pos, caches, None)
    }

    /// [`CausalSelfAttention::forward_cached`] with extra key validity.
    #[track_caller]
    pub fn forward_cached_with_keys(
        &self,
        x: &Tensor,
        pos: &Tensor,
        caches: &[AttentionCache],
        keys_ok: Option<&KeyValidity>,
    ) -> (Tensor, Vec<AttentionCache>) {
        let builder = Self::builder(x);
        let groups = self.head_groups();
        if groups.is_empty() || caches.len() != groups.len() {
            builder.fail(format!("attention has {} head groups but {} caches were given", groups.len(), caches.len()));
            return (x.clone(), caches.to_vec());
        }
        let t = x.dim(1);
        let tables =
            self.rotary.map(|r| r.tables(&builder, &(&builder.iota(DType::I64, std::slice::from_ref(&t), 0) + pos)));
        let (q, k, v) = self.project(x, tables.as_ref());
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let neg_inf = builder.constant(f64::NEG_INFINITY, DType::F32, &[]);
        let mut outs = Vec::new();
        let mut new_caches = Vec::new();
        for (gi, ((h0, n, kind), cache)) in groups.into_iter().zip(caches).enumerate() {
            let heads = |x: &Tensor| x.slice(1, h0 as i64, (h0 + n) as i64);
            let (qg, kg, vg) = (heads(&q), heads(&k), heads(&v));
            let c = cache.k.dim(2).as_const().unwrap_or(0) as usize;
            let updated = AttentionCache {
                k: Self::write_cache(&builder, &cache.k, &kg, kind, pos),
                v: Self::write_cache(&builder, &cache.v, &vg, kind, pos),
            };
            // A causal group attends over its updated cache (slot = position), so
            // the old cache is read only by the update, which can then happen in
            // place; a ring buffer may already have overwritten keys the new
            // tokens still see, so a window group attends over (old cache, new).
            let (keys, values, mut mask) = match kind {
                HeadMask::Causal => (updated.k.clone(), updated.v.clone(), Self::slots_seen(&builder, &t, c, pos)),
                HeadMask::Window(_) => (
                    cache.k.concat(&[&kg], 2),
                    cache.v.concat(&[&vg], 2),
                    Self::cached_mask(&builder, &t, c, kind, pos),
                ),
            };
            if let Some(ok) = keys_ok {
                let valid = match kind {
                    HeadMask::Causal => Self::updated_validity(&builder, ok, gi, &x.dim(0), &t, pos),
                    HeadMask::Window(_) => Self::validity_mask(&builder, ok, gi, &x.dim(0), &t),
                };
                mask = mask.and(&valid);
            }
            let scores = &qg.matmul_t(&keys) * scale;
            outs.push(mask.select(&scores, &neg_inf).softmax(-1).matmul(&values));
            new_caches.push(updated);
        }
        let rest: Vec<&Tensor> = outs[1..].iter().collect();
        (self.merge(&outs[0].concat(&rest, 1), x), new_caches)
    }
}
