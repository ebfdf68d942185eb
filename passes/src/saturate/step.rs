//! The `step` and `gradients` rule groups, for training-step graphs (after autodiff):
//!
//! - `softmax-cross-entropy`: the per-token loss `cross_entropy(l, t)` and the
//!   gradient autodiff made of it, `(softmax(l) − one_hot(t)) · g`, become the
//!   two outputs of one `softmax_cross_entropy(l, t, g)` (one pass over the logits);
//! - `fused-adamw`: the AdamW update of every parameter (the spelling of
//!   `train::training_step`) becomes ONE `adamw` op over all parameters;
//! - `matmul-sum` (group `gradients`, as it makes an op autodiff has no rule
//!   for): `sum(matmul(a, b))` over the batch dims of two batched
//!   operands (a shared weight's gradient, which autodiff writes per sequence)
//!   becomes one `matmul_sum(a, b)`, a single product over the whole batch.

use super::analysis::{ty, LscGraph};
use super::lang::{Key, LscNode};
use super::rules::{broadcast_of, constant, decode, is, op, ops, Expr};
use egg::Id;
use lsc_ir::{BinaryOp, CmpOp, DType, Op, ReduceKind, TensorType, UnaryOp};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The scalar constant `c` of a class `broadcast(c)`.
fn broadcast_constant(g: &LscGraph, id: Id) -> Option<f64> {
    broadcast_of(g, id).and_then(|c| constant(g, c)).or_else(|| constant(g, id))
}

/// Whether some node under class `from` (any choice) is in class `target`.
fn reaches(g: &LscGraph, from: Id, target: Id) -> bool {
    let (target, mut seen, mut stack) = (g.find(target), HashSet::new(), vec![g.find(from)]);
    while let Some(id) = stack.pop() {
        if id == target {
            return true;
        }
        if seen.insert(id) {
            for LscNode::Other(_, ch) in &g[id].nodes {
                stack.extend(ch.iter().map(|c| g.find(*c)));
            }
        }
    }
    false
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

pub(super) fn softmax_cross_entropy(g: &LscGraph) -> Vec<(Id, Expr)> {
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

/// One parameter's AdamW update as found in the graph.
struct Update {
    name: String,
    outputs: [Id; 3],
    w: Id,
    /// The gradient term of the moments.
    grad: Id,
    /// `(unscaled gradient, scalar)` when the term is `gradient · broadcast(scalar)`.
    split: Option<(Id, Id)>,
    m: Id,
    v: Id,
    shared: [Id; 3],
    hyper: [u64; 3],
    weight_decay: Option<f64>,
}

fn param_name(g: &LscGraph, id: Id) -> Option<String> {
    g[id].nodes.iter().find_map(|LscNode::Other(sym, _)| match g.analysis.interner.key(*sym) {
        Key::Op(Op::Param { name }, _) => Some(name.clone()),
        _ => None,
    })
}

/// `(x, c)` for `x · broadcast(c)` with a constant `c`.
fn scaled(g: &LscGraph, id: Id) -> Vec<(Id, f64)> {
    ops(g, id)
        .into_iter()
        .filter(|(o, _)| *o == Op::Binary(BinaryOp::Mul))
        .filter_map(|(_, ch)| broadcast_constant(g, ch[1]).map(|c| (ch[0], c)))
        .collect()
}

/// `(state, c, grad-term)` of `state · c + term · (1 − c)`.
fn moment(g: &LscGraph, id: Id) -> Option<(Id, f64, Id)> {
    let ch = is(g, id, &Op::Binary(BinaryOp::Add))?;
    let (state, beta) = scaled(g, ch[0]).into_iter().next()?;
    let (term, one_minus) = scaled(g, ch[1]).into_iter().next()?;
    (one_minus == 1.0 - beta).then_some((state, beta, term))
}

fn update(g: &LscGraph, out: Id) -> Option<Update> {
    let sub = is(g, out, &Op::Binary(BinaryOp::Sub))?;
    let (w, name) = (sub[0], param_name(g, sub[0])?);
    let delta = is(g, sub[1], &Op::Binary(BinaryOp::Mul))?;
    let lr = broadcast_of(g, delta[1])?;
    let (ratio, weight_decay) = match is(g, delta[0], &Op::Binary(BinaryOp::Add)) {
        Some(ch) => {
            let (wd_of, wd) = scaled(g, ch[1]).into_iter().next()?;
            (g.find(wd_of) == g.find(w)).then_some((ch[0], Some(wd)))?
        }
        None => (delta[0], None),
    };
    let q = is(g, ratio, &Op::Binary(BinaryOp::Div))?;
    let m_hat = is(g, q[0], &Op::Binary(BinaryOp::Div))?;
    let bc1 = broadcast_of(g, m_hat[1])?;
    let denom = is(g, q[1], &Op::Binary(BinaryOp::Add))?;
    let eps = broadcast_constant(g, denom[1])?;
    let root = is(g, denom[0], &Op::Unary(UnaryOp::Sqrt))?;
    let v_hat = is(g, root[0], &Op::Binary(BinaryOp::Div))?;
    let bc2 = broadcast_of(g, v_hat[1])?;
    let (m, beta1, grad) = moment(g, m_hat[0])?;
    let (v, beta2, sq) = moment(g, v_hat[0])?;
    let gg = is(g, sq, &Op::Binary(BinaryOp::Mul))?;
    if g.find(gg[0]) != g.find(grad) || g.find(gg[1]) != g.find(grad) {
        return None;
    }
    let scalar = TensorType::scalar(DType::F32);
    if [lr, bc1, bc2].iter().any(|s| ty(g, *s) != Some(&scalar)) || ty(g, w) != ty(g, grad) {
        return None;
    }
    // A gradient scaled by a scalar (the clipping factor) keeps the scale apart.
    let split = ops(g, grad).into_iter().find_map(|(o, ch)| {
        (o == Op::Binary(BinaryOp::Mul))
            .then(|| broadcast_of(g, ch[1]).filter(|s| ty(g, *s) == Some(&scalar)).map(|s| (ch[0], g.find(s))))
            .flatten()
    });
    Some(Update {
        name,
        outputs: [out, m_hat[0], v_hat[0]],
        w,
        grad,
        split,
        m,
        v,
        shared: [lr, bc1, bc2].map(|s| g.find(s)),
        hyper: [beta1, beta2, eps].map(f64::to_bits),
        weight_decay,
    })
}

pub(super) fn fused_adamw(g: &LscGraph) -> Vec<(Id, Expr)> {
    let mut updates: Vec<Update> = g.classes().filter_map(|c| update(g, c.id)).collect();
    updates.sort_by(|a, b| a.name.cmp(&b.name));
    updates.dedup_by(|a, b| a.name == b.name);
    // The clipping factor shared by most parameters (absent without clipping).
    let mut votes: BTreeMap<Id, usize> = BTreeMap::new();
    for u in &updates {
        if let Some((_, s)) = u.split {
            *votes.entry(s).or_default() += 1;
        }
    }
    let common = votes.into_iter().max_by_key(|(_, n)| *n).filter(|(_, n)| 2 * n >= updates.len()).map(|(s, _)| s);
    // Updates that can share one op: same lr, bias corrections and β1, β2, ε.
    type Key3 = ([Id; 3], [u64; 3]);
    let mut groups: BTreeMap<Key3, Vec<(Update, Id)>> = BTreeMap::new();
    for u in updates {
        // With a common scale, every member's gradient must carry it (the op applies it to all).
        let grad = match (common, u.split) {
            (None, _) => u.grad,
            (Some(c), Some((raw, s))) if s == c => raw,
            _ => continue,
        };
        groups.entry((u.shared, u.hyper)).or_default().push((u, grad));
    }
    let mut out = Vec::new();
    for (([lr, bc1, bc2], [b1, b2, eps]), members) in groups {
        let decays: Vec<f64> = members.iter().filter_map(|(u, _)| u.weight_decay).collect();
        if members.len() < 2 || decays.windows(2).any(|w| w[0] != w[1]) {
            continue;
        }
        let one = Expr::Node(Key::Op(Op::Constant { value: 1.0 }, Some(TensorType::scalar(DType::F32))), vec![]);
        let scale = common.map(Expr::Class).unwrap_or(one);
        let mut args = vec![Expr::Class(lr), Expr::Class(bc1), Expr::Class(bc2), scale];
        for (u, grad) in &members {
            args.extend([u.w, *grad, u.m, u.v].map(Expr::Class));
        }
        let fused = Op::AdamW {
            beta1: f64::from_bits(b1),
            beta2: f64::from_bits(b2),
            eps: f64::from_bits(eps),
            weight_decay: decays.first().copied().unwrap_or(0.0),
            decay: members.iter().map(|(u, _)| u.weight_decay.is_some()).collect(),
        };
        let node = op(fused, args);
        for (i, (u, _)) in members.iter().enumerate() {
            for (k, &class) in u.outputs.iter().enumerate() {
                out.push((class, Expr::Node(Key::Proj((3 * i + k) as u32), vec![node.clone()])));
            }
        }
    }
    out
}

/// `sum(matmul(a, b), batch axes) → matmul_sum(a, b)` when both operands
/// carry the batch dims that the sum removes.
pub(super) fn matmul_sum(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
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
