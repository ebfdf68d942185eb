//! The causal convolution's backward in one op: `causal_conv1d_grad`.
//!
//! - **Made by** the VJP of `causal_conv1d`: both gradients come from one
//!   fused `causal_conv1d_grad` (in primitives, each tap would shift, pad and multiply).
//! - **Cost**: the default (one pass over its operands).
//! - Typing: `lsc_ir::infer`; reference kernel: `lsc_interp::kernels` (`fused`);
//!   CPU kernel: `lsc_cpu::fused`.

use crate::autodiff::{Emit, NodeGrad, VjpRule};
use lsc_ir::{Op, ValueRef};

/// The op's registration.
pub(crate) const OP: super::FusedOp =
    super::FusedOp { rules: Vec::new, vjps: &[("causal_conv1d", vjp as VjpRule)], flops: super::no_flops };

/// `y[t] = Σ_k w[k]·x[t − (K−1) + k]`: both gradients come from one fused
/// `causal_conv1d_grad` (in primitives, each tap would shift, pad and multiply).
fn vjp(e: &mut Emit, n: &NodeGrad) -> Result<Vec<Option<ValueRef>>, String> {
    let (x, w, g) = (n.operands[0], n.operands[1], n.grads[0].ok_or("no gradient reaches the convolution")?);
    let grads = e.op_all(Op::CausalConv1dGrad, &[x, w, g])?;
    Ok(vec![Some(grads[0]), Some(grads[1])])
}
