//! `lsc generate`: samples text with the incremental-decoding state.

use crate::error::{CliError, CliResult};
use lsc_interp::Value;
use lsc_runtime::checkpoint::Checkpoint;
use lsc_runtime::generate::{softmax, Decoder};
use lsc_runtime::init::Rng;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `lsc generate`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A training checkpoint (model, config and weights).
    #[arg(long, required_unless_present = "model")]
    pub ckpt: Option<PathBuf>,
    /// A built-in model instead of a checkpoint (random or --weights).
    #[arg(long, conflicts_with = "ckpt")]
    pub model: Option<String>,
    /// Config of --model.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Weights for --model.
    #[arg(long, requires = "model")]
    pub weights: Option<PathBuf>,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Picks the next token from `logits` (one row).
pub fn sample(logits: &[f32], temperature: f64, top_k: usize, rng: &mut Rng) -> usize {
    if temperature <= 0.0 {
        return logits.iter().enumerate().fold(0, |b, (i, &x)| if x > logits[b] { i } else { b });
    }
    let scaled: Vec<f32> = logits.iter().map(|&x| (x as f64 / temperature) as f32).collect();
    let mut probs: Vec<(usize, f64)> = softmax(&scaled).into_iter().enumerate().collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if top_k > 0 {
        probs.truncate(top_k);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.uniform() * total;
    for &(i, p) in &probs {
        if u < p {
            return i;
        }
        u -= p;
    }
    probs.last().map(|p| p.0).unwrap_or(0)
}

/// Runs `lsc generate`.
pub fn run(a: &GenerateArgs) -> CliResult {
    let (model, config, params) = match &a.ckpt {
        Some(path) => {
            let ckpt = Checkpoint::load(path)?;
            let m = ckpt.meta.train["model"].as_str().unwrap_or_default().to_string();
            let c = ckpt.meta.train["config"].as_str().unwrap_or_default().to_string();
            (m, c, ckpt.params)
        }
        None => {
            let model = a.model.clone().unwrap_or_default();
            let full = lsc_models::build(&model, &a.config).map_err(|e| CliError::new(e.to_string()))?;
            let params = match &a.weights {
                Some(w) => lsc_runtime::weights::load_params(w, &full)?.0,
                None => lsc_runtime::init::init_params(&full, a.seed).map_err(CliError::new)?,
            };
            (model, a.config.clone(), params)
        }
    };
    let mut out = std::io::stdout().lock();
    continue_text(&model, &config, &params, a.prompt.as_bytes(), a, &mut |bytes| {
        let _ = out.write_all(bytes);
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(())
}

/// Feeds `prompt` through the decoding graph, then samples up to
/// `a.max_tokens` bytes, handing the prompt and each new byte to `emit`.
pub fn continue_text(
    model: &str,
    config: &str,
    params: &lsc_interp::Tensors<f32>,
    prompt: &[u8],
    a: &GenerateArgs,
    emit: &mut dyn FnMut(&[u8]),
) -> CliResult {
    let program = lsc_models::build_decode(model, config).map_err(|e| CliError::new(e.to_string()))?;
    let max_len = lsc_models::max_seq_len(model, config).map_err(|e| CliError::new(e.to_string()))?;
    if prompt.is_empty() || prompt.len() > max_len {
        return Err(CliError::with_fix(format!("the prompt has {} bytes; the model takes 1..={max_len}", prompt.len()), "shorten --prompt"));
    }
    let mut dec = Decoder::new(&program, params, 1)?;
    let mut rng = Rng::new(a.seed);
    let mut logits = dec.feed(&Value::ints(vec![1, prompt.len()], prompt.iter().map(|&b| b as i64).collect()))?;
    emit(prompt);
    for _ in 0..a.max_tokens {
        if dec.position() as usize >= max_len {
            eprintln!("note: stopped at the model's context of {max_len} tokens");
            break;
        }
        let row = logits.as_floats().unwrap_or_default();
        let v = *logits.shape.last().unwrap_or(&1);
        let next = sample(&row[row.len() - v..], a.temperature, a.top_k, &mut rng);
        emit(&[next as u8]);
        logits = dec.feed(&Value::ints(vec![1, 1], vec![next as i64]))?;
    }
    Ok(())
}

