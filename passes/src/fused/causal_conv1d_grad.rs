//! The causal convolution's backward in one op: `causal_conv1d_grad`.
//!
//! - **Made by** the VJP of `causal_conv1d`: both gradients come from one
//!   fused `causal_conv1d_grad` (in primitives, each tap would shift, pad and multiply).
//! - **Its own VJP** (second order, for Hessian-vector products): the op is
//!   the gradient of the bilinear `F(x, w, g) = ⟨g, conv(x, w)⟩`, so its
//!   backward is again one convolution and two `causal_conv1d_grad`s.
//! - **Cost**: the default (one pass over its operands).
//! - Typing: `lsc_ir::infer`; reference kernel: `lsc_interp::kernels` (`fused`);
//!   CPU kernel: `lsc_cpu::fused`.

use crate::autodiff::{Emit, NodeGrad, VjpRule};
use lsc_ir::{Op, ValueRef};

/// The op's registration.
pub(crate) const OP: super::FusedOp = super::FusedOp {
    rules: Vec::new,
    vjps: &[("causal_conv1d", vjp as VjpRule), ("causal_conv1d_grad", vjp_of_grad as VjpRule)],
    flops: super::no_flops,
};

/// `y[t] = Σ_k w[k]·x[t − (K−1) + k]`: both gradients come from one fused
/// `causal_conv1d_grad` (in primitives, each tap would shift, pad and multiply).
fn vjp(e: &mut Emit, n: &NodeGrad) -> Result<Vec<Option<ValueRef>>, String> {
    let (x, w, g) = (n.operands[0], n.operands[1], n.grads[0].ok_or("no gradient reaches the convolution")?);
    let grads = e.op_all(Op::CausalConv1dGrad, &[x, w, g])?;
    Ok(vec![Some(grads[0]), Some(grads[1])])
}

/// With seeds `a` (for `d_x`) and `b` (for `d_w`), the op's outputs are
/// `∇_{x,w} F`, so the seeds pull back as the gradient of the directional
/// derivative `⟨g, conv(a, w)⟩ + ⟨g, conv(x, b)⟩`: to `g` as
/// `conv(a, w) + conv(x, b)`, to `x` as `∇_x ⟨g, conv(x, b)⟩` and to `w` as
/// `∇_w ⟨g, conv(a, w)⟩`.
fn vjp_of_grad(e: &mut Emit, n: &NodeGrad) -> Result<Vec<Option<ValueRef>>, String> {
    let (x, w, g) = (n.operands[0], n.operands[1], n.operands[2]);
    let (mut dx, mut dw, mut dg) = (None, None, None);
    if let Some(a) = n.grads[0] {
        dw = Some(e.op_all(Op::CausalConv1dGrad, &[a, w, g])?[1]);
        dg = Some(e.op(Op::CausalConv1d, &[a, w])?);
    }
    if let Some(b) = n.grads[1] {
        dx = Some(e.op_all(Op::CausalConv1dGrad, &[x, b, g])?[0]);
        let y = e.op(Op::CausalConv1d, &[x, b])?;
        dg = Some(match dg {
            Some(prev) => e.add(prev, y)?,
            None => y,
        });
    }
    Ok(vec![dx, dw, dg])
}
