//! `lsc eval`: mean NLL per token over non-overlapping context windows.

use crate::error::{CliError, CliResult};
use crate::source;
use crate::ModelArgs;
use lsc_runtime::data::{self, Split};
use lsc_runtime::eval::mean_nll;
use std::path::Path;

/// Evaluates the model on the validation (or train) split of a text file. For
/// `mor` it reports the loss under both routing rules: expert-choice top-k
/// (what training sees) and `σ(logit) ≥ 0.5` (what generation uses).
pub fn run(
    args: &ModelArgs,
    weights: Option<&Path>,
    seed: u64,
    data_path: &Path,
    train_split: bool,
    max_windows: Option<usize>,
    batch: usize,
) -> CliResult {
    let which = if train_split { Split::Train } else { Split::Validation };
    let tokens = data::read_split(data_path, which)?;
    if tokens.len() < 2 {
        return Err(CliError::with_fix(
            format!("{}: the split has {} bytes", data_path.display(), tokens.len()),
            "use a larger text file",
        ));
    }
    let mut graphs = vec![("", source::load(args, false)?)];
    if args.model.as_deref() == Some("mor") {
        graphs[0].0 = "top-k rule: ";
        graphs.push(("σ(logit) ≥ 0.5 rule: ", source::load(args, true)?));
    }
    let (params, origin) = super::run::params(&graphs[0].1, weights, seed)?;
    for (label, src) in &graphs {
        let window = src.max_len.unwrap_or(256).min(tokens.len() - 1);
        let loss = mean_nll(&src.program, &params, &tokens, window, max_windows, batch)?;
        println!(
            "{label}{} loss {:.4} nats/token ({:.4} bits/byte) over {} tokens in {} windows of {window} ({origin})",
            if train_split { "train" } else { "validation" },
            loss.nll,
            loss.nll / std::f64::consts::LN_2,
            loss.tokens,
            loss.windows
        );
    }
    Ok(())
}
