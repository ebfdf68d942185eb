//! Post-training quantisation of linear weights: round-to-nearest and GPTQ
//! (Frantar et al., 2023). GPTQ quantises a weight `W [out, in]` one input
//! column at a time and spreads each column's rounding error over the columns
//! not yet quantised, weighted by the inverse Hessian `H = Σ x xᵀ` of the
//! layer's calibration inputs, so that `‖X Wᵀ − X Ŵᵀ‖` stays small rather than
//! `‖W − Ŵ‖`. Both produce the symmetric group-wise format of
//! [`crate::quant::PackedGroupwise`]: one scale per row and group of `group`
//! consecutive input features, codes in `[−(2^(b−1)−1), 2^(b−1)−1]`.

use crate::quant::PackedGroupwise;

/// The Gram matrix `Σ x xᵀ` of a layer's inputs, accumulated over batches.
#[derive(Clone, Debug)]
pub struct Hessian {
    /// Input features.
    pub n: usize,
    /// Row-major `[n, n]`.
    pub h: Vec<f64>,
    /// Rows (tokens) accumulated.
    pub rows: usize,
}

impl Hessian {
    /// An empty accumulator for `n` input features.
    pub fn new(n: usize) -> Hessian {
        Hessian { n, h: vec![0.0; n * n], rows: 0 }
    }

    /// Adds another accumulator's rows (a weight read in several places sees all of them).
    pub fn merge(&mut self, other: &Hessian) {
        self.h.iter_mut().zip(&other.h).for_each(|(a, b)| *a += b);
        self.rows += other.rows;
    }

    /// Adds the rows of `x` (`[rows, n]`, row-major).
    pub fn add(&mut self, x: &[f32]) {
        let n = self.n;
        for row in x.chunks_exact(n) {
            for i in 0..n {
                let xi = row[i] as f64;
                if xi == 0.0 {
                    continue;
                }
                let hi = &mut self.h[i * n..(i + 1) * n];
                for (h, &xj) in hi.iter_mut().zip(row) {
                    *h += xi * xj as f64;
                }
            }
            self.rows += 1;
        }
    }
}

/// The largest code of `bits`-bit symmetric quantisation.
fn qmax(bits: u32) -> f64 {
    ((1u32 << (bits - 1)) - 1) as f64
}

fn check(shape: &[usize], bits: u32, group: usize) -> Result<(usize, usize), String> {
    let &[out, inp] = shape else { return Err(format!("quantisation needs a matrix, got shape {shape:?}")) };
    if !(2..=8).contains(&bits) {
        return Err(format!("{bits} bits: use 2 to 8"));
    }
    if group == 0 || !inp.is_multiple_of(group) {
        return Err(format!("a group of {group} does not divide the {inp} input features"));
    }
    Ok((out, inp))
}

/// Packs codes and scales (one per row and group) into the group-wise format.
fn pack(codes: &[i32], scales: Vec<f32>, shape: &[usize], bits: u32, group: usize) -> PackedGroupwise {
    let q = qmax(bits) as i32;
    let mut bytes = vec![0u8; (codes.len() * bits as usize).div_ceil(8)];
    for (i, &c) in codes.iter().enumerate() {
        let v = (c + q) as u32;
        for b in 0..bits as usize {
            if (v >> b) & 1 == 1 {
                let at = i * bits as usize + b;
                bytes[at / 8] |= 1 << (at % 8);
            }
        }
    }
    PackedGroupwise { bits, group, shape: shape.to_vec(), scales, codes: bytes }
}

/// Round-to-nearest: each group's scale from its largest magnitude.
pub fn rtn(w: &[f32], shape: &[usize], bits: u32, group: usize) -> Result<PackedGroupwise, String> {
    check(shape, bits, group)?;
    crate::quant::quantize_groupwise(w, shape, bits, group)
}

/// GPTQ of `w [out, in]` under the inputs' Hessian `h`, with `damp` × the mean
/// diagonal added to it (1% in the paper). A group's scale is taken from the
/// error-compensated weights when its first column is reached.
pub fn gptq(
    w: &[f32],
    shape: &[usize],
    h: &Hessian,
    bits: u32,
    group: usize,
    damp: f64,
) -> Result<PackedGroupwise, String> {
    let (out, n) = check(shape, bits, group)?;
    if h.n != n || w.len() != out * n {
        return Err(format!("a Hessian of {} features for a weight of shape {shape:?}", h.n));
    }
    let mut hm = h.h.clone();
    let mut wm: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    // Inputs that never fire carry no information: their weights go to zero.
    for i in 0..n {
        if hm[i * n + i] == 0.0 {
            hm[i * n + i] = 1.0;
            for r in 0..out {
                wm[r * n + i] = 0.0;
            }
        }
    }
    let mean_diag = (0..n).map(|i| hm[i * n + i]).sum::<f64>() / n as f64;
    for i in 0..n {
        hm[i * n + i] += damp * mean_diag;
    }
    // U: the upper Cholesky factor of H⁻¹ (H⁻¹ = Uᵀ U), whose rows drive the updates.
    let hinv = inverse_spd(&hm, n)?;
    let u = upper_cholesky(&hinv, n)?;
    let q = qmax(bits);
    let mut codes = vec![0i32; out * n];
    let mut scales = vec![0f32; out * (n / group)];
    for i in 0..n {
        if i % group == 0 {
            for r in 0..out {
                let amax = wm[r * n + i..r * n + i + group].iter().fold(0.0f64, |m, x| m.max(x.abs()));
                scales[r * (n / group) + i / group] = ((amax / q) as f32).max(1e-12);
            }
        }
        let d = u[i * n + i];
        for r in 0..out {
            let s = scales[r * (n / group) + i / group] as f64;
            let x = wm[r * n + i];
            let c = (x / s).round_ties_even().clamp(-q, q);
            codes[r * n + i] = c as i32;
            let err = (x - c * s) / d;
            let row = &mut wm[r * n..(r + 1) * n];
            for j in i + 1..n {
                row[j] -= err * u[i * n + j];
            }
        }
    }
    Ok(pack(&codes, scales, shape, bits, group))
}

/// Lower Cholesky factor `L` of a symmetric positive definite `a` (`a = L Lᵀ`).
fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>, String> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return Err(format!("the Hessian is not positive definite (pivot {i}); raise the damping"));
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// The inverse of a symmetric positive definite matrix through its Cholesky factor.
fn inverse_spd(a: &[f64], n: usize) -> Result<Vec<f64>, String> {
    let l = cholesky(a, n)?;
    // L⁻¹ by forward substitution, then A⁻¹ = L⁻ᵀ L⁻¹.
    let mut li = vec![0.0; n * n];
    for c in 0..n {
        for i in c..n {
            let s: f64 = (c..i).map(|k| l[i * n + k] * li[k * n + c]).sum();
            li[i * n + c] = (if i == c { 1.0 } else { 0.0 } - s) / l[i * n + i];
        }
    }
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i..n).map(|k| li[k * n + i] * li[k * n + j]).sum();
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    Ok(inv)
}

/// Upper Cholesky factor `U` of `a` (`a = Uᵀ U`): the transpose of the lower one.
fn upper_cholesky(a: &[f64], n: usize) -> Result<Vec<f64>, String> {
    let l = cholesky(a, n)?;
    Ok((0..n * n).map(|k| l[(k % n) * n + k / n]).collect())
}

/// `‖X Wᵀ − X Ŵᵀ‖²` through the Hessian: `Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r)`.
pub fn output_error(w: &[f32], what: &[f32], h: &Hessian) -> f64 {
    let n = h.n;
    w.chunks(n)
        .zip(what.chunks(n))
        .map(|(a, b)| {
            let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (*x - *y) as f64).collect();
            (0..n).map(|i| d[i] * (0..n).map(|j| h.h[i * n + j] * d[j]).sum::<f64>()).sum::<f64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::Rng;
    use crate::quant::dequantize_groupwise;

    /// Correlated inputs (a random mixing of a few factors), as a layer sees.
    fn inputs(rows: usize, n: usize, rng: &mut Rng) -> Vec<f32> {
        let factors = 4;
        let mix: Vec<f64> = (0..factors * n).map(|_| rng.normal()).collect();
        let mut x = Vec::with_capacity(rows * n);
        for _ in 0..rows {
            let z: Vec<f64> = (0..factors).map(|_| rng.normal()).collect();
            for j in 0..n {
                let signal: f64 = (0..factors).map(|f| z[f] * mix[f * n + j]).sum();
                x.push((signal + 0.1 * rng.normal()) as f32);
            }
        }
        x
    }

    #[test]
    fn the_inverse_and_the_factors_are_exact() {
        let mut rng = Rng::new(3);
        let n = 6;
        let x = inputs(50, n, &mut rng);
        let mut h = Hessian::new(n);
        h.add(&x);
        let inv = inverse_spd(&h.h, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let p: f64 = (0..n).map(|k| h.h[i * n + k] * inv[k * n + j]).sum();
                assert!((p - if i == j { 1.0 } else { 0.0 }).abs() < 1e-8, "({i},{j}) {p}");
            }
        }
        let u = upper_cholesky(&inv, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let p: f64 = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
                assert!((p - inv[i * n + j]).abs() < 1e-8);
                if j < i {
                    assert_eq!(u[i * n + j], 0.0, "upper triangular");
                }
            }
        }
    }

    #[test]
    fn gptq_beats_round_to_nearest_on_the_layer_output() {
        let mut rng = Rng::new(11);
        let (out, n, group) = (16, 64, 32);
        let x = inputs(512, n, &mut rng);
        let mut h = Hessian::new(n);
        h.add(&x);
        assert_eq!(h.rows, 512);
        let w: Vec<f32> = (0..out * n).map(|_| (0.1 * rng.normal()) as f32).collect();
        for bits in [3, 4, 8] {
            let r = dequantize_groupwise(&rtn(&w, &[out, n], bits, group).unwrap()).unwrap();
            let g = dequantize_groupwise(&gptq(&w, &[out, n], &h, bits, group, 0.01).unwrap()).unwrap();
            let (er, eg) = (output_error(&w, &r, &h), output_error(&w, &g, &h));
            assert!(eg < er, "{bits} bits: GPTQ {eg:.4e} vs RTN {er:.4e}");
            if bits < 8 {
                assert!(eg < 0.7 * er, "{bits} bits: GPTQ {eg:.4e} should clearly beat RTN {er:.4e}");
            }
        }
    }

    #[test]
    fn gptq_weights_lie_on_their_groups_grid_and_unused_inputs_are_zeroed() {
        let mut rng = Rng::new(5);
        let (out, n, group) = (4, 8, 4);
        let mut x = inputs(64, n, &mut rng);
        for row in x.chunks_mut(n) {
            row[3] = 0.0; // input 3 never fires
        }
        let mut h = Hessian::new(n);
        h.add(&x);
        let w: Vec<f32> = (0..out * n).map(|_| rng.normal() as f32).collect();
        let p = gptq(&w, &[out, n], &h, 4, group, 0.01).unwrap();
        let v = dequantize_groupwise(&p).unwrap();
        for (k, &y) in v.iter().enumerate() {
            let s = p.scales[k / group];
            let c = y / s;
            assert!((c - c.round()).abs() < 1e-4 && c.abs() <= 7.0 + 1e-4, "{y} is not on the grid of {s}");
        }
        assert!((0..out).all(|r| v[r * n + 3] == 0.0));
        assert!(gptq(&w, &[out, n], &h, 9, group, 0.01).is_err());
        assert!(gptq(&w, &[out, n], &h, 4, 3, 0.01).is_err());
    }
}
