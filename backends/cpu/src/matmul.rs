//! Matrix products in f32: batched `matmul` with either operand transposed,
//! the batch-summed `matmul_sum`, and the few-row products of decoding.
//! Products go through [`sgemm`]: the AVX-512 kernels of [`crate::gemm`]
//! where the CPU has them, the `matrixmultiply` crate otherwise.

use lsc_interp::{View, ViewMut};
use rayon::prelude::*;

type R<T> = Result<T, String>;

thread_local! {
    /// Set while [`serial`] runs: products stay on this thread.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every GEMM it starts kept on the calling thread (for callers
/// that already run several products in parallel).
pub fn serial<T>(f: impl FnOnce() -> T) -> T {
    let before = SERIAL.replace(true);
    let out = f();
    SERIAL.set(before);
    out
}

/// Whether this thread is inside [`serial`].
pub(crate) fn in_serial() -> bool {
    SERIAL.get()
}

/// `C = A·B` on strided row/column layouts (`C` overwritten).
///
/// # Safety
/// The pointers and strides must describe valid `m×k`, `k×n` and `m×n` matrices.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    (rsa, csa): (isize, isize),
    b: *const f32,
    (rsb, csb): (isize, isize),
    c: *mut f32,
    (rsc, csc): (isize, isize),
) {
    #[cfg(target_arch = "x86_64")]
    if crate::gemm::available() {
        use crate::gemm::Strided;
        // SAFETY: AVX-512F is present; the views are the caller's matrices.
        unsafe {
            crate::gemm::sgemm(
                m,
                k,
                n,
                Strided { ptr: a, rs: rsa, cs: csa },
                Strided { ptr: b, rs: rsb, cs: csb },
                Strided { ptr: c, rs: rsc, cs: csc },
            )
        };
        return;
    }
    // SAFETY: forwarded from the caller's contract.
    unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
}

/// `c = a · b` with explicit row/column strides of slices (`c` row-major, `n` wide), bounds checked.
#[allow(clippy::too_many_arguments)]
pub fn gemm_slices(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    sa: (usize, usize),
    b: &[f32],
    sb: (usize, usize),
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, (rs, cs): (usize, usize)| (rows - 1) * rs + cols.saturating_sub(1) * cs;
    assert!(k == 0 || (last(m, k, sa) < a.len() && last(k, n, sb) < b.len()), "GEMM operands out of bounds");
    assert!(m * n <= c.len(), "GEMM output out of bounds");
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let (sa, sb) = ((sa.0 as isize, sa.1 as isize), (sb.0 as isize, sb.1 as isize));
    // SAFETY: every index the GEMM reads or writes is within the slices (checked above).
    unsafe { sgemm(m, k, n, a.as_ptr(), sa, b.as_ptr(), sb, c.as_mut_ptr(), (n as isize, 1)) };
}

/// Products with at most this many rows skip the GEMM.
const FEW_ROWS: usize = 4;

/// `x · wᵀ` with at most this many rows of `x` against a shared `w` stream
/// `w` once ([`crate::rows::row_dots`]) instead of packing it for the GEMM.
const STREAMED_ROWS: usize = 32;

/// Multiply-adds below which a streamed product stays on one thread.
const STREAMED_SERIAL: usize = 1 << 15;

/// `c [m, n] = x [m, k] · wᵀ` for `w [n, k]`, streaming `w` once, its rows split between threads.
fn streamed(m: usize, k: usize, n: usize, x: &[f32], w: &[f32], c: &mut [f32]) {
    if m * k * n < STREAMED_SERIAL {
        crate::rows::row_dots(x, m, k, w, 0..n, c);
        return;
    }
    let per_task = n.div_ceil(crate::pool::threads() * 4).max(16);
    // Each task writes `m` rows of its columns, stored task by task, then put in place.
    let mut parts = vec![0f32; m * n];
    crate::pool::for_each_chunk(&mut parts, m * per_task, |t, part| {
        let j0 = t * per_task;
        let cols = part.len() / m;
        crate::rows::row_dots(x, m, k, w, j0..j0 + cols, part);
    });
    for (t, part) in parts.chunks(m * per_task).enumerate() {
        let (j0, cols) = (t * per_task, part.len() / m);
        for r in 0..m {
            c[r * n + j0..r * n + j0 + cols].copy_from_slice(&part[r * cols..(r + 1) * cols]);
        }
    }
}

/// Multiply-adds below which the products of a batch run one per thread.
const SMALL_PRODUCT: usize = 1 << 26;

/// `c = a · b` for a few rows of `a`, with element strides `(row, column)`:
/// dot products when `b`'s columns are contiguous (`x · wᵀ`), else rows of
/// `b` scaled and added.
#[allow(clippy::too_many_arguments)]
fn few_rows(m: usize, k: usize, n: usize, a: &[f32], sa: (usize, usize), b: &[f32], sb: (usize, usize), c: &mut [f32]) {
    for i in 0..m {
        let row: Vec<f32> = (0..k).map(|p| a[i * sa.0 + p * sa.1]).collect();
        let out = &mut c[i * n..(i + 1) * n];
        if sb.0 == 1 {
            crate::rows::dots(&row, b, sb.1, out);
        } else if sb.1 == 1 {
            // Rows of `b` scaled and added, contiguous: the loop vectorises.
            out.fill(0.0);
            for (p, &x) in row.iter().enumerate() {
                out.iter_mut().zip(&b[p * sb.0..p * sb.0 + n]).for_each(|(o, &y)| *o += x * y);
            }
        } else {
            out.fill(0.0);
            for (p, &x) in row.iter().enumerate() {
                let brow = &b[p * sb.0..];
                for (j, o) in out.iter_mut().enumerate() {
                    *o += x * brow[j * sb.1];
                }
            }
        }
    }
}

/// `(rows, columns)` of the matrices of an operand `[..., R, C]`, read transposed if asked.
fn matrix_dims(shape: &[usize], transposed: bool) -> (usize, usize) {
    let r = shape.len();
    if transposed {
        (shape[r - 1], shape[r - 2])
    } else {
        (shape[r - 2], shape[r - 1])
    }
}

/// `a · b` (batched, either operand transposed, a rank-2 operand shared by the batch).
pub fn matmul(a: &View<'_, f32>, b: &View<'_, f32>, trans_a: bool, trans_b: bool, out: &mut ViewMut<'_, f32>) -> R<()> {
    let (av, bv) = (a.floats()?, b.floats()?);
    let ((m, k), (kb, n)) = (matrix_dims(a.shape, trans_a), matrix_dims(b.shape, trans_b));
    let out_shape = out.shape;
    let batch: usize = out_shape[..out_shape.len() - 2].iter().product();
    let c = out.floats()?;
    if kb != k || c.len() != batch * m * n {
        return Err(format!("matmul of {:?} and {:?} has mismatched sizes", a.shape, b.shape));
    }
    let (a_batched, b_batched) = (a.shape.len() > 2, b.shape.len() > 2);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    // A batch of row-major `a` against one shared `b` (`x · W` over a batch of
    // sequences) is one product with the batch's rows stacked; a batch of a few
    // rows each (decoding) stays on the dot-product path below.
    let fold = a_batched && !b_batched && !trans_a && (m > FEW_ROWS || trans_b);
    let (m, batch) = if fold { (batch * m, 1) } else { (m, batch) };
    if batch == 1 && !trans_a && trans_b && m <= STREAMED_ROWS {
        streamed(m, k, n, av, bv, c);
        return Ok(());
    }
    // Row-major storage; a transposed operand is read with swapped strides, never copied.
    let sa = if trans_a { (1, m) } else { (k, 1) };
    let sb = if trans_b { (1, k) } else { (n, 1) };
    if m <= FEW_ROWS {
        // A few rows (decoding's attention): the GEMM's packing costs more than
        // the product; the batch's products are split between threads.
        let per_task = batch.div_ceil(crate::pool::threads() * 2).max(1);
        let tasks = |t: usize, c: &mut [f32]| {
            for (r, c) in c.chunks_mut(m * n).enumerate() {
                let i = t * per_task + r;
                let a = &av[if a_batched { i * m * k } else { 0 }..];
                let b = &bv[if b_batched { i * k * n } else { 0 }..];
                few_rows(m, k, n, a, sa, b, sb, c);
            }
        };
        if batch * m * n * k < STREAMED_SERIAL {
            tasks(0, c);
        } else {
            crate::pool::for_each_chunk(c, per_task * m * n, tasks);
        }
        return Ok(());
    }
    let product = |i: usize, c: &mut [f32]| {
        let a = &av[if a_batched { i * m * k } else { 0 }..];
        let b = &bv[if b_batched { i * k * n } else { 0 }..];
        gemm_slices(m, k, n, a, sa, b, sb, c);
    };
    if batch > 1 && m * n * k <= SMALL_PRODUCT {
        // Small products (a weight's gradient per sequence): one per thread at
        // a time, rather than each split across the threads.
        c.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| serial(|| product(i, c)));
    } else {
        c.chunks_mut(m * n).enumerate().for_each(|(i, c)| product(i, c));
    }
    Ok(())
}

/// `Σ_batch op_a(a)·op_b(b)` over operands with the same batch dims. With
/// `a` transposed and `b` not (a weight's gradient, `xᵀ·g`), the batch's rows
/// stack into one product of depth `batch·k`; otherwise the batched product
/// is summed over the batch.
pub fn matmul_sum(
    a: &View<'_, f32>,
    b: &View<'_, f32>,
    trans_a: bool,
    trans_b: bool,
    out: &mut ViewMut<'_, f32>,
) -> R<()> {
    let r = a.shape.len();
    if r < 3 || b.shape.len() != r || a.shape[..r - 2] != b.shape[..r - 2] {
        return Err(format!("matmul_sum of {:?} and {:?}: the batch dims differ", a.shape, b.shape));
    }
    let ((m, k), (kb, n)) = (matrix_dims(a.shape, trans_a), matrix_dims(b.shape, trans_b));
    if kb != k {
        return Err(format!("matmul_sum of {:?} and {:?} has mismatched sizes", a.shape, b.shape));
    }
    let batch: usize = a.shape[..r - 2].iter().product();
    let c = out.floats()?;
    if c.is_empty() {
        return Ok(());
    }
    if !trans_a || trans_b {
        let mut shape = a.shape[..r - 2].to_vec();
        shape.extend([m, n]);
        let mut parts = vec![0f32; batch * m * n];
        let mut view =
            ViewMut { dtype: lsc_ir::DType::F32, shape: &shape, data: lsc_interp::DataMut::Float(&mut parts) };
        matmul(a, b, trans_a, trans_b, &mut view)?;
        c.fill(0.0);
        for part in parts.chunks(m * n) {
            c.iter_mut().zip(part).for_each(|(c, &p)| *c += p);
        }
        return Ok(());
    }
    gemm_slices(m, batch * k, n, a.floats()?, (1, m), b.floats()?, (n, 1), c);
    Ok(())
}
