//! Evaluation: mean negative log-likelihood per token over non-overlapping
//! windows of the model's context.

use crate::backend::{Executable, Loaded};
use crate::error::RuntimeError;
use lsc_interp::{Tensors, Value};
use std::collections::hash_map::{Entry, HashMap};

/// Mean NLL (nats per token) and how many tokens it averages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    /// Mean negative log-likelihood per predicted token.
    pub nll: f64,
    /// Predicted tokens.
    pub tokens: usize,
    /// Windows evaluated.
    pub windows: usize,
}

/// Splits `tokens` into non-overlapping windows of `window` inputs (each with
/// its next-token targets), at most `max_windows` of them, batched `batch` at a time.
pub fn mean_nll(
    exe: &Executable,
    params: &Tensors<f32>,
    tokens: &[u32],
    window: usize,
    max_windows: Option<usize>,
    batch: usize,
) -> Result<Loss, RuntimeError> {
    if window == 0 || tokens.len() < 2 {
        return Err(RuntimeError::Input(format!(
            "need at least 2 tokens and a window ≥ 1; got {} tokens",
            tokens.len()
        )));
    }
    // Window i covers inputs [i·w, i·w + w) and targets shifted by one; the last
    // window may be shorter so that every token but the first is predicted once.
    let starts: Vec<usize> = (0..tokens.len() - 1).step_by(window).take(max_windows.unwrap_or(usize::MAX)).collect();
    // The program loaded once per batch shape (full windows, and a short last one).
    let mut loaded: HashMap<(usize, usize), Box<dyn Loaded>> = HashMap::new();
    let mut total = 0.0f64;
    let mut count = 0usize;
    for group in starts.chunks(batch.max(1)) {
        // Windows of equal length batch together; a short last window runs alone.
        let len_of = |s: usize| window.min(tokens.len() - 1 - s);
        let mut i = 0;
        while i < group.len() {
            let len = len_of(group[i]);
            let same: Vec<usize> = group[i..].iter().copied().take_while(|&s| len_of(s) == len).collect();
            i += same.len();
            let ids: Vec<i64> = same.iter().flat_map(|&s| tokens[s..s + len].iter().map(|&b| b as i64)).collect();
            let key = (same.len(), len);
            let l = match loaded.entry(key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(exe.load_with(key.0, key.1, params)?),
            };
            l.set("input_ids", &Value::ints(vec![same.len(), len], ids))?;
            l.run()?;
            let out = l.output("logits")?;
            let v = *out.shape.last().unwrap_or(&0);
            let data = out.as_floats().ok_or_else(|| RuntimeError::Input("logits are not floats".into()))?;
            for (row, &s) in same.iter().enumerate() {
                for t in 0..len {
                    let l = &data[(row * len + t) * v..(row * len + t + 1) * v];
                    let m = l.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                    let lse = m + l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
                    let target = tokens[s + t + 1] as usize;
                    if target >= v {
                        return Err(RuntimeError::Input(format!(
                            "token id {target} is outside the model's vocabulary of {v}"
                        )));
                    }
                    total += lse - l[target] as f64;
                    count += 1;
                }
            }
        }
    }
    if !total.is_finite() {
        return Err(RuntimeError::Input("the loss is not finite (NaN or infinite logits)".into()));
    }
    Ok(Loss { nll: total / count.max(1) as f64, tokens: count, windows: starts.len() })
}
