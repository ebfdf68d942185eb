//! A recursion step on its active rows only: `routed_call`.
//!
//! - **Rule** (group `routed`, forward values only): a step written over the
//!   whole sequence, `select(rows(a), E(call f(h, a, ..)), y)` with `E`
//!   elementwise, → `select(rows(a), E(routed_call f(a; h, a, ..)), y)`. The
//!   select discards inactive rows, so only the active rows' outputs matter,
//!   and [`crate::routing`] proves from `f`'s body that packing leaves them
//!   unchanged. Code, not a pattern: routability is a property of the callee's body.
//! - **VJP**: none (forward values only).
//! - **Cost**: [`ROUTED_SHARE`] of a run of the callee, plus packing the routed operands.
//! - Typing: `lsc_ir::infer`; reference: the interpreter's executor
//!   (`lsc_interp::routing`); compiled plans: a routed region (`crate::plan`).

use crate::partition::is_elementwise;
use crate::saturate::analysis::{ty, LscGraph};
use crate::saturate::lang::LscNode;
use crate::saturate::rules::{constant, decode, op, ops, Expr, Rule};
use egg::Id;
use lsc_ir::{DType, Op, TensorType};

/// The op's registration.
pub(crate) const OP: super::FusedOp = super::FusedOp { rules, vjps: &[], flops: super::no_flops };

/// The share of rows a `routed_call` is expected to run on. It is data
/// dependent; MoR's default capacities (1, 0.75, 0.5, 0.25) keep about half of
/// the rows at the depths that route, and packing costs only a copy, so
/// routing is priced as running on half of the rows.
pub const ROUTED_SHARE: f64 = 0.5;

/// How deep `routed` looks through elementwise ops for the call.
const ROUTE_DEPTH: usize = 6;

fn rules() -> Vec<Rule> {
    vec![Rule::node("routed-call", "routed", routed_call)]
}

pub(crate) fn routed_call(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Select, ch)) = decode(g, n) else { return vec![] };
    let Some(shape) = ty(g, ch[1]).map(|t| t.shape.clone()) else { return vec![] };
    // An all-true mask routes nothing away: packing would only copy.
    let Some(mask) = row_mask(g, ch[0]).filter(|&m| constant(g, m) != Some(1.0)) else { return vec![] };
    match route(g, ch[1], (mask, ch[2]), &shape, ROUTE_DEPTH) {
        Some(x) => vec![op(Op::Select, vec![Expr::Class(ch[0]), x, Expr::Class(ch[2])])],
        None => vec![],
    }
}

/// The `bool[B, T]` mask `a` if class `c` is `a` broadcast over each row
/// (`broadcast(reshape(a, [B, T, 1..]))`, or `a` itself).
fn row_mask(g: &LscGraph, c: Id) -> Option<Id> {
    let t = ty(g, c)?;
    let is_mask =
        |id: Id| ty(g, id).is_some_and(|m| m.dtype == DType::Bool && m.rank() == 2 && m.shape[..] == t.shape[..2]);
    if t.rank() == 2 {
        return is_mask(c).then_some(c);
    }
    ops(g, c).into_iter().find_map(|(o, ch)| {
        let Op::Broadcast { .. } = o else { return None };
        let r = ty(g, ch[0])?;
        let rows_only = r.rank() == t.rank()
            && r.shape[..2] == t.shape[..2]
            && r.shape[2..].iter().all(|d| d.as_const() == Some(1));
        if !rows_only {
            return None;
        }
        ops(g, ch[0])
            .into_iter()
            .find_map(|(o, inner)| (matches!(o, Op::Reshape { .. }) && is_mask(inner[0])).then_some(inner[0]))
    })
}

/// Class `x` with a routable call (under mask `a`) replaced by its routed
/// form, looking through elementwise ops of the same shape, but not into the
/// select's other branch `y` (the value the step passes through, which holds
/// earlier steps' calls).
fn route(g: &LscGraph, x: Id, (a, y): (Id, Id), shape: &[lsc_ir::Dim], depth: usize) -> Option<Expr> {
    for (o, ch) in ops(g, x) {
        if let Op::Call { callee } = &o {
            if let Some(routed) = routable(g, callee, &ch, a) {
                let mut args = vec![Expr::Class(a)];
                args.extend(ch.iter().map(|c| Expr::Class(*c)));
                return Some(op(Op::RoutedCall { callee: callee.clone(), routed }, args));
            }
            continue;
        }
        if depth == 0 || !is_elementwise(&o) {
            continue;
        }
        for (i, &c) in ch.iter().enumerate() {
            if g.find(c) == g.find(y) || ty(g, c).is_none_or(|t| t.shape[..] != *shape) {
                continue;
            }
            if let Some(inner) = route(g, c, (a, y), shape, depth - 1) {
                let children = ch.iter().enumerate().map(|(k, &d)| if k == i { inner.clone() } else { Expr::Class(d) });
                return Some(op(o.clone(), children.collect()));
            }
        }
    }
    None
}

/// The number of routed (leading per-row) arguments, if `callee` called with
/// `args` may run on the rows `a` selects.
fn routable(g: &LscGraph, callee: &str, args: &[Id], a: Id) -> Option<usize> {
    let f = g.analysis.functions.iter().find(|f| f.name == callee)?;
    let mask_shape = &ty(g, a)?.shape;
    let formal = |i: usize| &f.node(f.inputs[i]).outputs[0];
    let first = formal(0);
    let per_row = |i: usize| {
        formal(i).rank() >= 2
            && formal(i).shape[..2] == first.shape[..2]
            && ty(g, args[i]).is_some_and(|t: &TensorType| t.rank() >= 2 && t.shape[..2] == mask_shape[..])
    };
    let routed = (0..args.len().min(f.inputs.len())).take_while(|&i| per_row(i)).count();
    if routed == 0 {
        return None;
    }
    // The callee's own activity mask must be the select's: packing then drops exactly its inactive rows.
    let mask = (0..routed).find(|&i| g.find(args[i]) == g.find(a));
    crate::routing::check_routable(f, routed, mask).ok().map(|()| routed)
}
