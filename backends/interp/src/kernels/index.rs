//! Indexing: PyTorch's `gather`, `scatter`, `scatter_add`, and embedding
//! rows, each by explicit coordinates.

use super::{check_index, same_kind, strides, PACKED, R};
use crate::math::Real;
use crate::value::{Data, DataMut, View, ViewMut};

/// For each position `p` of the index tensor (of shape `idx`), the flat
/// offset in a tensor of shape `x` of the same coordinates with the one along
/// `axis` replaced by `k`: `offsets(p) + k · stride(axis)`.
struct Coordinates {
    base: Vec<usize>,
    step: usize,
    n: usize,
}

impl Coordinates {
    fn new(x: &[usize], idx: &[usize], axis: usize) -> Coordinates {
        let (xs, is) = (strides(x), strides(idx));
        let count: usize = idx.iter().product();
        let base = (0..count)
            .map(|p| (0..idx.len()).filter(|&d| d != axis).map(|d| (p / is[d]) % idx[d] * xs[d]).sum())
            .collect();
        Coordinates { base, step: xs[axis], n: x[axis] }
    }

    fn at(&self, p: usize, k: i64, what: &str) -> R<usize> {
        Ok(self.base[p] + check_index(k, self.n, what)? * self.step)
    }
}

/// `out[.. i ..] = x[.. idx[.. i ..] ..]` along `axis`.
pub fn gather<T: Real>(x: &View<'_, T>, idx: &View<'_, T>, axis: usize, out: &mut ViewMut<'_, T>) -> R<()> {
    let ids = idx.ints().map_err(|_| "gather indices must be integers")?;
    let c = Coordinates::new(x.shape, idx.shape, axis);
    same_kind!(x, out, |s, d| {
        for (p, (o, &k)) in d.iter_mut().zip(ids).enumerate() {
            *o = s[c.at(p, k, "gather")?];
        }
    });
    Ok(())
}

/// A copy of `x` with `x[.. idx ..] = src` (or `+= src`) along `axis`.
pub fn scatter<T: Real>(
    x: &View<'_, T>,
    idx: &View<'_, T>,
    src: &View<'_, T>,
    axis: usize,
    add: bool,
    out: &mut ViewMut<'_, T>,
) -> R<()> {
    super::layout::copy(x, out)?;
    scatter_in_place(out, idx, src, axis, add)
}

/// `x[.. idx ..] = src` (or `+= src`) along `axis`, into `x` itself.
pub fn scatter_in_place<T: Real>(
    x: &mut ViewMut<'_, T>,
    idx: &View<'_, T>,
    src: &View<'_, T>,
    axis: usize,
    add: bool,
) -> R<()> {
    let ids = idx.ints().map_err(|_| "scatter indices must be integers")?;
    let c = Coordinates::new(x.shape, idx.shape, axis);
    match (&src.data, &mut x.data) {
        (Data::Float(s), DataMut::Float(d)) => {
            for (p, (&k, &v)) in ids.iter().zip(*s).enumerate() {
                let at = c.at(p, k, "scatter")?;
                d[at] = if add { d[at] + v } else { v };
            }
        }
        (Data::Int(s), DataMut::Int(d)) => {
            for (p, (&k, &v)) in ids.iter().zip(*s).enumerate() {
                let at = c.at(p, k, "scatter")?;
                d[at] = if add { d[at].wrapping_add(v) } else { v };
            }
        }
        (Data::Bool(s), DataMut::Bool(d)) if !add => {
            for (p, (&k, &v)) in ids.iter().zip(*s).enumerate() {
                d[c.at(p, k, "scatter")?] = v;
            }
        }
        (Data::Ternary(_), _) | (_, DataMut::Ternary(_)) => return Err(PACKED.into()),
        _ => return Err("scatter source and target have different kinds".into()),
    }
    Ok(())
}

/// Rows of `weight [V, D]` selected by integer `ids [...]`: `[..., D]`.
pub fn embedding<T: Real>(weight: &View<'_, T>, ids: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let (w, ids) = (weight.floats()?, ids.ints().map_err(|_| "embedding ids must be integers")?);
    let (v, d) = (weight.shape[0], weight.shape[1]);
    for (row, &id) in out.floats()?.chunks_mut(d.max(1)).zip(ids) {
        let r = check_index(id, v, "embedding (token id)")?;
        row.copy_from_slice(&w[r * d..(r + 1) * d]);
    }
    Ok(())
}
