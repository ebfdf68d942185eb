//! LS-attention: causal attention with a window per head, fused.
//!
//! - **Rules** (group `attention`): `softmax(mask(q·kᵀ·c))·v` with causal or
//!   banded per-head masks, however the mask is spelled (select with −∞, or an
//!   added −∞ bias; per-head groups concatenated; the scale on the logits or
//!   on `q`) → `ls_attention`; the monitor's `max` of the masked logits → the
//!   fused op's row max. Code, not patterns: a mask's window is read off its
//!   comparison and constant, and the types decide.
//! - **VJP**: `ls_attention_grad`, a fused backward that recomputes the
//!   probabilities (the row max is a monitor and has no gradient).
//! - **Cost**: q·k and p·v over the keys each head sees.
//! - Typing: `lsc_ir::infer`; reference kernels: `lsc_interp::kernels::attention`;
//!   CPU kernels: `lsc_cpu::flash`, `lsc_cpu::attention`.

use crate::autodiff::{Emit, NodeGrad, VjpRule};
use crate::saturate::analysis::{ty, LscGraph};
use crate::saturate::lang::{Key, LscNode};
use crate::saturate::rules::{constant, decode, ops, Expr, Rule};
use egg::Id;
use lsc_ir::{BinaryOp, Op, TensorType, ValueRef};

/// The op's registration.
pub(crate) const OP: super::FusedOp = super::FusedOp { rules, vjps: &[("ls_attention", vjp as VjpRule)], flops };

fn rules() -> Vec<Rule> {
    vec![
        Rule::node("ls-attention", "attention", ls_attention),
        Rule::node("attention-row-max", "attention", attention_row_max),
    ]
}

/// q·k and p·v over the visible keys: T/2 on average for a global head, w for a local one.
fn flops(op: &Op, ins: &[&TensorType], _: &[TensorType]) -> Option<f64> {
    let Op::LsAttention { windows, .. } = op else { return None };
    let t = ins.first().map(|q| super::dim(q, 2)).unwrap_or(64.0);
    let keys: f64 = windows.iter().map(|&w| if w == 0 { t / 2.0 } else { (w as f64).min(t) }).sum::<f64>()
        / windows.len().max(1) as f64;
    Some(4.0 * super::numels(ins.iter().copied()) / 3.0 * keys)
}

/// The window of a `[T, T]` mask class: `Some(0)` for causal `j ≤ i`,
/// `Some(w)` for `j ≤ i ∧ i − j < w`, `None` for any other mask.
fn mask_window(g: &LscGraph, id: Id) -> Option<usize> {
    let is_iota = |id: Id, axis: usize| {
        g[id].nodes.iter().any(|LscNode::Other(sym, _)| matches!(g.analysis.interner.key(*sym), Key::Op(Op::Iota { axis: a }, _) if *a == axis))
    };
    let causal = |id: Id| {
        ops(g, id).iter().any(|(o, ch)| *o == Op::Compare(lsc_ir::CmpOp::Le) && is_iota(ch[0], 1) && is_iota(ch[1], 0))
    };
    if causal(id) {
        return Some(0);
    }
    for (o, ch) in ops(g, id) {
        if o != Op::Binary(BinaryOp::And) || !causal(ch[0]) {
            continue;
        }
        for (lt, lch) in ops(g, ch[1]) {
            if lt != Op::Compare(lsc_ir::CmpOp::Lt) {
                continue;
            }
            let diff = ops(g, lch[0])
                .iter()
                .any(|(s, sch)| *s == Op::Binary(BinaryOp::Sub) && is_iota(sch[0], 0) && is_iota(sch[1], 1));
            if let (true, Some(w)) = (diff, constant(g, lch[1])) {
                if w >= 1.0 && w == w.trunc() {
                    return Some(w as usize);
                }
            }
        }
    }
    None
}

/// Per-head windows of a `[H, T, T]` mask made of per-head groups
/// (`[n, T, T]` broadcasts of `[T, T]` masks) concatenated along the head axis.
fn concat_windows(g: &LscGraph, mask: Id, heads: usize) -> Option<Vec<usize>> {
    for (c, parts) in ops(g, mask) {
        if c != (Op::Concat { axis: 0 }) {
            continue;
        }
        let mut windows = Vec::new();
        for part in parts {
            let n = ty(g, part)?.shape[0].as_const()? as usize;
            let w = ops(g, part)
                .iter()
                .find_map(|(b, bch)| matches!(b, Op::Broadcast { .. }).then(|| mask_window(g, bch[0])).flatten())?;
            windows.extend(std::iter::repeat_n(w, n));
        }
        if windows.len() == heads {
            return Some(windows);
        }
    }
    None
}

/// Per-head windows of a `[T, T]`, `[H, T, T]` or `[B, H, T, T]` mask: one
/// `[T, T]` mask for every head, or per-head groups (possibly broadcast).
fn mask_windows(g: &LscGraph, mask: Id, heads: usize) -> Option<Vec<usize>> {
    match ty(g, mask)?.rank() {
        2 => return mask_window(g, mask).map(|w| vec![w; heads]),
        3 => return concat_windows(g, mask, heads),
        _ => {}
    }
    for (o, ch) in ops(g, mask) {
        if matches!(o, Op::Broadcast { .. }) && ty(g, ch[0]).is_some_and(|t| t.rank() < 4) {
            if let Some(w) = mask_windows(g, ch[0], heads) {
                return Some(w);
            }
        }
    }
    None
}

/// `(mask, logits)` of a masked-logits class: `select(M, logits, −∞)`, or
/// `logits + bias` with the bias `select(M, 0, −∞)` (possibly broadcast).
fn masked(g: &LscGraph, s: Id) -> Vec<(Id, Id)> {
    let mut out = Vec::new();
    let bias_mask = |id: Id| -> Option<Id> {
        let direct = |id: Id| {
            ops(g, id).into_iter().find_map(|(o, ch)| {
                (o == Op::Select && constant(g, ch[1]) == Some(0.0) && constant(g, ch[2]) == Some(f64::NEG_INFINITY))
                    .then_some(ch[0])
            })
        };
        direct(id).or_else(|| {
            ops(g, id)
                .into_iter()
                .find_map(|(o, ch)| matches!(o, Op::Broadcast { .. }).then(|| direct(ch[0])).flatten())
        })
    };
    for (o, ch) in ops(g, s) {
        match o {
            Op::Select if constant(g, ch[2]) == Some(f64::NEG_INFINITY) => out.push((ch[0], ch[1])),
            Op::Binary(BinaryOp::Add) => {
                for (bias, logits) in [(ch[1], ch[0]), (ch[0], ch[1])] {
                    if let Some(m) = bias_mask(bias) {
                        out.push((m, logits));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// `(q, k, scale, windows)` if class `s` is masked, scaled logits `(q·kᵀ)·c`
/// (the scale on the logits or on `q`; the mask by select or added as −∞).
fn masked_logits(g: &LscGraph, s: Id) -> Option<(Id, Id, f64, Vec<usize>)> {
    let t = ty(g, s)?;
    if t.rank() != 4 {
        return None;
    }
    let heads = t.shape[1].as_const()? as usize;
    for (mask, logits) in masked(g, s) {
        let Some(windows) = mask_windows(g, mask, heads) else { continue };
        let qk = |id: Id| -> Option<(Id, Id)> {
            ops(g, id)
                .into_iter()
                .find_map(|(m, mch)| (m == Op::MatMul { trans_a: false, trans_b: true }).then_some((mch[0], mch[1])))
        };
        for (l, lch) in ops(g, logits) {
            if l != Op::Binary(BinaryOp::Mul) {
                continue;
            }
            let Some(c) = constant(g, lch[1]) else { continue };
            if let Some((q, k)) = qk(lch[0]) {
                return Some((q, k, c, windows));
            }
        }
        for (m, mch) in ops(g, logits) {
            if m != (Op::MatMul { trans_a: false, trans_b: true }) {
                continue;
            }
            for (l, lch) in ops(g, mch[0]) {
                if let (Op::Binary(BinaryOp::Mul), Some(c)) = (l, constant(g, lch[1])) {
                    return Some((lch[0], mch[1], c, windows.clone()));
                }
            }
            return Some((mch[0], mch[1], 1.0, windows));
        }
    }
    None
}

/// `softmax(select(M, (q·kᵀ)·c, −∞))·v` with causal or banded per-head masks
/// → one `ls_attention` (per-head windows; all-global is plain causal attention).
fn ls_attention(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::MatMul { trans_a: false, trans_b: false }, ch)) = decode(g, n) else { return vec![] };
    let mut out = Vec::new();
    for (sm, sch) in ops(g, ch[0]) {
        if sm != (Op::Softmax { axis: 3 }) {
            continue;
        }
        let Some((q, k, scale, windows)) = masked_logits(g, sch[0]) else { continue };
        let same = |a: Id, b: Id| ty(g, a).is_some() && ty(g, a) == ty(g, b);
        if !(same(q, k) && same(k, ch[1])) {
            continue;
        }
        let fused = Expr::Node(
            Key::Op(Op::LsAttention { windows, scale }, None),
            vec![Expr::Class(q), Expr::Class(k), Expr::Class(ch[1])],
        );
        out.push(Expr::Node(Key::Proj(0), vec![fused]));
    }
    out
}

/// The monitor `max(masked logits, axes [0,2,3])` read from the fused op's row max.
fn attention_row_max(g: &LscGraph, n: &LscNode) -> Vec<Expr> {
    let Some((Op::Reduce { kind: lsc_ir::ReduceKind::Max, axes, keep_dims: false }, ch)) = decode(g, n) else {
        return vec![];
    };
    if axes != [0, 2, 3] {
        return vec![];
    }
    let Some((q, k, scale, windows)) = masked_logits(g, ch[0]) else { return vec![] };
    let want = Op::LsAttention { windows, scale };
    for class in g.classes() {
        for node in &class.nodes {
            let LscNode::Other(sym, fch) = node;
            if matches!(g.analysis.interner.key(*sym), Key::Op(o, None) if *o == want)
                && g.find(fch[0]) == g.find(q)
                && g.find(fch[1]) == g.find(k)
            {
                let rows = Expr::Node(Key::Proj(1), vec![Expr::Class(class.id)]);
                let reduce = Op::Reduce { kind: lsc_ir::ReduceKind::Max, axes: vec![0, 2], keep_dims: false };
                return vec![Expr::Node(Key::Op(reduce, None), vec![rows])];
            }
        }
    }
    vec![]
}

/// The fused attention's own rule: a fused backward with recomputation (the
/// row max is a monitor and has no gradient).
fn vjp(e: &mut Emit, n: &NodeGrad) -> Result<Vec<Option<ValueRef>>, String> {
    let Op::LsAttention { windows, scale } = &n.op else { unreachable!() };
    let Some(g) = n.grads[0] else { return Ok(vec![None, None, None]) };
    let mut args = n.operands.clone();
    args.extend([n.outputs[0], g]);
    let grads = e.op_all(Op::LsAttentionGrad { windows: windows.clone(), scale: *scale }, &args)?;
    Ok(grads.into_iter().map(Some).collect())
}
