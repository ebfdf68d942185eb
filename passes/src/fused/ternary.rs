//! The packed-ternary product: `ternary_pack` and `ternary_matmul`.
//!
//! - **Rule** (group `ternary`): `matmul(x, clamp(round(w / s), −1, 1) · s)`
//!   → `ternary_matmul(x, ternary_pack(w, s), s)` for a scalar scale `s`. Code,
//!   not a pattern: the clamp's bounds and the scale's rank are checked.
//! - **VJP**: `dx = (dy·wᵀ)·s` (a ternary matmul again), `ds = Σ dy ⊙ (x·w)`;
//!   the packed weights get no gradient (training reaches the latent weights
//!   through the straight-through spelling, which this op never replaces).
//! - **Cost**: one add or subtract per weight and row.
//! - Typing: `lsc_ir::infer`; reference kernels: `lsc_interp::kernels` (`fused`);
//!   CPU kernel: `lsc_cpu::ternary`.

use crate::autodiff::{no_gradient, Emit, NodeGrad, VjpRule};
use crate::saturate::analysis::{ty, LscGraph};
use crate::saturate::lang::LscNode;
use crate::saturate::rules::{broadcast_of, decode, is, op, ops, Expr, Rule};
use egg::Id;
use lsc_ir::{BinaryOp, Op, TensorType, UnaryOp, ValueRef};

/// The ops' registration.
pub(crate) const OP: super::FusedOp = super::FusedOp {
    rules,
    vjps: &[("ternary_matmul", vjp as VjpRule), ("ternary_pack", no_gradient as VjpRule)],
    flops,
};

fn rules() -> Vec<Rule> {
    vec![Rule::node("ternary-matmul", "ternary", ternary_matmul)]
}

/// Adds and subtracts, one per weight and row.
fn flops(op: &Op, ins: &[&TensorType], outs: &[TensorType]) -> Option<f64> {
    let Op::TernaryMatmul { .. } = op else { return None };
    let k = ins.first().map(|t| super::dim(t, t.rank() - 1)).unwrap_or(1.0);
    Some(super::numels(outs.iter()) * k)
}

/// The scalar `s` of a class that is `broadcast(s)`.
fn broadcast_scalar(g: &LscGraph, id: Id) -> Option<Id> {
    let s = broadcast_of(g, id)?;
    ty(g, s).is_some_and(|t| t.rank() == 0).then_some(s)
}

/// `(w, s)` if class `id` is `clamp(round(w / s), −1, 1) · s` with a scalar `s`.
fn ternarized(g: &LscGraph, id: Id) -> Option<(Id, Id)> {
    for (o, ch) in ops(g, id) {
        if o != Op::Binary(BinaryOp::Mul) {
            continue;
        }
        let Some(s) = broadcast_scalar(g, ch[1]) else { continue };
        let Some(c) = is(g, ch[0], &Op::Clamp { min: -1.0, max: 1.0 }) else { continue };
        let Some(r) = is(g, c[0], &Op::Unary(UnaryOp::Round)) else { continue };
        let Some(d) = is(g, r[0], &Op::Binary(BinaryOp::Div)) else { continue };
        if broadcast_scalar(g, d[1]).map(|x| g.find(x)) == Some(g.find(s)) && ty(g, d[0]).is_some_and(|t| t.rank() == 2)
        {
            return Some((d[0], s));
        }
    }
    None
}

pub(crate) fn ternary_matmul(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::MatMul { trans_a: false, trans_b }, ch)) = decode(g, n) else { return vec![] };
    let Some((w, s)) = ternarized(g, ch[1]) else { return vec![] };
    let packed = op(Op::TernaryPack, vec![Expr::Class(w), Expr::Class(s)]);
    vec![op(Op::TernaryMatmul { trans_b }, vec![Expr::Class(ch[0]), packed, Expr::Class(s)])]
}

/// `y = (x·w)·s`: `dx = (dy·wᵀ)·s` (a ternary matmul again), `ds = Σ dy ⊙ (x·w)`;
/// the packed weights get no gradient (training reaches the latent weights
/// through the straight-through spelling, which this op never replaces).
fn vjp(e: &mut Emit, n: &NodeGrad) -> Result<Vec<Option<ValueRef>>, String> {
    let Op::TernaryMatmul { trans_b } = n.op else { unreachable!() };
    let (x, w, s) = (n.operands[0], n.operands[1], n.operands[2]);
    let Some(dy) = n.grads[0] else { return Ok(vec![None; 3]) };
    let dx = e.op(Op::TernaryMatmul { trans_b: !trans_b }, &[dy, w, s])?;
    let one = e.full(1.0, &e.ty(s))?;
    let unscaled = e.op(Op::TernaryMatmul { trans_b }, &[x, w, one])?;
    let prod = e.mul(dy, unscaled)?;
    let axes: Vec<usize> = (0..e.ty(prod).rank()).collect();
    let ds = e.sum(prod, axes)?;
    Ok(vec![Some(dx), None, Some(ds)])
}
