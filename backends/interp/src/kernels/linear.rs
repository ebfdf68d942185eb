//! Products and convolutions: batched matmul (either operand transposed),
//! the batch-summed product, the depthwise causal convolution and the rotary
//! position embedding. Sums accumulate in f64.

use super::R;
use crate::math::Real;
use crate::value::{numel, View, ViewMut};

/// A matrix operand `[..., R, C]`: element `(i, r, c)` of batch `i`, read
/// transposed if asked; a rank-2 operand is shared by every batch.
struct Matrix<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    batched: bool,
    transposed: bool,
}

impl<'a, T: Real> Matrix<'a, T> {
    fn new(v: &View<'a, T>, transposed: bool) -> R<Matrix<'a, T>> {
        let r = v.shape.len();
        if r < 2 {
            return Err(format!("a matrix operand needs rank ≥ 2, got {:?}", v.shape));
        }
        let (a, b) = (v.shape[r - 2], v.shape[r - 1]);
        let (rows, cols) = if transposed { (b, a) } else { (a, b) };
        Ok(Matrix { data: v.floats()?, rows, cols, batched: r > 2, transposed })
    }

    fn at(&self, i: usize, r: usize, c: usize) -> f64 {
        let base = if self.batched { i * self.rows * self.cols } else { 0 };
        let at = if self.transposed { c * self.rows + r } else { r * self.cols + c };
        self.data[base + at].to_f64()
    }
}

/// `acc[m, n] += Σ_k a(i, m, k) · b(i, k, n)` for batch `i`.
fn accumulate<T: Real>(a: &Matrix<'_, T>, b: &Matrix<'_, T>, i: usize, acc: &mut [f64]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for r in 0..m {
        for p in 0..k {
            let x = a.at(i, r, p);
            for (c, s) in acc[r * n..(r + 1) * n].iter_mut().enumerate() {
                *s += x * b.at(i, p, c);
            }
        }
    }
}

/// `a · b` per batch: `[..., M, K] · [..., K, N] → [..., M, N]`.
pub fn matmul<T: Real>(a: &View<'_, T>, b: &View<'_, T>, ta: bool, tb: bool, out: &mut ViewMut<'_, T>) -> R<()> {
    let (x, y) = (Matrix::new(a, ta)?, Matrix::new(b, tb)?);
    let (m, n) = (x.rows, y.cols);
    let batch = numel(&out.shape[..out.shape.len() - 2]);
    if x.cols != y.rows || numel(out.shape) != batch * m * n {
        return Err(format!("matmul of {:?} and {:?} has mismatched sizes", a.shape, b.shape));
    }
    let o = out.floats()?;
    let mut acc = vec![0.0f64; m * n];
    for i in 0..batch {
        acc.fill(0.0);
        accumulate(&x, &y, i, &mut acc);
        o[i * m * n..(i + 1) * m * n].iter_mut().zip(&acc).for_each(|(o, &s)| *o = T::from_f64(s));
    }
    Ok(())
}

/// `Σ over the batch of a · b`: `[..., M, K] · [..., K, N] → [M, N]`.
pub fn matmul_sum<T: Real>(a: &View<'_, T>, b: &View<'_, T>, ta: bool, tb: bool, out: &mut ViewMut<'_, T>) -> R<()> {
    let r = a.shape.len();
    if r < 3 || b.shape.len() != r || a.shape[..r - 2] != b.shape[..r - 2] {
        return Err(format!("matmul_sum of {:?} and {:?}: the batch dims differ", a.shape, b.shape));
    }
    let (x, y) = (Matrix::new(a, ta)?, Matrix::new(b, tb)?);
    if x.cols != y.rows {
        return Err(format!("matmul_sum of {:?} and {:?} has mismatched sizes", a.shape, b.shape));
    }
    let mut acc = vec![0.0f64; x.rows * y.cols];
    for i in 0..numel(&a.shape[..r - 2]) {
        accumulate(&x, &y, i, &mut acc);
    }
    out.floats()?.iter_mut().zip(acc).for_each(|(o, s)| *o = T::from_f64(s));
    Ok(())
}

/// `y[b, t, c] = Σ_j w[c, 0, j]·x[b, t − (K−1) + j, c]` (zero left padding).
pub fn causal_conv1d<T: Real>(x: &View<'_, T>, w: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let (xs, ws) = (x.floats()?, w.floats()?);
    let (t, c, k) = (x.shape[1], x.shape[2], w.shape[2]);
    for (p, y) in out.floats()?.iter_mut().enumerate() {
        let (seq, ti, ci) = (p / (t * c), (p / c) % t, p % c);
        let mut s = 0.0;
        for j in 0..k {
            if let Some(src) = (ti + j).checked_sub(k - 1) {
                s += ws[ci * k + j].to_f64() * xs[(seq * t + src) * c + ci].to_f64();
            }
        }
        *y = T::from_f64(s);
    }
    Ok(())
}

/// `rotary(x [..., T, D], cos [T, D/2], sin [T, D/2])`: the halves `x₁, x₂`
/// of each row at position `t` become `(x₁·cos − x₂·sin, x₂·cos + x₁·sin)`.
pub fn rotary<T: Real>(x: &View<'_, T>, cos: &View<'_, T>, sin: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let (xs, cos, sin) = (x.floats()?, cos.floats()?, sin.floats()?);
    let d = x.shape.last().copied().unwrap_or(0);
    let half = d / 2;
    let t = x.shape.iter().rev().nth(1).copied().unwrap_or(1);
    for (row, (y, x)) in out.floats()?.chunks_mut(d.max(1)).zip(xs.chunks(d.max(1))).enumerate() {
        let p = row % t.max(1);
        for i in 0..half {
            let (c, s) = (cos[p * half + i].to_f64(), sin[p * half + i].to_f64());
            let (x1, x2) = (x[i].to_f64(), x[half + i].to_f64());
            y[i] = T::from_f64(x1 * c - x2 * s);
            y[half + i] = T::from_f64(x2 * c + x1 * s);
        }
    }
    Ok(())
}
