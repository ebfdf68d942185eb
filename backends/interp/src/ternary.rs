//! Packed ternary weights.
//!
//! A ternary matrix `[rows, cols]` with values in {−1, 0, 1} is held as two
//! bit planes, 2 bits per weight: bit `k` of row `n` is set in `plus` where
//! `w[n, k] = 1` and in `minus` where `w[n, k] = −1`. Rows are padded to whole
//! 64-bit words, and the `minus` plane follows the `plus` plane in one run of
//! words, so an executor can hold a packed matrix in any word-aligned memory.

use crate::math::Real;

/// Words per row of a plane of `cols` columns.
fn words(cols: usize) -> usize {
    cols.div_ceil(64)
}

/// An owned packed ternary matrix (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryPlanes {
    /// Rows (`N` of `x · wᵀ`).
    pub rows: usize,
    /// Columns (`K`, the reduced axis).
    pub cols: usize,
    /// `plus` then `minus`, `rows · words(cols)` words each.
    planes: Vec<u64>,
}

/// A borrowed packed ternary matrix.
#[derive(Clone, Copy, Debug)]
pub struct TernaryRef<'a> {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `plus` then `minus`.
    pub planes: &'a [u64],
}

/// A mutably borrowed packed ternary matrix.
#[derive(Debug)]
pub struct TernaryMut<'a> {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `plus` then `minus`.
    pub planes: &'a mut [u64],
}

impl TernaryPlanes {
    /// Words of one row of one plane.
    pub fn words(cols: usize) -> usize {
        words(cols)
    }

    /// The all-zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> TernaryPlanes {
        TernaryPlanes { rows, cols, planes: vec![0; 2 * rows * words(cols)] }
    }

    /// Packs `[rows, cols]` values; anything but ±1 counts as 0.
    pub fn pack<T: Real>(values: &[T], rows: usize, cols: usize) -> Result<TernaryPlanes, String> {
        let mut p = TernaryPlanes::zeros(rows, cols);
        p.as_mut().pack_from(values)?;
        Ok(p)
    }

    /// The borrowed form.
    pub fn as_ref(&self) -> TernaryRef<'_> {
        TernaryRef { rows: self.rows, cols: self.cols, planes: &self.planes }
    }

    /// The mutably borrowed form.
    pub fn as_mut(&mut self) -> TernaryMut<'_> {
        TernaryMut { rows: self.rows, cols: self.cols, planes: &mut self.planes }
    }

    /// The values as floats in {−1, 0, 1}, row-major.
    pub fn unpack<T: Real>(&self) -> Vec<T> {
        self.as_ref().unpack()
    }

    /// Bytes of the two planes.
    pub fn bytes(&self) -> usize {
        self.planes.len() * 8
    }
}

impl<'a> TernaryRef<'a> {
    /// The `plus` plane.
    pub fn plus(&self) -> &'a [u64] {
        &self.planes[..self.planes.len() / 2]
    }

    /// The `minus` plane.
    pub fn minus(&self) -> &'a [u64] {
        &self.planes[self.planes.len() / 2..]
    }

    /// Element `(n, k)` in {−1, 0, 1}.
    pub fn get(&self, n: usize, k: usize) -> i8 {
        let (word, bit) = (n * words(self.cols) + k / 64, k % 64);
        ((self.plus()[word] >> bit) & 1) as i8 - ((self.minus()[word] >> bit) & 1) as i8
    }

    /// Row `n` as floats in {−1, 0, 1} (`row` holds `cols` values).
    pub fn unpack_row<T: Real>(&self, n: usize, row: &mut [T]) {
        for (k, v) in row.iter_mut().enumerate().take(self.cols) {
            *v = T::from_f64(self.get(n, k) as f64);
        }
    }

    /// The values as floats in {−1, 0, 1}, row-major.
    pub fn unpack<T: Real>(&self) -> Vec<T> {
        let mut out = vec![T::default(); self.rows * self.cols];
        for (n, row) in out.chunks_mut(self.cols.max(1)).enumerate().take(self.rows) {
            self.unpack_row(n, row);
        }
        out
    }

    /// An owned copy.
    pub fn to_owned(&self) -> TernaryPlanes {
        TernaryPlanes { rows: self.rows, cols: self.cols, planes: self.planes.to_vec() }
    }
}

impl TernaryMut<'_> {
    /// Packs `[rows, cols]` values into these planes; anything but ±1 counts as 0.
    pub fn pack_from<T: Real>(&mut self, values: &[T]) -> Result<(), String> {
        let (rows, cols) = (self.rows, self.cols);
        if values.len() != rows * cols {
            return Err(format!("{} values cannot be a ternary [{rows}, {cols}] matrix", values.len()));
        }
        let w = words(cols);
        let half = self.planes.len() / 2;
        self.planes.iter_mut().for_each(|x| *x = 0);
        let (plus, minus) = self.planes.split_at_mut(half);
        for (n, row) in values.chunks(cols.max(1)).enumerate().take(rows) {
            for (k, v) in row.iter().enumerate() {
                let bit = 1u64 << (k % 64);
                match v.to_f64() {
                    1.0 => plus[n * w + k / 64] |= bit,
                    -1.0 => minus[n * w + k / 64] |= bit,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The read-only form.
    pub fn as_ref(&self) -> TernaryRef<'_> {
        TernaryRef { rows: self.rows, cols: self.cols, planes: self.planes }
    }

    /// A shorter-lived reborrow.
    pub fn reborrow(&mut self) -> TernaryMut<'_> {
        TernaryMut { rows: self.rows, cols: self.cols, planes: self.planes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_and_uses_two_bits_per_weight() {
        let mut s = 1u64;
        for (rows, cols) in [(3, 5), (7, 64), (2, 130)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 33) % 3) as f32 - 1.0
                })
                .collect();
            let p = TernaryPlanes::pack(&w, rows, cols).unwrap();
            assert_eq!(p.unpack::<f32>(), w);
            assert_eq!(p.bytes(), 2 * rows * cols.div_ceil(64) * 8);
        }
        assert!(TernaryPlanes::pack(&[1.0f32; 5], 2, 3).is_err());
    }
}
