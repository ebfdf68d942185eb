//! A shared weight's gradient over a batch as one product.
//!
//! - **Rule** (group `gradients`, after autodiff only, as autodiff has no rule
//!   for the op): `sum(matmul(a, b), batch axes)` of two batched operands →
//!   one `matmul_sum(a, b)`, whose depth is the whole batch. Code, not a
//!   pattern: the summed axes must be exactly the batch axes.
//! - **VJP**: none.
//! - **Cost**: 2·m·n per stacked row.
//! - Typing: `lsc_ir::infer`; reference kernel: `lsc_interp::kernels` (`linear`);
//!   CPU kernel: `lsc_cpu::matmul`.

use crate::saturate::analysis::{ty, LscGraph};
use crate::saturate::lang::LscNode;
use crate::saturate::rules::{decode, op, ops, Expr, Rule};
use lsc_ir::{Op, ReduceKind, TensorType};

/// The op's registration.
pub(crate) const OP: super::FusedOp = super::FusedOp { rules, vjps: &[], flops };

fn rules() -> Vec<Rule> {
    vec![Rule::node("matmul-sum", "gradients", matmul_sum)]
}

/// 2·m·n per row of the left operand's stacked batch·k rows.
fn flops(op: &Op, ins: &[&TensorType], outs: &[TensorType]) -> Option<f64> {
    let Op::MatMulSum { .. } = op else { return None };
    let rows = ins.first().map(|t| super::numel(t)).unwrap_or(1.0);
    let m = outs.first().map(|t| super::dim(t, 0)).unwrap_or(1.0);
    Some(2.0 * super::numels(outs.iter()) * rows / m.max(1.0))
}

/// `sum(matmul(a, b), batch axes) → matmul_sum(a, b)` when both operands
/// carry the batch dims that the sum removes.
pub(crate) fn matmul_sum(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Reduce { kind: ReduceKind::Sum, axes, keep_dims: false }, ch)) = decode(g, n) else { return vec![] };
    let mut out = Vec::new();
    for (o, mm) in ops(g, ch[0]) {
        let Op::MatMul { trans_a, trans_b } = o else { continue };
        let (Some(a), Some(b)) = (ty(g, mm[0]), ty(g, mm[1])) else { continue };
        let batch = a.rank().saturating_sub(2);
        if batch > 0 && b.rank() == a.rank() && axes == (0..batch).collect::<Vec<_>>() {
            out.push(op(Op::MatMulSum { trans_a, trans_b }, vec![Expr::Class(mm[0]), Expr::Class(mm[1])]));
        }
    }
    out
}
