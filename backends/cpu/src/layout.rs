//! Data movement at memory speed: transposes (the last two axes in cache
//! tiles), broadcasts and slices as strided copies with a contiguous inner
//! run, and per-axis reductions over contiguous rows.

use lsc_interp::{Data, DataMut, View, ViewMut};
use lsc_ir::ReduceKind;
use rayon::prelude::*;

/// Row-major element strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Copies `src` into row-major `dst` of `shape`, reading element `i` at
/// `base + Σ i_d · st[d]`: an odometer over the outer axes, a tight loop over the last.
fn strided<E: Copy>(src: &[E], base: usize, shape: &[usize], st: &[usize], dst: &mut [E]) {
    let r = shape.len();
    if dst.is_empty() {
        return;
    }
    if r == 0 {
        dst[0] = src[base];
        return;
    }
    let (last, last_st) = (shape[r - 1], st[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let mut at = base;
    for row in dst.chunks_mut(last) {
        if last_st == 1 {
            row.copy_from_slice(&src[at..at + last]);
        } else {
            row.iter_mut().enumerate().for_each(|(j, v)| *v = src[at + j * last_st]);
        }
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            at += st[d];
            if idx[d] < shape[d] {
                break;
            }
            at -= st[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// `[batch, m, n] → [batch, n, m]` in 32×32 tiles.
fn swap_last_two<E: Copy>(v: &[E], batch: usize, m: usize, n: usize, out: &mut [E]) {
    const TILE: usize = 32;
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
}

macro_rules! by_kind {
    ($x:expr, $out:expr, |$s:ident, $d:ident| $body:expr) => {
        match (&$x.data, &mut $out.data) {
            (Data::Float($s), DataMut::Float($d)) => $body,
            (Data::Int($s), DataMut::Int($d)) => $body,
            (Data::Bool($s), DataMut::Bool($d)) => $body,
            _ => return false,
        }
    };
}

/// Output axis `i` is input axis `perm[i]`; `false` for packed tensors.
pub fn transpose(x: &View<'_, f32>, perm: &[usize], out: &mut ViewMut<'_, f32>) -> bool {
    let r = perm.len();
    let swap = r >= 2
        && perm[r - 2] == r - 1
        && perm[r - 1] == r - 2
        && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p);
    if swap {
        let (batch, m, n) = (x.shape[..r - 2].iter().product(), x.shape[r - 2], x.shape[r - 1]);
        by_kind!(x, out, |s, d| swap_last_two(s, batch, m, n, d));
        return true;
    }
    let xs = strides(x.shape);
    let st: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let shape = out.shape;
    by_kind!(x, out, |s, d| strided(s, 0, shape, &st, d));
    true
}

/// NumPy broadcasting to the output's shape; `false` for packed tensors.
pub fn broadcast(x: &View<'_, f32>, out: &mut ViewMut<'_, f32>) -> bool {
    let shape = out.shape;
    let lead = shape.len() - x.shape.len();
    let xs = strides(x.shape);
    let st: Vec<usize> =
        (0..shape.len()).map(|d| if d < lead || x.shape[d - lead] == 1 { 0 } else { xs[d - lead] }).collect();
    by_kind!(x, out, |s, d| strided(s, 0, shape, &st, d));
    true
}

/// Elements `start..` along `axis`; `false` if out of range (the reference reports it) or packed.
pub fn slice(x: &View<'_, f32>, axis: usize, start: usize, out: &mut ViewMut<'_, f32>) -> bool {
    if start + out.shape[axis] > x.shape[axis] {
        return false;
    }
    let xs = strides(x.shape);
    let (shape, base) = (out.shape, start * xs[axis]);
    by_kind!(x, out, |s, d| strided(s, base, shape, &xs, d));
    true
}

/// Sum, mean, max or min of floats over `axes`, one axis at a time over
/// contiguous rows (f32 sums); `false` for other kinds.
pub fn reduce(x: &View<'_, f32>, kind: ReduceKind, axes: &[usize], out: &mut ViewMut<'_, f32>) -> bool {
    let (Data::Float(v), DataMut::Float(o)) = (&x.data, &mut out.data) else { return false };
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    if count == 0 {
        return false;
    }
    let mut shape = x.shape.to_vec();
    let mut data: Vec<f32> = v.to_vec();
    let init = match kind {
        ReduceKind::Max => f32::NEG_INFINITY,
        ReduceKind::Min => f32::INFINITY,
        _ => 0.0,
    };
    for &axis in axes.iter().rev() {
        let (outer, n, inner) =
            (shape[..axis].iter().product::<usize>(), shape[axis], shape[axis + 1..].iter().product::<usize>());
        let mut acc = vec![init; outer * inner];
        let rows = |(o, acc): (usize, &mut [f32])| {
            for k in 0..n {
                let row = &data[(o * n + k) * inner..(o * n + k + 1) * inner];
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a = match kind {
                        ReduceKind::Max if x > *a || x.is_nan() => x,
                        ReduceKind::Min if x < *a || x.is_nan() => x,
                        ReduceKind::Max | ReduceKind::Min => *a,
                        _ => *a + x,
                    };
                }
            }
        };
        if outer > 1 && data.len() >= 1 << 15 {
            acc.par_chunks_mut(inner.max(1)).enumerate().for_each(rows);
        } else {
            acc.chunks_mut(inner.max(1)).enumerate().for_each(rows);
        }
        data = acc;
        shape.remove(axis);
    }
    let div = if kind == ReduceKind::Mean { count as f32 } else { 1.0 };
    o.iter_mut().zip(data).for_each(|(o, a)| *o = a / div);
    true
}
