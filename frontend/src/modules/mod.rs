//! Neural-network modules written over the primitive ops. Each module
//! registers its parameters under a PyTorch-style prefix when constructed and
//! is applied with `forward`; shape errors point at the caller's line.

mod attention;
pub mod quant;
mod rotary;

pub use attention::{AttentionCache, CausalSelfAttention, HeadMask, KeyValidity};
pub use quant::WeightQuant;
pub use rotary::{Rotary, RotaryTables};

use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use lsc_ir::DType;

pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// `y = x·Ŵᵀ (+ b)` with `W: [out, in]`, where `Ŵ` is `W` or its quantised
/// form ([`WeightQuant`], straight-through gradient).
pub struct Linear {
    /// `[out, in]` (the latent full-precision weight when quantised).
    pub weight: Tensor,
    /// `[out]`, when enabled.
    pub bias: Option<Tensor>,
    /// Forward-pass quantisation of the weight.
    pub quant: WeightQuant,
}

impl Linear {
    /// Registers `{prefix}.weight` (and `{prefix}.bias`).
    #[track_caller]
    pub fn new(b: &ModelBuilder, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let weight = b.param(&join(prefix, "weight"), DType::F32, &[d_out.into(), d_in.into()]);
        let bias = bias.then(|| b.param(&join(prefix, "bias"), DType::F32, &[d_out.into()]));
        Linear { weight, bias, quant: WeightQuant::None }
    }

    /// A layer whose weight is quantised in the forward pass.
    #[track_caller]
    pub fn quantized(
        b: &ModelBuilder,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        quant: WeightQuant,
    ) -> Linear {
        Linear { quant, ..Linear::new(b, prefix, d_in, d_out, bias) }
    }

    /// The weight the forward pass multiplies by (`Ŵ`).
    #[track_caller]
    pub fn effective_weight(&self) -> Tensor {
        quant::quantized_weight(&self.weight, self.quant)
    }

    /// Applies the layer to `x [..., in]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.matmul_t(&self.effective_weight());
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
        Self::quantized(b, prefix, d, hidden, WeightQuant::None)
    }

    /// The same with quantised projection weights.
    #[track_caller]
    pub fn quantized(b: &ModelBuilder, prefix: &str, d: usize, hidden: usize, quant: WeightQuant) -> SwiGlu {
        SwiGlu {
            gate_proj: Linear::quantized(b, &join(prefix, "gate_proj"), d, hidden, false, quant),
            up_proj: Linear::quantized(b, &join(prefix, "up_proj"), d, hidden, false, quant),
            down_proj: Linear::quantized(b, &join(prefix, "down_proj"), hidden, d, false, quant),
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
