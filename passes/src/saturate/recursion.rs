//! The routed-recursion rule groups.
//!
//! - `routed` (forward values only): a recursion step written over the whole
//!   sequence, `select(rows(a), E(call f(h, a, ..)), y)` with `E` elementwise,
//!   becomes `select(rows(a), E(routed_call f(a; h, a, ..)), y)`: the block
//!   runs on the active rows only. The select discards inactive rows, so only
//!   the active rows' outputs matter, and [`crate::routing`] proves from `f`'s
//!   body that packing leaves them unchanged (with KV sharing, the shared keys
//!   and values are ordinary arguments, and the query positions are routed).
//! - `unroll`: `loop f × n` becomes `n` calls of `f` with constant iteration
//!   indices, when the unrolled program stays small; the cost model prices a
//!   loop at `n` runs of its body plus a launch per trip.

use super::analysis::{ty, LscGraph};
use super::lang::{Key, LscNode};
use super::rules::{constant, decode, op, ops, Expr};
use crate::partition::is_elementwise;
use egg::Id;
use lsc_ir::{DType, Op, TensorType};
use std::rc::Rc;

/// The most trips `unroll` unrolls.
pub const UNROLL_MAX_TRIPS: u64 = 16;
/// The most nodes (trips × body nodes) an unrolled loop may have.
pub const UNROLL_MAX_NODES: usize = 2048;

/// How deep `routed` looks through elementwise ops for the call.
const ROUTE_DEPTH: usize = 6;

pub(super) fn routed_call(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
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

pub(super) fn loop_unroll(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Loop { body, trips }, ch)) = decode(g, n) else { return vec![] };
    let Some(f) = g.analysis.functions.iter().find(|f| f.name == body) else { return vec![] };
    if trips == 0 || trips > UNROLL_MAX_TRIPS || trips as usize * f.dag.node_count() > UNROLL_MAX_NODES {
        return vec![];
    }
    let carried = f.outputs.len();
    let (mut state, invariant) = (ch[..carried].iter().map(|c| Expr::Class(*c)).collect::<Vec<_>>(), &ch[carried..]);
    let mut last = None;
    for it in 0..trips {
        let index =
            Expr::Node(Key::Op(Op::Constant { value: it as f64 }, Some(TensorType::scalar(DType::I64))), vec![]);
        let mut args = vec![index];
        args.extend(state);
        args.extend(invariant.iter().map(|c| Expr::Class(*c)));
        // Shared, so that each trip's call is built once however many values it carries.
        let call = Expr::Shared(Rc::new(op(Op::Call { callee: body.clone() }, args)));
        state = if carried == 1 {
            vec![call.clone()]
        } else {
            (0..carried).map(|k| Expr::Node(Key::Proj(k as u32), vec![call.clone()])).collect()
        };
        last = Some(call);
    }
    last.into_iter().collect()
}
