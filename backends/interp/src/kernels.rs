//! One straightforward implementation per primitive op. Clarity over speed:
//! these are the ground truth every generated kernel is checked against.

use crate::math::{erf, gelu, round_half_even, sigmoid, Real};
use crate::value::{numel, Buffer, Value};
use crate::{attention, fused};
use lsc_ir::{BinaryOp, Bindings, CmpOp, DType, Op, ReduceKind, UnaryOp};
use rayon::prelude::*;
use std::cmp::Ordering;

type R<T> = Result<T, String>;

/// Elementwise work above this many elements is split across threads (the
/// result does not depend on the split: each element is computed alone).
const PAR_MIN: usize = 1 << 15;

fn map_par<A: Sync, B: Send>(v: &[A], f: impl Fn(&A) -> B + Sync + Send) -> Vec<B> {
    if v.len() >= PAR_MIN {
        v.par_iter().map(f).collect()
    } else {
        v.iter().map(f).collect()
    }
}

/// `f` on each pair of `chunk`-long pieces of `y` and `x`, across threads when
/// `x` is large (each piece is computed alone, so the split does not change it).
fn chunks_par<T: Send + Sync>(y: &mut [T], x: &[T], chunk: usize, f: impl Fn((&mut [T], &[T])) + Sync + Send) {
    let chunk = chunk.max(1);
    if x.len() >= PAR_MIN {
        y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(f);
    } else {
        y.chunks_mut(chunk).zip(x.chunks(chunk)).for_each(f);
    }
}

fn zip_par<A: Sync, C: Sync, B: Send>(p: &[A], q: &[C], f: impl Fn(&A, &C) -> B + Sync + Send) -> Vec<B> {
    if p.len() >= PAR_MIN {
        p.par_iter().zip(q.par_iter()).map(|(a, c)| f(a, c)).collect()
    } else {
        p.iter().zip(q).map(|(a, c)| f(a, c)).collect()
    }
}

/// `(outer, n, inner)` sizes around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `y[b, t, c] = Σ_j w[c, 0, j]·x[b, t − (K−1) + j, c]` (zero left padding), one
/// sequence per task, the inner loops over contiguous channels.
fn causal_conv1d<T: Real>(x: &Value<T>, w: &Value<T>) -> R<Vec<T>> {
    let (xs, ws) = (floats(x)?, floats(w)?);
    let (t, c, k) = (x.shape[1], x.shape[2], w.shape[2]);
    let taps = taps_by_tap(ws, c, k);
    let mut y = vec![T::default(); xs.len()];
    let sequence = |(y, x): (&mut [T], &[T])| {
        for ti in 0..t {
            let yr = &mut y[ti * c..(ti + 1) * c];
            for j in 0..k {
                let Some(src) = (ti + j).checked_sub(k - 1) else { continue };
                for ((o, &wv), &xv) in yr.iter_mut().zip(&taps[j * c..(j + 1) * c]).zip(&x[src * c..(src + 1) * c]) {
                    *o = *o + wv * xv;
                }
            }
        }
    };
    chunks_par(&mut y, xs, t * c, sequence);
    Ok(y)
}

/// A depthwise kernel `w [C, 1, K]` as `[K, C]`: tap `j` of every channel in a
/// row, so loops over channels read it contiguously.
pub(crate) fn taps_by_tap<T: Real>(w: &[T], c: usize, k: usize) -> Vec<T> {
    (0..k).flat_map(|j| (0..c).map(move |ci| w[ci * k + j])).collect()
}

/// `rotary(x, cos, sin)`: the halves of each row of `x [..., T, D]` turn by the
/// angles of the row's position `t` (`cos, sin: [T, D/2]`).
fn rotary<T: Real>(x: &Value<T>, cos: &Value<T>, sin: &Value<T>) -> R<Vec<T>> {
    let (xs, cos, sin) = (floats(x)?, floats(cos)?, floats(sin)?);
    let d = x.shape.last().copied().unwrap_or(0).max(1);
    let half = d / 2;
    let t = x.shape.iter().rev().nth(1).copied().unwrap_or(1).max(1);
    let mut y = vec![T::default(); xs.len()];
    // One chunk is one sequence (and head): T rows, positions 0..T.
    let turn = |(y, x): (&mut [T], &[T])| {
        for (p, (y, x)) in y.chunks_mut(d).zip(x.chunks(d)).enumerate() {
            let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            let (x1, x2) = x.split_at(half);
            let (y1, y2) = y.split_at_mut(half);
            for i in 0..half {
                y1[i] = x1[i] * c[i] - x2[i] * s[i];
                y2[i] = x2[i] * c[i] + x1[i] * s[i];
            }
        }
    };
    chunks_par(&mut y, xs, t * d, turn);
    Ok(y)
}

/// The float elements of `v`, or an error naming its dtype.
pub(crate) fn floats<T: Real>(v: &Value<T>) -> R<&[T]> {
    v.as_floats().ok_or_else(|| format!("expected a float tensor, got {}", v.dtype))
}

/// Rounds a value to the precision of a float dtype.
fn round_to<T: Real>(x: T, dtype: DType) -> T {
    match dtype {
        DType::F16 => T::from_f64(half::f16::from_f64(x.to_f64()).to_f64()),
        DType::BF16 => T::from_f64(half::bf16::from_f64(x.to_f64()).to_f64()),
        _ => x,
    }
}

/// Where `cache_update(cache, update, offset)` writes: per outer index, `len`
/// entries of `n` along the axis at `offset`, each `inner` values long.
struct CacheWindow {
    outer: usize,
    n: usize,
    inner: usize,
    offset: usize,
    len: usize,
}

impl CacheWindow {
    fn new<T: Real>(cache: &Value<T>, update: &Value<T>, offset: &Value<T>, axis: usize) -> R<CacheWindow> {
        let off =
            offset.as_ints().and_then(|v| v.first().copied()).ok_or("cache_update offset must be an i64 scalar")?;
        let (_, n, inner) = split(&cache.shape, axis);
        let len = update.shape[axis];
        let offset = usize::try_from(off)
            .ok()
            .filter(|o| o + len <= n)
            .ok_or_else(|| format!("cache_update writes {len} entries at offset {off}, beyond the cache's {n}"))?;
        let outer = numel(&cache.shape) / (n * inner).max(1);
        Ok(CacheWindow { outer, n, inner, offset, len })
    }
}

/// `cache_update` into `cache` itself, for a cache nothing else reads (the
/// executor's in-place path for decoding's KV caches).
pub fn cache_update_in_place<T: Real>(
    cache: &mut Value<T>,
    update: &Value<T>,
    offset: &Value<T>,
    axis: usize,
) -> R<()> {
    let w = CacheWindow::new(cache, update, offset, axis)?;
    let (row, run) = (w.n * w.inner, w.len * w.inner);
    fn copy<E: Clone>(dst: &mut [E], src: &[E], w: &CacheWindow, row: usize, run: usize) {
        for o in 0..w.outer {
            let at = o * row + w.offset * w.inner;
            dst[at..at + run].clone_from_slice(&src[o * run..(o + 1) * run]);
        }
    }
    match (&mut cache.data, &update.data) {
        (Buffer::Float(c), Buffer::Float(u)) => copy(c, u, &w, row, run),
        (Buffer::Int(c), Buffer::Int(u)) => copy(c, u, &w, row, run),
        (Buffer::Bool(c), Buffer::Bool(u)) => copy(c, u, &w, row, run),
        _ => return Err("cache_update needs a cache and an update of the same kind".into()),
    }
    Ok(())
}

/// Why an op cannot read a packed ternary matrix (only `ternary_matmul` and data movement do).
const PACKED: &str = "packed ternary weights are read only by ternary_matmul";

/// Gathers the elements of `data` at the given flat indices, keeping the buffer
/// kind (packed ternary values come out as floats).
fn take<T: Real>(data: &Buffer<T>, idx: impl Iterator<Item = usize>) -> Buffer<T> {
    match data {
        Buffer::Float(v) => Buffer::Float(idx.map(|i| v[i]).collect()),
        Buffer::Int(v) => Buffer::Int(idx.map(|i| v[i]).collect()),
        Buffer::Bool(v) => Buffer::Bool(idx.map(|i| v[i]).collect()),
        Buffer::Ternary(p) => {
            let v: Vec<T> = p.unpack();
            Buffer::Float(idx.map(|i| v[i]).collect())
        }
    }
}

fn is_last_two_swap(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2 && perm[r - 2] == r - 1 && perm[r - 1] == r - 2 && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
}

/// `[batch, m, n] → [batch, n, m]` in 32×32 tiles (cache-friendly).
fn swap_last_two<T: Real>(data: &Buffer<T>, batch: usize, m: usize, n: usize) -> Buffer<T> {
    fn go<E: Copy + Default>(v: &[E], batch: usize, m: usize, n: usize) -> Vec<E> {
        const TILE: usize = 32;
        let mut out = vec![E::default(); v.len()];
        for b in 0..batch {
            let (src, dst) = (&v[b * m * n..(b + 1) * m * n], &mut out[b * m * n..(b + 1) * m * n]);
            for i0 in (0..m).step_by(TILE) {
                for j0 in (0..n).step_by(TILE) {
                    for i in i0..(i0 + TILE).min(m) {
                        for j in j0..(j0 + TILE).min(n) {
                            dst[j * m + i] = src[i * n + j];
                        }
                    }
                }
            }
        }
        out
    }
    match data {
        Buffer::Float(v) => Buffer::Float(go(v, batch, m, n)),
        Buffer::Int(v) => Buffer::Int(go(v, batch, m, n)),
        Buffer::Bool(v) => Buffer::Bool(go(v, batch, m, n)),
        Buffer::Ternary(p) => Buffer::Float(go(&p.unpack(), batch, m, n)),
    }
}

/// Copies `data` into the row-major `out_shape`, reading element `i` of the
/// output at `Σ i_d · in_strides[d]` (0 strides broadcast). An odometer over
/// the outer dims and a tight loop over the last one keep it fast.
fn strided<T: Real>(data: &Buffer<T>, out_shape: &[usize], in_strides: &[usize]) -> Buffer<T> {
    fn go<E: Copy>(v: &[E], shape: &[usize], st: &[usize]) -> Vec<E> {
        let n = numel(shape);
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let r = shape.len();
        if r == 0 {
            out.push(v[0]);
            return out;
        }
        let (last, last_st) = (shape[r - 1], st[r - 1]);
        let mut idx = vec![0usize; r - 1];
        let mut base = 0usize;
        loop {
            if last_st == 1 {
                out.extend_from_slice(&v[base..base + last]);
            } else {
                out.extend((0..last).map(|j| v[base + j * last_st]));
            }
            // Advance the odometer over the outer dims.
            let mut d = r - 1;
            loop {
                if d == 0 {
                    return out;
                }
                d -= 1;
                idx[d] += 1;
                base += st[d];
                if idx[d] < shape[d] {
                    break;
                }
                base -= st[d] * shape[d];
                idx[d] = 0;
            }
        }
    }
    match data {
        Buffer::Float(v) => Buffer::Float(go(v, out_shape, in_strides)),
        Buffer::Int(v) => Buffer::Int(go(v, out_shape, in_strides)),
        Buffer::Bool(v) => Buffer::Bool(go(v, out_shape, in_strides)),
        Buffer::Ternary(p) => Buffer::Float(go(&p.unpack(), out_shape, in_strides)),
    }
}

fn same_kind_concat<T: Real>(
    parts: &[&Buffer<T>],
    ranges: impl Iterator<Item = (usize, usize, usize)>,
    total: usize,
) -> R<Buffer<T>> {
    macro_rules! join {
        ($variant:ident) => {{
            let mut out = Vec::with_capacity(total);
            for (p, start, len) in ranges {
                match parts[p] {
                    Buffer::$variant(v) => out.extend_from_slice(&v[start..start + len]),
                    _ => return Err("concat operands have different dtypes".into()),
                }
            }
            Ok(Buffer::$variant(out))
        }};
    }
    match parts[0] {
        Buffer::Float(_) => join!(Float),
        Buffer::Int(_) => join!(Int),
        Buffer::Bool(_) => join!(Bool),
        Buffer::Ternary(_) => Err(PACKED.into()),
    }
}

/// Computes a non-leaf, non-control-flow op. `out` holds the concrete output
/// dtypes and shapes from the verified node types; `bindings` the shape symbols.
pub fn eval<T: Real>(
    op: &Op,
    args: &[&Value<T>],
    out: &[(DType, Vec<usize>)],
    bindings: &Bindings,
) -> R<Vec<Value<T>>> {
    let (dtype, shape) = out.first().cloned().ok_or("op has no outputs")?;
    let one = |data: Buffer<T>| Ok(vec![Value { dtype, shape: shape.clone(), data }]);
    match op {
        Op::Unary(u) => one(unary(*u, args[0], dtype)?),
        Op::Clamp { min, max } => one(match &args[0].data {
            Buffer::Float(v) => {
                let (lo, hi) = (T::from_f64(*min), T::from_f64(*max));
                Buffer::Float(
                    v.iter()
                        .map(|&x| {
                            if x < lo {
                                lo
                            } else if x > hi {
                                hi
                            } else {
                                x
                            }
                        })
                        .collect(),
                )
            }
            Buffer::Int(v) => Buffer::Int(v.iter().map(|&x| (x as f64).clamp(*min, *max) as i64).collect()),
            Buffer::Bool(_) => return Err("clamp of bool".into()),
            Buffer::Ternary(_) => return Err(PACKED.into()),
        }),
        Op::Binary(b) => one(binary(*b, args[0], args[1], dtype)?),
        Op::Compare(c) => one(Buffer::Bool(compare(*c, args[0], args[1])?)),
        Op::Select => {
            let Buffer::Bool(c) = &args[0].data else { return Err("select condition is not bool".into()) };
            one(take_select(c, &args[1].data, &args[2].data)?)
        }
        Op::StopGradient => one(args[0].data.clone()),
        Op::Cast { to } => one(cast(args[0], *to)),
        Op::Reduce { kind, axes, .. } => one(reduce(args[0], *kind, axes)?),
        Op::ArgMax { axis, .. } => {
            let v = args[0].to_f64_vec();
            let (outer, n, inner) = split(&args[0].shape, *axis);
            if n == 0 {
                return Err("argmax over an empty axis".into());
            }
            let mut res = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| v[(o * n + k) * inner + i];
                    let best = (1..n).fold(0, |b, k| if at(k) > at(b) { k } else { b });
                    res.push(best as i64);
                }
            }
            one(Buffer::Int(res))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let log = matches!(op, Op::LogSoftmax { .. });
            one(Buffer::Float(softmax(floats(args[0])?, &args[0].shape, *axis, log)))
        }
        Op::MatMul { trans_a, trans_b } => one(Buffer::Float(matmul(args[0], args[1], *trans_a, *trans_b, &shape)?)),
        Op::MatMulSum { trans_a, trans_b } => one(Buffer::Float(matmul_sum(args[0], args[1], *trans_a, *trans_b)?)),
        Op::Gather { axis } => {
            let idx = args[1].as_ints().ok_or("gather indices must be integers")?;
            let n = args[0].shape[*axis];
            let mut flat = Vec::with_capacity(idx.len());
            match AlongAxis::of(&args[0].shape, &args[1].shape, *axis) {
                Some(a) => {
                    for (row, ks) in idx.chunks(a.inner.max(1)).enumerate() {
                        let o = row / a.m;
                        if let Some(k) = same_index(ks) {
                            // A whole row moves: its offsets are consecutive.
                            let base = a.at(o, check_index(k, n, "gather")?, 0);
                            flat.extend(base..base + ks.len());
                            continue;
                        }
                        for (i, &k) in ks.iter().enumerate() {
                            flat.push(a.at(o, check_index(k, n, "gather")?, i));
                        }
                    }
                }
                None => {
                    let (xs, is) = (strides(&args[0].shape), strides(&args[1].shape));
                    for (p, &k) in idx.iter().enumerate() {
                        let k = check_index(k, n, "gather")?;
                        let mut src = 0;
                        for (d, (&s_i, &s_x)) in is.iter().zip(&xs).enumerate() {
                            let c = (p / s_i) % args[1].shape[d];
                            src += if d == *axis { k } else { c } * s_x;
                        }
                        flat.push(src);
                    }
                }
            }
            one(take(&args[0].data, flat.into_iter()))
        }
        Op::Scatter { axis } | Op::ScatterAdd { axis } => {
            let add = matches!(op, Op::ScatterAdd { .. });
            one(scatter(args[0], args[1], args[2], *axis, add)?)
        }
        Op::Embedding => {
            let w = floats(args[0])?;
            let (v, d) = (args[0].shape[0], args[0].shape[1]);
            let ids = args[1].as_ints().ok_or("embedding ids must be integers")?;
            let mut res = Vec::with_capacity(ids.len() * d);
            for &id in ids {
                let row = check_index(id, v, "embedding (token id)")?;
                res.extend_from_slice(&w[row * d..(row + 1) * d]);
            }
            one(Buffer::Float(res))
        }
        Op::Reshape { .. } => {
            if numel(&shape) != args[0].numel() {
                return Err(format!("reshape of {:?} to {:?} changes the element count", args[0].shape, shape));
            }
            one(args[0].data.clone())
        }
        Op::Transpose { perm } if is_last_two_swap(perm) => {
            let r = perm.len();
            one(swap_last_two(&args[0].data, numel(&shape[..r - 2]), args[0].shape[r - 2], args[0].shape[r - 1]))
        }
        Op::Transpose { perm } => {
            // A strided view: output axis d walks input axis perm[d].
            let xs = strides(&args[0].shape);
            let st: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
            one(strided(&args[0].data, &shape, &st))
        }
        Op::Slice { axis, start, .. } => {
            let (outer, n, inner) = split(&args[0].shape, *axis);
            let len = shape[*axis];
            let start = usize::try_from(start.eval(bindings)?).map_err(|_| "slice start is negative".to_string())?;
            if start + len > n {
                return Err(format!("slice {start}..{} is out of range for axis {axis} of size {n}", start + len));
            }
            let src = (0..outer).flat_map(move |o| (0..len * inner).map(move |r| (o * n + start) * inner + r));
            one(take(&args[0].data, src))
        }
        Op::Concat { axis } => {
            let outer = numel(&shape[..*axis]);
            let inner = numel(&shape[*axis + 1..]);
            let parts: Vec<&Buffer<T>> = args.iter().map(|a| &a.data).collect();
            let sizes: Vec<usize> = args.iter().map(|a| a.shape[*axis] * inner).collect();
            let ranges = (0..outer).flat_map(|o| sizes.iter().enumerate().map(move |(p, &len)| (p, o * len, len)));
            one(same_kind_concat(&parts, ranges, numel(&shape))?)
        }
        Op::Broadcast { .. } => {
            let x = args[0];
            let lead = shape.len() - x.shape.len();
            let xs = strides(&x.shape);
            let st: Vec<usize> =
                (0..shape.len()).map(|d| if d < lead || x.shape[d - lead] == 1 { 0 } else { xs[d - lead] }).collect();
            one(strided(&x.data, &shape, &st))
        }
        Op::CausalConv1d => one(Buffer::Float(causal_conv1d(args[0], args[1])?)),
        Op::Rotary => one(Buffer::Float(rotary(args[0], args[1], args[2])?)),
        Op::TopK { axis, .. } => topk(args[0], *axis, shape[*axis], out),
        Op::CrossEntropy => {
            let logits = floats(args[0])?;
            let targets = args[1].as_ints().ok_or("cross_entropy targets must be integers")?;
            let v = *args[0].shape.last().unwrap_or(&0);
            let mut res = Vec::with_capacity(targets.len());
            for (row, &tgt) in targets.iter().enumerate() {
                let tgt = check_index(tgt, v, "cross_entropy (target)")?;
                let l = &logits[row * v..(row + 1) * v];
                let m = l.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), |a, b| if b > a { b } else { a });
                let s = l.iter().fold(T::default(), |acc, &x| acc + (x - m).exp());
                res.push(m + s.ln() - l[tgt]);
            }
            one(Buffer::Float(res))
        }
        Op::CacheUpdate { axis } => {
            let (cache, update) = (args[0], args[1]);
            let w = CacheWindow::new(cache, update, args[2], *axis)?;
            // Per outer index: the cache before the window, the update, the cache after it.
            let (outer, n, inner, off, len) = (w.outer, w.n, w.inner, w.offset, w.len);
            let row = n * inner;
            let runs = (0..outer).flat_map(|o| {
                [
                    (0usize, o * row, off * inner),
                    (1, o * len * inner, len * inner),
                    (0, o * row + (off + len) * inner, (n - off - len) * inner),
                ]
            });
            let parts = [&cache.data, &update.data];
            one(same_kind_concat(&parts, runs, numel(&cache.shape))?)
        }
        Op::LsAttention { windows, scale } => attention::ls_attention(args, windows, *scale, out),
        Op::LsAttentionGrad { windows, scale } => attention::ls_attention_grad(args, windows, *scale, out),
        Op::SoftmaxCrossEntropy => fused::softmax_cross_entropy(args, out),
        Op::AdamW { beta1, beta2, eps, weight_decay, decay } => {
            let h = fused::AdamW { beta1: *beta1, beta2: *beta2, eps: *eps, weight_decay: *weight_decay, decay };
            fused::adamw(args, &h, out)
        }
        Op::TernaryPack => fused::ternary_pack(args, out),
        Op::TernaryMatmul { trans_b } => fused::ternary_matmul(args, *trans_b, out),
        Op::Gam => fused::gam(args, out),
        Op::CausalConv1dGrad => fused::causal_conv1d_grad(args, out),
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Constant { .. }
        | Op::Iota { .. }
        | Op::Loop { .. }
        | Op::Call { .. }
        | Op::RoutedCall { .. } => Err(format!("`{}` is evaluated by the executor, not as a kernel", op.name())),
    }
}

fn check_index(k: i64, n: usize, what: &str) -> R<usize> {
    usize::try_from(k).ok().filter(|&k| k < n).ok_or_else(|| format!("{what} index {k} is out of range 0..{n}"))
}

fn unary<T: Real>(u: UnaryOp, x: &Value<T>, dtype: DType) -> R<Buffer<T>> {
    match (&x.data, u) {
        (Buffer::Bool(v), UnaryOp::Not) => return Ok(Buffer::Bool(v.iter().map(|b| !b).collect())),
        (Buffer::Int(v), UnaryOp::Neg) => return Ok(Buffer::Int(v.iter().map(|x| x.wrapping_neg()).collect())),
        (Buffer::Int(v), UnaryOp::Abs) => return Ok(Buffer::Int(v.iter().map(|x| x.wrapping_abs()).collect())),
        _ => {}
    }
    let v = floats(x)?;
    let one = T::from_f64(1.0);
    let f = |x: T| -> T {
        match u {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => T::from_f64(x.to_f64().abs()),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => one / x.sqrt(),
            UnaryOp::Recip => one / x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Gelu => T::from_f64(gelu(x.to_f64())),
            UnaryOp::Erf => T::from_f64(erf(x.to_f64())),
            UnaryOp::Sin => T::from_f64(x.to_f64().sin()),
            UnaryOp::Cos => T::from_f64(x.to_f64().cos()),
            UnaryOp::Round => T::from_f64(round_half_even(x.to_f64())),
            UnaryOp::Not => x,
        }
    };
    Ok(Buffer::Float(match dtype {
        DType::F16 | DType::BF16 => map_par(v, |&x| round_to(f(x), dtype)),
        _ => map_par(v, |&x| f(x)),
    }))
}

fn binary<T: Real>(b: BinaryOp, x: &Value<T>, y: &Value<T>, dtype: DType) -> R<Buffer<T>> {
    match (&x.data, &y.data) {
        (Buffer::Float(p), Buffer::Float(q)) => {
            let f = |a: T, c: T| -> T {
                match b {
                    BinaryOp::Add => a + c,
                    BinaryOp::Sub => a - c,
                    BinaryOp::Mul => a * c,
                    BinaryOp::Div => a / c,
                    BinaryOp::Max => {
                        if a >= c || a.is_nan() {
                            a
                        } else {
                            c
                        }
                    }
                    BinaryOp::Min => {
                        if a <= c || a.is_nan() {
                            a
                        } else {
                            c
                        }
                    }
                    BinaryOp::Pow => a.powf(c),
                    BinaryOp::And | BinaryOp::Or => a,
                }
            };
            Ok(Buffer::Float(match dtype {
                DType::F16 | DType::BF16 => zip_par(p, q, |&a, &c| round_to(f(a, c), dtype)),
                _ => zip_par(p, q, |&a, &c| f(a, c)),
            }))
        }
        (Buffer::Int(p), Buffer::Int(q)) => {
            let mut out = Vec::with_capacity(p.len());
            for (&a, &c) in p.iter().zip(q) {
                out.push(match b {
                    BinaryOp::Add => a.wrapping_add(c),
                    BinaryOp::Sub => a.wrapping_sub(c),
                    BinaryOp::Mul => a.wrapping_mul(c),
                    BinaryOp::Div => a.checked_div(c).ok_or("integer division by zero")?,
                    BinaryOp::Max => a.max(c),
                    BinaryOp::Min => a.min(c),
                    BinaryOp::Pow | BinaryOp::And | BinaryOp::Or => return Err(format!("`{}` of integers", b.name())),
                });
            }
            Ok(Buffer::Int(out))
        }
        (Buffer::Bool(p), Buffer::Bool(q)) => {
            Ok(Buffer::Bool(p.iter().zip(q).map(|(&a, &c)| if b == BinaryOp::And { a && c } else { a || c }).collect()))
        }
        _ => Err(format!("`{}` operands have different kinds", b.name())),
    }
}

fn compare<T: Real>(c: CmpOp, x: &Value<T>, y: &Value<T>) -> R<Vec<bool>> {
    let test = |o: Option<Ordering>| match c {
        CmpOp::Eq => o == Some(Ordering::Equal),
        CmpOp::Ne => o != Some(Ordering::Equal),
        CmpOp::Lt => o == Some(Ordering::Less),
        CmpOp::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => o == Some(Ordering::Greater),
        CmpOp::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
    };
    Ok(match (&x.data, &y.data) {
        (Buffer::Float(p), Buffer::Float(q)) => zip_par(p, q, |a, b| test(a.partial_cmp(b))),
        (Buffer::Int(p), Buffer::Int(q)) => p.iter().zip(q).map(|(a, b)| test(Some(a.cmp(b)))).collect(),
        (Buffer::Bool(p), Buffer::Bool(q)) => p.iter().zip(q).map(|(a, b)| test(Some(a.cmp(b)))).collect(),
        _ => return Err("comparison operands have different kinds".into()),
    })
}

fn take_select<T: Real>(c: &[bool], a: &Buffer<T>, b: &Buffer<T>) -> R<Buffer<T>> {
    Ok(match (a, b) {
        (Buffer::Float(p), Buffer::Float(q)) => {
            Buffer::Float(c.iter().zip(p.iter().zip(q)).map(|(&k, (&x, &y))| if k { x } else { y }).collect())
        }
        (Buffer::Int(p), Buffer::Int(q)) => {
            Buffer::Int(c.iter().zip(p.iter().zip(q)).map(|(&k, (&x, &y))| if k { x } else { y }).collect())
        }
        (Buffer::Bool(p), Buffer::Bool(q)) => {
            Buffer::Bool(c.iter().zip(p.iter().zip(q)).map(|(&k, (&x, &y))| if k { x } else { y }).collect())
        }
        _ => return Err("select branches have different kinds".into()),
    })
}

/// Conversion with PyTorch's rules: float→int truncates toward zero, anything→bool is `!= 0`.
fn cast<T: Real>(x: &Value<T>, to: DType) -> Buffer<T> {
    let v = x.to_f64_vec();
    if to.is_float() {
        Buffer::Float(v.into_iter().map(|a| round_to(T::from_f64(a), to)).collect())
    } else if to == DType::Bool {
        Buffer::Bool(v.into_iter().map(|a| a != 0.0).collect())
    } else {
        let wrap = |a: i64| match to {
            DType::I32 => a as i32 as i64,
            DType::I8 => a as i8 as i64,
            _ => a,
        };
        match &x.data {
            Buffer::Int(iv) => Buffer::Int(iv.iter().map(|&a| wrap(a)).collect()),
            _ => Buffer::Int(v.into_iter().map(|a| wrap(a.trunc() as i64)).collect()),
        }
    }
}

fn reduce<T: Real>(x: &Value<T>, kind: ReduceKind, axes: &[usize]) -> R<Buffer<T>> {
    // One axis at a time, last first, each as an (outer, n, inner) loop.
    let mut shape = x.shape.clone();
    let mut data = x.data.clone();
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    if count == 0 && matches!(kind, ReduceKind::Max | ReduceKind::Min) {
        return Err("max/min over an empty axis".into());
    }
    let inner_kind = if kind == ReduceKind::Mean { ReduceKind::Sum } else { kind };
    for &axis in axes.iter().rev() {
        let (outer, n, inner) = split(&shape, axis);
        data = match data {
            Buffer::Float(v) => Buffer::Float(reduce_axis(
                &v,
                outer,
                n,
                inner,
                inner_kind,
                T::from_f64(f64::NEG_INFINITY),
                T::from_f64(f64::INFINITY),
                T::default(),
                |a: T, b: T| a + b,
            )),
            Buffer::Int(v) => {
                Buffer::Int(reduce_axis(&v, outer, n, inner, inner_kind, i64::MIN, i64::MAX, 0, |a: i64, b: i64| {
                    a.wrapping_add(b)
                }))
            }
            Buffer::Bool(_) => return Err("reduction of bool".into()),
            Buffer::Ternary(_) => return Err(PACKED.into()),
        };
        shape.remove(axis);
    }
    if kind == ReduceKind::Mean {
        if let Buffer::Float(v) = &mut data {
            let c = T::from_f64(count as f64);
            v.iter_mut().for_each(|a| *a = *a / c);
        }
    }
    Ok(data)
}

/// Reduces the middle axis of an `(outer, n, inner)` view.
#[allow(clippy::too_many_arguments)]
fn reduce_axis<E: Copy + PartialOrd>(
    v: &[E],
    outer: usize,
    n: usize,
    inner: usize,
    kind: ReduceKind,
    lowest: E,
    highest: E,
    zero: E,
    add: fn(E, E) -> E,
) -> Vec<E> {
    let init = match kind {
        ReduceKind::Max => lowest,
        ReduceKind::Min => highest,
        _ => zero,
    };
    let mut out = vec![init; outer * inner];
    for o in 0..outer {
        let acc = &mut out[o * inner..(o + 1) * inner];
        for k in 0..n {
            let row = &v[(o * n + k) * inner..(o * n + k + 1) * inner];
            for (a, &x) in acc.iter_mut().zip(row) {
                #[allow(clippy::eq_op)]
                let nan = x != x;
                *a = match kind {
                    ReduceKind::Max => {
                        if x > *a || nan {
                            x
                        } else {
                            *a
                        }
                    }
                    ReduceKind::Min => {
                        if x < *a || nan {
                            x
                        } else {
                            *a
                        }
                    }
                    _ => add(*a, x),
                };
            }
        }
    }
    out
}

fn softmax<T: Real>(v: &[T], shape: &[usize], axis: usize, log: bool) -> Vec<T> {
    let (outer, n, inner) = split(shape, axis);
    if inner == 1 && n > 0 {
        // Rows are contiguous: one row per task.
        let mut out = vec![T::default(); v.len()];
        let row = |(dst, src): (&mut [T], &[T])| {
            let m = src.iter().fold(T::from_f64(f64::NEG_INFINITY), |a, &b| if b > a { b } else { a });
            let s = src.iter().fold(T::default(), |acc, &x| acc + (x - m).exp());
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = if log { x - m - s.ln() } else { (x - m).exp() / s };
            }
        };
        if v.len() >= PAR_MIN {
            out.par_chunks_mut(n).zip(v.par_chunks(n)).for_each(row);
        } else {
            out.chunks_mut(n).zip(v.chunks(n)).for_each(row);
        }
        return out;
    }
    let mut out = vec![T::default(); v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let m = (0..n).map(|k| v[at(k)]).fold(T::from_f64(f64::NEG_INFINITY), |a, b| if b > a { b } else { a });
            let s = (0..n).fold(T::default(), |acc, k| acc + (v[at(k)] - m).exp());
            for k in 0..n {
                out[at(k)] = if log { v[at(k)] - m - s.ln() } else { (v[at(k)] - m).exp() / s };
            }
        }
    }
    out
}

/// Products with at most this many rows skip the GEMM library.
const FEW_ROWS: usize = 4;

/// `c = a · b` for a few rows of `a`, with element strides `(row, column)`:
/// dot products when `b`'s columns are contiguous (`x · wᵀ`), else rows of
/// `b` scaled and added. Eight partial sums let the compiler vectorise.
#[allow(clippy::too_many_arguments)]
fn few_rows<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    sa: (usize, usize),
    b: &[T],
    sb: (usize, usize),
    c: &mut [T],
) {
    for i in 0..m {
        let row: Vec<T> = (0..k).map(|p| a[i * sa.0 + p * sa.1]).collect();
        let out = &mut c[i * n..(i + 1) * n];
        if sb.0 == 1 {
            crate::rows::dots(&row, b, sb.1, out);
        } else {
            out.iter_mut().for_each(|o| *o = T::default());
            for (p, &x) in row.iter().enumerate() {
                let brow = &b[p * sb.0..];
                for (j, o) in out.iter_mut().enumerate() {
                    *o = *o + x * brow[j * sb.1];
                }
            }
        }
    }
}

/// `a · b` (batched, either operand transposed) through the GEMM.
pub fn matmul<T: Real>(a: &Value<T>, b: &Value<T>, trans_a: bool, trans_b: bool, out_shape: &[usize]) -> R<Vec<T>> {
    let (av, bv) = (floats(a)?, floats(b)?);
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let ((m, k), (kb, n)) = (matrix_dims(&a.shape, trans_a), matrix_dims(&b.shape, trans_b));
    let batch = numel(&out_shape[..out_shape.len() - 2]);
    if kb != k || numel(out_shape) != batch * m * n {
        return Err(format!("matmul of {:?} and {:?} has mismatched sizes", a.shape, b.shape));
    }
    let (a_batched, b_batched) = (ra > 2, rb > 2);
    let mut c = vec![T::default(); batch * m * n];
    if m == 0 || n == 0 {
        return Ok(c);
    }
    // A batch of row-major `a` against one shared `b` (`x · W` over a batch of
    // sequences) is one product with the batch's rows stacked; a batch of a few
    // rows each (decoding) stays on the dot-product path below.
    let fold = a_batched && !b_batched && !trans_a && m > FEW_ROWS;
    let (m, batch) = if fold { (batch * m, 1) } else { (m, batch) };
    // Row-major storage; a transposed operand is read with swapped strides, never copied.
    let (rsa, csa) = if trans_a { (1isize, m as isize) } else { (k as isize, 1isize) };
    let (rsb, csb) = if trans_b { (1isize, k as isize) } else { (n as isize, 1isize) };
    if m <= FEW_ROWS {
        // A few rows (decoding): the GEMM's packing and threads cost more than the product.
        for i in 0..batch {
            let a = &av[if a_batched { i * m * k } else { 0 }..];
            let b = &bv[if b_batched { i * k * n } else { 0 }..];
            few_rows(m, k, n, a, (rsa as usize, csa as usize), b, (rsb as usize, csb as usize), &mut c[i * m * n..]);
        }
        return Ok(c);
    }
    let product = |i: usize, c: &mut [T]| {
        let a = &av[if a_batched { i * m * k } else { 0 }..];
        let b = &bv[if b_batched { i * k * n } else { 0 }..];
        // SAFETY: the slices hold (batch·)m·k, (batch·)k·n and batch·m·n elements, checked above.
        unsafe { T::gemm(m, k, n, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, c.as_mut_ptr(), n as isize, 1) };
    };
    if batch > 1 && m * n * k <= SMALL_PRODUCT {
        // Small products (a weight's gradient per sequence): one per thread at
        // a time, rather than each split across the threads.
        c.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| crate::math::serial(|| product(i, c)));
    } else {
        c.chunks_mut(m * n).enumerate().for_each(|(i, c)| product(i, c));
    }
    Ok(c)
}

/// Multiply-adds below which the products of a batch run one per thread.
const SMALL_PRODUCT: usize = 1 << 26;

/// `(rows, columns)` of the matrices of an operand `[..., R, C]`, read
/// transposed if asked.
fn matrix_dims(shape: &[usize], transposed: bool) -> (usize, usize) {
    let r = shape.len();
    if transposed {
        (shape[r - 1], shape[r - 2])
    } else {
        (shape[r - 2], shape[r - 1])
    }
}

/// `Σ_batch op_a(a)·op_b(b)` over operands with the same batch dims. With
/// `a` transposed and `b` not (a weight's gradient, `xᵀ·g`), the batch's rows
/// stack into one product of depth `batch·k`; otherwise the batched product
/// is summed over the batch.
pub fn matmul_sum<T: Real>(a: &Value<T>, b: &Value<T>, trans_a: bool, trans_b: bool) -> R<Vec<T>> {
    let r = a.shape.len();
    if r < 3 || b.shape.len() != r || a.shape[..r - 2] != b.shape[..r - 2] {
        return Err(format!("matmul_sum of {:?} and {:?}: the batch dims differ", a.shape, b.shape));
    }
    let ((m, k), (kb, n)) = (matrix_dims(&a.shape, trans_a), matrix_dims(&b.shape, trans_b));
    if kb != k {
        return Err(format!("matmul_sum of {:?} and {:?} has mismatched sizes", a.shape, b.shape));
    }
    let batch = numel(&a.shape[..r - 2]);
    let mut c = vec![T::default(); m * n];
    if c.is_empty() {
        return Ok(c);
    }
    if !trans_a || trans_b {
        let mut shape = a.shape[..r - 2].to_vec();
        shape.extend([m, n]);
        for part in matmul(a, b, trans_a, trans_b, &shape)?.chunks(m * n) {
            c.iter_mut().zip(part).for_each(|(c, &p)| *c = *c + p);
        }
        return Ok(c);
    }
    let (av, bv) = (floats(a)?, floats(b)?);
    // SAFETY: a holds batch·k rows of m values, b batch·k rows of n, c m·n values.
    unsafe {
        T::gemm(m, batch * k, n, av.as_ptr(), 1, m as isize, bv.as_ptr(), n as isize, 1, c.as_mut_ptr(), n as isize, 1)
    };
    Ok(c)
}

/// The layout of a gather or scatter whose index has the indexed tensor's
/// shape except along `axis` (PyTorch's usual case): `outer` rows before the
/// axis, `n` positions on it in the tensor and `m` in the index, `inner`
/// contiguous elements after it. Element `(o, k, i)` is then at a product of
/// row offsets, with no per-element division.
struct AlongAxis {
    n: usize,
    m: usize,
    inner: usize,
}

impl AlongAxis {
    fn of(x: &[usize], idx: &[usize], axis: usize) -> Option<AlongAxis> {
        let same = x.len() == idx.len() && x.iter().zip(idx).enumerate().all(|(d, (a, b))| d == axis || a == b);
        same.then(|| AlongAxis { n: x[axis], m: idx[axis], inner: x[axis + 1..].iter().product() })
    }

    /// Flat offset in the tensor of outer row `o`, position `k`, inner element `i`.
    fn at(&self, o: usize, k: usize, i: usize) -> usize {
        (o * self.n + k) * self.inner + i
    }
}

fn scatter<T: Real>(x: &Value<T>, idx: &Value<T>, src: &Value<T>, axis: usize, add: bool) -> R<Buffer<T>> {
    let ids = idx.as_ints().ok_or("scatter indices must be integers")?;
    let (xs, is) = (strides(&x.shape), strides(&idx.shape));
    let n = x.shape[axis];
    let layout = AlongAxis::of(&x.shape, &idx.shape, axis);
    let dest = |p: usize, k: usize| -> usize {
        match &layout {
            Some(a) => a.at(p / (a.m * a.inner).max(1), k, p % a.inner.max(1)),
            None => is
                .iter()
                .enumerate()
                .map(|(d, &s_i)| if d == axis { k } else { (p / s_i) % idx.shape[d] } * xs[d])
                .sum(),
        }
    };
    let row = layout.as_ref().map_or(1, |a| a.inner.max(1));
    let mut data = x.data.clone();
    match (&mut data, &src.data) {
        (Buffer::Float(o), Buffer::Float(s)) => {
            write_scattered(o, s, ids, n, row, dest, |a, b| if add { a + b } else { b })
        }
        (Buffer::Int(o), Buffer::Int(s)) => {
            write_scattered(o, s, ids, n, row, dest, |a, b| if add { a.wrapping_add(b) } else { b })
        }
        (Buffer::Bool(o), Buffer::Bool(s)) if !add => write_scattered(o, s, ids, n, row, dest, |_, b| b),
        _ => Err("scatter source and target have different kinds".into()),
    }?;
    Ok(data)
}

/// `k` if every index of a row is `k`.
fn same_index(ks: &[i64]) -> Option<i64> {
    let k = *ks.first()?;
    ks.iter().all(|&j| j == k).then_some(k)
}

/// `out[dest(p, ids[p])] = combine(out[..], src[p])` for every index position
/// `p`, a `row` of consecutive destinations at a time where the row's indices agree.
fn write_scattered<E: Copy>(
    out: &mut [E],
    src: &[E],
    ids: &[i64],
    n: usize,
    row: usize,
    dest: impl Fn(usize, usize) -> usize,
    combine: impl Fn(E, E) -> E,
) -> R<()> {
    for (r, (ks, ss)) in ids.chunks(row).zip(src.chunks(row)).enumerate() {
        let p0 = r * row;
        if let (true, Some(k)) = (row > 1, same_index(ks)) {
            let at = dest(p0, check_index(k, n, "scatter")?);
            for (o, &s) in out[at..at + ks.len()].iter_mut().zip(ss) {
                *o = combine(*o, s);
            }
            continue;
        }
        for (i, (&k, &s)) in ks.iter().zip(ss).enumerate() {
            let at = dest(p0 + i, check_index(k, n, "scatter")?);
            out[at] = combine(out[at], s);
        }
    }
    Ok(())
}

fn topk<T: Real>(x: &Value<T>, axis: usize, k: usize, out: &[(DType, Vec<usize>)]) -> R<Vec<Value<T>>> {
    let v = x.to_f64_vec();
    let (outer, n, inner) = split(&x.shape, axis);
    if k > n {
        return Err(format!("topk k={k} exceeds the axis size {n}"));
    }
    let mut picks = vec![0usize; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let mut order: Vec<usize> = (0..n).collect();
            // Stable sort, descending: ties keep the lower index first.
            order.sort_by(|&p, &q| v[at(q)].partial_cmp(&v[at(p)]).unwrap_or(Ordering::Equal));
            for (r, &j) in order.iter().take(k).enumerate() {
                picks[(o * k + r) * inner + i] = j;
            }
        }
    }
    let src = picks.iter().enumerate().map(|(p, &j)| {
        let (o, i) = (p / (k * inner), p % inner);
        (o * n + j) * inner + i
    });
    let values = Value { dtype: out[0].0, shape: out[0].1.clone(), data: take(&x.data, src) };
    let indices = Value {
        dtype: DType::I64,
        shape: out[1].1.clone(),
        data: Buffer::Int(picks.iter().map(|&j| j as i64).collect()),
    };
    Ok(vec![values, indices])
}
