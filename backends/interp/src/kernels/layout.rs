//! Data movement: copies (reshape), transposes, broadcasts, slices, concats
//! and cache updates, for every storage kind.

use super::{split, strides, R};
use crate::math::Real;
use crate::value::{numel, Data, DataMut, View, ViewMut};

/// Runs `$body` with `$src` and `$dst` bound to the elements of one source
/// and the output when both hold the same kind of element.
macro_rules! same_kind {
    ($x:expr, $out:expr, |$src:ident, $dst:ident| $body:expr) => {
        match (&$x.data, &mut $out.data) {
            ($crate::value::Data::Float($src), $crate::value::DataMut::Float($dst)) => $body,
            ($crate::value::Data::Int($src), $crate::value::DataMut::Int($dst)) => $body,
            ($crate::value::Data::Bool($src), $crate::value::DataMut::Bool($dst)) => $body,
            ($crate::value::Data::Ternary(_), _) | (_, $crate::value::DataMut::Ternary(_)) => {
                return Err($crate::kernels::PACKED.into())
            }
            _ => return Err(format!("{} data written as {}", $x.dtype, $out.dtype)),
        }
    };
}
pub(crate) use same_kind;

/// The same elements (reshape, stop_gradient); packed planes are copied as they are.
pub fn copy<T: Real>(x: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    if let (Data::Ternary(p), DataMut::Ternary(o)) = (&x.data, &mut out.data) {
        o.planes.copy_from_slice(p.planes);
        return Ok(());
    }
    same_kind!(x, out, |s, d| d.copy_from_slice(s));
    Ok(())
}

/// `dst[i] = src[base + Σ_d i_d · in_strides[d]]` for `i` over `shape` (0 strides broadcast).
fn strided<E: Copy>(src: &[E], base: usize, shape: &[usize], in_strides: &[usize], dst: &mut [E]) {
    let out_strides = strides(shape);
    for (p, d) in dst.iter_mut().enumerate() {
        let at: usize = (0..shape.len()).map(|a| (p / out_strides[a]) % shape[a] * in_strides[a]).sum();
        *d = src[base + at];
    }
}

/// Output axis `i` is input axis `perm[i]`.
pub fn transpose<T: Real>(x: &View<'_, T>, perm: &[usize], out: &mut ViewMut<'_, T>) -> R<()> {
    let xs = strides(x.shape);
    let st: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let shape = out.shape;
    same_kind!(x, out, |s, d| strided(s, 0, shape, &st, d));
    Ok(())
}

/// NumPy broadcasting: align right, expand size-1 axes.
pub fn broadcast<T: Real>(x: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let shape = out.shape;
    let lead = shape.len() - x.shape.len();
    let xs = strides(x.shape);
    let st: Vec<usize> =
        (0..shape.len()).map(|d| if d < lead || x.shape[d - lead] == 1 { 0 } else { xs[d - lead] }).collect();
    same_kind!(x, out, |s, d| strided(s, 0, shape, &st, d));
    Ok(())
}

/// Elements `start..start + len` along `axis` (`len` is the output's size there).
pub fn slice<T: Real>(x: &View<'_, T>, axis: usize, start: usize, out: &mut ViewMut<'_, T>) -> R<()> {
    let (n, len) = (x.shape[axis], out.shape[axis]);
    if start + len > n {
        return Err(format!("slice {start}..{} is out of range for axis {axis} of size {n}", start + len));
    }
    let xs = strides(x.shape);
    let (shape, base) = (out.shape, start * xs[axis]);
    same_kind!(x, out, |s, d| strided(s, base, shape, &xs, d));
    Ok(())
}

/// The operands joined along `axis`.
pub fn concat<T: Real>(parts: &[View<'_, T>], axis: usize, out: &mut ViewMut<'_, T>) -> R<()> {
    let (outer, _, inner) = split(out.shape, axis);
    let mut at = 0;
    for o in 0..outer {
        for p in parts {
            let len = p.shape[axis] * inner;
            same_kind!(p, out, |s, d| d[at..at + len].copy_from_slice(&s[o * len..(o + 1) * len]));
            at += len;
        }
    }
    Ok(())
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
    fn new<T: Real>(cache: &[usize], update: &[usize], offset: &View<'_, T>, axis: usize) -> R<CacheWindow> {
        let off = match offset.data {
            Data::Int(v) if v.len() == 1 => v[0],
            _ => return Err("cache_update offset must be an i64 scalar".into()),
        };
        let (outer, n, inner) = split(cache, axis);
        let len = update[axis];
        let offset = usize::try_from(off)
            .ok()
            .filter(|o| o + len <= n)
            .ok_or_else(|| format!("cache_update writes {len} entries at offset {off}, beyond the cache's {n}"))?;
        Ok(CacheWindow { outer, n, inner, offset, len })
    }

    /// Copies the update's rows into the window of `dst`.
    fn write<E: Copy>(&self, update: &[E], dst: &mut [E]) {
        let (row, run) = (self.n * self.inner, self.len * self.inner);
        for o in 0..self.outer {
            let at = o * row + self.offset * self.inner;
            dst[at..at + run].copy_from_slice(&update[o * run..(o + 1) * run]);
        }
    }
}

/// A copy of `cache` with `update` written at `offset` along `axis`.
pub fn cache_update<T: Real>(
    cache: &View<'_, T>,
    update: &View<'_, T>,
    offset: &View<'_, T>,
    axis: usize,
    out: &mut ViewMut<'_, T>,
) -> R<()> {
    copy(cache, out)?;
    cache_update_in_place(out, update, offset, axis)
}

/// `cache_update` into `cache` itself, for a cache nothing else reads (the
/// in-place path of decoding's KV caches).
pub fn cache_update_in_place<T: Real>(
    cache: &mut ViewMut<'_, T>,
    update: &View<'_, T>,
    offset: &View<'_, T>,
    axis: usize,
) -> R<()> {
    let w = CacheWindow::new(cache.shape, update.shape, offset, axis)?;
    if numel(update.shape) != w.outer * w.len * w.inner {
        return Err(format!("cache_update of {:?} with an update of {:?}", cache.shape, update.shape));
    }
    same_kind!(update, cache, |s, d| w.write(s, d));
    Ok(())
}
