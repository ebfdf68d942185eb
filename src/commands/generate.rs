//! `lsc generate`: samples text with the incremental-decoding state.

use crate::error::{CliError, CliResult};
use crate::source::{load_trained, TrainedArgs};
use lsc_interp::Value;
use lsc_runtime::generate::{softmax, Decoder};
use lsc_runtime::init::Rng;
use lsc_runtime::tokenizer::Tokenizer;
use std::io::Write;

/// Arguments of `lsc generate`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub source: TrainedArgs,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200, value_parser = crate::args::count)]
    pub max_tokens: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 0.8, value_parser = crate::args::non_negative)]
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

/// A trained model ready to decode.
pub struct Model<'a> {
    /// Built-in model name.
    pub name: &'a str,
    /// Its config.
    pub config: &'a str,
    /// Vocabulary size it was built with.
    pub vocab: usize,
    /// Parameters.
    pub params: &'a lsc_interp::Tensors<f32>,
    /// How text maps to ids.
    pub tokenizer: &'a Tokenizer,
}

/// Runs `lsc generate`.
pub fn run(a: &GenerateArgs) -> CliResult {
    let t = load_trained(&a.source, a.seed)?;
    let (name, config, params, tokenizer) = (t.model, t.config, t.params, t.tokenizer);
    let model =
        Model { name: &name, config: &config, vocab: tokenizer.vocab_size(), params: &params, tokenizer: &tokenizer };
    let prompt = tokenizer.encode(a.prompt.as_bytes())?;
    let mut out = std::io::stdout().lock();
    continue_text(&model, &prompt, a, &mut |bytes| {
        let _ = out.write_all(bytes);
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(())
}

/// Feeds the `prompt` ids through the decoding graph, then samples up to
/// `a.max_tokens` tokens, handing the prompt's and each new token's text to `emit`.
pub fn continue_text(m: &Model, prompt: &[u32], a: &GenerateArgs, emit: &mut dyn FnMut(&[u8])) -> CliResult {
    let program = lsc_models::build_graph(m.name, m.config, m.vocab, lsc_models::GraphKind::Decode)
        .map_err(|e| CliError::new(e.to_string()))?;
    let max_len = lsc_models::max_seq_len(m.name, m.config).map_err(|e| CliError::new(e.to_string()))?;
    if prompt.is_empty() || prompt.len() > max_len {
        return Err(CliError::with_fix(
            format!("the prompt has {} tokens; the model takes 1..={max_len}", prompt.len()),
            "shorten --prompt",
        ));
    }
    let prepared = lsc_runtime::prepare::prepare(&program, m.params, a.source.backend.run_on())?;
    let mut dec = Decoder::on(&prepared.exe, &prepared.params, 1)?;
    let mut rng = Rng::new(a.seed);
    let mut logits = dec.feed(&Value::ints(vec![1, prompt.len()], prompt.iter().map(|&b| b as i64).collect()))?;
    emit(&m.tokenizer.decode(prompt)?);
    for _ in 0..a.max_tokens {
        if dec.position() as usize >= max_len {
            eprintln!("note: stopped at the model's context of {max_len} tokens");
            break;
        }
        let row = logits.as_floats().unwrap_or_default();
        let v = *logits.shape.last().unwrap_or(&1);
        let next = sample(&row[row.len() - v..], a.temperature, a.top_k, &mut rng);
        emit(&m.tokenizer.decode(&[next as u32])?);
        logits = dec.feed(&Value::ints(vec![1, 1], vec![next as i64]))?;
    }
    Ok(())
}
