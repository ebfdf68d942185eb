//! Row-major products as cuBLAS calls: the one place that knows cuBLAS is
//! column-major. A row-major `C[M, N] = op(A) · op(B)` is, read column-major,
//! `Cᵀ = op(B)ᵀ · op(A)ᵀ`, and a row-major matrix read column-major is its
//! transpose, so the call swaps the operands and keeps each one's
//! transposition: cuBLAS's `A` is the op's right operand.

use super::device::Gemm;
use lsc_kir::Elem;

/// One GEMM of an op: the call, which of the op's operands cuBLAS's `A` and
/// `B` are, and element offsets of the first matrices of `A`, `B` and `C`.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The call.
    pub gemm: Gemm,
    /// The op's operand read as cuBLAS's `A`, and its first element.
    pub a: (usize, u64),
    /// The op's operand read as cuBLAS's `B`, and its first element.
    pub b: (usize, u64),
    /// The first element of `C` in the op's result.
    pub c: u64,
}

/// `(rows, columns)` of the matrices of `[..., R, C]`, read transposed if asked.
fn dims(shape: &[usize], transposed: bool) -> Result<(usize, usize), String> {
    match shape {
        [.., r, c] if transposed => Ok((*c, *r)),
        [.., r, c] => Ok((*r, *c)),
        _ => Err(format!("a matrix product of a {shape:?} operand")),
    }
}

/// The column-major call computing row-major `C[batch × m, n]` from `op(A)[m, k]`
/// and `op(B)[k, n]`, each matrix `stride_*` elements after the last.
#[allow(clippy::too_many_arguments)]
fn row_major(
    (trans_a, trans_b): (bool, bool),
    (m, n, k): (usize, usize, usize),
    (stride_a, stride_b): (u64, u64),
    batch: usize,
    beta: f32,
    operands: Elem,
) -> Gemm {
    Gemm {
        trans_a: trans_b,
        trans_b: trans_a,
        m: n,
        n: m,
        k,
        lda: if trans_b { k } else { n }.max(1),
        ldb: if trans_a { m } else { k }.max(1),
        ldc: n.max(1),
        stride_a: stride_b,
        stride_b: stride_a,
        stride_c: (m * n) as u64,
        batch,
        alpha: 1.0,
        beta,
        operands,
    }
}

/// The calls of `matmul` (operand 0 `a`, operand 1 `b`, result `out`).
pub fn matmul(
    a: &[usize],
    b: &[usize],
    (trans_a, trans_b): (bool, bool),
    out: &[usize],
    operands: Elem,
) -> Result<Vec<Call>, String> {
    let ((m, k), (kb, n)) = (dims(a, trans_a)?, dims(b, trans_b)?);
    let batch: usize = out[..out.len().saturating_sub(2)].iter().product();
    if kb != k || out.iter().product::<usize>() != batch * m * n {
        return Err(format!("matmul of {a:?} and {b:?} into {out:?} has mismatched sizes"));
    }
    if m == 0 || n == 0 || batch == 0 {
        return Ok(Vec::new());
    }
    let (a_batched, b_batched) = (a.len() > 2, b.len() > 2);
    // A batch of row-major `a` against one shared `b` is one product of the batch's rows stacked.
    let (m, batch) = if a_batched && !b_batched && !trans_a { (batch * m, 1) } else { (m, batch) };
    let stride = |batched: bool, size: usize| if batched && batch > 1 { size as u64 } else { 0 };
    let gemm = row_major(
        (trans_a, trans_b),
        (m, n, k),
        (stride(a_batched, m * k), stride(b_batched, k * n)),
        batch,
        0.0,
        operands,
    );
    Ok(vec![Call { gemm, a: (1, 0), b: (0, 0), c: 0 }])
}

/// The calls of `matmul_sum`: `Σ_batch op(a_i) · op(b_i)` into `out [m, n]`.
/// With `a` transposed and `b` not (a weight's gradient, `xᵀ·g`) the batch's
/// rows stack into one product of depth `batch · k`; otherwise one product per
/// matrix, each accumulating into the result.
pub fn matmul_sum(
    a: &[usize],
    b: &[usize],
    (trans_a, trans_b): (bool, bool),
    out: &[usize],
    operands: Elem,
) -> Result<Vec<Call>, String> {
    let r = a.len();
    if r < 3 || b.len() != r || a[..r - 2] != b[..r - 2] {
        return Err(format!("matmul_sum of {a:?} and {b:?}: the batch dims differ"));
    }
    let ((m, k), (kb, n)) = (dims(a, trans_a)?, dims(b, trans_b)?);
    if kb != k || out != [m, n] {
        return Err(format!("matmul_sum of {a:?} and {b:?} into {out:?} has mismatched sizes"));
    }
    let batch: usize = a[..r - 2].iter().product();
    if m == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if (trans_a && !trans_b) || batch == 0 {
        let gemm = row_major((trans_a, trans_b), (m, n, batch * k), (0, 0), 1, 0.0, operands);
        return Ok(vec![Call { gemm, a: (1, 0), b: (0, 0), c: 0 }]);
    }
    Ok((0..batch)
        .map(|i| {
            let beta = if i == 0 { 0.0 } else { 1.0 };
            let gemm = row_major((trans_a, trans_b), (m, n, k), (0, 0), 1, beta, operands);
            Call { gemm, a: (1, (i * k * n) as u64), b: (0, (i * m * k) as u64), c: 0 }
        })
        .collect())
}

/// `g` computed on the host, as cuBLAS defines it: what the emulated device runs.
pub fn reference(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<(), String> {
    let at = |i: usize, p: usize| if g.trans_a { p + i * g.lda } else { i + p * g.lda };
    let bt = |p: usize, j: usize| if g.trans_b { j + p * g.ldb } else { p + j * g.ldb };
    let (na, nb, nc) = g.extents();
    if na > a.len() as u64 || nb > b.len() as u64 || nc > c.len() as u64 {
        return Err(format!("a GEMM {}×{}×{} reaches past its operands", g.m, g.n, g.k));
    }
    for s in 0..g.batch {
        let (a, b) = (&a[s * g.stride_a as usize..], &b[s * g.stride_b as usize..]);
        let c = &mut c[s * g.stride_c as usize..];
        for j in 0..g.n {
            for i in 0..g.m {
                let mut acc = 0f32;
                for p in 0..g.k {
                    acc = a[at(i, p)].mul_add(b[bt(p, j)], acc);
                }
                let old = if g.beta == 0.0 { 0.0 } else { g.beta * c[i + j * g.ldc] };
                c[i + j * g.ldc] = g.alpha * acc + old;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row-major `op(a) · op(b)` on the host, the plain way.
    fn product(a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize), (ta, tb): (bool, bool)) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[if ta { p * m + i } else { i * k + p }] * b[if tb { j * k + p } else { p * n + j }])
                    .sum();
            }
        }
        c
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 17) as f32 - 8.0).collect()
    }

    /// Runs the calls on the host reference, for the op's operands.
    fn run(calls: &[Call], ops: [&[f32]; 2], out: usize) -> Vec<f32> {
        let mut c = vec![f32::NAN; out];
        for call in calls {
            let (a, b) = (&ops[call.a.0][call.a.1 as usize..], &ops[call.b.0][call.b.1 as usize..]);
            reference(&call.gemm, a, b, &mut c[call.c as usize..]).unwrap();
        }
        c
    }

    #[test]
    fn every_transposition_and_batching_matches_the_row_major_product() {
        let (m, n, k, batch) = (3, 5, 4, 2);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_shape = if ta { [batch, k, m] } else { [batch, m, k] };
            let b_shape = if tb { [batch, n, k] } else { [batch, k, n] };
            let (a, b) = (values(batch * m * k, 1), values(batch * k * n, 2));
            // Both batched, and a batch against a shared right operand.
            for shared in [false, true] {
                let b_used: &[usize] = if shared { &b_shape[1..] } else { &b_shape };
                let calls = matmul(&a_shape, b_used, (ta, tb), &[batch, m, n], Elem::F32).unwrap();
                let got = run(&calls, [&a, &b], batch * m * n);
                for s in 0..batch {
                    let bs = if shared { &b[..k * n] } else { &b[s * k * n..(s + 1) * k * n] };
                    let want = product(&a[s * m * k..(s + 1) * m * k], bs, (m, n, k), (ta, tb));
                    assert_eq!(&got[s * m * n..(s + 1) * m * n], &want[..], "ta {ta} tb {tb} shared {shared}");
                }
            }
            let calls = matmul_sum(&a_shape, &b_shape, (ta, tb), &[m, n], Elem::F32).unwrap();
            let got = run(&calls, [&a, &b], m * n);
            let mut want = vec![0f32; m * n];
            for s in 0..batch {
                let p = product(&a[s * m * k..(s + 1) * m * k], &b[s * k * n..(s + 1) * k * n], (m, n, k), (ta, tb));
                want.iter_mut().zip(p).for_each(|(w, p)| *w += p);
            }
            assert_eq!(got, want, "matmul_sum ta {ta} tb {tb}");
        }
    }

    #[test]
    fn a_batch_against_a_shared_weight_is_one_call_and_mismatches_are_errors() {
        let calls = matmul(&[4, 8, 16], &[16, 32], (false, false), &[4, 8, 32], Elem::F32).unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].gemm.m, calls[0].gemm.n, calls[0].gemm.batch), (32, 32, 1));
        assert!(matmul(&[4, 8], &[9, 2], (false, false), &[4, 2], Elem::F32).unwrap_err().contains("mismatched"));
        assert!(matmul_sum(&[2, 4, 8], &[3, 8, 2], (false, false), &[4, 2], Elem::F32).unwrap_err().contains("batch"));
    }
}
