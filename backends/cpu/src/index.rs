//! Row-wise gather and scatter: when the index has the indexed tensor's
//! shape except along the axis (PyTorch's usual case, and MoR's routing),
//! element `(o, k, i)` is at a product of row offsets, and a row whose
//! indices agree moves as one copy.

use lsc_interp::{Data, DataMut, View, ViewMut};

type R<T> = Result<T, String>;

/// The layout around `axis`: `n` positions on it in the tensor, `m` in the
/// index, `inner` contiguous elements after it.
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

fn check(k: i64, n: usize, what: &str) -> R<usize> {
    usize::try_from(k).ok().filter(|&k| k < n).ok_or_else(|| format!("{what} index {k} is out of range 0..{n}"))
}

/// `k` if every index of a row is `k`.
fn same_index(ks: &[i64]) -> Option<i64> {
    let k = *ks.first()?;
    ks.iter().all(|&j| j == k).then_some(k)
}

/// `gather` in the row-wise layout; `Ok(false)` for other layouts or kinds.
pub fn gather(x: &View<'_, f32>, idx: &View<'_, f32>, axis: usize, out: &mut ViewMut<'_, f32>) -> R<bool> {
    let (Some(a), Data::Int(ids)) = (AlongAxis::of(x.shape, idx.shape, axis), idx.data) else { return Ok(false) };
    fn go<E: Copy>(a: &AlongAxis, s: &[E], ids: &[i64], d: &mut [E]) -> R<()> {
        let row = a.inner.max(1);
        for (r, (ks, dst)) in ids.chunks(row).zip(d.chunks_mut(row)).enumerate() {
            let o = r / a.m.max(1);
            if let Some(k) = same_index(ks) {
                let base = a.at(o, check(k, a.n, "gather")?, 0);
                dst.copy_from_slice(&s[base..base + ks.len()]);
                continue;
            }
            for (i, (&k, v)) in ks.iter().zip(dst.iter_mut()).enumerate() {
                *v = s[a.at(o, check(k, a.n, "gather")?, i)];
            }
        }
        Ok(())
    }
    match (&x.data, &mut out.data) {
        (Data::Float(s), DataMut::Float(d)) => go(&a, s, ids, d)?,
        (Data::Int(s), DataMut::Int(d)) => go(&a, s, ids, d)?,
        (Data::Bool(s), DataMut::Bool(d)) => go(&a, s, ids, d)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `scatter`/`scatter_add` into `x` itself in the row-wise layout; `Ok(false)`
/// for other layouts or kinds.
pub fn scatter_in_place(
    x: &mut ViewMut<'_, f32>,
    idx: &View<'_, f32>,
    src: &View<'_, f32>,
    axis: usize,
    add: bool,
) -> R<bool> {
    let (Some(a), Data::Int(ids)) = (AlongAxis::of(x.shape, idx.shape, axis), idx.data) else { return Ok(false) };
    fn go<E: Copy>(a: &AlongAxis, d: &mut [E], s: &[E], ids: &[i64], combine: impl Fn(E, E) -> E) -> R<()> {
        let row = a.inner.max(1);
        for (r, (ks, ss)) in ids.chunks(row).zip(s.chunks(row)).enumerate() {
            let o = r / a.m.max(1);
            if let (true, Some(k)) = (row > 1, same_index(ks)) {
                let at = a.at(o, check(k, a.n, "scatter")?, 0);
                for (v, &s) in d[at..at + ks.len()].iter_mut().zip(ss) {
                    *v = combine(*v, s);
                }
                continue;
            }
            for (i, (&k, &s)) in ks.iter().zip(ss).enumerate() {
                let at = a.at(o, check(k, a.n, "scatter")?, i);
                d[at] = combine(d[at], s);
            }
        }
        Ok(())
    }
    match (&mut x.data, &src.data) {
        (DataMut::Float(d), Data::Float(s)) => go(&a, d, s, ids, |p, q| if add { p + q } else { q })?,
        (DataMut::Int(d), Data::Int(s)) => go(&a, d, s, ids, |p, q| if add { p.wrapping_add(q) } else { q })?,
        (DataMut::Bool(d), Data::Bool(s)) if !add => go(&a, d, s, ids, |_, q| q)?,
        _ => return Ok(false),
    }
    Ok(true)
}
