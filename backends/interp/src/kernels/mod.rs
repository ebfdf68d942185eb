//! One straightforward implementation per op, writing into outputs the
//! caller allocated (the interpreter allocates them per run; an executor may
//! pass memory it planned). Clarity over speed: these kernels are the ground
//! truth every generated kernel and every library kernel is checked against.
//! Products, softmaxes and the fused ops accumulate in f64; reductions add in
//! `T`, in row-major order.
//!
//! Every kernel writes every element of its outputs, whatever they held.

mod attention;
mod elementwise;
mod fused;
mod index;
mod layout;
mod linear;
mod reduce;

pub use attention::first_key;
pub use fused::AdamW;
pub use index::scatter_in_place;
pub use layout::cache_update_in_place;
pub(crate) use layout::same_kind;

use crate::math::Real;
use crate::value::{numel, DataMut, View, ViewMut};
use lsc_ir::{Bindings, Op};

/// Kernel results: an `Err` says what was wrong with the operands.
pub type R<T> = Result<T, String>;

/// Computes `op` (any op but leaves with an identity and control flow) from
/// `args` into `outs`, whose dtypes and shapes are the node's concrete output
/// types; `bindings` evaluates symbolic attributes (a slice's start).
pub fn eval_into<T: Real>(op: &Op, args: &[View<'_, T>], outs: &mut [ViewMut<'_, T>], bindings: &Bindings) -> R<()> {
    let Some(out) = outs.first_mut() else { return Err(format!("`{}` has no outputs", op.name())) };
    match op {
        Op::Constant { value } => fill(*value, out),
        Op::Iota { axis } => iota(*axis, out),
        Op::Unary(u) => elementwise::unary(*u, &args[0], out),
        Op::Clamp { min, max } => elementwise::clamp(&args[0], *min, *max, out),
        Op::Binary(b) => elementwise::binary(*b, &args[0], &args[1], out),
        Op::Compare(c) => elementwise::compare(*c, &args[0], &args[1], out),
        Op::Select => elementwise::select(&args[0], &args[1], &args[2], out),
        Op::Cast { .. } => elementwise::cast(&args[0], out),
        Op::StopGradient | Op::Reshape { .. } => layout::copy(&args[0], out),
        Op::Transpose { perm } => layout::transpose(&args[0], perm, out),
        Op::Broadcast { .. } => layout::broadcast(&args[0], out),
        Op::Slice { axis, start, .. } => {
            let start = usize::try_from(start.eval(bindings)?).map_err(|_| "slice start is negative".to_string())?;
            layout::slice(&args[0], *axis, start, out)
        }
        Op::Concat { axis } => layout::concat(args, *axis, out),
        Op::CacheUpdate { axis } => layout::cache_update(&args[0], &args[1], &args[2], *axis, out),
        Op::Reduce { kind, axes, .. } => reduce::reduce(&args[0], *kind, axes, out),
        Op::ArgMax { axis, .. } => reduce::argmax(&args[0], *axis, out),
        Op::Softmax { axis } => reduce::softmax(&args[0], *axis, false, out),
        Op::LogSoftmax { axis } => reduce::softmax(&args[0], *axis, true, out),
        Op::CrossEntropy => reduce::cross_entropy(&args[0], &args[1], out),
        Op::TopK { axis, .. } => reduce::topk(&args[0], *axis, outs),
        Op::Gather { axis } => index::gather(&args[0], &args[1], *axis, out),
        Op::Scatter { axis } => index::scatter(&args[0], &args[1], &args[2], *axis, false, out),
        Op::ScatterAdd { axis } => index::scatter(&args[0], &args[1], &args[2], *axis, true, out),
        Op::Embedding => index::embedding(&args[0], &args[1], out),
        Op::MatMul { trans_a, trans_b } => linear::matmul(&args[0], &args[1], *trans_a, *trans_b, out),
        Op::MatMulSum { trans_a, trans_b } => linear::matmul_sum(&args[0], &args[1], *trans_a, *trans_b, out),
        Op::CausalConv1d => linear::causal_conv1d(&args[0], &args[1], out),
        Op::Rotary => linear::rotary(&args[0], &args[1], &args[2], out),
        Op::LsAttention { windows, scale } => attention::forward(args, windows, *scale, outs),
        Op::LsAttentionGrad { windows, scale } => attention::backward(args, windows, *scale, outs),
        Op::SoftmaxCrossEntropy => fused::softmax_cross_entropy(args, outs),
        Op::AdamW { beta1, beta2, eps, weight_decay, decay } => {
            let h = AdamW { beta1: *beta1, beta2: *beta2, eps: *eps, weight_decay: *weight_decay, decay };
            fused::adamw(args, &h, outs)
        }
        Op::TernaryPack => fused::ternary_pack(&args[0], &args[1], out),
        Op::TernaryMatmul { trans_b } => fused::ternary_matmul(&args[0], &args[1], &args[2], *trans_b, out),
        Op::Gam => fused::gam(args, out),
        Op::CausalConv1dGrad => fused::causal_conv1d_grad(args, outs),
        Op::Input { .. } | Op::Param { .. } | Op::Loop { .. } | Op::Call { .. } | Op::RoutedCall { .. } => {
            Err(format!("`{}` is evaluated by the executor, not as a kernel", op.name()))
        }
    }
}

/// `out ← value` everywhere (converted to the output's dtype).
pub fn fill<T: Real>(value: f64, out: &mut ViewMut<'_, T>) -> R<()> {
    let dtype = out.dtype;
    match &mut out.data {
        DataMut::Float(v) => v.fill(elementwise::round_to(T::from_f64(value), dtype)),
        DataMut::Int(v) => v.fill(value as i64),
        DataMut::Bool(v) => v.fill(value != 0.0),
        DataMut::Ternary(_) => return Err("a constant cannot be packed ternary".into()),
    }
    Ok(())
}

/// `out[.., i, ..] ← i` along `axis`.
pub fn iota<T: Real>(axis: usize, out: &mut ViewMut<'_, T>) -> R<()> {
    let (_, n, inner) = split(out.shape, axis);
    let at = |p: usize| (p / inner.max(1)) % n.max(1);
    match &mut out.data {
        DataMut::Float(v) => v.iter_mut().enumerate().for_each(|(p, x)| *x = T::from_f64(at(p) as f64)),
        DataMut::Int(v) => v.iter_mut().enumerate().for_each(|(p, x)| *x = at(p) as i64),
        _ => return Err(format!("iota of {}", out.dtype)),
    }
    Ok(())
}

/// `(outer, n, inner)` sizes around `axis`.
pub(crate) fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

/// Row-major element strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `k` as an index into an axis of `n`, or an error naming `what`.
pub(crate) fn check_index(k: i64, n: usize, what: &str) -> R<usize> {
    usize::try_from(k).ok().filter(|&k| k < n).ok_or_else(|| format!("{what} index {k} is out of range 0..{n}"))
}

/// Why an op cannot read a packed ternary matrix (only `ternary_matmul` and copies do).
pub(crate) const PACKED: &str = "packed ternary weights are read only by ternary_matmul";
