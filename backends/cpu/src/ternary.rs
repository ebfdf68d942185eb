//! The packed-ternary product: `x · wᵀ` for `w [N, K]` held as two bit planes
//! (`lsc_interp::ternary`) needs no multiplication — each output adds the
//! inputs under `plus` and subtracts those under `minus`. On AVX-512 a 16-bit
//! slice of a plane is directly the mask of a masked add (or subtract) of 16
//! inputs; elsewhere the set bits are walked one by one. Many rows of `x`
//! unpack blocks of weight rows for the GEMM instead.

use lsc_interp::ternary::TernaryRef;
use lsc_interp::{Data, View, ViewMut};
use rayon::prelude::*;

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;
/// Rows of `x` that share one pass over the weights.
const X_ROWS: usize = 4;
/// Rows of `x` up to which the packed add/subtract kernel beats unpacking the
/// weights for the GEMM (`lsc bench --kernels` times M = 1 and 256).
const PACKED_MAX_ROWS: usize = 64;
/// Weight rows unpacked at a time for the GEMM path (a 4 MiB block at K = 1024).
const UNPACKED_ROWS: usize = 1024;

/// A packed matrix as the kernels read it.
struct Packed<'a>(TernaryRef<'a>);

impl Packed<'_> {
    /// `y [m, rows] = x [m, cols] · selfᵀ`, with adds and subtracts only.
    fn matmul_t(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), String> {
        if x.len() != m * self.0.cols {
            return Err(format!("x has {} values, not {m} rows of {}", x.len(), self.0.cols));
        }
        // Work in row blocks of the output's transpose: task t owns rows n of every x row.
        let mut yt = vec![0f32; self.0.rows * m];
        yt.par_chunks_mut(ROWS_PER_TASK * m.max(1)).enumerate().for_each(|(task, out)| {
            let n0 = task * ROWS_PER_TASK;
            for (i, chunk) in out.chunks_mut(m.max(1)).enumerate() {
                self.row_products(n0 + i, x, m, chunk);
            }
        });
        for n in 0..self.0.rows {
            for r in 0..m {
                y[r * self.0.rows + n] = yt[n * m + r];
            }
        }
        Ok(())
    }

    /// `out[r] = x[r] · w[n]` for every row `r` of `x`.
    fn row_products(&self, n: usize, x: &[f32], m: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, and `x` holds m rows of `cols`
            // values (checked by the caller).
            unsafe { self.row_products_avx512(n, x, m, out) };
            return;
        }
        self.row_products_portable(n, x, m, out);
    }

    /// Walks the set bits of each word.
    fn row_products_portable(&self, n: usize, x: &[f32], m: usize, out: &mut [f32]) {
        let words = self.0.cols.div_ceil(64);
        for (r, o) in out.iter_mut().enumerate().take(m) {
            let xr = &x[r * self.0.cols..(r + 1) * self.0.cols];
            let mut acc = 0f32;
            for w in 0..words {
                let (mut p, mut q) = (self.0.plus()[n * words + w], self.0.minus()[n * words + w]);
                while p != 0 {
                    acc += xr[w * 64 + p.trailing_zeros() as usize];
                    p &= p - 1;
                }
                while q != 0 {
                    acc -= xr[w * 64 + q.trailing_zeros() as usize];
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
            let (xs, os) = (&x[r0 * self.0.cols..(r0 + rs) * self.0.cols], &mut out[r0..r0 + rs]);
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
        let words = self.0.cols.div_ceil(64);
        let full = self.0.cols / 64;
        let (plus, minus) = (&self.0.plus()[n * words..(n + 1) * words], &self.0.minus()[n * words..(n + 1) * words]);
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
                    let xv = _mm512_loadu_si512(xp.add(r * self.0.cols + w * 64 + s * 16) as *const _);
                    let signed = _mm512_castsi512_ps(_mm512_xor_si512(xv, sign));
                    a[s] = _mm512_mask_add_ps(a[s], pm | qm, a[s], signed);
                }
            }
        }
        if full < words {
            let (p, q) = (plus[full], minus[full]);
            for s in 0..4 {
                let col = full * 64 + s * 16;
                if col >= self.0.cols {
                    break;
                }
                let (pm, qm) = ((p >> (16 * s)) as u16, (q >> (16 * s)) as u16);
                let live: u16 = if col + 16 <= self.0.cols { u16::MAX } else { (1u16 << (self.0.cols - col)) - 1 };
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_maskz_loadu_ps(live, xp.add(r * self.0.cols + col));
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

/// `(x [..., M, K], w, s) → (x · w) · s` for ternary `w` (packed `[N, K]`
/// read transposed, or `[K, N]`); `Ok(false)` when `w` is not packed (the
/// reference kernel then runs).
pub fn ternary_matmul(
    x: &View<'_, f32>,
    w: &View<'_, f32>,
    s: &View<'_, f32>,
    trans_b: bool,
    out: &mut ViewMut<'_, f32>,
) -> Result<bool, String> {
    let Data::Ternary(p) = w.data else { return Ok(false) };
    let k = *x.shape.last().ok_or("ternary_matmul needs x [..., K]")?;
    if (trans_b && p.cols != k) || (!trans_b && p.rows != k) {
        return Ok(false);
    }
    let (xs, scale) = (x.floats()?, s.scalar()?);
    let rows = xs.len().checked_div(k).unwrap_or(0);
    let y = out.floats()?;
    if !trans_b {
        // `x · w` for `w [K, N]` (a gradient through the transposed weight): unpacked, then the GEMM.
        let n = p.cols;
        let mut dense = vec![0f32; k * n];
        dense.par_chunks_mut(n.max(1)).enumerate().for_each(|(r, row)| unpack_row(p, r, row));
        crate::matmul::gemm_slices(rows, k, n, xs, (k, 1), &dense, (n, 1), y);
    } else if rows <= PACKED_MAX_ROWS {
        Packed(p).matmul_t(xs, rows, y)?;
    } else {
        unpacked_matmul_t(xs, rows, p, y);
    }
    y.iter_mut().for_each(|v| *v *= scale);
    Ok(true)
}

/// `x [m, K] · wᵀ` for packed `w [N, K]` and many rows of `x`: blocks of
/// weight rows are unpacked into one reused buffer and multiplied by the
/// GEMM, so no dense copy of the whole matrix is made.
fn unpacked_matmul_t(x: &[f32], m: usize, w: TernaryRef<'_>, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    let mut block = vec![0f32; UNPACKED_ROWS.min(n) * k];
    for n0 in (0..n).step_by(UNPACKED_ROWS) {
        let nb = UNPACKED_ROWS.min(n - n0);
        block[..nb * k].par_chunks_mut(k.max(1)).enumerate().for_each(|(i, row)| unpack_row(w, n0 + i, row));
        // SAFETY: x is m×k, block holds nb rows of k (read transposed: k×nb), and
        // y's columns n0..n0+nb of m rows of n are in bounds.
        unsafe {
            crate::matmul::sgemm(
                m,
                k,
                nb,
                x.as_ptr(),
                (k as isize, 1),
                block.as_ptr(),
                (1, k as isize),
                y.as_mut_ptr().add(n0),
                (n as isize, 1),
            );
        }
    }
}

/// Row `n` of a packed matrix as floats in {−1, 0, 1}.
fn unpack_row(w: TernaryRef<'_>, n: usize, row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe { unpack_row_avx512(w, n, row) };
        return;
    }
    w.unpack_row(n, row);
}

/// Row `n` as floats, 16 at a time: +1 under `plus`, then −1 under `minus`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn unpack_row_avx512(w: TernaryRef<'_>, n: usize, row: &mut [f32]) {
    use std::arch::x86_64::*;
    let words = w.cols.div_ceil(64);
    let (pp, qp) = (w.plus()[n * words..].as_ptr() as *const u16, w.minus()[n * words..].as_ptr() as *const u16);
    let (one, minus_one) = (_mm512_set1_ps(1.0), _mm512_set1_ps(-1.0));
    for (i, chunk) in row.chunks_mut(16).enumerate() {
        let v = _mm512_mask_mov_ps(_mm512_maskz_mov_ps(*pp.add(i), one), *qp.add(i), minus_one);
        let live: u16 = if chunk.len() == 16 { u16::MAX } else { (1u16 << chunk.len()) - 1 };
        _mm512_mask_storeu_ps(chunk.as_mut_ptr(), live, v);
    }
}
