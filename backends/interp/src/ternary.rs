//! Packed ternary weights and their add/subtract-only product.
//!
//! A ternary matrix `[rows, cols]` with values in {−1, 0, 1} is held as two
//! bit planes, 2 bits per weight: bit `k` of row `n` is set in `plus` where
//! `w[n, k] = 1` and in `minus` where `w[n, k] = −1`. Rows are padded to whole
//! 64-bit words. `x · wᵀ` then needs no multiplication: each output adds the
//! inputs under `plus` and subtracts those under `minus`. On AVX-512 a 16-bit
//! slice of a plane is directly the mask of a masked add (or subtract) of 16
//! inputs; elsewhere the set bits are walked one by one.

use crate::math::Real;
#[cfg(target_arch = "x86_64")]
use crate::math::{as_f32, as_f32_mut};
use rayon::prelude::*;

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;
/// Rows of `x` that share one pass over the weights.
const X_ROWS: usize = 4;

/// A ternary matrix as `plus` and `minus` bit planes (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryPlanes {
    /// Rows (`N` of `x · wᵀ`).
    pub rows: usize,
    /// Columns (`K`, the reduced axis).
    pub cols: usize,
    plus: Vec<u64>,
    minus: Vec<u64>,
}

impl TernaryPlanes {
    fn words(cols: usize) -> usize {
        cols.div_ceil(64)
    }

    /// Packs `[rows, cols]` values; anything but ±1 counts as 0.
    pub fn pack<T: Real>(values: &[T], rows: usize, cols: usize) -> Result<TernaryPlanes, String> {
        if values.len() != rows * cols {
            return Err(format!("{} values cannot be a ternary [{rows}, {cols}] matrix", values.len()));
        }
        let words = Self::words(cols);
        let (mut plus, mut minus) = (vec![0u64; rows * words], vec![0u64; rows * words]);
        for (n, row) in values.chunks(cols.max(1)).enumerate().take(rows) {
            for (k, v) in row.iter().enumerate() {
                let bit = 1u64 << (k % 64);
                match v.to_f64() {
                    1.0 => plus[n * words + k / 64] |= bit,
                    -1.0 => minus[n * words + k / 64] |= bit,
                    _ => {}
                }
            }
        }
        Ok(TernaryPlanes { rows, cols, plus, minus })
    }

    /// The values as floats in {−1, 0, 1}, row-major.
    pub fn unpack<T: Real>(&self) -> Vec<T> {
        let mut out = vec![T::from_f64(0.0); self.rows * self.cols];
        out.par_chunks_mut(self.cols.max(1)).enumerate().for_each(|(n, row)| self.unpack_row(n, row));
        out
    }

    /// Row `n` as floats in {−1, 0, 1} (`row` holds `cols` values).
    pub fn unpack_row<T: Real>(&self, n: usize, row: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            if let Some(row) = as_f32_mut(row) {
                // SAFETY: the CPU has AVX-512F.
                unsafe { self.unpack_row_avx512(n, row) };
                return;
            }
        }
        let words = Self::words(self.cols);
        let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
        for (w, chunk) in row.chunks_mut(64).enumerate() {
            let (p, q) = (self.plus[n * words + w], self.minus[n * words + w]);
            for (b, v) in chunk.iter_mut().enumerate() {
                *v = if (p >> b) & 1 != 0 { one } else { zero } - if (q >> b) & 1 != 0 { one } else { zero };
            }
        }
    }

    /// Row `n` as floats, 16 at a time: +1 under `plus`, then −1 under `minus`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn unpack_row_avx512(&self, n: usize, row: &mut [f32]) {
        use std::arch::x86_64::*;
        let words = Self::words(self.cols);
        let (pp, qp) = (self.plus[n * words..].as_ptr() as *const u16, self.minus[n * words..].as_ptr() as *const u16);
        let (one, minus_one) = (_mm512_set1_ps(1.0), _mm512_set1_ps(-1.0));
        for (i, chunk) in row.chunks_mut(16).enumerate() {
            let v = _mm512_mask_mov_ps(_mm512_maskz_mov_ps(*pp.add(i), one), *qp.add(i), minus_one);
            let live: u16 = if chunk.len() == 16 { u16::MAX } else { (1u16 << chunk.len()) - 1 };
            _mm512_mask_storeu_ps(chunk.as_mut_ptr(), live, v);
        }
    }

    /// Bytes of the two planes.
    pub fn bytes(&self) -> usize {
        (self.plus.len() + self.minus.len()) * 8
    }

    /// `y [m, rows] = x [m, cols] · selfᵀ`, with adds and subtracts only.
    pub fn matmul_t<T: Real>(&self, x: &[T], m: usize) -> Result<Vec<T>, String> {
        if x.len() != m * self.cols {
            return Err(format!("x has {} values, not {m} rows of {}", x.len(), self.cols));
        }
        let mut y = vec![T::from_f64(0.0); m * self.rows];
        // Work in row blocks of the output's transpose: task t owns rows n of every x row.
        let mut yt = vec![T::from_f64(0.0); self.rows * m];
        yt.par_chunks_mut(ROWS_PER_TASK * m.max(1)).enumerate().for_each(|(task, out)| {
            let n0 = task * ROWS_PER_TASK;
            for (i, chunk) in out.chunks_mut(m.max(1)).enumerate() {
                self.row_products(n0 + i, x, m, chunk);
            }
        });
        for n in 0..self.rows {
            for r in 0..m {
                y[r * self.rows + n] = yt[n * m + r];
            }
        }
        Ok(y)
    }

    /// `out[r] = x[r] · w[n]` for every row `r` of `x`.
    fn row_products<T: Real>(&self, n: usize, x: &[T], m: usize, out: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            if let (Some(xs), Some(os)) = (as_f32(x), as_f32_mut(out)) {
                // SAFETY: the CPU has AVX-512F, and `x` holds m rows of `cols`
                // values (checked by the caller).
                unsafe { self.row_products_avx512(n, xs, m, os) };
                return;
            }
        }
        self.row_products_portable(n, x, m, out);
    }

    /// Walks the set bits of each word.
    fn row_products_portable<T: Real>(&self, n: usize, x: &[T], m: usize, out: &mut [T]) {
        let words = Self::words(self.cols);
        for (r, o) in out.iter_mut().enumerate().take(m) {
            let xr = &x[r * self.cols..(r + 1) * self.cols];
            let mut acc = T::from_f64(0.0);
            for w in 0..words {
                let (mut p, mut q) = (self.plus[n * words + w], self.minus[n * words + w]);
                while p != 0 {
                    acc = acc + xr[w * 64 + p.trailing_zeros() as usize];
                    p &= p - 1;
                }
                while q != 0 {
                    acc = acc - xr[w * 64 + q.trailing_zeros() as usize];
                    q &= q - 1;
                }
            }
            *o = acc;
        }
    }

    /// Masked adds and subtracts of 16 inputs at a time; up to [`X_ROWS`] rows
    /// of `x` share each load of the planes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn row_products_avx512(&self, n: usize, x: &[f32], m: usize, out: &mut [f32]) {
        let mut r0 = 0;
        while r0 < m {
            let rs = (m - r0).min(X_ROWS);
            let (xs, os) = (&x[r0 * self.cols..(r0 + rs) * self.cols], &mut out[r0..r0 + rs]);
            match rs {
                1 => self.rows_avx512::<1>(n, xs, os),
                2 => self.rows_avx512::<2>(n, xs, os),
                3 => self.rows_avx512::<3>(n, xs, os),
                _ => self.rows_avx512::<4>(n, xs, os),
            }
            r0 += rs;
        }
    }

    /// `R` rows of `x` against row `n`, with `4·R` accumulators held in
    /// registers (one per 16-lane slice of a word, so the adds are independent);
    /// the last partial word loads only its live lanes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_avx512<const R: usize>(&self, n: usize, x: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let words = Self::words(self.cols);
        let full = self.cols / 64;
        let (plus, minus) = (&self.plus[n * words..(n + 1) * words], &self.minus[n * words..(n + 1) * words]);
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let xp = x.as_ptr();
        // The planes as 16-bit masks (x86 is little-endian: slice s of a word is its s-th u16).
        let (pp, qp) = (plus.as_ptr() as *const u16, minus.as_ptr() as *const u16);
        for w in 0..full {
            for s in 0..4 {
                let (pm, qm) = (*pp.add(4 * w + s), *qp.add(4 * w + s));
                if R == 1 {
                    // One row: a masked add and a masked subtract (fewest instructions).
                    let xv = _mm512_loadu_ps(xp.add(w * 64 + s * 16));
                    acc[0][s] = _mm512_mask_add_ps(acc[0][s], pm, acc[0][s], xv);
                    acc[0][s] = _mm512_mask_sub_ps(acc[0][s], qm, acc[0][s], xv);
                    continue;
                }
                // Several rows: one sign flip (−x where the weight is −1), shared by
                // the rows, then a single add per row under either plane.
                let sign = _mm512_maskz_mov_epi32(qm, _mm512_set1_epi32(i32::MIN));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_si512(xp.add(r * self.cols + w * 64 + s * 16) as *const _);
                    let signed = _mm512_castsi512_ps(_mm512_xor_si512(xv, sign));
                    a[s] = _mm512_mask_add_ps(a[s], pm | qm, a[s], signed);
                }
            }
        }
        if full < words {
            let (p, q) = (plus[full], minus[full]);
            for s in 0..4 {
                let col = full * 64 + s * 16;
                if col >= self.cols {
                    break;
                }
                let (pm, qm) = ((p >> (16 * s)) as u16, (q >> (16 * s)) as u16);
                let live: u16 = if col + 16 <= self.cols { u16::MAX } else { (1u16 << (self.cols - col)) - 1 };
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_maskz_loadu_ps(live, xp.add(r * self.cols + col));
                    a[s] = _mm512_mask_add_ps(a[s], pm, a[s], xv);
                    a[s] = _mm512_mask_sub_ps(a[s], qm, a[s], xv);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ternary(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..rows * cols)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) % 3) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn packing_round_trips_and_uses_two_bits_per_weight() {
        for (rows, cols) in [(3, 5), (7, 64), (2, 130)] {
            let w = ternary(rows, cols, 1);
            let p = TernaryPlanes::pack(&w, rows, cols).unwrap();
            assert_eq!(p.unpack::<f32>(), w);
            assert_eq!(p.bytes(), 2 * rows * cols.div_ceil(64) * 8);
        }
        assert!(TernaryPlanes::pack(&[1.0f32; 5], 2, 3).is_err());
    }

    #[test]
    fn product_matches_the_dense_product_at_awkward_shapes() {
        for (m, rows, cols) in [(1, 1, 1), (1, 70, 200), (5, 33, 64), (9, 130, 17), (4, 65, 1000)] {
            let w = ternary(rows, cols, (m * rows + cols) as u64);
            let x: Vec<f32> = (0..m * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let p = TernaryPlanes::pack(&w, rows, cols).unwrap();
            let y = p.matmul_t(&x, m).unwrap();
            let wide = p.matmul_t::<f64>(&x.iter().map(|&v| v as f64).collect::<Vec<_>>(), m).unwrap();
            for r in 0..m {
                for n in 0..rows {
                    let exact: f64 = (0..cols).map(|k| x[r * cols + k] as f64 * w[n * cols + k] as f64).sum();
                    let got = y[r * rows + n] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                        "[{m},{rows},{cols}] ({r},{n}): {got} vs {exact}"
                    );
                    assert!((wide[r * rows + n] - exact).abs() < 1e-9);
                }
            }
        }
        let p = TernaryPlanes::pack(&[1.0f32, -1.0], 1, 2).unwrap();
        assert!(p.matmul_t(&[1.0f32; 3], 1).is_err());
    }
}
