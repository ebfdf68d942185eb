//! The fused (LS-)attention kernels, forward and backward with recomputation.
//!
//! Each `(batch, head)` is processed in blocks of query rows; a block's
//! logits against the keys any of its rows can see are one GEMM, and so are
//! the products with `v` (and, backwards, with `dO`, `k`, `q`). A local head's
//! block only reaches `BLOCK + w` keys back, so its work is O(T·(BLOCK + w));
//! the `[T, T]` score matrix never exists. In f32 on AVX-512 CPUs, the
//! forward of head sizes 16, 32 and 64 runs the online-softmax kernel of
//! [`crate::flash`] instead, which keeps logits and probabilities in registers.

use crate::matmul::gemm_slices as gemm;
use crate::rows::scaled_softmax;
use lsc_interp::kernels::first_key;
use lsc_interp::{View, ViewMut};
use rayon::prelude::*;

type R<T> = Result<T, String>;

/// Query rows per block.
const BLOCK: usize = 64;
/// Query rows per block of a local head in the online-softmax kernel.
#[cfg(target_arch = "x86_64")]
const LOCAL_BLOCK: usize = 256;

/// One block of query rows `i0..i1` against keys `lo..i1`: the normalised
/// probabilities `p [rows, nk]` (zero outside each row's visible keys) and
/// each row's largest scaled logit.
struct Probs {
    lo: usize,
    nk: usize,
    p: Vec<f32>,
    row_max: Vec<f32>,
}

fn block_probs(q: &[f32], k: &[f32], d: usize, i0: usize, i1: usize, w: usize, scale: f32) -> Probs {
    let (lo, rows) = (first_key(i0, w), i1 - i0);
    let nk = i1 - lo;
    let mut p = vec![0f32; rows * nk];
    gemm(rows, d, nk, &q[i0 * d..], (d, 1), &k[lo * d..], (1, d), &mut p);
    let mut row_max = vec![0f32; rows];
    for (r, row) in p.chunks_mut(nk).enumerate() {
        let i = i0 + r;
        let (a, b) = (first_key(i, w) - lo, i + 1 - lo);
        let m = scaled_softmax(&mut row[a..b], scale);
        row[..a].fill(0.0);
        row[b..].fill(0.0);
        row_max[r] = m;
    }
    Probs { lo, nk, p, row_max }
}

fn dims(args: &[View<'_, f32>], what: &str) -> R<[usize; 4]> {
    match args[0].shape[..] {
        [b, h, t, d] => Ok([b, h, t, d]),
        _ => Err(format!("{what} needs [B,H,T,D] operands")),
    }
}

/// `(out, row_max)` of causal attention with per-head windows.
pub fn ls_attention(args: &[View<'_, f32>], windows: &[usize], scale: f64, outs: &mut [ViewMut<'_, f32>]) -> R<()> {
    let (q, k, v) = (args[0].floats()?, args[1].floats()?, args[2].floats()?);
    let [_, h, t, d] = dims(args, "ls_attention")?;
    let scale = scale as f32;
    let (first, rest) = outs.split_at_mut(1);
    let (o, row_max) = (first[0].floats()?, rest[0].floats()?);
    #[cfg(target_arch = "x86_64")]
    if crate::flash::supported(d) {
        flash_forward(q, k, v, [0, h, t, d], windows, scale, o, row_max);
        return Ok(());
    }
    o.par_chunks_mut((t * d).max(1)).zip(row_max.par_chunks_mut(t.max(1))).enumerate().for_each(|(bh, (o, m_out))| {
        let w = windows[bh % h];
        let base = bh * t * d;
        let (q, k, v) = (&q[base..base + t * d], &k[base..base + t * d], &v[base..base + t * d]);
        for i0 in (0..t).step_by(BLOCK) {
            let i1 = (i0 + BLOCK).min(t);
            let pr = block_probs(q, k, d, i0, i1, w, scale);
            gemm(i1 - i0, pr.nk, d, &pr.p, (pr.nk, 1), &v[pr.lo * d..], (d, 1), &mut o[i0 * d..i1 * d]);
            m_out[i0..i1].copy_from_slice(&pr.row_max);
        }
    });
    Ok(())
}

/// [`ls_attention`] through the online-softmax kernel of [`crate::flash`]:
/// per head, `kᵀ` once, then blocks of query rows in parallel.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn flash_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    [_, h, t, d]: [usize; 4],
    windows: &[usize],
    scale: f32,
    o: &mut [f32],
    row_max: &mut [f32],
) {
    o.par_chunks_mut((t * d).max(1)).zip(row_max.par_chunks_mut(t.max(1))).enumerate().for_each(|(bh, (o, m))| {
        let w = windows[bh % h];
        let base = bh * t * d;
        let (q, k, v) = (&q[base..base + t * d], &k[base..base + t * d], &v[base..base + t * d]);
        // A global head transposes its keys once; a local head's blocks each
        // transpose only the keys of their window.
        // SAFETY (all blocks below): `supported(d)` held, so the CPU has
        // AVX-512F; the slices are this head's rows, and `kt` holds every key
        // the block's rows see.
        let shared = (w == 0).then(|| unsafe { crate::flash::transpose(k, t, d) });
        // Larger blocks for a local head, so that the window its transpose repeats is a small share.
        let rows = if w == 0 { BLOCK } else { LOCAL_BLOCK };
        o.par_chunks_mut(rows * d).zip(m.par_chunks_mut(rows)).enumerate().for_each(|(blk, (ob, mb))| {
            let (i0, i1) = (blk * rows, blk * rows + mb.len());
            let local;
            let kt = match &shared {
                Some(all) => crate::flash::Transposed::whole(all, t),
                None => {
                    let lo = first_key(i0, w);
                    local = unsafe { crate::flash::transpose(&k[lo * d..i1 * d], i1 - lo, d) };
                    crate::flash::Transposed { data: &local, first: lo, len: i1 - lo }
                }
            };
            unsafe { crate::flash::forward(q, kt, v, d, w, scale, (i0, i1), ob, mb) };
        });
    });
}

/// [`ls_attention_grad`] through the kernels of [`crate::flash`]: per head,
/// the four transposes, then the query pass (`dq`, and each row's
/// log-sum-exp and `rowsum(dO ⊙ O)`) and the key pass (`dk`, `dv`), each over
/// blocks of rows in parallel.
#[cfg(target_arch = "x86_64")]
fn flash_backward(
    [q, k, v, o, g]: [&[f32]; 5],
    [_, h, t, d]: [usize; 4],
    windows: &[usize],
    scale: f32,
    [dq, dk, dv]: [&mut [f32]; 3],
) {
    let per_head = (t * d).max(1);
    let heads = dq.par_chunks_mut(per_head).zip(dk.par_chunks_mut(per_head)).zip(dv.par_chunks_mut(per_head));
    heads.enumerate().for_each(|(bh, ((dq, dk), dv))| {
        let span = bh * t * d..(bh + 1) * t * d;
        let (q, k, v, o, g) = (&q[span.clone()], &k[span.clone()], &v[span.clone()], &o[span.clone()], &g[span]);
        // SAFETY (every call below): `supported(d)` held, so the CPU has
        // AVX-512F; the slices are this head's rows and its transposes.
        let [qt, kt, vt, gt] = [q, k, v, g].map(|x| unsafe { crate::flash::transpose(x, t, d) });
        let whole = |x| crate::flash::Transposed::whole(x, t);
        let head = crate::flash::Head {
            q,
            k,
            v,
            o,
            g,
            qt: whole(&qt),
            kt: whole(&kt),
            vt: whole(&vt),
            gt: whole(&gt),
            t,
            d,
            window: windows[bh % h],
            scale,
        };
        let (mut lse, mut delta) = (vec![0f32; t], vec![0f32; t]);
        let rows = dq.par_chunks_mut(BLOCK * d).zip(lse.par_chunks_mut(BLOCK)).zip(delta.par_chunks_mut(BLOCK));
        rows.enumerate().for_each(|(blk, ((dq, lse), delta))| {
            let i0 = blk * BLOCK;
            unsafe { crate::flash::backward_queries(&head, (i0, i0 + lse.len()), dq, lse, delta) };
        });
        let keys = dk.par_chunks_mut(BLOCK * d).zip(dv.par_chunks_mut(BLOCK * d));
        keys.enumerate().for_each(|(blk, (dk, dv))| {
            let j0 = blk * BLOCK;
            let j1 = j0 + dk.len() / d;
            unsafe { crate::flash::backward_keys(&head, (j0, j1), (&lse, &delta), dk, dv) };
        });
    });
}

/// `(d_q, d_k, d_v)` of [`ls_attention`] from `(q, k, v, out, d_out)`, recomputing the probabilities.
pub fn ls_attention_grad(
    args: &[View<'_, f32>],
    windows: &[usize],
    scale: f64,
    outs: &mut [ViewMut<'_, f32>],
) -> R<()> {
    let f = |i: usize| args[i].floats();
    let (q, k, v, o, g) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
    let [_, h, t, d] = dims(args, "ls_attention_grad")?;
    let sc = scale as f32;
    let [dq, dk, dv] = outs else { return Err("ls_attention_grad writes three outputs".into()) };
    let (dq, dk, dv) = (dq.floats()?, dk.floats()?, dv.floats()?);
    #[cfg(target_arch = "x86_64")]
    if crate::flash::supported(d) {
        flash_backward([q, k, v, o, g], [0, h, t, d], windows, sc, [dq, dk, dv]);
        return Ok(());
    }
    // The key-side gradients accumulate over query blocks.
    dk.fill(0.0);
    dv.fill(0.0);
    let chunk = (t * d).max(1);
    dq.par_chunks_mut(chunk).zip(dk.par_chunks_mut(chunk)).zip(dv.par_chunks_mut(chunk)).enumerate().for_each(
        |(bh, ((dq, dk), dv))| {
            let w = windows[bh % h];
            let base = bh * t * d;
            let span = base..base + t * d;
            let (q, k, v) = (&q[span.clone()], &k[span.clone()], &v[span.clone()]);
            let (o, g) = (&o[span.clone()], &g[span]);
            for i0 in (0..t).step_by(BLOCK) {
                let i1 = (i0 + BLOCK).min(t);
                let rows = i1 - i0;
                let Probs { lo, nk, p, .. } = block_probs(q, k, d, i0, i1, w, sc);
                // dP = dO · Vᵀ, then dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale.
                let mut ds = vec![0f32; rows * nk];
                gemm(rows, d, nk, &g[i0 * d..], (d, 1), &v[lo * d..], (1, d), &mut ds);
                for r in 0..rows {
                    let i = i0 + r;
                    let di =
                        g[i * d..(i + 1) * d].iter().zip(&o[i * d..(i + 1) * d]).fold(0.0, |a, (&x, &y)| a + x * y);
                    for (x, &pij) in ds[r * nk..(r + 1) * nk].iter_mut().zip(&p[r * nk..(r + 1) * nk]) {
                        *x = pij * (*x - di) * sc;
                    }
                }
                gemm(rows, nk, d, &ds, (nk, 1), &k[lo * d..], (d, 1), &mut dq[i0 * d..i1 * d]);
                let mut acc = vec![0f32; nk * d];
                gemm(nk, rows, d, &ds, (1, nk), &q[i0 * d..], (d, 1), &mut acc);
                dk[lo * d..i1 * d].iter_mut().zip(&acc).for_each(|(x, &y)| *x += y);
                gemm(nk, rows, d, &p, (1, nk), &g[i0 * d..], (d, 1), &mut acc);
                dv[lo * d..i1 * d].iter_mut().zip(&acc).for_each(|(x, &y)| *x += y);
            }
        },
    );
    Ok(())
}
