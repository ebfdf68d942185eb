//! A synthetic language from a hidden Markov model whose optimal next-token
//! loss is computable (Liu et al.'s "saturation regime" needs a known floor):
//! sentences of fixed length after a BOS token, the exact predictive
//! distribution by the forward algorithm, and the hidden states' posteriors
//! by forward–backward (the ceiling of a probe that reads the whole sentence).

use crate::init::Rng;

/// An HMM over `states` hidden states emitting tokens `0..vocab`; token
/// `vocab` is BOS, so models of it have `vocab + 1` tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Hmm {
    /// `P(z_1 = s)`.
    pub initial: Vec<f64>,
    /// `P(z_{t+1} = j | z_t = i)`, row-major `states × states`.
    pub transition: Vec<f64>,
    /// `P(x_t = v | z_t = i)`, row-major `states × vocab`.
    pub emission: Vec<f64>,
    /// Hidden states.
    pub states: usize,
    /// Emitted tokens.
    pub vocab: usize,
    /// Tokens per sentence (BOS excluded).
    pub length: usize,
}

/// One sentence and the hidden states that emitted it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sentence {
    /// The tokens.
    pub tokens: Vec<usize>,
    /// The hidden state of each token.
    pub states: Vec<usize>,
}

/// A random distribution over `n` outcomes concentrated on `support` of them
/// (weights `u²`), with `floor` mass spread over all: sparse enough to have
/// structure, dense enough that every sentence has non-zero probability.
fn peaked(n: usize, support: usize, floor: f64, rng: &mut Rng) -> Vec<f64> {
    let mut p = vec![floor / n as f64; n];
    let mut w = Vec::with_capacity(support);
    for _ in 0..support {
        let k = (rng.next_u64() % n as u64) as usize;
        let u = 0.2 + rng.uniform();
        w.push((k, u * u));
    }
    let total: f64 = w.iter().map(|(_, u)| u).sum();
    for (k, u) in w {
        p[k] += (1.0 - floor) * u / total;
    }
    p
}

impl Hmm {
    /// A seeded random HMM: each state moves to about 3 successors and emits
    /// about 8 tokens, which other states emit too (so a token alone does not
    /// reveal its state).
    pub fn random(states: usize, vocab: usize, length: usize, seed: u64) -> Hmm {
        let mut rng = Rng::new(seed);
        let initial = peaked(states, states / 2, 0.05, &mut rng);
        let transition = (0..states).flat_map(|_| peaked(states, 3, 0.02, &mut rng)).collect();
        let emission = (0..states).flat_map(|_| peaked(vocab, 8, 0.02, &mut rng)).collect();
        Hmm { initial, transition, emission, states, vocab, length }
    }

    /// The BOS token.
    pub fn bos(&self) -> usize {
        self.vocab
    }

    /// One sentence.
    pub fn sample(&self, rng: &mut Rng) -> Sentence {
        let (s, v) = (self.states, self.vocab);
        let mut z = rng.categorical(&self.initial);
        let (mut tokens, mut states) = (Vec::with_capacity(self.length), Vec::with_capacity(self.length));
        for t in 0..self.length {
            if t > 0 {
                z = rng.categorical(&self.transition[z * s..(z + 1) * s]);
            }
            states.push(z);
            tokens.push(rng.categorical(&self.emission[z * v..(z + 1) * v]));
        }
        Sentence { tokens, states }
    }

    /// `−log P(x_t | x_{<t})` for every position, by the forward algorithm:
    /// the loss of the Bayes-optimal next-token predictor on this sentence.
    pub fn optimal_losses(&self, tokens: &[usize]) -> Vec<f64> {
        let (s, v) = (self.states, self.vocab);
        // `belief[i] = P(z_t = i | x_{<t})`.
        let mut belief = self.initial.clone();
        let mut out = Vec::with_capacity(tokens.len());
        for (t, &x) in tokens.iter().enumerate() {
            if t > 0 {
                belief = (0..s).map(|j| (0..s).map(|i| belief[i] * self.transition[i * s + j]).sum()).collect();
            }
            let joint: Vec<f64> = (0..s).map(|i| belief[i] * self.emission[i * v + x]).collect();
            let p: f64 = joint.iter().sum();
            out.push(-p.ln());
            belief = joint.iter().map(|q| q / p).collect();
        }
        out
    }

    /// `P(z_t = i | x_{1..L})` for every position, by forward–backward.
    pub fn posteriors(&self, tokens: &[usize]) -> Vec<Vec<f64>> {
        let (s, v, n) = (self.states, self.vocab, tokens.len());
        let e = |i: usize, t: usize| self.emission[i * v + tokens[t]];
        let normalize = |x: Vec<f64>| {
            let z: f64 = x.iter().sum();
            x.into_iter().map(|q| q / z).collect::<Vec<f64>>()
        };
        let mut alpha = vec![normalize((0..s).map(|i| self.initial[i] * e(i, 0)).collect())];
        for t in 1..n {
            let prev = &alpha[t - 1];
            let next =
                (0..s).map(|j| e(j, t) * (0..s).map(|i| prev[i] * self.transition[i * s + j]).sum::<f64>()).collect();
            alpha.push(normalize(next));
        }
        let mut beta = vec![vec![1.0; s]; n];
        for t in (0..n.saturating_sub(1)).rev() {
            let b = (0..s)
                .map(|i| (0..s).map(|j| self.transition[i * s + j] * e(j, t + 1) * beta[t + 1][j]).sum())
                .collect();
            beta[t] = normalize(b);
        }
        (0..n).map(|t| normalize((0..s).map(|i| alpha[t][i] * beta[t][i]).collect())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_sum_to_one_and_sampling_is_seeded() {
        let h = Hmm::random(20, 50, 12, 1);
        assert!((h.initial.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for row in h.transition.chunks(20).chain(h.emission.chunks(50)) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let (a, b) = (h.sample(&mut Rng::new(3)), h.sample(&mut Rng::new(3)));
        assert_eq!(a, b);
        assert!(a.tokens.len() == 12 && a.tokens.iter().all(|&x| x < 50));
    }

    /// By brute force over every state path of a short sentence.
    #[test]
    fn the_forward_algorithm_and_posteriors_match_enumeration() {
        let h = Hmm::random(3, 4, 3, 2);
        let x = [1usize, 3, 0];
        let mut joint = vec![0.0; 27];
        for (k, j) in joint.iter_mut().enumerate() {
            let z = [k / 9, k / 3 % 3, k % 3];
            *j = h.initial[z[0]] * h.emission[z[0] * 4 + x[0]];
            for t in 1..3 {
                *j *= h.transition[z[t - 1] * 3 + z[t]] * h.emission[z[t] * 4 + x[t]];
            }
        }
        let p_all: f64 = joint.iter().sum();
        let total: f64 = h.optimal_losses(&x).iter().sum();
        assert!((total - -p_all.ln()).abs() < 1e-12, "chain rule: Σ −log P(x_t|x_<t) = −log P(x)");
        let post = h.posteriors(&x);
        for (t, row) in post.iter().enumerate() {
            for (s, p) in row.iter().enumerate() {
                let m: f64 =
                    joint.iter().enumerate().filter(|(k, _)| [k / 9, k / 3 % 3, k % 3][t] == s).map(|(_, j)| j).sum();
                assert!((p - m / p_all).abs() < 1e-12);
            }
        }
    }
}
