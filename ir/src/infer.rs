//! Type inference: the one place that states each op's typing rule. The DSL
//! uses it to report shape errors at the caller's line, the parser and the
//! verifier use it to check declared types.

use crate::dim::{Dim, Poly};
use crate::dtype::DType;
use crate::op::{BinaryOp, Op, ReduceKind, UnaryOp};
use crate::types::TensorType;
use std::collections::BTreeMap;

/// The input and output types of a function (a `Loop` body or `Call` callee).
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    /// Formal argument types, in order.
    pub inputs: Vec<TensorType>,
    /// Result types, in order.
    pub outputs: Vec<TensorType>,
}

/// Looks up function signatures by name.
pub trait Signatures {
    /// The signature of function `name`, if it exists.
    fn signature(&self, name: &str) -> Option<Signature>;
}

/// No functions: enough for graphs without `Loop`/`Call`.
pub struct NoFunctions;

impl Signatures for NoFunctions {
    fn signature(&self, _: &str) -> Option<Signature> {
        None
    }
}

/// The number of operands `op` takes, or `None` for a variable count.
pub fn arity(op: &Op) -> Option<usize> {
    Some(match op {
        Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } | Op::Iota { .. } => 0,
        Op::Unary(_)
        | Op::StopGradient
        | Op::Clamp { .. }
        | Op::Cast { .. }
        | Op::Reduce { .. }
        | Op::ArgMax { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Broadcast { .. }
        | Op::TopK { .. } => 1,
        Op::Binary(_)
        | Op::Compare(_)
        | Op::MatMul { .. }
        | Op::MatMulSum { .. }
        | Op::Gather { .. }
        | Op::Embedding
        | Op::CausalConv1d
        | Op::CrossEntropy => 2,
        Op::Select
        | Op::Scatter { .. }
        | Op::ScatterAdd { .. }
        | Op::CacheUpdate { .. }
        | Op::LsAttention { .. }
        | Op::Rotary
        | Op::CausalConv1dGrad => 3,
        Op::LsAttentionGrad { .. } | Op::Gam => 5,
        Op::TernaryPack => 2,
        Op::SoftmaxCrossEntropy | Op::TernaryMatmul { .. } => 3,
        Op::Concat { .. } | Op::Loop { .. } | Op::Call { .. } | Op::RoutedCall { .. } | Op::AdamW { .. } => {
            return None
        }
    })
}

fn shapes_str(ts: &[&TensorType]) -> String {
    ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}

fn check_axis(axis: usize, t: &TensorType, what: &str) -> Result<(), String> {
    if axis >= t.rank() {
        return Err(format!("{what} axis {axis} is out of range for {t} (rank {})", t.rank()));
    }
    Ok(())
}

fn need_float(t: &TensorType, what: &str) -> Result<(), String> {
    if !t.dtype.is_float() {
        return Err(format!("{what} needs a float operand, got {t}"));
    }
    Ok(())
}

fn need_int(t: &TensorType, what: &str) -> Result<(), String> {
    if !t.dtype.is_int() {
        return Err(format!("{what} needs integer indices, got {t}"));
    }
    Ok(())
}

fn same_type(a: &TensorType, b: &TensorType, what: &str) -> Result<(), String> {
    if a != b {
        return Err(format!("{what} needs operands of identical type, got {a} and {b} (broadcast explicitly)"));
    }
    Ok(())
}

/// Unifies a function's formal type with an actual type, binding the formal's
/// plain symbols; other dims must match after substitution.
fn unify(formal: &TensorType, actual: &TensorType, subst: &mut BTreeMap<String, Dim>) -> bool {
    if formal.dtype != actual.dtype || formal.rank() != actual.rank() {
        return false;
    }
    for (f, a) in formal.shape.iter().zip(&actual.shape) {
        if let Some(s) = f.as_symbol() {
            match subst.get(s) {
                Some(bound) if bound != a => return false,
                Some(_) => {}
                None => {
                    subst.insert(s.to_string(), a.clone());
                }
            }
        } else if &f.substitute(subst) != a {
            return false;
        }
    }
    true
}

/// Binds a function's symbols from the types of the arguments it is called
/// with (`formal` are its input types), as a call site's typing does.
pub fn bind_symbols(formal: &[TensorType], actual: &[&TensorType]) -> Result<BTreeMap<String, Dim>, String> {
    if formal.len() != actual.len() {
        return Err(format!("the function takes {} arguments, got {}", formal.len(), actual.len()));
    }
    let mut subst = BTreeMap::new();
    for (i, (f, a)) in formal.iter().zip(actual).enumerate() {
        if !unify(f, a, &mut subst) {
            return Err(format!("argument {i} has type {a}, which does not fit the formal type {f}"));
        }
    }
    Ok(subst)
}

fn instantiate(
    formal: &[TensorType],
    actual: &[&TensorType],
    outputs: &[TensorType],
    what: &str,
) -> Result<Vec<TensorType>, String> {
    let subst = bind_symbols(formal, actual).map_err(|e| format!("{what}: {e}"))?;
    Ok(outputs.iter().map(|t| TensorType::new(t.dtype, t.shape.iter().map(|d| d.substitute(&subst)))).collect())
}

/// The types of `routed_call(active, args..)` (see [`Op::RoutedCall`]): the
/// callee's per-row symbol is bound to the mask's row count, and every output
/// must be per-row so that it can be scattered back.
fn routed_call(
    callee: &str,
    routed: usize,
    ins: &[&TensorType],
    sigs: &dyn Signatures,
) -> Result<Vec<TensorType>, String> {
    let sig = sigs.signature(callee).ok_or_else(|| format!("`routed_call` refers to unknown function @{callee}"))?;
    let what = format!("routed call of @{callee}");
    let Some((mask, args)) = ins.split_first().filter(|(m, _)| m.dtype == DType::Bool && m.rank() == 2) else {
        return Err(format!("{what} needs the active rows as its first operand, a bool[B, T] mask"));
    };
    if routed == 0 || routed > args.len() {
        return Err(format!("{what}: `routed` = {routed} must count 1 to {} leading arguments", args.len()));
    }
    let per_row = |t: &TensorType| t.rank() >= 2 && t.shape[..2] == mask.shape[..];
    if let Some(a) = args[..routed].iter().find(|a| !per_row(a)) {
        return Err(format!("{what}: routed argument {a} does not start with the mask's shape {mask}"));
    }
    let row = sig.inputs.first().and_then(|t| t.shape.get(1)).and_then(|d| d.as_symbol().map(str::to_string));
    let Some(row) = row else {
        return Err(format!("{what}: the callee's first input must have a symbolic row dimension (axis 1)"));
    };
    let row_dim = Dim::sym(&row);
    let routed_formals_ok =
        sig.inputs.len() >= routed && sig.inputs[..routed].iter().all(|t| t.shape.get(1) == Some(&row_dim));
    let elsewhere = sig.inputs[routed.min(sig.inputs.len())..]
        .iter()
        .any(|t| t.shape.iter().any(|d| d.symbols().any(|s| s == row)));
    if !routed_formals_ok || elsewhere {
        return Err(format!("{what}: row symbol {row} must be axis 1 of exactly the {routed} routed inputs"));
    }
    let outs = instantiate(&sig.inputs, args, &sig.outputs, &what)?;
    if let Some(o) = outs.iter().find(|o| !per_row(o)) {
        return Err(format!("{what}: output {o} is not per-row, so it cannot be scattered back"));
    }
    Ok(outs)
}

/// Infers the output types of a non-leaf op from its operand types.
/// Leaves (`input`, `param`, `constant`, `iota`) declare their type instead.
pub fn infer(op: &Op, ins: &[&TensorType], sigs: &dyn Signatures) -> Result<Vec<TensorType>, String> {
    if let Some(n) = arity(op) {
        if ins.len() != n {
            return Err(format!("`{}` takes {n} operand(s), got {}", op.name(), ins.len()));
        }
    }
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } | Op::Iota { .. } => {
            Err(format!("`{}` is a leaf: its type is declared, not inferred", op.name()))
        }
        Op::Unary(u) => {
            let x = ins[0];
            match u {
                UnaryOp::Not if x.dtype != DType::Bool => Err(format!("`not` needs a bool operand, got {x}")),
                UnaryOp::Not => one(x.clone()),
                UnaryOp::Neg | UnaryOp::Abs if x.dtype.is_numeric() => one(x.clone()),
                _ => {
                    need_float(x, u.name())?;
                    one(x.clone())
                }
            }
        }
        Op::Clamp { min, max } => {
            if !ins[0].dtype.is_numeric() {
                return Err(format!("`clamp` needs a numeric operand, got {}", ins[0]));
            }
            if min > max {
                return Err(format!("`clamp` has min {min} > max {max}"));
            }
            one(ins[0].clone())
        }
        Op::Binary(b) => {
            same_type(ins[0], ins[1], b.name())?;
            let logical = matches!(b, BinaryOp::And | BinaryOp::Or);
            let dt = ins[0].dtype;
            if logical && dt != DType::Bool {
                return Err(format!("`{}` needs bool operands, got {}", b.name(), ins[0]));
            }
            if !logical && !dt.is_numeric() {
                return Err(format!("`{}` needs numeric operands, got {}", b.name(), ins[0]));
            }
            if *b == BinaryOp::Pow {
                need_float(ins[0], "pow")?;
            }
            one(ins[0].clone())
        }
        Op::Compare(c) => {
            same_type(ins[0], ins[1], c.name())?;
            one(ins[0].with_dtype(DType::Bool))
        }
        Op::Select => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            if c.dtype != DType::Bool {
                return Err(format!("`select` needs a bool condition, got {c}"));
            }
            same_type(a, b, "select")?;
            if c.shape != a.shape {
                return Err(format!("`select` condition {c} does not match the values {a}"));
            }
            one(a.clone())
        }
        Op::StopGradient => one(ins[0].clone()),
        Op::Cast { to } => {
            if *to == DType::Ternary || ins[0].dtype == DType::Ternary {
                return Err("`cast` cannot convert to or from packed ternary; use the ternary pack/unpack ops".into());
            }
            one(ins[0].with_dtype(*to))
        }
        Op::Reduce { kind, axes, keep_dims } => {
            let x = ins[0];
            if !x.dtype.is_numeric() {
                return Err(format!("`reduce` needs a numeric operand, got {x}"));
            }
            if *kind == ReduceKind::Mean {
                need_float(x, "mean")?;
            }
            if axes.is_empty() || axes.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("`reduce` axes {axes:?} must be non-empty, sorted and distinct"));
            }
            for &a in axes {
                check_axis(a, x, "reduce")?;
            }
            let shape = x.shape.iter().enumerate().filter_map(|(i, d)| {
                if !axes.contains(&i) {
                    Some(d.clone())
                } else {
                    keep_dims.then(|| Dim::new(1))
                }
            });
            one(TensorType::new(x.dtype, shape))
        }
        Op::ArgMax { axis, keep_dims } => {
            let x = ins[0];
            check_axis(*axis, x, "argmax")?;
            let mut shape = x.shape.clone();
            if *keep_dims {
                shape[*axis] = Dim::new(1);
            } else {
                shape.remove(*axis);
            }
            one(TensorType::new(DType::I64, shape))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            need_float(ins[0], op.name())?;
            check_axis(*axis, ins[0], op.name())?;
            one(ins[0].clone())
        }
        Op::MatMul { trans_a, trans_b } => infer_matmul(ins[0], ins[1], *trans_a, *trans_b),
        Op::MatMulSum { trans_a, trans_b } => {
            if ins[0].rank() < 3 || ins[0].rank() != ins[1].rank() {
                return Err(format!(
                    "`matmul_sum` of {} and {}: operands must both be batched (rank ≥ 3, the same rank)",
                    ins[0], ins[1]
                ));
            }
            let mut out = infer_matmul(ins[0], ins[1], *trans_a, *trans_b)?;
            let rank = out[0].rank();
            out[0].shape.drain(..rank - 2);
            Ok(out)
        }
        Op::Gather { axis } => {
            let (x, idx) = (ins[0], ins[1]);
            need_int(idx, "gather")?;
            check_axis(*axis, x, "gather")?;
            same_rank_except(x, idx, *axis, "gather", "indices")?;
            one(idx.with_dtype(x.dtype))
        }
        Op::Scatter { axis } | Op::ScatterAdd { axis } => {
            let (x, idx, src) = (ins[0], ins[1], ins[2]);
            need_int(idx, op.name())?;
            check_axis(*axis, x, op.name())?;
            same_rank_except(x, idx, *axis, op.name(), "indices")?;
            if src.shape != idx.shape || src.dtype != x.dtype {
                return Err(format!(
                    "`{}` source {src} must have the indices' shape {idx} and dtype {}",
                    op.name(),
                    x.dtype
                ));
            }
            one(x.clone())
        }
        Op::Embedding => {
            let (w, ids) = (ins[0], ins[1]);
            if w.rank() != 2 {
                return Err(format!("`embedding` weight must be [V, D], got {w}"));
            }
            need_int(ids, "embedding")?;
            let mut shape = ids.shape.clone();
            shape.push(w.shape[1].clone());
            one(TensorType::new(w.dtype, shape))
        }
        Op::Reshape { shape } => {
            if Poly::numel(&ins[0].shape) != Poly::numel(shape) {
                let t = TensorType::new(ins[0].dtype, shape.clone());
                return Err(format!("`reshape` cannot turn {} into {t}: element counts differ", ins[0]));
            }
            one(TensorType::new(ins[0].dtype, shape.clone()))
        }
        Op::Transpose { perm } => {
            let x = ins[0];
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank() || perm.iter().any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true)) {
                return Err(format!("`transpose` perm {perm:?} is not a permutation of the {} axes of {x}", x.rank()));
            }
            one(TensorType::new(x.dtype, perm.iter().map(|&p| x.shape[p].clone())))
        }
        Op::Slice { axis, start, end } => {
            let x = ins[0];
            check_axis(*axis, x, "slice")?;
            let len = end.clone() - start.clone();
            let bad = match (start.as_const(), len.as_const(), x.shape[*axis].as_const()) {
                (Some(s), _, _) if s < 0 => true,
                (_, Some(l), _) if l < 0 => true,
                (_, _, Some(n)) => end.as_const().is_some_and(|e| e > n),
                _ => false,
            };
            if bad {
                return Err(format!("`slice` {start}..{end} is out of range for axis {axis} of {x}"));
            }
            let mut shape = x.shape.clone();
            shape[*axis] = len;
            one(TensorType::new(x.dtype, shape))
        }
        Op::Concat { axis } => {
            let first = ins.first().ok_or("`concat` needs at least one operand")?;
            check_axis(*axis, first, "concat")?;
            let mut total = Dim::new(0);
            for t in ins {
                same_rank_except(first, t, *axis, "concat", "operand")?;
                if t.dtype != first.dtype || t.rank() != first.rank() {
                    return Err(format!("`concat` operands differ: {}", shapes_str(ins)));
                }
                total = total + t.shape[*axis].clone();
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            one(TensorType::new(first.dtype, shape))
        }
        Op::Broadcast { shape } => {
            let x = ins[0];
            let ok = x.rank() <= shape.len()
                && x.shape.iter().rev().zip(shape.iter().rev()).all(|(a, b)| a == b || a.as_const() == Some(1));
            if !ok {
                let t = TensorType::new(x.dtype, shape.clone());
                return Err(format!("`broadcast` cannot expand {x} to {t}"));
            }
            one(TensorType::new(x.dtype, shape.clone()))
        }
        Op::CausalConv1d => {
            let (x, w) = (ins[0], ins[1]);
            need_float(x, "causal_conv1d")?;
            let ok = x.rank() == 3
                && w.rank() == 3
                && w.dtype == x.dtype
                && w.shape[0] == x.shape[2]
                && w.shape[1].as_const() == Some(1)
                && w.shape[2].as_const().is_some_and(|k| k >= 1);
            if !ok {
                return Err(format!(
                    "`causal_conv1d` needs x [B,T,C] and weight [C,1,K] of one dtype, got {x} and {w}"
                ));
            }
            one(x.clone())
        }
        Op::CausalConv1dGrad => {
            let (x, w, g) = (ins[0], ins[1], ins[2]);
            let y = infer(&Op::CausalConv1d, &[x, w], sigs)?.remove(0);
            if *g != y {
                return Err(format!("`causal_conv1d_grad` needs d_y of the output's type {y}, got {g}"));
            }
            Ok(vec![x.clone(), w.clone()])
        }
        Op::Rotary => {
            let (x, cos, sin) = (ins[0], ins[1], ins[2]);
            need_float(x, "rotary")?;
            let r = x.rank();
            let half = (r >= 2).then(|| x.shape[r - 1].as_const()).flatten().filter(|d| d % 2 == 0).map(|d| d / 2);
            let table = half.map(|h| TensorType::new(x.dtype, [x.shape[r - 2].clone(), Dim::new(h)]));
            if table.is_none() || table.as_ref() != Some(cos) || table.as_ref() != Some(sin) {
                return Err(format!(
                    "`rotary` needs x [..., T, D] with D even and cos, sin [T, D/2] of its dtype, got {x}, {cos} and {sin}"
                ));
            }
            one(x.clone())
        }
        Op::TopK { k, axis } => {
            let x = ins[0];
            check_axis(*axis, x, "topk")?;
            if !x.dtype.is_numeric() {
                return Err(format!("`topk` needs a numeric operand, got {x}"));
            }
            if let (Some(kc), Some(n)) = (k.as_const(), x.shape[*axis].as_const()) {
                if kc < 1 || kc > n {
                    return Err(format!("`topk` k={kc} is out of range 1..={n} for {x}"));
                }
            }
            let mut shape = x.shape.clone();
            shape[*axis] = k.clone();
            Ok(vec![TensorType::new(x.dtype, shape.clone()), TensorType::new(DType::I64, shape)])
        }
        Op::CrossEntropy => {
            let (logits, targets) = (ins[0], ins[1]);
            need_float(logits, "cross_entropy")?;
            need_int(targets, "cross_entropy")?;
            if logits.rank() != targets.rank() + 1 || logits.shape[..targets.rank()] != targets.shape[..] {
                return Err(format!(
                    "`cross_entropy` needs logits [..., V] and targets [...], got {logits} and {targets}"
                ));
            }
            one(targets.with_dtype(logits.dtype))
        }
        Op::CacheUpdate { axis } => {
            let (cache, update, offset) = (ins[0], ins[1], ins[2]);
            check_axis(*axis, cache, "cache_update")?;
            same_rank_except(cache, update, *axis, "cache_update", "update")?;
            if update.dtype != cache.dtype {
                return Err(format!("`cache_update` update {update} must have the cache's dtype {}", cache.dtype));
            }
            if *offset != TensorType::scalar(DType::I64) {
                return Err(format!("`cache_update` offset must be i64[], got {offset}"));
            }
            one(cache.clone())
        }
        Op::LsAttention { windows, .. } | Op::LsAttentionGrad { windows, .. } => {
            let q = ins[0];
            let ok = q.rank() == 4
                && q.dtype.is_float()
                && ins.iter().all(|t| *t == q)
                && q.shape[1].as_const() == Some(windows.len() as i64);
            if !ok {
                return Err(format!(
                    "`{}` needs q, k, v (and out, d_out) of one type [B,H,T,D] with H = {} windows, got {}",
                    op.name(),
                    windows.len(),
                    shapes_str(ins)
                ));
            }
            if matches!(op, Op::LsAttentionGrad { .. }) {
                return Ok(vec![q.clone(), q.clone(), q.clone()]);
            }
            Ok(vec![q.clone(), TensorType::new(q.dtype, q.shape[..3].iter().cloned())])
        }
        Op::SoftmaxCrossEntropy => {
            let (logits, targets, d_loss) = (ins[0], ins[1], ins[2]);
            let loss = infer(&Op::CrossEntropy, &[logits, targets], sigs)?.remove(0);
            if *d_loss != loss {
                return Err(format!("`softmax_cross_entropy` needs d_loss of type {loss}, got {d_loss}"));
            }
            Ok(vec![loss, logits.clone()])
        }
        Op::AdamW { decay, .. } => {
            let scalar = TensorType::scalar(DType::F32);
            if ins.len() != 4 + 4 * decay.len() || ins[..4].iter().any(|t| **t != scalar) {
                return Err(format!(
                    "`adamw` over {} parameters takes lr, bc1, bc2, grad_scale (f32[]) and (w, g, m, v) per parameter, got {}",
                    decay.len(),
                    shapes_str(ins)
                ));
            }
            let mut out = Vec::new();
            for (i, group) in ins[4..].chunks(4).enumerate() {
                if group.iter().any(|t| *t != group[0]) || !group[0].dtype.is_float() {
                    return Err(format!(
                        "`adamw` parameter {i}: w, g, m, v must share one float type, got {}",
                        shapes_str(group)
                    ));
                }
                out.extend([group[0].clone(), group[0].clone(), group[0].clone()]);
            }
            Ok(out)
        }
        Op::TernaryPack => {
            let (w, s) = (ins[0], ins[1]);
            if w.rank() != 2 || !w.dtype.is_float() || *s != TensorType::scalar(w.dtype) {
                return Err(format!(
                    "`ternary_pack` needs a float matrix and its scalar scale, got {}",
                    shapes_str(ins)
                ));
            }
            one(w.with_dtype(DType::Ternary))
        }
        Op::TernaryMatmul { trans_b } => {
            let (x, w, s) = (ins[0], ins[1], ins[2]);
            if w.dtype != DType::Ternary || *s != TensorType::scalar(x.dtype) {
                return Err(format!(
                    "`ternary_matmul` needs x, a packed ternary matrix and x's scalar scale, got {}",
                    shapes_str(ins)
                ));
            }
            infer_matmul(x, &w.with_dtype(x.dtype), false, *trans_b)
        }
        Op::Gam => {
            let (x, conv_w, conv_b, memory, gates) = (ins[0], ins[1], ins[2], ins[3], ins[4]);
            let ok = x.rank() == 3
                && x.dtype.is_float()
                && ins.iter().all(|t| t.dtype == x.dtype)
                && conv_w.rank() == 3
                && conv_w.shape[0] == x.shape[2]
                && conv_w.shape[1] == Dim::new(1)
                && conv_b.shape == [x.shape[2].clone()]
                && memory.rank() == 2
                && memory.shape[1] == x.shape[2]
                && gates.shape[..2] == x.shape[..2]
                && gates.shape[2] == x.shape[2].scale(2);
            if !ok {
                return Err(format!(
                    "`gam` needs x [B,T,d], conv_w [d,1,k], conv_b [d], memory [S,d], gate_logits [B,T,2d], got {}",
                    shapes_str(ins)
                ));
            }
            one(x.clone())
        }
        Op::Call { callee } => {
            let sig = sigs.signature(callee).ok_or_else(|| format!("`call` refers to unknown function @{callee}"))?;
            instantiate(&sig.inputs, ins, &sig.outputs, &format!("call of @{callee}"))
        }
        Op::RoutedCall { callee, routed } => routed_call(callee, *routed, ins, sigs),
        Op::Loop { body, .. } => {
            let sig = sigs.signature(body).ok_or_else(|| format!("`loop` refers to unknown function @{body}"))?;
            let what = format!("loop body @{body}");
            if sig.inputs.first() != Some(&TensorType::scalar(DType::I64)) {
                return Err(format!("{what} must take the iteration index i64[] as its first argument"));
            }
            let n_carried = sig.outputs.len();
            if sig.inputs.len() < 1 + n_carried {
                return Err(format!("{what} returns {n_carried} values but takes fewer loop-carried arguments"));
            }
            let formal = &sig.inputs[1..];
            let outs = instantiate(formal, ins, &sig.outputs, &what)?;
            for (i, (o, carried)) in outs.iter().zip(ins).enumerate() {
                if &o != carried {
                    return Err(format!("{what}: carried value {i} enters as {carried} but leaves as {o}"));
                }
            }
            Ok(outs)
        }
    }
}

fn same_rank_except(x: &TensorType, y: &TensorType, axis: usize, what: &str, name: &str) -> Result<(), String> {
    let ok = x.rank() == y.rank() && x.shape.iter().zip(&y.shape).enumerate().all(|(i, (a, b))| i == axis || a == b);
    if !ok {
        return Err(format!("`{what}` {name} {y} must match {x} on every axis but {axis}"));
    }
    Ok(())
}

fn infer_matmul(a: &TensorType, b: &TensorType, trans_a: bool, trans_b: bool) -> Result<Vec<TensorType>, String> {
    let mark = |t: bool| if t { "ᵀ" } else { "" };
    let err = |why: &str| Err(format!("`matmul` of {a}{} and {b}{}: {why}", mark(trans_a), mark(trans_b)));
    if a.dtype != b.dtype || !a.dtype.is_float() {
        return err("operands must share one float dtype");
    }
    if a.rank() < 2 || b.rank() < 2 {
        return err("operands must have rank ≥ 2");
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k_a) = if trans_a { (&a.shape[ra - 1], &a.shape[ra - 2]) } else { (&a.shape[ra - 2], &a.shape[ra - 1]) };
    let (k_b, n) = if trans_b { (&b.shape[rb - 1], &b.shape[rb - 2]) } else { (&b.shape[rb - 2], &b.shape[rb - 1]) };
    if k_a != k_b {
        return err(&format!("inner dimensions {k_a} and {k_b} differ"));
    }
    let batch = match (ra, rb) {
        (2, _) => &b.shape[..rb - 2],
        (_, 2) => &a.shape[..ra - 2],
        _ if a.shape[..ra - 2] == b.shape[..rb - 2] => &a.shape[..ra - 2],
        _ => return err("batch dimensions differ (an operand is rank 2 or both share their batch dims)"),
    };
    let mut shape = batch.to_vec();
    shape.push(m.clone());
    shape.push(n.clone());
    Ok(vec![TensorType::new(a.dtype, shape)])
}
