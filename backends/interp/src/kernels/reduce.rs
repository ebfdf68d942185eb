//! Reductions and row-wise ops: sum/mean/max/min over axes, argmax, softmax
//! and log-softmax, cross-entropy and top-k.

use super::{check_index, split, strides, PACKED, R};
use crate::math::Real;
use crate::value::{Data, DataMut, View, ViewMut};
use lsc_ir::ReduceKind;
use std::cmp::Ordering;

/// For each element of `shape`, the flat index of its cell in the result of
/// reducing `axes` (the reduced coordinates dropped).
fn reduced_positions(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&a| shape[a]).collect();
    let out_strides = strides(&kept_shape);
    let in_strides = strides(shape);
    let n: usize = shape.iter().product();
    (0..n).map(|p| kept.iter().zip(&out_strides).map(|(&a, &s)| (p / in_strides[a]) % shape[a] * s).sum()).collect()
}

/// Sum, mean, max or min over `axes` (NaN wins max and min).
pub fn reduce<T: Real>(x: &View<'_, T>, kind: ReduceKind, axes: &[usize], out: &mut ViewMut<'_, T>) -> R<()> {
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    if count == 0 && matches!(kind, ReduceKind::Max | ReduceKind::Min) {
        return Err("max/min over an empty axis".into());
    }
    let cell = reduced_positions(x.shape, axes);
    match (&x.data, &mut out.data) {
        (Data::Float(v), DataMut::Float(o)) => {
            // In `T`, each cell adding its elements in row-major order (a flat
            // sequential sum when everything is reduced).
            let init = match kind {
                ReduceKind::Max => T::from_f64(f64::NEG_INFINITY),
                ReduceKind::Min => T::from_f64(f64::INFINITY),
                _ => T::default(),
            };
            o.fill(init);
            for (&c, &x) in cell.iter().zip(*v) {
                let a = &mut o[c];
                *a = match kind {
                    ReduceKind::Sum | ReduceKind::Mean => *a + x,
                    ReduceKind::Max if x > *a || x.is_nan() => x,
                    ReduceKind::Min if x < *a || x.is_nan() => x,
                    _ => *a,
                };
            }
            if kind == ReduceKind::Mean {
                let n = T::from_f64(count as f64);
                o.iter_mut().for_each(|a| *a = *a / n);
            }
        }
        (Data::Int(v), DataMut::Int(o)) => {
            let init = match kind {
                ReduceKind::Max => i64::MIN,
                ReduceKind::Min => i64::MAX,
                _ => 0,
            };
            o.fill(init);
            for (&c, &x) in cell.iter().zip(*v) {
                o[c] = match kind {
                    ReduceKind::Max => o[c].max(x),
                    ReduceKind::Min => o[c].min(x),
                    _ => o[c].wrapping_add(x),
                };
            }
        }
        (Data::Ternary(_), _) => return Err(PACKED.into()),
        _ => return Err(format!("reduction of {}", x.dtype)),
    }
    Ok(())
}

/// Index of the largest element along `axis` (the first on ties; NaN is skipped).
pub fn argmax<T: Real>(x: &View<'_, T>, axis: usize, out: &mut ViewMut<'_, T>) -> R<()> {
    let v = x.to_f64_vec();
    let (outer, n, inner) = split(x.shape, axis);
    if n == 0 {
        return Err("argmax over an empty axis".into());
    }
    let o = out.ints()?;
    for a in 0..outer {
        for i in 0..inner {
            let at = |k: usize| v[(a * n + k) * inner + i];
            o[a * inner + i] = (1..n).fold(0, |b, k| if at(k) > at(b) { k } else { b }) as i64;
        }
    }
    Ok(())
}

/// Softmax (or log-softmax) along `axis`, each row in f64.
pub fn softmax<T: Real>(x: &View<'_, T>, axis: usize, log: bool, out: &mut ViewMut<'_, T>) -> R<()> {
    let v = x.floats()?;
    let (outer, n, inner) = split(x.shape, axis);
    let o = out.floats()?;
    for a in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (a * n + k) * inner + i;
            let m = (0..n).map(|k| v[at(k)].to_f64()).fold(f64::NEG_INFINITY, |m, x| if x > m { x } else { m });
            let s: f64 = (0..n).map(|k| (v[at(k)].to_f64() - m).exp()).sum();
            for k in 0..n {
                let x = v[at(k)].to_f64();
                o[at(k)] = T::from_f64(if log { x - m - s.ln() } else { (x - m).exp() / s });
            }
        }
    }
    Ok(())
}

/// `−log softmax(logits)[target]` per row: `logits [..., V]`, `targets [...]`.
pub fn cross_entropy<T: Real>(logits: &View<'_, T>, targets: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let (l, t) = (logits.floats()?, targets.ints().map_err(|_| "cross_entropy targets must be integers")?);
    let v = *logits.shape.last().unwrap_or(&0);
    for (row, (o, &tgt)) in out.floats()?.iter_mut().zip(t).enumerate() {
        let tgt = check_index(tgt, v, "cross_entropy (target)")?;
        *o = T::from_f64(log_sum_exp(&l[row * v..(row + 1) * v]) - l[row * v + tgt].to_f64());
    }
    Ok(())
}

/// `log Σ exp(x)` of a row, in f64.
pub(crate) fn log_sum_exp<T: Real>(row: &[T]) -> f64 {
    let m = row.iter().map(|x| x.to_f64()).fold(f64::NEG_INFINITY, |m, x| if x > m { x } else { m });
    m + row.iter().map(|x| (x.to_f64() - m).exp()).sum::<f64>().ln()
}

/// The `k` largest elements along `axis` in descending order (ties to the
/// lower index), and their indices; `k` is the outputs' size on the axis.
pub fn topk<T: Real>(x: &View<'_, T>, axis: usize, outs: &mut [ViewMut<'_, T>]) -> R<()> {
    let v = x.to_f64_vec();
    let (outer, n, inner) = split(x.shape, axis);
    let k = outs[0].shape[axis];
    if k > n {
        return Err(format!("topk k={k} exceeds the axis size {n}"));
    }
    let mut picks = vec![0usize; outer * k * inner];
    for a in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (a * n + j) * inner + i;
            let mut order: Vec<usize> = (0..n).collect();
            // A stable sort, descending: ties keep the lower index first.
            order.sort_by(|&p, &q| v[at(q)].partial_cmp(&v[at(p)]).unwrap_or(Ordering::Equal));
            for (r, &j) in order.iter().take(k).enumerate() {
                picks[(a * k + r) * inner + i] = j;
            }
        }
    }
    let source = |p: usize| (p / (k * inner) * n + picks[p]) * inner + p % inner;
    let (values, indices) = outs.split_at_mut(1);
    match (&x.data, &mut values[0].data) {
        (Data::Float(s), DataMut::Float(o)) => o.iter_mut().enumerate().for_each(|(p, o)| *o = s[source(p)]),
        (Data::Int(s), DataMut::Int(o)) => o.iter_mut().enumerate().for_each(|(p, o)| *o = s[source(p)]),
        _ => return Err(format!("topk of {}", x.dtype)),
    }
    indices[0].ints()?.iter_mut().zip(&picks).for_each(|(o, &j)| *o = j as i64);
    Ok(())
}
