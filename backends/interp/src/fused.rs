//! Kernels of the fused ops the rewrite passes make (besides attention, which
//! lives with the other kernels): softmax + cross-entropy with its gradient,
//! the multi-parameter AdamW update, ternary packing and matmul, GAM, and the
//! causal convolution's backward.
//! Each computes the same function as the primitive chain it replaces; the
//! saturation tests run both and compare.

use crate::kernels::{floats, matmul, taps_by_tap};
use crate::math::{round_half_even, sigmoid, Real};
use crate::ternary::TernaryPlanes;
use crate::value::{Buffer, Value};
use lsc_ir::DType;
use rayon::prelude::*;

type R<T> = Result<T, String>;

fn scalar<T: Real>(v: &Value<T>) -> R<T> {
    floats(v)?.first().copied().ok_or_else(|| "expected a scalar".to_string())
}

/// A float value of the concrete output type `(dtype, shape)`.
pub(crate) fn value<T: Real>((dtype, shape): &(DType, Vec<usize>), data: Vec<T>) -> Value<T> {
    Value { dtype: *dtype, shape: shape.clone(), data: Buffer::Float(data) }
}

/// `(logits, targets, d_loss) → (loss, d_logits)`: one pass per row computes
/// the log-sum-exp, the loss and `d_loss · (softmax − one_hot)`.
pub fn softmax_cross_entropy<T: Real>(args: &[&Value<T>], out: &[(DType, Vec<usize>)]) -> R<Vec<Value<T>>> {
    let (logits, d_loss) = (floats(args[0])?, floats(args[2])?);
    let targets = args[1].as_ints().ok_or("softmax_cross_entropy targets must be integers")?;
    let v = *args[0].shape.last().unwrap_or(&0);
    if let Some(&bad) = targets.iter().find(|&&t| usize::try_from(t).map_or(true, |t| t >= v)) {
        return Err(format!("softmax_cross_entropy target {bad} is out of range 0..{v}"));
    }
    let mut loss = vec![T::default(); targets.len()];
    let mut grad = vec![T::default(); logits.len()];
    grad.par_chunks_mut(v.max(1)).zip(loss.par_iter_mut()).enumerate().for_each(|(row, (g, l_out))| {
        let l = &logits[row * v..(row + 1) * v];
        let m = l.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), |a, b| if b > a { b } else { a });
        let mut s = T::default();
        for (gi, &x) in g.iter_mut().zip(l) {
            *gi = (x - m).exp();
            s = s + *gi;
        }
        let tgt = targets[row] as usize;
        *l_out = m + s.ln() - l[tgt];
        let scale = d_loss[row] / s;
        for gi in g.iter_mut() {
            *gi = *gi * scale;
        }
        g[tgt] = g[tgt] - d_loss[row];
    });
    Ok(vec![value(&out[0], loss), value(&out[1], grad)])
}

/// The AdamW hyper-parameters of one fused update.
pub struct AdamW<'a> {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Whether each parameter is decayed.
    pub decay: &'a [bool],
}

/// One AdamW step of every parameter: `(lr, bc1, bc2, grad_scale, (w, g, m, v)…)
/// → (w', m', v')…`, in the order of the unfused spelling's arithmetic.
pub fn adamw<T: Real>(args: &[&Value<T>], h: &AdamW, out: &[(DType, Vec<usize>)]) -> R<Vec<Value<T>>> {
    let [lr, bc1, bc2, gs] = [scalar(args[0])?, scalar(args[1])?, scalar(args[2])?, scalar(args[3])?];
    let c = |x: f64| T::from_f64(x);
    let (b1, b2, one_b1, one_b2, eps, wd) =
        (c(h.beta1), c(h.beta2), c(1.0 - h.beta1), c(1.0 - h.beta2), c(h.eps), c(h.weight_decay));
    let mut res = Vec::with_capacity(out.len());
    for (i, group) in args[4..].chunks(4).enumerate() {
        let (w, g, m, v) = (floats(group[0])?, floats(group[1])?, floats(group[2])?, floats(group[3])?);
        let decay = h.decay.get(i).copied().unwrap_or(false) && h.weight_decay != 0.0;
        let n = w.len();
        let (mut w2, mut m2, mut v2) = (vec![T::default(); n], vec![T::default(); n], vec![T::default(); n]);
        w2.par_iter_mut().zip(m2.par_iter_mut()).zip(v2.par_iter_mut()).enumerate().for_each(|(j, ((wo, mo), vo))| {
            let gj = g[j] * gs;
            *mo = m[j] * b1 + gj * one_b1;
            *vo = v[j] * b2 + gj * gj * one_b2;
            let mut step = (*mo / bc1) / ((*vo / bc2).sqrt() + eps);
            if decay {
                step = step + w[j] * wd;
            }
            *wo = w[j] - step * lr;
        });
        let k = 3 * i;
        res.extend([value(&out[k], w2), value(&out[k + 1], m2), value(&out[k + 2], v2)]);
    }
    Ok(res)
}

/// `clamp(round(w / s), −1, 1)` (the values of a packed ternary matrix).
pub fn ternary_pack<T: Real>(args: &[&Value<T>], out: &[(DType, Vec<usize>)]) -> R<Vec<Value<T>>> {
    let (w, s) = (floats(args[0])?, scalar(args[1])?);
    let t: Vec<T> = w.iter().map(|&x| T::from_f64(round_half_even((x / s).to_f64()).clamp(-1.0, 1.0))).collect();
    let (dtype, shape) = &out[0];
    let &[rows, cols] = &shape[..] else { return Ok(vec![value(&out[0], t)]) };
    let planes = TernaryPlanes::pack(&t, rows, cols)?;
    Ok(vec![Value { dtype: *dtype, shape: shape.clone(), data: Buffer::Ternary(planes) }])
}

/// Rows of `x` up to which the packed add/subtract kernel beats unpacking the
/// weights for the GEMM library (`lsc bench --kernels` times M = 1 and 256).
const PACKED_MAX_ROWS: usize = 64;

/// `(x · w) · s` for ternary `w`. Packed weights (`ternary_pack`'s 2-bit
/// planes) stored `[N, K]` (`trans_b`) are read with adds and subtracts only
/// for up to [`PACKED_MAX_ROWS`] rows of `x`; larger products unpack blocks of
/// weight rows for the GEMM library, and ternary values held as floats go
/// through the GEMM directly.
pub fn ternary_matmul<T: Real>(args: &[&Value<T>], trans_b: bool, out: &[(DType, Vec<usize>)]) -> R<Vec<Value<T>>> {
    let s = scalar(args[2])?;
    let (x, w) = (args[0], args[1]);
    let k = *x.shape.last().ok_or("ternary_matmul needs x [..., K]")?;
    let rows = x.numel().checked_div(k).unwrap_or(0);
    let y = match &w.data {
        Buffer::Ternary(p) if trans_b && rows <= PACKED_MAX_ROWS && p.cols == k => p.matmul_t(floats(x)?, rows)?,
        Buffer::Ternary(p) if trans_b && p.cols == k => unpacked_matmul_t(floats(x)?, rows, p),
        Buffer::Ternary(p) => {
            let dense = Value { dtype: w.dtype, shape: w.shape.clone(), data: Buffer::Float(p.unpack()) };
            matmul(x, &dense, false, trans_b, &out[0].1)?
        }
        _ => matmul(x, w, false, trans_b, &out[0].1)?,
    };
    Ok(vec![value(&out[0], y.into_iter().map(|v| v * s).collect())])
}

/// Weight rows unpacked at a time for [`unpacked_matmul_t`] (a 4 MiB block at K = 1024).
const UNPACKED_ROWS: usize = 1024;

/// `x [m, K] · wᵀ` for packed `w [N, K]` and many rows of `x`: blocks of
/// weight rows are unpacked into one reused buffer and multiplied by the GEMM
/// library, so no dense copy of the whole matrix is made.
fn unpacked_matmul_t<T: Real>(x: &[T], m: usize, w: &TernaryPlanes) -> Vec<T> {
    let (n, k) = (w.rows, w.cols);
    let mut y = vec![T::default(); m * n];
    let mut block = vec![T::default(); UNPACKED_ROWS.min(n) * k];
    for n0 in (0..n).step_by(UNPACKED_ROWS) {
        let nb = UNPACKED_ROWS.min(n - n0);
        block[..nb * k].par_chunks_mut(k.max(1)).enumerate().for_each(|(i, row)| w.unpack_row(n0 + i, row));
        // SAFETY: x is m×k, block holds nb rows of k (read transposed: k×nb), and
        // y's columns n0..n0+nb of m rows of n are in bounds.
        unsafe {
            T::gemm(
                m,
                k,
                nb,
                x.as_ptr(),
                k as isize,
                1,
                block.as_ptr(),
                1,
                k as isize,
                y.as_mut_ptr().add(n0),
                n as isize,
                1,
            );
        }
    }
    y
}

/// Rows of GAM processed together (their memory scores go through one GEMM).
const GAM_ROWS: usize = 64;

/// The GAM mixer: per position, the causal depthwise convolution, the memory
/// read `softmax(x · memoryᵀ) · memory`, and the sigmoid gates, in one pass.
pub fn gam<T: Real>(args: &[&Value<T>], out: &[(DType, Vec<usize>)]) -> R<Vec<Value<T>>> {
    let (x, cw, cb, mem, gl) =
        (floats(args[0])?, floats(args[1])?, floats(args[2])?, floats(args[3])?, floats(args[4])?);
    let [_, t, d] = args[0].shape[..] else { return Err("gam needs x [B,T,d]".into()) };
    let (k, slots) = (args[1].shape[2], args[3].shape[0]);
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(GAM_ROWS * d.max(1)).enumerate().for_each(|(chunk, yc)| {
        let rows = yc.len() / d.max(1);
        let row0 = chunk * GAM_ROWS;
        let xc = &x[row0 * d..(row0 + rows) * d];
        let mut p = vec![T::default(); rows * slots];
        let mut glob = vec![T::default(); rows * d];
        // SAFETY: xc is rows×d, mem is slots×d (read transposed), p is rows×slots, glob rows×d.
        unsafe {
            T::gemm(
                rows,
                d,
                slots,
                xc.as_ptr(),
                d as isize,
                1,
                mem.as_ptr(),
                1,
                d as isize,
                p.as_mut_ptr(),
                slots as isize,
                1,
            );
        }
        for pr in p.chunks_mut(slots.max(1)) {
            let m = pr.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), |a, b| if b > a { b } else { a });
            let mut s = T::default();
            for v in pr.iter_mut() {
                *v = (*v - m).exp();
                s = s + *v;
            }
            for v in pr.iter_mut() {
                *v = *v / s;
            }
        }
        // SAFETY: p is rows×slots, mem slots×d, glob rows×d.
        unsafe {
            T::gemm(
                rows,
                slots,
                d,
                p.as_ptr(),
                slots as isize,
                1,
                mem.as_ptr(),
                d as isize,
                1,
                glob.as_mut_ptr(),
                d as isize,
                1,
            );
        }
        for r in 0..rows {
            let row = row0 + r;
            let ti = row % t;
            let gates = &gl[row * 2 * d..(row + 1) * 2 * d];
            for c in 0..d {
                let mut local = cb[c];
                for ki in 0..k {
                    // Output t reads inputs t−(k−1)..=t (left zero padding k−1).
                    if let Some(src) = (ti + ki).checked_sub(k - 1) {
                        local = local + cw[c * k + ki] * x[(row - ti + src) * d + c];
                    }
                }
                yc[r * d + c] = sigmoid(gates[c]) * local + sigmoid(gates[d + c]) * glob[r * d + c];
            }
        }
    });
    Ok(vec![value(&out[0], y)])
}

/// `(x [B, T, C], w [C, 1, K], d_y [B, T, C]) → (d_x, d_w)` of `y[t] = Σ_j w[j]·x[t − (K−1) + j]`
/// per channel: `d_x[s] = Σ_j w[j]·d_y[s + (K−1) − j]` and `d_w[j] = Σ_{b,t} d_y[t]·x[t − (K−1) + j]`.
/// One pass per sequence (in parallel), each with its own `d_w` partial.
pub fn causal_conv1d_grad<T: Real>(args: &[&Value<T>], out: &[(DType, Vec<usize>)]) -> R<Vec<Value<T>>> {
    let (x, w, g) = (floats(args[0])?, floats(args[1])?, floats(args[2])?);
    let (t, c) = (args[0].shape[1], args[0].shape[2]);
    let k = args[1].shape[2];
    let taps = taps_by_tap(w, c, k);
    let mut dx = vec![T::default(); x.len()];
    let sequence = |(dx, (x, g)): (&mut [T], (&[T], &[T]))| -> Vec<T> {
        let mut dw = vec![T::default(); k * c];
        for ti in 0..t {
            for j in 0..k {
                let tap = &taps[j * c..(j + 1) * c];
                // y[ti + (K−1) − j] read x[ti] through tap j.
                let src = ti + k - 1 - j;
                if src < t {
                    let (dxr, gr) = (&mut dx[ti * c..(ti + 1) * c], &g[src * c..(src + 1) * c]);
                    for ((d, &wv), &gv) in dxr.iter_mut().zip(tap).zip(gr) {
                        *d = *d + wv * gv;
                    }
                }
                // y[ti] read x[ti − (K−1) + j] through tap j.
                if let Some(src) = (ti + j).checked_sub(k - 1) {
                    let (acc, gr, xr) =
                        (&mut dw[j * c..(j + 1) * c], &g[ti * c..(ti + 1) * c], &x[src * c..(src + 1) * c]);
                    for ((a, &gv), &xv) in acc.iter_mut().zip(gr).zip(xr) {
                        *a = *a + gv * xv;
                    }
                }
            }
        }
        dw
    };
    let per_seq = (t * c).max(1);
    let partials: Vec<Vec<T>> =
        dx.par_chunks_mut(per_seq).zip(x.par_chunks(per_seq).zip(g.par_chunks(per_seq))).map(sequence).collect();
    let mut dw = vec![T::default(); k * c];
    for p in &partials {
        for ci in 0..c {
            for j in 0..k {
                dw[ci * k + j] = dw[ci * k + j] + p[j * c + ci];
            }
        }
    }
    Ok(vec![value(&out[0], dx), value(&out[1], dw)])
}
