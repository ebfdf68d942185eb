//! The Gated Associative Memory mixer in one op.
//!
//! - **Rule** (group `gam`): `σ(z)[:d] · (conv(x) + b) + σ(z)[d:] · softmax(x·Mᵀ)·M`
//!   → `gam(x, conv_w, conv_b, M, z)`. Code, not a pattern: the gate halves are
//!   read off the slices' bounds, and the two paths must read the same `x`.
//! - **VJP**: through the mixer's primitive decomposition, recomputed in the backward.
//! - **Cost**: two (rows × slots × d) products for the memory read, plus the conv and gates.
//! - Typing: `lsc_ir::infer`; reference kernel: `lsc_interp::kernels` (`fused`);
//!   CPU kernel: `lsc_cpu::fused`.

use crate::autodiff::{by_decomposition, Emit, NodeGrad, VjpRule, R};
use crate::saturate::analysis::{ty, LscGraph};
use crate::saturate::lang::LscNode;
use crate::saturate::rules::{decode, find, is, op, ops, Expr, Rule};
use egg::Id;
use lsc_ir::{BinaryOp, Dim, Op, TensorType, UnaryOp, ValueRef};

/// The op's registration.
pub(crate) const OP: super::FusedOp = super::FusedOp { rules, vjps: &[("gam", vjp as VjpRule)], flops };

fn rules() -> Vec<Rule> {
    vec![Rule::node("gam", "gam", gam)]
}

/// Two (rows × slots × d) products for the memory read, plus the conv and gates.
fn flops(op: &Op, ins: &[&TensorType], outs: &[TensorType]) -> Option<f64> {
    let Op::Gam = op else { return None };
    let slots = ins.get(3).map(|t| super::dim(t, 0)).unwrap_or(64.0);
    Some(super::numels(outs.iter()) * (4.0 * slots + 20.0))
}

/// `(a, b)` for each `a ∘ b` node of `which` in class `id`, both orders.
fn pairs(g: &LscGraph, id: Id, which: BinaryOp) -> Vec<(Id, Id)> {
    ops(g, id)
        .into_iter()
        .filter(|(o, _)| *o == Op::Binary(which))
        .flat_map(|(_, ch)| [(ch[0], ch[1]), (ch[1], ch[0])])
        .collect()
}

/// `(gate source z, half)` if class `id` is `slice(σ(z), axis 2)` over half 0 or 1 of `2d`.
fn gate_half(g: &LscGraph, id: Id, d: &Dim) -> Option<(Id, usize)> {
    for (o, ch) in ops(g, id) {
        let Op::Slice { axis: 2, start, end } = o else { continue };
        let half = if start == Dim::new(0) && end == *d {
            0
        } else if start == *d && end == d.scale(2) {
            1
        } else {
            continue;
        };
        if let Some(z) = is(g, ch[0], &Op::Unary(UnaryOp::Sigmoid)) {
            return Some((g.find(z[0]), half));
        }
    }
    None
}

/// `(x, conv_w, conv_b)` if class `id` is `causal_conv1d(x, conv_w) + broadcast(conv_b)`.
fn conv_path(g: &LscGraph, id: Id) -> Option<(Id, Id, Id)> {
    pairs(g, id, BinaryOp::Add).into_iter().find_map(|(conv, bias)| {
        let c = is(g, conv, &Op::CausalConv1d)?;
        let b = find(g, bias, |o| matches!(o, Op::Broadcast { .. }))?;
        ty(g, b[0]).is_some_and(|t| t.rank() == 1).then_some((c[0], c[1], b[0]))
    })
}

/// `(x, memory)` if class `id` is `softmax(x · memoryᵀ, axis 2) · memory`.
fn memory_path(g: &LscGraph, id: Id) -> Option<(Id, Id)> {
    let read = is(g, id, &Op::MatMul { trans_a: false, trans_b: false })?;
    let p = is(g, read[0], &Op::Softmax { axis: 2 })?;
    let scores = is(g, p[0], &Op::MatMul { trans_a: false, trans_b: true })?;
    (g.find(scores[1]) == g.find(read[1])).then_some((scores[0], read[1]))
}

pub(crate) fn gam(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Binary(BinaryOp::Add), ch)) = decode(g, n) else { return vec![] };
    let Some(t) = ty(g, ch[0]).filter(|t| t.rank() == 3) else { return vec![] };
    let d = t.shape[2].clone();
    let mut out = Vec::new();
    for (left, right) in [(ch[0], ch[1]), (ch[1], ch[0])] {
        for (gl, local) in pairs(g, left, BinaryOp::Mul) {
            let Some((z, 0)) = gate_half(g, gl, &d) else { continue };
            let Some((x, conv_w, conv_b)) = conv_path(g, local) else { continue };
            for (gg, glob) in pairs(g, right, BinaryOp::Mul) {
                let Some((z2, 1)) = gate_half(g, gg, &d) else { continue };
                let Some((x2, memory)) = memory_path(g, glob) else { continue };
                if z2 == z && g.find(x2) == g.find(x) {
                    let args = [x, conv_w, conv_b, memory, z].map(Expr::Class).to_vec();
                    out.push(op(Op::Gam, args));
                }
            }
        }
    }
    out
}

/// GAM in primitives: the function [`Op::Gam`] computes.
pub fn gam_decomposed(e: &mut Emit, args: &[ValueRef]) -> R<Vec<ValueRef>> {
    let (x, conv_w, conv_b, memory, gate_logits) = (args[0], args[1], args[2], args[3], args[4]);
    let xt = e.ty(x);
    let d = xt.shape[2].clone();
    let conv = e.op(Op::CausalConv1d, &[x, conv_w])?;
    let bias = e.broadcast(conv_b, &xt.shape)?;
    let local = e.add(conv, bias)?;
    let scores = e.op(Op::MatMul { trans_a: false, trans_b: true }, &[x, memory])?;
    let p = e.op(Op::Softmax { axis: 2 }, &[scores])?;
    let glob = e.op(Op::MatMul { trans_a: false, trans_b: false }, &[p, memory])?;
    let gates = e.unary(UnaryOp::Sigmoid, gate_logits)?;
    let g_local = e.op(Op::Slice { axis: 2, start: Dim::new(0), end: d.clone() }, &[gates])?;
    let g_global = e.op(Op::Slice { axis: 2, start: d.clone(), end: d.scale(2) }, &[gates])?;
    let a = e.mul(g_local, local)?;
    let b = e.bin(BinaryOp::Mul, g_global, glob)?;
    Ok(vec![e.add(a, b)?])
}

fn vjp(e: &mut Emit, n: &NodeGrad) -> Result<Vec<Option<ValueRef>>, String> {
    by_decomposition(e, n, gam_decomposed)
}
