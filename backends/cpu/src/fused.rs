//! The fused ops and row kernels in parallel f32: softmax + cross-entropy
//! with its gradient, AdamW over many parameters, GAM (its memory read as
//! two GEMMs per block of rows), the causal convolution and its backward, the
//! rotary embedding, and softmax over contiguous rows.

use crate::matmul::gemm_slices as gemm;
use lsc_interp::math::sigmoid;
use lsc_interp::{View, ViewMut};
use rayon::prelude::*;

type R<T> = Result<T, String>;

/// Elementwise work above this many elements is split across threads.
const PAR_MIN: usize = 1 << 15;

/// `f` on each pair of `chunk`-long pieces of `y` and `x`, across threads when
/// `x` is large (each piece is computed alone, so the split does not change it).
fn chunks_par(y: &mut [f32], x: &[f32], chunk: usize, f: impl Fn((&mut [f32], &[f32])) + Sync + Send) {
    let chunk = chunk.max(1);
    if x.len() >= PAR_MIN {
        y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(f);
    } else {
        y.chunks_mut(chunk).zip(x.chunks(chunk)).for_each(f);
    }
}

fn max(row: &[f32]) -> f32 {
    row.iter().copied().fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
}

/// `(logits, targets, d_loss) → (loss, d_logits)`, one pass per row.
pub fn softmax_cross_entropy(args: &[View<'_, f32>], outs: &mut [ViewMut<'_, f32>]) -> R<()> {
    let (logits, d_loss) = (args[0].floats()?, args[2].floats()?);
    let targets = args[1].ints()?;
    let v = *args[0].shape.last().unwrap_or(&0);
    if let Some(&bad) = targets.iter().find(|&&t| usize::try_from(t).map_or(true, |t| t >= v)) {
        return Err(format!("softmax_cross_entropy (target) index {bad} is out of range 0..{v}"));
    }
    let (first, rest) = outs.split_at_mut(1);
    let (loss, grad) = (first[0].floats()?, rest[0].floats()?);
    grad.par_chunks_mut(v.max(1)).zip(loss.par_iter_mut()).enumerate().for_each(|(row, (g, l_out))| {
        let l = &logits[row * v..(row + 1) * v];
        let m = max(l);
        let mut s = 0.0;
        for (gi, &x) in g.iter_mut().zip(l) {
            *gi = (x - m).exp();
            s += *gi;
        }
        let tgt = targets[row] as usize;
        *l_out = m + s.ln() - l[tgt];
        let scale = d_loss[row] / s;
        g.iter_mut().for_each(|gi| *gi *= scale);
        g[tgt] -= d_loss[row];
    });
    Ok(())
}

/// One AdamW step of every parameter, each element in the order of the
/// unfused spelling's arithmetic (as the reference kernel).
pub fn adamw(args: &[View<'_, f32>], h: &lsc_interp::kernels::AdamW, outs: &mut [ViewMut<'_, f32>]) -> R<()> {
    let [lr, bc1, bc2, gs] = [args[0].scalar()?, args[1].scalar()?, args[2].scalar()?, args[3].scalar()?];
    let c = |x: f64| x as f32;
    let (b1, b2, one_b1, one_b2, eps, wd) =
        (c(h.beta1), c(h.beta2), c(1.0 - h.beta1), c(1.0 - h.beta2), c(h.eps), c(h.weight_decay));
    for (i, (group, out)) in args[4..].chunks(4).zip(outs.chunks_mut(3)).enumerate() {
        let (w, g, m, v) = (group[0].floats()?, group[1].floats()?, group[2].floats()?, group[3].floats()?);
        let decay = h.decay.get(i).copied().unwrap_or(false) && h.weight_decay != 0.0;
        let [wo, mo, vo] = out else { return Err("adamw writes three outputs per parameter".into()) };
        let (wo, mo, vo) = (wo.floats()?, mo.floats()?, vo.floats()?);
        wo.par_iter_mut().zip(mo.par_iter_mut()).zip(vo.par_iter_mut()).enumerate().for_each(|(j, ((wo, mo), vo))| {
            let gj = g[j] * gs;
            *mo = m[j] * b1 + gj * one_b1;
            *vo = v[j] * b2 + gj * gj * one_b2;
            let mut step = (*mo / bc1) / ((*vo / bc2).sqrt() + eps);
            if decay {
                step += w[j] * wd;
            }
            *wo = w[j] - step * lr;
        });
    }
    Ok(())
}

/// A depthwise kernel `w [C, 1, K]` as `[K, C]`: tap `j` of every channel in
/// a row, so loops over channels read it contiguously.
fn taps_by_tap(w: &[f32], c: usize, k: usize) -> Vec<f32> {
    (0..k).flat_map(|j| (0..c).map(move |ci| w[ci * k + j])).collect()
}

/// `y[b, t, c] = Σ_j w[c, 0, j]·x[b, t − (K−1) + j, c]`, one sequence per task.
pub fn causal_conv1d(x: &View<'_, f32>, w: &View<'_, f32>, out: &mut ViewMut<'_, f32>) -> R<()> {
    let (xs, ws) = (x.floats()?, w.floats()?);
    let (t, c, k) = (x.shape[1], x.shape[2], w.shape[2]);
    let taps = taps_by_tap(ws, c, k);
    let sequence = |(y, x): (&mut [f32], &[f32])| {
        y.fill(0.0);
        for ti in 0..t {
            let yr = &mut y[ti * c..(ti + 1) * c];
            for j in 0..k {
                let Some(src) = (ti + j).checked_sub(k - 1) else { continue };
                for ((o, &wv), &xv) in yr.iter_mut().zip(&taps[j * c..(j + 1) * c]).zip(&x[src * c..(src + 1) * c]) {
                    *o += wv * xv;
                }
            }
        }
    };
    chunks_par(out.floats()?, xs, t * c, sequence);
    Ok(())
}

/// `(x, w, d_y) → (d_x, d_w)` of the causal convolution, one pass per sequence
/// (in parallel), each with its own `d_w` partial.
pub fn causal_conv1d_grad(args: &[View<'_, f32>], outs: &mut [ViewMut<'_, f32>]) -> R<()> {
    let (x, w, g) = (args[0].floats()?, args[1].floats()?, args[2].floats()?);
    let (t, c, k) = (args[0].shape[1], args[0].shape[2], args[1].shape[2]);
    let taps = taps_by_tap(w, c, k);
    let (first, rest) = outs.split_at_mut(1);
    let (dx, dw) = (first[0].floats()?, rest[0].floats()?);
    let sequence = |(dx, (x, g)): (&mut [f32], (&[f32], &[f32]))| -> Vec<f32> {
        dx.fill(0.0);
        let mut dw = vec![0f32; k * c];
        for ti in 0..t {
            for j in 0..k {
                let tap = &taps[j * c..(j + 1) * c];
                // y[ti + (K−1) − j] read x[ti] through tap j.
                let src = ti + k - 1 - j;
                if src < t {
                    let (dxr, gr) = (&mut dx[ti * c..(ti + 1) * c], &g[src * c..(src + 1) * c]);
                    for ((d, &wv), &gv) in dxr.iter_mut().zip(tap).zip(gr) {
                        *d += wv * gv;
                    }
                }
                // y[ti] read x[ti − (K−1) + j] through tap j.
                if let Some(src) = (ti + j).checked_sub(k - 1) {
                    let (acc, gr, xr) =
                        (&mut dw[j * c..(j + 1) * c], &g[ti * c..(ti + 1) * c], &x[src * c..(src + 1) * c]);
                    for ((a, &gv), &xv) in acc.iter_mut().zip(gr).zip(xr) {
                        *a += gv * xv;
                    }
                }
            }
        }
        dw
    };
    let per_seq = (t * c).max(1);
    let partials: Vec<Vec<f32>> =
        dx.par_chunks_mut(per_seq).zip(x.par_chunks(per_seq).zip(g.par_chunks(per_seq))).map(sequence).collect();
    dw.fill(0.0);
    for p in &partials {
        for ci in 0..c {
            for j in 0..k {
                dw[ci * k + j] += p[j * c + ci];
            }
        }
    }
    Ok(())
}

/// `rotary(x [..., T, D], cos, sin)`, one sequence (and head) per task.
pub fn rotary(x: &View<'_, f32>, cos: &View<'_, f32>, sin: &View<'_, f32>, out: &mut ViewMut<'_, f32>) -> R<()> {
    let (xs, cos, sin) = (x.floats()?, cos.floats()?, sin.floats()?);
    let d = x.shape.last().copied().unwrap_or(0).max(1);
    let half = d / 2;
    let t = x.shape.iter().rev().nth(1).copied().unwrap_or(1).max(1);
    let turn = |(y, x): (&mut [f32], &[f32])| {
        for (p, (y, x)) in y.chunks_mut(d).zip(x.chunks(d)).enumerate() {
            let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            let (x1, x2) = x.split_at(half);
            let (y1, y2) = y.split_at_mut(half);
            for i in 0..half {
                y1[i] = x1[i] * c[i] - x2[i] * s[i];
                y2[i] = x2[i] * c[i] + x1[i] * s[i];
            }
        }
    };
    chunks_par(out.floats()?, xs, t * d, turn);
    Ok(())
}

/// Softmax (or log-softmax) over the contiguous last axis, one row per task.
pub fn softmax_rows(x: &View<'_, f32>, log: bool, out: &mut ViewMut<'_, f32>) -> R<()> {
    let n = x.shape.last().copied().unwrap_or(1).max(1);
    let row = |(dst, src): (&mut [f32], &[f32])| {
        let m = max(src);
        let s: f32 = src.iter().map(|&x| (x - m).exp()).sum();
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = if log { x - m - s.ln() } else { (x - m).exp() / s };
        }
    };
    chunks_par(out.floats()?, x.floats()?, n, row);
    Ok(())
}

/// Rows of GAM processed together (their memory scores go through one GEMM).
const GAM_ROWS: usize = 64;

/// The GAM mixer: per position the causal depthwise convolution, the memory
/// read `softmax(x · memoryᵀ) · memory`, and the sigmoid gates, in one pass.
pub fn gam(args: &[View<'_, f32>], out: &mut ViewMut<'_, f32>) -> R<()> {
    let f = |i: usize| args[i].floats();
    let (x, cw, cb, mem, gl) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
    let [_, t, d] = args[0].shape[..] else { return Err("gam needs x [B,T,d]".into()) };
    let (k, slots) = (args[1].shape[2], args[3].shape[0]);
    out.floats()?.par_chunks_mut(GAM_ROWS * d.max(1)).enumerate().for_each(|(chunk, yc)| {
        let rows = yc.len() / d.max(1);
        let row0 = chunk * GAM_ROWS;
        let xc = &x[row0 * d..(row0 + rows) * d];
        let mut p = vec![0f32; rows * slots];
        let mut glob = vec![0f32; rows * d];
        gemm(rows, d, slots, xc, (d, 1), mem, (1, d), &mut p);
        for pr in p.chunks_mut(slots.max(1)) {
            let m = max(pr);
            let mut s = 0.0;
            for v in pr.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            pr.iter_mut().for_each(|v| *v /= s);
        }
        gemm(rows, slots, d, &p, (slots, 1), mem, (d, 1), &mut glob);
        for r in 0..rows {
            let row = row0 + r;
            let ti = row % t;
            let gates = &gl[row * 2 * d..(row + 1) * 2 * d];
            for c in 0..d {
                let mut local = cb[c];
                for ki in 0..k {
                    // Output t reads inputs t−(k−1)..=t (left zero padding k−1).
                    if let Some(src) = (ti + ki).checked_sub(k - 1) {
                        local += cw[c * k + ki] * x[(row - ti + src) * d + c];
                    }
                }
                yc[r * d + c] = sigmoid(gates[c]) * local + sigmoid(gates[d + c]) * glob[r * d + c];
            }
        }
    });
    Ok(())
}
