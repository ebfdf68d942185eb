//! One AdamW update of many parameters.
//!
//! - **Rule** (group `step`): the AdamW update of every parameter (the spelling
//!   of `train::training_step`) → ONE `adamw` op over all parameters that share
//!   the learning rate, bias corrections and hyper-parameters. Code, not a
//!   pattern: it gathers many roots (every parameter's three outputs) into one node.
//! - **VJP**: none; it is made after autodiff.
//! - **Cost**: the default (one pass over its operands).
//! - Typing: `lsc_ir::infer`; reference kernel: `lsc_interp::kernels` (`fused`);
//!   CPU kernel: `lsc_cpu::fused`.

use crate::saturate::analysis::{ty, LscGraph};
use crate::saturate::lang::{Key, LscNode};
use crate::saturate::rules::{broadcast_constant, broadcast_of, is, op, ops, Expr, Rule};
use egg::Id;
use lsc_ir::{BinaryOp, DType, Op, TensorType, UnaryOp};
use std::collections::BTreeMap;

/// The op's registration.
pub(crate) const OP: super::FusedOp = super::FusedOp { rules, vjps: &[], flops: super::no_flops };

fn rules() -> Vec<Rule> {
    vec![Rule::graph("fused-adamw", "step", fused_adamw)]
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

pub(crate) fn fused_adamw(g: &LscGraph) -> Vec<(Id, Expr)> {
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
