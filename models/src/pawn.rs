//! PAWN's detector head (Miralles-González et al., arXiv 2501.03940): over a
//! frozen language model's per-token next-token metrics and hidden states,
//! three residual MLPs — `metrics_nn` (metrics → F features), `gate_nn`
//! (`[h_t; h_{t+1}; t/T]` → F gate logits) and `aggregate_nn` (F → 1 logit) —
//! with each feature pooled over time by a softmax of its gate (padding and
//! dropped tokens masked out), trained by BCE with label smoothing.
//!
//! Inputs: `metrics: f32[B, T, M]`, `gate_in: f32[B, T, 2d + 1]`, `mask: f32[B, T]`
//! (1 for a token that counts) and `labels: f32[B]` (1 for machine text).
//! Outputs: `loss` (the mean smoothed BCE) and `logit: f32[B]`.

use lsc_frontend::modules::Linear;
use lsc_frontend::{DslError, ModelBuilder, Tensor};
use lsc_ir::{DType, Dim, Program};

/// How the per-token features become one vector per text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    /// A softmax over time of each feature's gate (the paper's method).
    Weighted,
    /// The plain mean over the tokens that count (the paper's ablation).
    Mean,
}

/// The head's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PawnConfig {
    /// Metrics per token.
    pub metrics: usize,
    /// The backbone's hidden size `d` (the gate reads `2d + 1` inputs).
    pub hidden: usize,
    /// Features F (and gates, one per feature).
    pub features: usize,
    /// Residual hidden layers of each MLP.
    pub layers: usize,
    /// Gate softmax or mean.
    pub aggregation: Aggregation,
    /// Label smoothing `s`: targets `y(1 − s) + s/2`.
    pub label_smoothing: f64,
    /// The weight of the machine class's term in the BCE.
    pub pos_weight: f64,
}

/// `x = Lin0(x)`; per hidden layer `x = Norm(Lin_i(GELU(x)) + x)` (a LayerNorm
/// without bias); then `Lin_out(GELU(x))`.
struct ResidualMlp {
    input: Linear,
    hidden: Vec<(Linear, Tensor)>,
    output: Linear,
}

impl ResidualMlp {
    fn new(b: &ModelBuilder, prefix: &str, d_in: usize, width: usize, layers: usize, d_out: usize) -> ResidualMlp {
        ResidualMlp {
            input: Linear::new(b, &format!("{prefix}.input"), d_in, width, true),
            hidden: (0..layers)
                .map(|i| {
                    let lin = Linear::new(b, &format!("{prefix}.hidden.{i}"), width, width, true);
                    (lin, b.param(&format!("{prefix}.norm.{i}.weight"), DType::F32, &[width.into()]))
                })
                .collect(),
            output: Linear::new(b, &format!("{prefix}.output"), width, d_out, true),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = self.input.forward(x);
        for (lin, gain) in &self.hidden {
            let y = &lin.forward(&x.gelu()) + &x;
            let centred = &y - &y.mean(&[-1], true);
            let var = (&centred * &centred).mean(&[-1], true);
            x = &(&centred * &(var + 1e-5).rsqrt()) * gain;
        }
        self.output.forward(&x.gelu())
    }
}

/// `log(1 + eˣ)` without overflow: `max(x, 0) + log(1 + e^{−|x|})`.
fn softplus(x: &Tensor) -> Tensor {
    &x.maximum(&x.full_like_scalar(0.0)) + &((-&x.abs()).exp() + 1.0).log()
}

/// Builds the head.
pub fn build(cfg: &PawnConfig) -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let (batch, time) = (Dim::sym("B"), Dim::sym("T"));
    let f = cfg.features;
    let metrics = b.input("metrics", DType::F32, &[batch.clone(), time.clone(), cfg.metrics.into()]);
    let gate_in = b.input("gate_in", DType::F32, &[batch.clone(), time.clone(), (2 * cfg.hidden + 1).into()]);
    let mask = b.input("mask", DType::F32, &[batch.clone(), time]);
    let labels = b.input("labels", DType::F32, &[batch]);
    let values = ResidualMlp::new(&b, "metrics_nn", cfg.metrics, f, cfg.layers, f).forward(&metrics);
    let m = mask.reshape(&[Dim::sym("B"), Dim::sym("T"), Dim::new(1)]);
    let weights = match cfg.aggregation {
        Aggregation::Weighted => {
            let gates = ResidualMlp::new(&b, "gate_nn", 2 * cfg.hidden + 1, f, cfg.layers, f).forward(&gate_in);
            // Tokens that do not count get −1e9 before the softmax over time.
            let masked = &gates + &((&m - 1.0) * 1e9);
            masked.softmax(1)
        }
        Aggregation::Mean => {
            // A text with no token that counts (batch padding) pools to zero.
            let count = m.sum(&[1], true);
            &m / &count.maximum(&count.full_like_scalar(1.0))
        }
    };
    let pooled = (&weights * &values).sum(&[1], false);
    let logit = ResidualMlp::new(&b, "aggregate_nn", f, f, cfg.layers, 1).forward(&pooled).sum(&[-1], false);
    let s = cfg.label_smoothing;
    let y = &(&labels * (1.0 - s)) + s / 2.0;
    let loss = &(&(&y * &softplus(&-&logit)) * cfg.pos_weight) + &(&(-&y + 1.0) * &softplus(&logit));
    b.output("loss", &loss.mean(&[0], false));
    b.output("logit", &logit);
    b.finish()
}
