//! Softmax + cross-entropy with its gradient, in one pass over the logits.
//!
//! - **Rule** (group `step`): the per-token loss `cross_entropy(l, t)` and the
//!   gradient autodiff made of it, `(softmax(l) − one_hot(t)) · g`, → the two
//!   outputs of one `softmax_cross_entropy(l, t, g)`. Code, not a pattern: it
//!   rewrites two roots (the loss and the gradient), and the one-hot is read
//!   off an iota comparison.
//! - **VJP**: none; it is made after autodiff.
//! - **Cost**: about 5 operations per logit.
//! - Typing: `lsc_ir::infer`; reference kernel: `lsc_interp::kernels` (`fused`);
//!   CPU kernel: `lsc_cpu::fused`.

use crate::saturate::analysis::{ty, LscGraph};
use crate::saturate::lang::{Key, LscNode};
use crate::saturate::rules::{broadcast_of, is, op, ops, reaches, Expr, Rule};
use egg::Id;
use lsc_ir::{BinaryOp, CmpOp, Op, TensorType};
use std::collections::HashMap;

/// The op's registration.
pub(crate) const OP: super::FusedOp = super::FusedOp { rules, vjps: &[], flops };

fn rules() -> Vec<Rule> {
    vec![Rule::graph("softmax-cross-entropy", "step", softmax_cross_entropy)]
}

fn flops(op: &Op, ins: &[&TensorType], _: &[TensorType]) -> Option<f64> {
    matches!(op, Op::SoftmaxCrossEntropy).then(|| 5.0 * super::numels(ins.iter().copied()))
}

/// `(logits, targets)` if class `id` is `one_hot(targets)` over the last axis of `logits`'s shape.
fn one_hot(g: &LscGraph, id: Id) -> Option<Id> {
    let hit = ops(g, id).into_iter().find_map(|(o, ch)| matches!(o, Op::Cast { .. }).then_some(ch[0]))?;
    let cmp = is(g, hit, &Op::Compare(CmpOp::Eq))?;
    let rank = ty(g, cmp[0])?.rank();
    let iota = g[cmp[0]].nodes.iter().any(|LscNode::Other(sym, _)| {
        matches!(g.analysis.interner.key(*sym), Key::Op(Op::Iota { axis }, _) if *axis + 1 == rank)
    });
    let ids = broadcast_of(g, cmp[1])?;
    let ids = ops(g, ids).into_iter().find_map(|(o, ch)| matches!(o, Op::Reshape { .. }).then_some(ch[0]))?;
    iota.then_some(ids)
}

pub(crate) fn softmax_cross_entropy(g: &LscGraph) -> Vec<(Id, Expr)> {
    let mut losses: HashMap<(Id, Id), Id> = HashMap::new();
    for class in g.classes() {
        for (o, ch) in ops(g, class.id) {
            if o == Op::CrossEntropy {
                losses.insert((g.find(ch[0]), g.find(ch[1])), class.id);
            }
        }
    }
    let mut out = Vec::new();
    for class in g.classes() {
        for (o, ch) in ops(g, class.id) {
            if o != Op::Binary(BinaryOp::Mul) {
                continue;
            }
            let Some(diff) = is(g, ch[0], &Op::Binary(BinaryOp::Sub)) else { continue };
            let Some(rank) = ty(g, diff[0]).map(TensorType::rank) else { continue };
            let Some(l) = is(g, diff[0], &Op::Softmax { axis: rank.saturating_sub(1) }) else { continue };
            let Some(t) = one_hot(g, diff[1]) else { continue };
            let Some(&loss) = losses.get(&(g.find(l[0]), g.find(t))) else { continue };
            let Some(gr) = broadcast_of(g, ch[1]) else { continue };
            let Some(d_loss) =
                ops(g, gr).into_iter().find_map(|(o, c)| matches!(o, Op::Reshape { .. }).then_some(c[0]))
            else {
                continue;
            };
            if ty(g, d_loss) != ty(g, loss) || reaches(g, d_loss, loss) {
                continue;
            }
            let fused = || op(Op::SoftmaxCrossEntropy, vec![Expr::Class(l[0]), Expr::Class(t), Expr::Class(d_loss)]);
            out.push((class.id, Expr::Node(Key::Proj(1), vec![fused()])));
            out.push((loss, Expr::Node(Key::Proj(0), vec![fused()])));
        }
    }
    out
}
