//! The CPU kernel library: lsc's hand-scheduled f32 kernels for the ops where
//! speed matters, and their dispatch. [`run_op`] takes an op with its operand
//! and result tensors; every op or layout without a kernel here runs the
//! reference interpreter's kernel (`lsc_interp::kernels`), which is also what
//! every kernel here is tested against.
//!
//! | module | contents |
//! |---|---|
//! | [`gemm`] | the f32 GEMM for AVX-512 CPUs: packed panels and a 14×32 micro-kernel |
//! | [`matmul`] | batched and batch-summed products, few-row products, the GEMM entry |
//! | [`flash`] | online-softmax (LS-)attention forward and backward for AVX-512 |
//! | [`attention`] | (LS-)attention blocked over query rows with GEMMs (other head sizes and CPUs) |
//! | [`ternary`] | the packed-ternary product with adds and subtracts |
//! | [`pool`] | spinning worker threads for short parallel loops (decoding's products, generated kernels) |
//! | [`rows`] | row loops: softmax, dot products, a vectorisable `exp` |
//! | [`index`] | row-wise gather and scatter |
//! | [`layout`] | transposes, broadcasts and slices as strided copies; reductions over axes |
//! | [`fused`] | softmax + cross-entropy, AdamW, GAM, convolution and its backward, rotary, row softmax |

#![warn(missing_docs)]

pub mod attention;
pub mod flash;
pub mod fused;
pub mod gemm;
pub mod index;
pub mod layout;
pub mod matmul;
pub mod pool;
pub mod rows;
pub mod ternary;

use lsc_interp::{View, ViewMut};
use lsc_ir::{Bindings, Op};

/// Runs `op` reading `inputs` into `outputs` (whose types are the node's
/// concrete output types): a kernel of this library where it has one for the
/// operands' layout, else the reference kernel. Symbolic attributes must be
/// resolved already.
pub fn run_op(op: &Op, inputs: &[View<'_, f32>], outputs: &mut [ViewMut<'_, f32>]) -> Result<(), String> {
    let done = match op {
        Op::MatMul { trans_a, trans_b } => {
            matmul::matmul(&inputs[0], &inputs[1], *trans_a, *trans_b, &mut outputs[0]).map(|_| true)?
        }
        Op::MatMulSum { trans_a, trans_b } => {
            matmul::matmul_sum(&inputs[0], &inputs[1], *trans_a, *trans_b, &mut outputs[0]).map(|_| true)?
        }
        Op::LsAttention { windows, scale } => {
            attention::ls_attention(inputs, windows, *scale, outputs).map(|_| true)?
        }
        Op::LsAttentionGrad { windows, scale } => {
            attention::ls_attention_grad(inputs, windows, *scale, outputs).map(|_| true)?
        }
        Op::TernaryMatmul { trans_b } => {
            ternary::ternary_matmul(&inputs[0], &inputs[1], &inputs[2], *trans_b, &mut outputs[0])?
        }
        Op::SoftmaxCrossEntropy => fused::softmax_cross_entropy(inputs, outputs).map(|_| true)?,
        Op::AdamW { beta1, beta2, eps, weight_decay, decay } => {
            let h = lsc_interp::kernels::AdamW {
                beta1: *beta1,
                beta2: *beta2,
                eps: *eps,
                weight_decay: *weight_decay,
                decay,
            };
            fused::adamw(inputs, &h, outputs).map(|_| true)?
        }
        Op::Gam => fused::gam(inputs, &mut outputs[0]).map(|_| true)?,
        Op::CausalConv1d => fused::causal_conv1d(&inputs[0], &inputs[1], &mut outputs[0]).map(|_| true)?,
        Op::CausalConv1dGrad => fused::causal_conv1d_grad(inputs, outputs).map(|_| true)?,
        Op::Rotary => fused::rotary(&inputs[0], &inputs[1], &inputs[2], &mut outputs[0]).map(|_| true)?,
        Op::Softmax { axis } | Op::LogSoftmax { axis } if *axis + 1 == inputs[0].shape.len() => {
            fused::softmax_rows(&inputs[0], matches!(op, Op::LogSoftmax { .. }), &mut outputs[0]).map(|_| true)?
        }
        Op::Transpose { perm } => layout::transpose(&inputs[0], perm, &mut outputs[0]),
        Op::Broadcast { .. } => layout::broadcast(&inputs[0], &mut outputs[0]),
        Op::Slice { axis, start, .. } => match start.as_const().and_then(|s| usize::try_from(s).ok()) {
            Some(s) => layout::slice(&inputs[0], *axis, s, &mut outputs[0]),
            None => false,
        },
        Op::Reduce { kind, axes, .. } => layout::reduce(&inputs[0], *kind, axes, &mut outputs[0]),
        Op::Gather { axis } => index::gather(&inputs[0], &inputs[1], *axis, &mut outputs[0])?,
        Op::Scatter { axis } | Op::ScatterAdd { axis } => {
            let add = matches!(op, Op::ScatterAdd { .. });
            lsc_interp::kernels::eval_into(&Op::StopGradient, &inputs[..1], outputs, &Bindings::new())?;
            index::scatter_in_place(&mut outputs[0], &inputs[1], &inputs[2], *axis, add)?
        }
        _ => false,
    };
    if done {
        return Ok(());
    }
    lsc_interp::kernels::eval_into(op, inputs, outputs, &Bindings::new())
}

/// Runs an op that writes its result over `target` (`cache_update`, `scatter`, `scatter_add`).
pub fn run_in_place(op: &Op, target: &mut ViewMut<'_, f32>, inputs: &[View<'_, f32>]) -> Result<(), String> {
    match op {
        Op::CacheUpdate { axis } => lsc_interp::kernels::cache_update_in_place(target, &inputs[0], &inputs[1], *axis),
        Op::Scatter { axis } | Op::ScatterAdd { axis } => {
            let add = matches!(op, Op::ScatterAdd { .. });
            if index::scatter_in_place(target, &inputs[0], &inputs[1], *axis, add)? {
                return Ok(());
            }
            lsc_interp::kernels::scatter_in_place(target, &inputs[0], &inputs[1], *axis, add)
        }
        other => Err(format!("`{}` has no in-place form", other.name())),
    }
}
