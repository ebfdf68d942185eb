//! Causal attention with a window per head (LS-attention), forward and
//! backward, one query row at a time in f64: the probabilities of row `i`
//! over its visible keys `first_key(i, w)..=i` are computed from scratch,
//! and the backward recomputes them.

use super::R;
use crate::math::Real;
use crate::value::{View, ViewMut};

/// The first key query `i` of a head with window `w` sees (`w = 0`: global).
pub fn first_key(i: usize, w: usize) -> usize {
    if w == 0 {
        0
    } else {
        (i + 1).saturating_sub(w)
    }
}

/// `[B, H, T, D]` of the first operand.
fn dims<T: Real>(args: &[View<'_, T>], what: &str) -> R<[usize; 4]> {
    match args[0].shape[..] {
        [b, h, t, d] => Ok([b, h, t, d]),
        _ => Err(format!("{what} needs [B,H,T,D] operands")),
    }
}

/// One head's rows: `q, k, v` (and more) of `(batch, head)` number `bh`.
fn head<T: Real>(x: &[T], bh: usize, t: usize, d: usize) -> &[T] {
    &x[bh * t * d..(bh + 1) * t * d]
}

/// Row `i`'s probabilities over keys `lo..=i` and its largest scaled logit.
fn probabilities<T: Real>(q: &[T], k: &[T], d: usize, i: usize, lo: usize, scale: f64) -> (Vec<f64>, f64) {
    let qi = &q[i * d..(i + 1) * d];
    let logits: Vec<f64> = (lo..=i)
        .map(|j| scale * qi.iter().zip(&k[j * d..(j + 1) * d]).map(|(a, b)| a.to_f64() * b.to_f64()).sum::<f64>())
        .collect();
    // NaN wins the max, so it reaches every probability of the row.
    let m = logits.iter().fold(f64::NEG_INFINITY, |m, &x| if x > m || x.is_nan() { x } else { m });
    let e: Vec<f64> = logits.iter().map(|&x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    (e.into_iter().map(|x| x / s).collect(), m)
}

/// `(q, k, v) → (out, row_max)`: head `h` sees keys `i − w_h < j ≤ i`.
pub fn forward<T: Real>(args: &[View<'_, T>], windows: &[usize], scale: f64, outs: &mut [ViewMut<'_, T>]) -> R<()> {
    let [b, h, t, d] = dims(args, "ls_attention")?;
    let (q, k, v) = (args[0].floats()?, args[1].floats()?, args[2].floats()?);
    let (o, m) = outs.split_at_mut(1);
    let (o, row_max) = (o[0].floats()?, m[0].floats()?);
    for bh in 0..b * h {
        let w = windows[bh % h];
        let (q, k, v) = (head(q, bh, t, d), head(k, bh, t, d), head(v, bh, t, d));
        for i in 0..t {
            let lo = first_key(i, w);
            let (p, mx) = probabilities(q, k, d, i, lo, scale);
            row_max[bh * t + i] = T::from_f64(mx);
            let out = &mut o[(bh * t + i) * d..(bh * t + i + 1) * d];
            for (c, o) in out.iter_mut().enumerate() {
                *o = T::from_f64(p.iter().enumerate().map(|(a, &pj)| pj * v[(lo + a) * d + c].to_f64()).sum());
            }
        }
    }
    Ok(())
}

/// `(q, k, v, out, d_out) → (d_q, d_k, d_v)`, recomputing the probabilities:
/// `dS = P ⊙ (d_out · vᵀ − rowsum(d_out ⊙ out))`, `d_q = scale · dS · k`,
/// `d_k = scale · dSᵀ · q`, `d_v = Pᵀ · d_out`.
pub fn backward<T: Real>(args: &[View<'_, T>], windows: &[usize], scale: f64, outs: &mut [ViewMut<'_, T>]) -> R<()> {
    let [b, h, t, d] = dims(args, "ls_attention_grad")?;
    let f = |i: usize| args[i].floats();
    let (q, k, v, o, g) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?);
    let (mut dq, mut dk, mut dv) = (vec![0.0f64; q.len()], vec![0.0f64; q.len()], vec![0.0f64; q.len()]);
    for bh in 0..b * h {
        let w = windows[bh % h];
        let base = bh * t * d;
        let (qh, kh, vh) = (head(q, bh, t, d), head(k, bh, t, d), head(v, bh, t, d));
        for i in 0..t {
            let lo = first_key(i, w);
            let (p, _) = probabilities(qh, kh, d, i, lo, scale);
            let gi = &g[base + i * d..base + (i + 1) * d];
            let oi = &o[base + i * d..base + (i + 1) * d];
            let delta: f64 = gi.iter().zip(oi).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
            for (a, &pj) in p.iter().enumerate() {
                let j = lo + a;
                let dp: f64 = gi.iter().zip(&vh[j * d..(j + 1) * d]).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
                let ds = pj * (dp - delta) * scale;
                for c in 0..d {
                    dq[base + i * d + c] += ds * kh[j * d + c].to_f64();
                    dk[base + j * d + c] += ds * qh[i * d + c].to_f64();
                    dv[base + j * d + c] += pj * gi[c].to_f64();
                }
            }
        }
    }
    for (out, acc) in outs.iter_mut().zip([dq, dk, dv]) {
        out.floats()?.iter_mut().zip(acc).for_each(|(o, a)| *o = T::from_f64(a));
    }
    Ok(())
}
