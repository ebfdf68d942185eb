//! Neural-network modules written over the primitive ops. Each module
//! registers its parameters under a PyTorch-style prefix when constructed and
//! is applied with `forward`; shape errors point at the caller's line.

use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use lsc_ir::{DType, Dim};

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `y = x·Wᵀ (+ b)` with `W: [out, in]`.
pub struct Linear {
    /// `[out, in]`
    pub weight: Tensor,
    /// `[out]`, when enabled.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Registers `{prefix}.weight` (and `{prefix}.bias`).
    #[track_caller]
    pub fn new(b: &ModelBuilder, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let weight = b.param(&join(prefix, "weight"), DType::F32, &[d_out.into(), d_in.into()]);
        let bias = bias.then(|| b.param(&join(prefix, "bias"), DType::F32, &[d_out.into()]));
        Linear { weight, bias }
    }

    /// Applies the layer to `x [..., in]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.matmul_t(&self.weight);
        match &self.bias {
            Some(bias) => &y + bias,
            None => y,
        }
    }
}

/// A lookup table `[vocab, dim]`.
pub struct Embedding {
    /// `[vocab, dim]`
    pub weight: Tensor,
}

impl Embedding {
    /// Registers `{prefix}.weight`.
    #[track_caller]
    pub fn new(b: &ModelBuilder, prefix: &str, vocab: usize, dim: usize) -> Embedding {
        Embedding { weight: b.param(&join(prefix, "weight"), DType::F32, &[vocab.into(), dim.into()]) }
    }

    /// Rows for integer `ids [...]`, giving `[..., dim]`.
    #[track_caller]
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        self.weight.embedding(ids)
    }
}

/// `x · rsqrt(mean(x²) + eps) · w` over the last axis.
pub struct RmsNorm {
    /// `[dim]`
    pub weight: Tensor,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// Registers `{prefix}.weight`.
    #[track_caller]
    pub fn new(b: &ModelBuilder, prefix: &str, dim: usize, eps: f64) -> RmsNorm {
        RmsNorm { weight: b.param(&join(prefix, "weight"), DType::F32, &[dim.into()]), eps }
    }

    /// Normalises the last axis of `x`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let ms = (x * x).mean(&[-1], true);
        let inv = (ms + self.eps).rsqrt();
        &(x * &inv) * &self.weight
    }
}

/// `(x − mean) / sqrt(var + eps) · w + b` over the last axis (biased variance).
pub struct LayerNorm {
    /// `[dim]`
    pub weight: Tensor,
    /// `[dim]`
    pub bias: Tensor,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// Registers `{prefix}.weight` and `{prefix}.bias`.
    #[track_caller]
    pub fn new(b: &ModelBuilder, prefix: &str, dim: usize, eps: f64) -> LayerNorm {
        LayerNorm {
            weight: b.param(&join(prefix, "weight"), DType::F32, &[dim.into()]),
            bias: b.param(&join(prefix, "bias"), DType::F32, &[dim.into()]),
            eps,
        }
    }

    /// Normalises the last axis of `x`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let centred = x - &x.mean(&[-1], true);
        let var = (&centred * &centred).mean(&[-1], true);
        let y = &centred * &(var + self.eps).rsqrt();
        &(&y * &self.weight) + &self.bias
    }
}

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
        let heads = masks.len().max(1);
        let head_dim = d_model / heads;
        let lin = |name: &str| Linear::new(b, &join(prefix, name), d_model, d_model, false);
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
        CausalSelfAttention { q_proj, k_proj, v_proj, o_proj, qk_norm, masks, head_dim }
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
        let builder = ModelBuilder { inner: x.b.clone(), graph: x.graph };
        let (bd, t, d) = (x.dim(0), x.dim(1), x.dim(2));
        let mut q = self.split_heads(&self.q_proj.forward(x), &bd, &t);
        let mut k = self.split_heads(&self.k_proj.forward(x), &bd, &t);
        let v = self.split_heads(&self.v_proj.forward(x), &bd, &t);
        if let Some((qn, kn)) = &self.qk_norm {
            q = qn.forward(&q);
            k = kn.forward(&k);
        }
        let scores = &q.matmul_t(&k) * (1.0 / (self.head_dim as f64).sqrt());
        let mask = self.head_masks(&builder, &t);
        let neg_inf = builder.constant(f64::NEG_INFINITY, DType::F32, &[]);
        let probs = mask.select(&scores, &neg_inf).softmax(-1);
        let out = probs.matmul(&v).transpose(&[0, 2, 1, 3]).reshape(&[bd, t, d]);
        self.o_proj.forward(&out)
    }
}

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`, no biases.
pub struct SwiGlu {
    /// `[hidden, d]`
    pub gate_proj: Linear,
    /// `[hidden, d]`
    pub up_proj: Linear,
    /// `[d, hidden]`
    pub down_proj: Linear,
}

impl SwiGlu {
    /// Registers `{prefix}.{gate,up,down}_proj.weight`.
    #[track_caller]
    pub fn new(b: &ModelBuilder, prefix: &str, d: usize, hidden: usize) -> SwiGlu {
        SwiGlu {
            gate_proj: Linear::new(b, &join(prefix, "gate_proj"), d, hidden, false),
            up_proj: Linear::new(b, &join(prefix, "up_proj"), d, hidden, false),
            down_proj: Linear::new(b, &join(prefix, "down_proj"), hidden, d, false),
        }
    }

    /// Applies the MLP.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = &self.gate_proj.forward(x).silu() * &self.up_proj.forward(x);
        self.down_proj.forward(&h)
    }
}

/// `down_proj(gelu(up_proj(x)))` with biases (GPT-2 style).
pub struct GeluMlp {
    /// `[hidden, d]` with bias.
    pub up_proj: Linear,
    /// `[d, hidden]` with bias.
    pub down_proj: Linear,
}

impl GeluMlp {
    /// Registers `{prefix}.{up,down}_proj.{weight,bias}`.
    #[track_caller]
    pub fn new(b: &ModelBuilder, prefix: &str, d: usize, hidden: usize) -> GeluMlp {
        GeluMlp {
            up_proj: Linear::new(b, &join(prefix, "up_proj"), d, hidden, true),
            down_proj: Linear::new(b, &join(prefix, "down_proj"), hidden, d, true),
        }
    }

    /// Applies the MLP.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj.forward(&self.up_proj.forward(x).gelu())
    }
}
