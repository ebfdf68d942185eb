//! The `ternary` and `gam` rule groups.
//!
//! (The `inference` group's rewrites are plain patterns, in `rules.rs`.)
//! - `ternary`: `matmul(x, clamp(round(w / s), −1, 1) · s)` → `ternary_matmul(x,
//!   ternary_pack(w, s), s)`, for a scalar scale `s`.
//! - `gam`: `σ(z)[:d] · (conv(x) + b) + σ(z)[d:] · softmax(x·Mᵀ)·M` → `gam(x, …, z)`.

use super::analysis::{ty, LscGraph};
use super::lang::LscNode;
use super::rules::{broadcast_of, decode, find, is, op, ops, Expr};
use egg::Id;
use lsc_ir::{BinaryOp, Dim, Op, UnaryOp};

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

pub(super) fn ternary_matmul(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::MatMul { trans_a: false, trans_b }, ch)) = decode(g, n) else { return vec![] };
    let Some((w, s)) = ternarized(g, ch[1]) else { return vec![] };
    let packed = op(Op::TernaryPack, vec![Expr::Class(w), Expr::Class(s)]);
    vec![op(Op::TernaryMatmul { trans_b }, vec![Expr::Class(ch[0]), packed, Expr::Class(s)])]
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

pub(super) fn gam(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
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
