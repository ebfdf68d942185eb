//! The `unroll` rule group (the `routed` group is `routed_call`'s, in
//! [`crate::fused::routed_call`]):
//!
//! - `unroll`: `loop f × n` becomes `n` calls of `f` with constant iteration
//!   indices, when the unrolled program stays small; the cost model prices a
//!   loop at `n` runs of its body plus a launch per trip.

use super::analysis::LscGraph;
use super::lang::{Key, LscNode};
use super::rules::{decode, op, Expr};
use lsc_ir::{DType, Op, TensorType};
use std::rc::Rc;

/// The most trips `unroll` unrolls.
pub const UNROLL_MAX_TRIPS: u64 = 16;
/// The most nodes (trips × body nodes) an unrolled loop may have.
pub const UNROLL_MAX_NODES: usize = 2048;

pub(crate) fn loop_unroll(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
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
