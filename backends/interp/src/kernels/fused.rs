//! The fused ops the rewrite passes make (besides attention): softmax +
//! cross-entropy with its gradient, the multi-parameter AdamW update, ternary
//! packing and matmul, GAM, and the causal convolution's backward. Each
//! computes the function of the primitive chain it replaces; the saturation
//! tests run both and compare.

use super::reduce::log_sum_exp;
use super::{check_index, R};
use crate::math::{round_half_even, Real};
use crate::value::{Data, DataMut, View, ViewMut};

/// `(logits [..., V], targets [...], d_loss [...]) → (loss, d_logits)`:
/// per row the log-sum-exp, the loss and `d_loss · (softmax − one_hot)`.
pub fn softmax_cross_entropy<T: Real>(args: &[View<'_, T>], outs: &mut [ViewMut<'_, T>]) -> R<()> {
    let (logits, d_loss) = (args[0].floats()?, args[2].floats()?);
    let targets = args[1].ints().map_err(|_| "softmax_cross_entropy targets must be integers")?;
    let v = *args[0].shape.last().unwrap_or(&0);
    let (loss, grad) = outs.split_at_mut(1);
    let (loss, grad) = (loss[0].floats()?, grad[0].floats()?);
    for (row, (&tgt, l_out)) in targets.iter().zip(loss.iter_mut()).enumerate() {
        let tgt = check_index(tgt, v, "softmax_cross_entropy (target)")?;
        let l = &logits[row * v..(row + 1) * v];
        let lse = log_sum_exp(l);
        *l_out = T::from_f64(lse - l[tgt].to_f64());
        let dl = d_loss[row].to_f64();
        for (c, (gi, &x)) in grad[row * v..(row + 1) * v].iter_mut().zip(l).enumerate() {
            let onehot = if c == tgt { 1.0 } else { 0.0 };
            *gi = T::from_f64(dl * ((x.to_f64() - lse).exp() - onehot));
        }
    }
    Ok(())
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
/// → (w', m', v')…`, in `T` and in the order of the unfused spelling's arithmetic.
pub fn adamw<T: Real>(args: &[View<'_, T>], h: &AdamW, outs: &mut [ViewMut<'_, T>]) -> R<()> {
    let [lr, bc1, bc2, gs] = [args[0].scalar()?, args[1].scalar()?, args[2].scalar()?, args[3].scalar()?];
    let c = |x: f64| T::from_f64(x);
    let (b1, b2, one_b1, one_b2, eps, wd) =
        (c(h.beta1), c(h.beta2), c(1.0 - h.beta1), c(1.0 - h.beta2), c(h.eps), c(h.weight_decay));
    for (i, (group, out)) in args[4..].chunks(4).zip(outs.chunks_mut(3)).enumerate() {
        let (w, g, m, v) = (group[0].floats()?, group[1].floats()?, group[2].floats()?, group[3].floats()?);
        let decay = h.decay.get(i).copied().unwrap_or(false) && h.weight_decay != 0.0;
        let [wo, mo, vo] = out else { return Err("adamw writes three outputs per parameter".into()) };
        let (wo, mo, vo) = (wo.floats()?, mo.floats()?, vo.floats()?);
        for j in 0..w.len() {
            let gj = g[j] * gs;
            mo[j] = m[j] * b1 + gj * one_b1;
            vo[j] = v[j] * b2 + gj * gj * one_b2;
            let mut step = (mo[j] / bc1) / ((vo[j] / bc2).sqrt() + eps);
            if decay {
                step = step + w[j] * wd;
            }
            wo[j] = w[j] - step * lr;
        }
    }
    Ok(())
}

/// `(w, s) → clamp(round(w / s), −1, 1)`, packed into bit planes.
pub fn ternary_pack<T: Real>(w: &View<'_, T>, s: &View<'_, T>, out: &mut ViewMut<'_, T>) -> R<()> {
    let (w, s) = (w.floats()?, s.scalar()?);
    let values: Vec<T> = w.iter().map(|&x| T::from_f64(round_half_even((x / s).to_f64()).clamp(-1.0, 1.0))).collect();
    match &mut out.data {
        DataMut::Ternary(p) => p.pack_from(&values),
        DataMut::Float(o) => {
            o.copy_from_slice(&values);
            Ok(())
        }
        _ => Err("ternary_pack writes a ternary tensor".into()),
    }
}

/// `(x [..., M, K], w, s) → (x · w) · s` for ternary `w` (`[N, K]` packed
/// with `trans_b`, else `[K, N]`), exactly: sums of ±x in f64.
pub fn ternary_matmul<T: Real>(
    x: &View<'_, T>,
    w: &View<'_, T>,
    s: &View<'_, T>,
    trans_b: bool,
    out: &mut ViewMut<'_, T>,
) -> R<()> {
    let (xs, scale) = (x.floats()?, s.scalar()?.to_f64());
    let k = *x.shape.last().ok_or("ternary_matmul needs x [..., K]")?;
    let (r0, r1) = (w.shape[0], w.shape[1]);
    let (n, wk) = if trans_b { (r0, r1) } else { (r1, r0) };
    if wk != k {
        return Err(format!("ternary_matmul of {:?} and {:?} has mismatched sizes", x.shape, w.shape));
    }
    // w as stored: `(row, col)` of `[r0, r1]`.
    let weight = |row: usize, col: usize| -> f64 {
        match w.data {
            Data::Ternary(p) => p.get(row, col) as f64,
            Data::Float(f) => f[row * r1 + col].to_f64(),
            _ => f64::NAN,
        }
    };
    for (row, y) in out.floats()?.chunks_mut(n.max(1)).enumerate() {
        let xr = &xs[row * k..(row + 1) * k];
        for (j, y) in y.iter_mut().enumerate() {
            let dot: f64 = xr
                .iter()
                .enumerate()
                .map(|(p, &v)| v.to_f64() * if trans_b { weight(j, p) } else { weight(p, j) })
                .sum();
            *y = T::from_f64(dot * scale);
        }
    }
    Ok(())
}

/// The GAM mixer `(x [B, T, d], conv_w [d, 1, k], conv_b [d], memory [S, d],
/// gate_logits [B, T, 2d])`: per position `σ(g_local)·(conv(x) + conv_b) +
/// σ(g_global)·softmax(x·memoryᵀ)·memory`.
pub fn gam<T: Real>(args: &[View<'_, T>], out: &mut ViewMut<'_, T>) -> R<()> {
    let f = |i: usize| args[i].floats();
    let (x, cw, cb, mem, gl) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
    let [_, t, d] = args[0].shape[..] else { return Err("gam needs x [B,T,d]".into()) };
    let (k, slots) = (args[1].shape[2], args[3].shape[0]);
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    for (row, y) in out.floats()?.chunks_mut(d.max(1)).enumerate() {
        let ti = row % t;
        let xr = &x[row * d..(row + 1) * d];
        let scores: Vec<f64> = (0..slots)
            .map(|s| xr.iter().zip(&mem[s * d..(s + 1) * d]).map(|(a, b)| a.to_f64() * b.to_f64()).sum())
            .collect();
        let m = scores.iter().fold(f64::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        let e: Vec<f64> = scores.iter().map(|&x| (x - m).exp()).collect();
        let total: f64 = e.iter().sum();
        let gates = &gl[row * 2 * d..(row + 1) * 2 * d];
        for (c, y) in y.iter_mut().enumerate() {
            let mut local = cb[c].to_f64();
            for j in 0..k {
                // Output t reads inputs t−(k−1)..=t (left zero padding k−1).
                if let Some(src) = (ti + j).checked_sub(k - 1) {
                    local += cw[c * k + j].to_f64() * x[(row - ti + src) * d + c].to_f64();
                }
            }
            let glob: f64 = e.iter().enumerate().map(|(s, &p)| p / total * mem[s * d + c].to_f64()).sum();
            *y = T::from_f64(sigmoid(gates[c].to_f64()) * local + sigmoid(gates[d + c].to_f64()) * glob);
        }
    }
    Ok(())
}

/// `(x [B, T, C], w [C, 1, K], d_y [B, T, C]) → (d_x, d_w)` of
/// `y[t] = Σ_j w[j]·x[t − (K−1) + j]` per channel.
pub fn causal_conv1d_grad<T: Real>(args: &[View<'_, T>], outs: &mut [ViewMut<'_, T>]) -> R<()> {
    let (x, w, g) = (args[0].floats()?, args[1].floats()?, args[2].floats()?);
    let (t, c) = (args[0].shape[1], args[0].shape[2]);
    let k = args[1].shape[2];
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    for (p, gy) in g.iter().enumerate() {
        let (seq, ti, ci) = (p / (t * c), (p / c) % t, p % c);
        let gy = gy.to_f64();
        for j in 0..k {
            if let Some(src) = (ti + j).checked_sub(k - 1) {
                let at = (seq * t + src) * c + ci;
                dx[at] += w[ci * k + j].to_f64() * gy;
                dw[ci * k + j] += x[at].to_f64() * gy;
            }
        }
    }
    for (out, acc) in outs.iter_mut().zip([dx, dw]) {
        out.floats()?.iter_mut().zip(acc).for_each(|(o, a)| *o = T::from_f64(a));
    }
    Ok(())
}
