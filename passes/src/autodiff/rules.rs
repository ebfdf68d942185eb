//! VJP rules of the primitive ops. Each maps the gradients of a node's outputs
//! to gradients of its operands (`None`: not differentiable or zero).

use super::emit::{Emit, R};
use super::NodeGrad;
use lsc_ir::{BinaryOp, CmpOp, DType, Dim, Op, ReduceKind, UnaryOp, ValueRef};

type G = R<Vec<Option<ValueRef>>>;

fn one(v: ValueRef) -> G {
    Ok(vec![Some(v)])
}

/// The gradient of output 0 (rules run only when some output has one).
fn gy(n: &NodeGrad) -> ValueRef {
    n.grads[0].expect("the driver only runs a rule when an output has a gradient")
}

pub(super) fn unary(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Unary(u) = n.op else { unreachable!("registered for unary ops only") };
    let (x, y, g) = (n.operands[0], n.outputs[0], gy(n));
    if !e.ty(x).dtype.is_float() {
        return Ok(vec![None]);
    }
    let d = match u {
        UnaryOp::Neg => e.neg(g)?,
        UnaryOp::Abs => {
            let zero = e.zeros_like(x)?;
            let pos = e.cmp(CmpOp::Gt, x, zero)?;
            let neg = e.cmp(CmpOp::Lt, x, zero)?;
            let ng = e.neg(g)?;
            let a = e.keep(pos, g)?;
            let b = e.keep(neg, ng)?;
            e.add(a, b)?
        }
        UnaryOp::Exp => e.mul(g, y)?,
        UnaryOp::Log => e.div(g, x)?,
        UnaryOp::Sqrt => {
            let t = e.div(g, y)?;
            e.scale(t, 0.5)?
        }
        UnaryOp::Rsqrt => {
            let y3 = e.mul(y, y)?;
            let y3 = e.mul(y3, y)?;
            let t = e.mul(g, y3)?;
            e.scale(t, -0.5)?
        }
        UnaryOp::Recip => {
            let y2 = e.mul(y, y)?;
            let t = e.mul(g, y2)?;
            e.neg(t)?
        }
        UnaryOp::Tanh => {
            let y2 = e.mul(y, y)?;
            let one = e.scalar_like(1.0, y)?;
            let d = e.sub(one, y2)?;
            e.mul(g, d)?
        }
        UnaryOp::Sigmoid => {
            let one = e.scalar_like(1.0, y)?;
            let c = e.sub(one, y)?;
            let d = e.mul(y, c)?;
            e.mul(g, d)?
        }
        UnaryOp::Silu => {
            // d/dx x·s(x) = s + x·s·(1 − s)
            let s = e.unary(UnaryOp::Sigmoid, x)?;
            let one = e.scalar_like(1.0, s)?;
            let c = e.sub(one, s)?;
            let xs = e.mul(x, s)?;
            let t = e.mul(xs, c)?;
            let d = e.add(s, t)?;
            e.mul(g, d)?
        }
        UnaryOp::Gelu => {
            // d/dx x·Φ(x) = Φ(x) + x·φ(x), Φ = (1 + erf(x/√2))/2, φ = e^{−x²/2}/√(2π)
            let xs = e.scale(x, std::f64::consts::FRAC_1_SQRT_2)?;
            let erf = e.unary(UnaryOp::Erf, xs)?;
            let one = e.scalar_like(1.0, erf)?;
            let cdf = e.add(one, erf)?;
            let cdf = e.scale(cdf, 0.5)?;
            let x2 = e.mul(x, x)?;
            let x2 = e.scale(x2, -0.5)?;
            let pdf = e.unary(UnaryOp::Exp, x2)?;
            let pdf = e.scale(pdf, 1.0 / (2.0 * std::f64::consts::PI).sqrt())?;
            let xp = e.mul(x, pdf)?;
            let d = e.add(cdf, xp)?;
            e.mul(g, d)?
        }
        UnaryOp::Erf => {
            let x2 = e.mul(x, x)?;
            let x2 = e.neg(x2)?;
            let d = e.unary(UnaryOp::Exp, x2)?;
            let d = e.scale(d, std::f64::consts::FRAC_2_SQRT_PI)?;
            e.mul(g, d)?
        }
        UnaryOp::Sin => {
            let d = e.unary(UnaryOp::Cos, x)?;
            e.mul(g, d)?
        }
        UnaryOp::Cos => {
            let s = e.unary(UnaryOp::Sin, x)?;
            let d = e.neg(s)?;
            e.mul(g, d)?
        }
        UnaryOp::Round | UnaryOp::Not => return Ok(vec![None]),
    };
    one(d)
}

pub(super) fn clamp(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Clamp { min, max } = n.op else { unreachable!() };
    let x = n.operands[0];
    if !e.ty(x).dtype.is_float() {
        return Ok(vec![None]);
    }
    let lo = e.scalar_like(min, x)?;
    let hi = e.scalar_like(max, x)?;
    let a = e.cmp(CmpOp::Ge, x, lo)?;
    let b = e.cmp(CmpOp::Le, x, hi)?;
    let inside = e.op(Op::Binary(BinaryOp::And), &[a, b])?;
    one(e.keep(inside, gy(n))?)
}

pub(super) fn binary(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Binary(b) = n.op else { unreachable!() };
    let (x, z, y, g) = (n.operands[0], n.operands[1], n.outputs[0], gy(n));
    if !e.ty(x).dtype.is_float() {
        return Ok(vec![None, None]);
    }
    let (gx, gz) = match b {
        BinaryOp::Add => (g, g),
        BinaryOp::Sub => (g, e.neg(g)?),
        BinaryOp::Mul => (e.mul(g, z)?, e.mul(g, x)?),
        BinaryOp::Div => {
            let gx = e.div(g, z)?;
            let t = e.mul(gx, y)?;
            (gx, e.neg(t)?)
        }
        BinaryOp::Max | BinaryOp::Min => {
            // Ties go to the first operand.
            let c = if b == BinaryOp::Max { CmpOp::Ge } else { CmpOp::Le };
            let first = e.cmp(c, x, z)?;
            let gx = e.keep(first, g)?;
            let gz = e.sub(g, gx)?;
            (gx, gz)
        }
        BinaryOp::Pow => {
            let one = e.scalar_like(1.0, z)?;
            let zm1 = e.sub(z, one)?;
            let p = e.op(Op::Binary(BinaryOp::Pow), &[x, zm1])?;
            let d = e.mul(z, p)?;
            let gx = e.mul(g, d)?;
            let lx = e.unary(UnaryOp::Log, x)?;
            let d2 = e.mul(y, lx)?;
            (gx, e.mul(g, d2)?)
        }
        BinaryOp::And | BinaryOp::Or => return Ok(vec![None, None]),
    };
    Ok(vec![Some(gx), Some(gz)])
}

pub(crate) fn no_gradient(_: &mut Emit, n: &NodeGrad) -> G {
    Ok(vec![None; n.operands.len()])
}

pub(super) fn select(e: &mut Emit, n: &NodeGrad) -> G {
    let (c, g) = (n.operands[0], gy(n));
    let ga = e.keep(c, g)?;
    let gb = e.sub(g, ga)?;
    Ok(vec![None, Some(ga), Some(gb)])
}

pub(super) fn cast(e: &mut Emit, n: &NodeGrad) -> G {
    let x = n.operands[0];
    let (from, to) = (e.ty(x).dtype, e.ty(n.outputs[0]).dtype);
    if !(from.is_float() && to.is_float()) {
        return Ok(vec![None]);
    }
    one(e.cast(gy(n), from)?)
}

/// `g` (the gradient of a reduction's output) broadcast back to `x`'s shape.
fn unreduce(e: &mut Emit, g: ValueRef, x: ValueRef, axes: &[usize], keep_dims: bool) -> R<ValueRef> {
    let shape = e.ty(x).shape;
    let g = if keep_dims {
        g
    } else {
        let kept: Vec<Dim> =
            shape.iter().enumerate().map(|(i, d)| if axes.contains(&i) { Dim::new(1) } else { d.clone() }).collect();
        e.reshape(g, &kept)?
    };
    e.broadcast(g, &shape)
}

pub(super) fn reduce(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Reduce { kind, axes, keep_dims } = &n.op else { unreachable!() };
    let (x, y, g) = (n.operands[0], n.outputs[0], gy(n));
    if !e.ty(x).dtype.is_float() {
        return Ok(vec![None]);
    }
    let gb = unreduce(e, g, x, axes, *keep_dims)?;
    let d = match kind {
        ReduceKind::Sum => gb,
        ReduceKind::Mean => {
            // The count may be symbolic: sum a tensor of ones over the same axes.
            let ones = e.scalar_like(1.0, x)?;
            let count = e.sum_keep(ones, axes.clone())?;
            let count = e.broadcast(count, &e.ty(x).shape)?;
            e.div(gb, count)?
        }
        ReduceKind::Max | ReduceKind::Min => {
            // Every element equal to the extremum receives the gradient.
            let yb = unreduce(e, y, x, axes, *keep_dims)?;
            let hit = e.cmp(CmpOp::Eq, x, yb)?;
            e.keep(hit, gb)?
        }
    };
    one(d)
}

pub(super) fn softmax(e: &mut Emit, n: &NodeGrad) -> G {
    let (y, g) = (n.outputs[0], gy(n));
    let axis = match n.op {
        Op::Softmax { axis } | Op::LogSoftmax { axis } => axis,
        _ => unreachable!(),
    };
    let shape = e.ty(y).shape;
    let d = if matches!(n.op, Op::Softmax { .. }) {
        // y·(g − Σ g·y)
        let gy_ = e.mul(g, y)?;
        let s = e.sum_keep(gy_, vec![axis])?;
        let s = e.broadcast(s, &shape)?;
        let c = e.sub(g, s)?;
        e.mul(y, c)?
    } else {
        // g − softmax·Σ g
        let p = e.unary(UnaryOp::Exp, y)?;
        let s = e.sum_keep(g, vec![axis])?;
        let s = e.broadcast(s, &shape)?;
        let t = e.mul(p, s)?;
        e.sub(g, t)?
    };
    one(d)
}

pub(super) fn matmul(e: &mut Emit, n: &NodeGrad) -> G {
    // C = op_a(A)·op_b(B), op(X) = X or Xᵀ: dop_a(A) = G·op_b(B)ᵀ and dop_b(B) = op_a(A)ᵀ·G,
    // transposed back when the operand is stored transposed. No transpose is materialised.
    let Op::MatMul { trans_a, trans_b } = n.op else { unreachable!() };
    let (a, b, g) = (n.operands[0], n.operands[1], gy(n));
    let mm = |e: &mut Emit, x, y, ta, tb| e.op(Op::MatMul { trans_a: ta, trans_b: tb }, &[x, y]);
    let ga = if trans_a { mm(e, b, g, trans_b, true)? } else { mm(e, g, b, false, !trans_b)? };
    let gb = if trans_b { mm(e, g, a, true, trans_a)? } else { mm(e, a, g, !trans_a, false)? };
    // A shared (rank-2) operand collects the gradient of every batch element.
    let sum_batch = |e: &mut Emit, grad: ValueRef, x: ValueRef| {
        let extra = e.ty(grad).rank() - e.ty(x).rank();
        e.sum(grad, (0..extra).collect())
    };
    let ga = sum_batch(e, ga, a)?;
    let gb = sum_batch(e, gb, b)?;
    Ok(vec![Some(ga), Some(gb)])
}

pub(super) fn gather(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Gather { axis } = n.op else { unreachable!() };
    let (x, idx) = (n.operands[0], n.operands[1]);
    let z = e.zeros_like(x)?;
    one_then_none(e.op(Op::ScatterAdd { axis }, &[z, idx, gy(n)])?)
}

fn one_then_none(v: ValueRef) -> G {
    Ok(vec![Some(v), None])
}

pub(super) fn scatter(e: &mut Emit, n: &NodeGrad) -> G {
    let (axis, add) = match n.op {
        Op::Scatter { axis } => (axis, false),
        Op::ScatterAdd { axis } => (axis, true),
        _ => unreachable!(),
    };
    let (idx, src, g) = (n.operands[1], n.operands[2], gy(n));
    // Overwritten positions pass no gradient to x (indices assumed distinct).
    let gx = if add {
        g
    } else {
        let zs = e.zeros_like(src)?;
        e.op(Op::Scatter { axis }, &[g, idx, zs])?
    };
    let gsrc = e.op(Op::Gather { axis }, &[g, idx])?;
    Ok(vec![Some(gx), None, Some(gsrc)])
}

pub(super) fn embedding(e: &mut Emit, n: &NodeGrad) -> G {
    // dW = Σ over positions of one_hot(ids)ᵀ·g: a matmul, so no flattening of symbolic dims.
    let (w, ids, g) = (n.operands[0], n.operands[1], gy(n));
    let wt = e.ty(w);
    let ids_rank = e.ty(ids).rank();
    if ids_rank == 0 {
        let hot = e.one_hot(ids, wt.shape[0].clone(), wt.dtype)?;
        let hot = e.reshape(hot, &[wt.shape[0].clone(), Dim::new(1)])?;
        let g = e.reshape(g, &[Dim::new(1), wt.shape[1].clone()])?;
        return Ok(vec![Some(e.op(Op::MatMul { trans_a: false, trans_b: false }, &[hot, g])?), None]);
    }
    let hot = e.one_hot(ids, wt.shape[0].clone(), wt.dtype)?;
    let gw = e.op(Op::MatMul { trans_a: true, trans_b: false }, &[hot, g])?;
    let gw = e.sum(gw, (0..ids_rank - 1).collect())?;
    Ok(vec![Some(gw), None])
}

pub(super) fn reshape(e: &mut Emit, n: &NodeGrad) -> G {
    let shape = e.ty(n.operands[0]).shape;
    one(e.reshape(gy(n), &shape)?)
}

pub(super) fn transpose(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Transpose { perm } = &n.op else { unreachable!() };
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    one(e.op(Op::Transpose { perm: inv }, &[gy(n)])?)
}

/// Zeros of `like`'s type with `len` along `axis`.
fn zeros_along(e: &mut Emit, like: ValueRef, axis: usize, len: Dim) -> R<ValueRef> {
    let mut ty = e.ty(like);
    ty.shape[axis] = len;
    e.full(0.0, &ty)
}

pub(super) fn slice(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Slice { axis, start, end } = &n.op else { unreachable!() };
    let (x, g) = (n.operands[0], gy(n));
    let total = e.ty(x).shape[*axis].clone();
    let mut parts = Vec::new();
    if start.as_const() != Some(0) {
        parts.push(zeros_along(e, g, *axis, start.clone())?);
    }
    parts.push(g);
    let after = total - end.clone();
    if after.as_const() != Some(0) {
        parts.push(zeros_along(e, g, *axis, after)?);
    }
    if parts.len() == 1 {
        return one(g);
    }
    one(e.op(Op::Concat { axis: *axis }, &parts)?)
}

pub(super) fn concat(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::Concat { axis } = n.op else { unreachable!() };
    let g = gy(n);
    let mut start = Dim::new(0);
    let mut out = Vec::new();
    for &x in &n.operands {
        let len = e.ty(x).shape[axis].clone();
        let end = start.clone() + len;
        out.push(Some(e.op(Op::Slice { axis, start: start.clone(), end: end.clone() }, &[g])?));
        start = end;
    }
    Ok(out)
}

pub(super) fn broadcast(e: &mut Emit, n: &NodeGrad) -> G {
    let (x, g) = (n.operands[0], gy(n));
    let (xs, ys) = (e.ty(x).shape, e.ty(n.outputs[0]).shape);
    let lead = ys.len() - xs.len();
    let g = e.sum(g, (0..lead).collect())?;
    let expanded: Vec<usize> =
        xs.iter().zip(&ys[lead..]).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
    let g = e.sum_keep(g, expanded)?;
    one(e.reshape(g, &xs)?)
}

/// `y = rotary(x, c, s)` is a rotation, so `dx = rotary(g, c, −s)`; the tables'
/// gradients sum the per-row products over the leading axes:
/// `dc = Σ g₁x₁ + g₂x₂`, `ds = Σ g₂x₁ − g₁x₂`.
pub(super) fn rotary(e: &mut Emit, n: &NodeGrad) -> G {
    let (x, c, s, g) = (n.operands[0], n.operands[1], n.operands[2], gy(n));
    let neg_s = e.neg(s)?;
    let dx = e.op(Op::Rotary, &[g, c, neg_s])?;
    let shape = e.ty(x).shape;
    let (r, d) = (shape.len(), shape[shape.len() - 1].clone());
    let half = Dim::new(d.as_const().unwrap_or(0) / 2);
    let halves = |e: &mut Emit, v: ValueRef| -> R<(ValueRef, ValueRef)> {
        let lo = e.op(Op::Slice { axis: r - 1, start: Dim::new(0), end: half.clone() }, &[v])?;
        let hi = e.op(Op::Slice { axis: r - 1, start: half.clone(), end: d.clone() }, &[v])?;
        Ok((lo, hi))
    };
    let ((x1, x2), (g1, g2)) = (halves(e, x)?, halves(e, g)?);
    let lead: Vec<usize> = (0..r - 2).collect();
    let (a, b) = (e.mul(g1, x1)?, e.mul(g2, x2)?);
    let dc = e.add(a, b)?;
    let dc = e.sum(dc, lead.clone())?;
    let (a, b) = (e.mul(g2, x1)?, e.mul(g1, x2)?);
    let ds = e.sub(a, b)?;
    let ds = e.sum(ds, lead)?;
    Ok(vec![Some(dx), Some(dc), Some(ds)])
}

pub(super) fn topk(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::TopK { axis, .. } = n.op else { unreachable!() };
    let Some(gv) = n.grads[0] else { return Ok(vec![None]) };
    let x = n.operands[0];
    let z = e.zeros_like(x)?;
    one(e.op(Op::ScatterAdd { axis }, &[z, n.outputs[1], gv])?)
}

pub(super) fn cross_entropy(e: &mut Emit, n: &NodeGrad) -> G {
    // d/dlogits = g·(softmax(logits) − one_hot(target))
    let (logits, targets, g) = (n.operands[0], n.operands[1], gy(n));
    let lt = e.ty(logits);
    let axis = lt.rank() - 1;
    let p = e.op(Op::Softmax { axis }, &[logits])?;
    let hot = e.one_hot(targets, lt.shape[axis].clone(), lt.dtype)?;
    let d = e.sub(p, hot)?;
    let mut with_one = e.ty(g).shape;
    with_one.push(Dim::new(1));
    let g = e.reshape(g, &with_one)?;
    let g = e.broadcast(g, &lt.shape)?;
    Ok(vec![Some(e.mul(d, g)?), None])
}

pub(super) fn cache_update(e: &mut Emit, n: &NodeGrad) -> G {
    let Op::CacheUpdate { axis } = n.op else { unreachable!() };
    let (update, offset, g) = (n.operands[1], n.operands[2], gy(n));
    let zu = e.zeros_like(update)?;
    let gcache = e.op(Op::CacheUpdate { axis }, &[g, zu, offset])?;
    // The written window of g: gather at offset + iota along the axis.
    let ut = e.ty(update);
    let iota = ValueRef::first(e.g.add_node(Op::Iota { axis }, &[], vec![ut.with_dtype(DType::I64)]));
    let idx = e.add(iota, offset)?;
    let gupdate = e.op(Op::Gather { axis }, &[g, idx])?;
    Ok(vec![Some(gcache), Some(gupdate), None])
}
