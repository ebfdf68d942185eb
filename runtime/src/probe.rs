//! Linear probes of frozen features: multinomial logistic regression on
//! standardised features, trained full-batch with Adam and an L2 penalty,
//! scored by held-out accuracy. Deterministic (zero initialisation).

use lsc_cpu::matmul::gemm_slices;

/// A probe's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeConfig {
    /// Full-batch Adam steps.
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// The L2 penalty `λ/2·‖W‖²` (the bias is not penalised).
    pub l2: f64,
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig { steps: 300, lr: 0.01, l2: 1e-3 }
    }
}

/// Rows of `dim` features with a class label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    /// Row-major `rows × dim`.
    pub features: Vec<f32>,
    /// One class per row, below `classes`.
    pub labels: Vec<usize>,
    /// Features per row.
    pub dim: usize,
}

impl Labelled {
    fn rows(&self) -> usize {
        self.labels.len()
    }
}

/// Trains a probe on `train` and returns its accuracy on `test`.
pub fn accuracy(train: &Labelled, test: &Labelled, classes: usize, cfg: ProbeConfig) -> Result<f64, String> {
    let d = train.dim;
    for (what, set) in [("train", train), ("test", test)] {
        if set.dim != d || set.features.len() != set.rows() * d || set.rows() == 0 {
            return Err(format!("the probe's {what} set is not {} × {d} features with a label each", set.rows()));
        }
        if let Some(bad) = set.labels.iter().find(|&&c| c >= classes) {
            return Err(format!("the probe's {what} set has label {bad} of {classes} classes"));
        }
    }
    // Standardise with the training set's statistics.
    let n = train.rows();
    let mut mean = vec![0.0f64; d];
    let mut var = vec![0.0f64; d];
    for row in train.features.chunks(d) {
        row.iter().zip(&mut mean).for_each(|(x, m)| *m += *x as f64 / n as f64);
    }
    for row in train.features.chunks(d) {
        row.iter().zip(&mean).zip(&mut var).for_each(|((x, m), v)| *v += (*x as f64 - m).powi(2) / n as f64);
    }
    let scale: Vec<f64> = var.iter().map(|v| 1.0 / (v.sqrt() + 1e-6)).collect();
    let standardise = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| row.iter().enumerate().map(|(j, v)| ((*v as f64 - mean[j]) * scale[j]) as f32))
            .collect()
    };
    let (xs, xt) = (standardise(&train.features), standardise(&test.features));

    let c = classes;
    let (mut w, mut bias) = (vec![0.0f32; d * c], vec![0.0f32; c]);
    let (mut m, mut v) = (vec![0.0f64; d * c + c], vec![0.0f64; d * c + c]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut logits = vec![0.0f32; n * c];
    let mut grad_w = vec![0.0f32; d * c];
    for step in 1..=cfg.steps {
        gemm_slices(n, d, c, &xs, (d, 1), &w, (c, 1), &mut logits);
        // dL/dlogits = (softmax − onehot) / n, in place.
        let mut grad_b = vec![0.0f64; c];
        for (row, &y) in logits.chunks_mut(c).zip(&train.labels) {
            let top = row.iter().zip(&bias).map(|(z, b)| z + b).fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = row.iter().zip(&bias).map(|(z, b)| ((z + b - top) as f64).exp()).collect();
            let total: f64 = e.iter().sum();
            for (j, (q, e)) in row.iter_mut().zip(&e).enumerate() {
                let g = (e / total - f64::from(u8::from(j == y))) / n as f64;
                *q = g as f32;
                grad_b[j] += g;
            }
        }
        // dW = Xᵀ · dlogits.
        gemm_slices(d, n, c, &xs, (1, d), &logits, (c, 1), &mut grad_w);
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        let grads = grad_w.iter().map(|g| *g as f64).chain(grad_b.iter().copied());
        for (((p, g), m), v) in w.iter_mut().chain(bias.iter_mut()).zip(grads).zip(&mut m).zip(&mut v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= (cfg.lr * (*m / bc1) / ((*v / bc2).sqrt() + eps)) as f32;
        }
        // The L2 penalty as decoupled decay (Adam's step would rescale it).
        w.iter_mut().for_each(|x| *x *= (1.0 - cfg.lr * cfg.l2) as f32);
    }
    let rows = test.rows();
    let mut out = vec![0.0f32; rows * c];
    gemm_slices(rows, d, c, &xt, (d, 1), &w, (c, 1), &mut out);
    let correct = out
        .chunks(c)
        .zip(&test.labels)
        .filter(|(row, &y)| {
            let best = (0..c).max_by(|&a, &b| (row[a] + bias[a]).total_cmp(&(row[b] + bias[b]))).unwrap_or(0);
            best == y
        })
        .count();
    Ok(correct as f64 / rows as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::Rng;

    /// Classes separated along one feature, among noise features: the probe
    /// finds them; labels independent of the features give chance accuracy.
    #[test]
    fn a_probe_reads_linearly_separable_classes_and_not_noise() {
        let mut rng = Rng::new(1);
        let mut set = |rows: usize, informative: bool| {
            let mut features = Vec::new();
            let mut labels = Vec::new();
            for _ in 0..rows {
                let y = (rng.next_u64() % 3) as usize;
                for j in 0..8 {
                    let signal = if informative && j == 2 { 3.0 * y as f64 } else { 0.0 };
                    features.push((signal + 0.3 * rng.normal()) as f32);
                }
                labels.push(y);
            }
            Labelled { features, labels, dim: 8 }
        };
        let (train, test) = (set(300, true), set(300, true));
        assert!(accuracy(&train, &test, 3, ProbeConfig::default()).unwrap() > 0.95);
        let (train, test) = (set(300, false), set(300, false));
        assert!(accuracy(&train, &test, 3, ProbeConfig::default()).unwrap() < 0.45);
        let bad = Labelled { features: vec![0.0; 8], labels: vec![5], dim: 8 };
        assert!(accuracy(&bad, &test, 3, ProbeConfig::default()).unwrap_err().contains("label 5"));
    }
}
