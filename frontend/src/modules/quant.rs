//! Weight quantisation in the forward pass, written in primitives with a
//! straight-through estimator: the forward value is the quantised weight,
//! the gradient with respect to the latent weight is the identity.

use crate::tensor::Tensor;
use lsc_ir::Dim;

/// How a Linear layer's weight is quantised in the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightQuant {
    /// Full-precision weight.
    #[default]
    None,
    /// Spectra/TriLM ternary: `s = max(mean|W|, 1e-5)`, `Ŵ = clamp(round(W/s), −1, 1)·s`.
    Ternary,
    /// Symmetric round-to-nearest with `bits` bits and one scale per `group`
    /// consecutive input features: `scale = max|W_g| / (2^(bits−1) − 1)`.
    Groupwise {
        /// Bits per weight (2..=8).
        bits: u32,
        /// Input features per scale.
        group: usize,
    },
}

/// The default group size of [`WeightQuant::groupwise`].
pub const DEFAULT_GROUP: usize = 128;

impl WeightQuant {
    /// Group-wise `bits`-bit quantisation with the default group size (128).
    pub fn groupwise(bits: u32) -> WeightQuant {
        WeightQuant::Groupwise { bits, group: DEFAULT_GROUP }
    }
}

/// The smallest ternary scale (guards all-zero matrices).
pub const TERNARY_MIN_SCALE: f64 = 1e-5;
/// The smallest group-wise scale (guards all-zero groups).
pub const GROUP_MIN_SCALE: f64 = 1e-12;

/// `stop_gradient(q) + (w − stop_gradient(w))`: exactly `q` forward, gradient 1 w.r.t. `w`.
#[track_caller]
pub fn straight_through(w: &Tensor, q: &Tensor) -> Tensor {
    &q.stop_gradient() + &(w - &w.stop_gradient())
}

/// Ternarises a matrix (forward value only; see [`straight_through`]).
#[track_caller]
pub fn ternarize(w: &Tensor) -> Tensor {
    // A flat mean (one sequential sum) so that packing tools can reproduce s bit for bit.
    let numel = w.shape().iter().map(|d| d.as_const()).product::<Option<i64>>();
    let mean_abs = match numel {
        Some(n) => w.abs().reshape(&[Dim::new(n)]).mean(&[0], false),
        None => w.abs().mean(&(0..w.rank() as isize).collect::<Vec<_>>(), false),
    };
    let s = mean_abs.maximum(&w.full_like_scalar(TERNARY_MIN_SCALE));
    &(w / &s).round().clamp(-1.0, 1.0) * &s
}

/// Group-wise symmetric quantisation of `w [out, in]` (forward value only).
#[track_caller]
pub fn quantize_groupwise(w: &Tensor, bits: u32, group: usize) -> Tensor {
    let (out, inp) = (w.dim(0), w.dim(1));
    let n_in = inp.as_const().unwrap_or(0) as usize;
    if !(2..=8).contains(&bits) || group == 0 || !n_in.is_multiple_of(group) {
        w.fail_here(format!("group-wise quantisation needs 2 ≤ bits ≤ 8 and a group size dividing the input width {n_in}; got bits {bits}, group {group}"));
        return w.clone();
    }
    let qmax = ((1u32 << (bits - 1)) - 1) as f64;
    let groups = [out.clone(), (n_in / group).into(), group.into()];
    let wg = w.reshape(&groups);
    let scale = (&wg.abs().max(&[-1], true) / qmax).maximum(&wg.full_like_scalar(GROUP_MIN_SCALE));
    let q = &(&wg / &scale).round().clamp(-qmax, qmax) * &scale;
    q.reshape(&[out, inp])
}

/// The forward-pass weight for `quant`, with a straight-through gradient.
#[track_caller]
pub fn quantized_weight(w: &Tensor, quant: WeightQuant) -> Tensor {
    match quant {
        WeightQuant::None => w.clone(),
        WeightQuant::Ternary => straight_through(w, &ternarize(w)),
        WeightQuant::Groupwise { bits, group } => straight_through(w, &quantize_groupwise(w, bits, group)),
    }
}
