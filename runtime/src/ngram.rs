//! Smoothed byte n-gram baselines: the loss a model must beat to have learned
//! more than local statistics. Each order interpolates with the one below
//! (Dirichlet smoothing with concentration 1):
//! `P_n(c | h) = (count(h, c) + P_{n−1}(c | h')) / (count(h) + 1)`, down to a
//! uniform distribution over the 256 bytes.

use std::collections::HashMap;

/// How often a context was seen, and what followed it.
type Counts = (u32, HashMap<u8, u32>);

/// Mean NLL (nats per byte) of `valid` under the `order`-gram model of `train`.
pub fn ngram_loss(train: &[u8], valid: &[u8], order: usize) -> f64 {
    let order = order.max(1);
    // counts[k][context of length k] = (total, per-next-byte counts)
    let mut counts: Vec<HashMap<&[u8], Counts>> = vec![HashMap::new(); order];
    for i in 0..train.len() {
        for (k, table) in counts.iter_mut().enumerate() {
            if i < k {
                break;
            }
            let e = table.entry(&train[i - k..i]).or_insert_with(|| (0, HashMap::new()));
            e.0 += 1;
            *e.1.entry(train[i]).or_insert(0) += 1;
        }
    }
    let mut total = 0.0;
    for i in 0..valid.len() {
        let mut p = 1.0 / 256.0;
        for (k, table) in counts.iter().enumerate() {
            if i < k {
                break;
            }
            if let Some((n, next)) = table.get(&valid[i - k..i]) {
                let c = *next.get(&valid[i]).unwrap_or(&0) as f64;
                p = (c + p) / (*n as f64 + 1.0);
            }
        }
        total -= p.ln();
    }
    total / valid.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_orders_fit_repetitive_text_better() {
        let text = b"abcabcabcabcabcabcabcabcabcabcabcabc".repeat(20);
        let (train, valid) = text.split_at(600);
        let uni = ngram_loss(train, valid, 1);
        let tri = ngram_loss(train, valid, 3);
        assert!((uni - 3f64.ln()).abs() < 0.05, "unigram ≈ ln 3, got {uni}");
        assert!(tri < 0.05, "the trigram predicts a period-3 text: {tri}");
        assert!((ngram_loss(b"", b"x", 2) - 256f64.ln()).abs() < 1e-12);
    }
}
