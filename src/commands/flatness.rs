//! `lsc flatness`: how flat the training loss is at a model's weights, from
//! exact Hessian-vector products: the Hessian trace (Hutchinson, with a
//! confidence interval), its top eigenvalue (power iteration) and the Fisher
//! trace with labels sampled from the model (Liu et al.'s estimator).

use crate::error::{CliError, CliResult};
use crate::source::{load_trained, TrainedArgs};
use lsc_models::GraphKind;
use lsc_runtime::data::{self, Sampler, Split};
use lsc_runtime::flatness::{Batch, Curvature, Estimate};
use lsc_runtime::init::Rng;
use serde_json::json;
use std::path::PathBuf;

/// Arguments of `lsc flatness`.
#[derive(clap::Args, Debug, Clone)]
pub struct FlatnessArgs {
    #[command(flatten)]
    pub source: TrainedArgs,
    /// `synthetic`, a corpus name or a text file (default: the checkpoint's training data).
    #[arg(long)]
    pub data: Option<String>,
    /// Measure on the validation split (last 10 %) instead of the train split.
    #[arg(long)]
    pub validation: bool,
    /// Rademacher probes of Hutchinson's trace estimator, each on a fresh batch.
    #[arg(long, default_value_t = 32, value_parser = crate::args::count)]
    pub probes: usize,
    /// Batches of the Fisher-trace estimator (0: skip it).
    #[arg(long, default_value_t = 32)]
    pub fisher_batches: usize,
    /// Power iterations for the top eigenvalue, on one batch (0: skip it).
    #[arg(long, default_value_t = 20)]
    pub power_iters: usize,
    /// Windows per batch.
    #[arg(long, default_value_t = 8, value_parser = crate::args::count)]
    pub batch: usize,
    /// Tokens per window (default: the model's context, at most 128).
    #[arg(long, value_parser = crate::args::count)]
    pub seq: Option<usize>,
    /// Seed of the probes, the batches and the sampled labels (and of the random initialisation without --ckpt).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the estimates and every sample as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn row(e: &Estimate) -> serde_json::Value {
    json!({ "mean": e.mean, "ci95": e.half_width, "samples": e.samples })
}

/// Runs `lsc flatness`.
pub fn run(a: &FlatnessArgs) -> CliResult {
    let t = load_trained(&a.source, a.seed)?;
    let data_spec = a.data.clone().or(t.data).unwrap_or_else(|| "synthetic".into());
    let vocab = t.tokenizer.vocab_size();
    let forward = lsc_models::build_graph(&t.model, &t.config, vocab, GraphKind::Forward)
        .map_err(|e| CliError::new(e.to_string()))?;
    let max_len = lsc_models::max_seq_len(&t.model, &t.config).map_err(|e| CliError::new(e.to_string()))?;
    let seq = a.seq.unwrap_or(max_len.min(128));
    if seq > max_len {
        return Err(CliError::with_fix(
            format!("--seq {seq} is longer than {}/{}'s context of {max_len} tokens", t.model, t.config),
            format!("pass --seq {max_len} or less"),
        ));
    }
    let (which, split) = if a.validation { (Split::Validation, "validation") } else { (Split::Train, "train") };
    let tokens = t.tokenizer.encode(data::split(&data::load_text(&data_spec, a.seed)?, which))?;
    if tokens.len() <= seq + 1 {
        return Err(CliError::with_fix(
            format!(
                "`{data_spec}` has {} tokens in its {split} split, fewer than one window of {}",
                tokens.len(),
                seq + 1
            ),
            "pass a larger text as --data, or a smaller --seq",
        ));
    }
    let run_on = a.source.backend.run_on();
    let compile =
        indicatif::ProgressBar::new_spinner().with_message("compiling the gradient and Hessian-vector programs");
    compile.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut curvature = Curvature::new(&forward, &t.params, run_on, a.batch, seq)?;
    compile.finish_and_clear();

    let mut sampler = Sampler::new(a.seed ^ 0x5eed);
    let mut next_batch = || -> Result<Batch, lsc_runtime::error::RuntimeError> {
        let (ids, targets) = sampler.next(&tokens, a.batch, seq)?;
        Ok(Batch { ids, targets })
    };
    let mut rng = Rng::new(a.seed);
    let work = a.probes + a.fisher_batches + a.power_iters;
    let bar = indicatif::ProgressBar::new(work as u64);
    let mut tick = || bar.inc(1);
    let trace = curvature.hutchinson(&mut next_batch, a.probes, &mut rng, &mut tick)?;
    let fisher = (a.fisher_batches > 0)
        .then(|| curvature.fisher_trace(&mut next_batch, a.fisher_batches, &mut rng, &mut tick))
        .transpose()?;
    let top = match a.power_iters {
        0 => None,
        n => Some(curvature.top_eigenvalue(&next_batch()?, n, &mut rng, &mut tick)?),
    };
    bar.finish_and_clear();
    let first = next_batch()?;
    let (loss, _) = curvature.gradient(&first.ids, &first.targets)?;

    println!(
        "{}/{}: {} parameters, batches of {} × {seq} tokens of `{data_spec}` ({split} split), backend {}",
        t.model,
        t.config,
        curvature.dimension(),
        a.batch,
        run_on.backend
    );
    println!("  loss of one batch          {loss:.4}");
    println!(
        "  Tr(H), Hutchinson          {:.4} ± {:.4}  ({} Rademacher probes, 95 % interval)",
        trace.mean, trace.half_width, a.probes
    );
    if let Some(f) = &fisher {
        println!(
            "  Tr(F), sampled labels      {:.4} ± {:.4}  ({} batches, 95 % interval)",
            f.mean, f.half_width, a.fisher_batches
        );
    }
    if let Some(top) = &top {
        println!(
            "  λ_max(H), power iteration  {:.4}  (the largest; {} power iterations on one batch, last relative change {:.1e})",
            top.value,
            top.history.len(),
            top.relative_change()
        );
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "model": t.model, "config": t.config, "parameters": curvature.dimension(),
            "data": data_spec, "split": split, "batch": a.batch, "seq": seq,
            "seed": a.seed, "loss": loss,
            "hessian_trace": row(&trace),
            "fisher_trace": fisher.as_ref().map(row),
            "top_eigenvalue": top.as_ref().map(|t| json!({ "value": t.value, "history": t.history })),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| CliError::new(e.to_string()))?;
        lsc_runtime::weights::write_atomic(path, text.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
