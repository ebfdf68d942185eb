//! `lsc eval`: mean NLL per token over non-overlapping context windows.

use crate::error::{CliError, CliResult};
use crate::source::{load_trained, TrainedArgs};
use lsc_models::GraphKind;
use lsc_runtime::data::{self, Split};
use lsc_runtime::eval::mean_nll;
use lsc_runtime::tokenizer::Tokenizer;
use serde_json::json;

/// Arguments of `lsc eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub source: TrainedArgs,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `synthetic`, a corpus name or a text file (default: the checkpoint's training data).
    #[arg(long)]
    pub data: Option<String>,
    /// Evaluate the train split (first 90%) instead of validation.
    #[arg(long)]
    pub train_split: bool,
    /// Evaluate at most this many windows.
    #[arg(long, value_parser = crate::args::count)]
    pub max_windows: Option<usize>,
    /// Windows per batch.
    #[arg(long, default_value_t = 8, value_parser = crate::args::count)]
    pub batch: usize,
    /// Also report smoothed byte 1-, 2-, 3- and 5-gram losses of the same split.
    #[arg(long)]
    pub baselines: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Evaluates; for `mor` under both routing rules: expert-choice top-k (what
/// training sees) and `σ(logit) ≥ 0.5` (what generation uses).
pub fn run(a: &EvalArgs) -> CliResult {
    let t = load_trained(&a.source, a.seed)?;
    let data_spec = a.data.clone().or(t.data).unwrap_or_else(|| "synthetic".into());
    let (model, config, params, tokenizer) = (t.model, t.config, t.params, t.tokenizer);
    let vocab = tokenizer.vocab_size();
    let build = |kind| lsc_models::build_graph(&model, &config, vocab, kind).map_err(|e| CliError::new(e.to_string()));
    let max_len = lsc_models::max_seq_len(&model, &config).map_err(|e| CliError::new(e.to_string()))?;
    let mut graphs: Vec<(&str, lsc_ir::Program)> = vec![("", build(GraphKind::Forward)?)];
    if model == "mor" {
        graphs[0].0 = "top-k rule";
        graphs.push(("σ(logit) ≥ 0.5 rule", build(GraphKind::Inference)?));
    }
    if a.baselines && !matches!(tokenizer, Tokenizer::Bytes) {
        return Err(CliError::with_fix(
            "the n-gram baselines are byte-level and this model uses BPE tokens",
            "drop --baselines",
        ));
    }
    let text = data::load_text(&data_spec, a.seed)?;
    let which = if a.train_split { Split::Train } else { Split::Validation };
    let split_text = data::split(&text, which);
    let tokens = tokenizer.encode(split_text)?;
    if tokens.len() < 2 {
        return Err(CliError::with_fix(
            format!("the {data_spec} split has {} tokens", tokens.len()),
            "use a larger text",
        ));
    }
    let split_name = if a.train_split { "train" } else { "validation" };
    let mut report = json!({"model": model, "config": config, "data": data_spec, "split": split_name});
    for (label, program) in &graphs {
        let window = max_len.min(tokens.len() - 1);
        let prepared = lsc_runtime::prepare::prepare(program, &params, a.source.backend.run_on())?;
        let loss = mean_nll(&prepared.exe, &prepared.params, &tokens, window, a.max_windows, a.batch)?;
        let key = if label.is_empty() { "loss".to_string() } else { format!("loss ({label})") };
        report[&key] = json!(loss.nll);
        report["perplexity"] = json!(loss.nll.exp());
        report["tokens"] = json!(loss.tokens);
        if !a.json {
            let prefix = if label.is_empty() { String::new() } else { format!("{label}: ") };
            println!(
                "{prefix}{split_name} loss {:.4} nats/token, perplexity {:.3}, over {} tokens in {} windows of {window}",
                loss.nll,
                loss.nll.exp(),
                loss.tokens,
                loss.windows
            );
        }
    }
    if a.baselines {
        let train = data::split(&text, Split::Train);
        for n in [1usize, 2, 3, 5] {
            let l = lsc_runtime::ngram::ngram_loss(train, split_text, n);
            report[&format!("byte_{n}gram")] = json!(l);
            if !a.json {
                println!("byte {n}-gram baseline: {l:.4} nats/token");
            }
        }
    }
    if a.json {
        println!("{report}");
    }
    Ok(())
}
