//! `lsc train`: trains a built-in model on text, with a progress bar,
//! `metrics.jsonl`, checkpoints, loss and attention-logit plots.

use crate::args;
use crate::error::{CliError, CliResult};
use crate::plot::{self, Series};
use lsc_models::GraphKind;
use lsc_passes::train::Optimizer;
use lsc_runtime::checkpoint::Checkpoint;
use lsc_runtime::data::{self, Split};
use lsc_runtime::keeper::{Keeper, LossWatch, Verdict};
use lsc_runtime::schedule::{Schedule, TimeFit};
use lsc_runtime::tokenizer::Tokenizer;
use lsc_runtime::train::{StepStats, TrainConfig, Trainer};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `lsc train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Built-in model (see `lsc models`).
    #[arg(long, default_value = "ls-transformer")]
    pub model: String,
    /// Config of the model.
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// `synthetic` (built in), `tinyshakespeare`, `tinystories`, `wikitext-2`, or a text file.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Total optimizer steps (including those of a resumed run).
    #[arg(long, default_value_t = 300, value_parser = args::steps)]
    pub steps: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8, value_parser = args::count)]
    pub batch: usize,
    /// Tokens per sequence (default: the model's context, at most 256).
    #[arg(long, value_parser = args::count)]
    pub seq: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3, value_parser = args::positive)]
    pub lr: f64,
    /// Floor of the decaying schedules.
    #[arg(long, default_value_t = 3e-4, value_parser = args::non_negative)]
    pub min_lr: f64,
    /// constant, cosine, wsd or inverse-sqrt.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Warmup steps.
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// Decay length (cosine: steps until the floor; wsd: final decay steps).
    #[arg(long)]
    pub decay_steps: Option<u64>,
    /// adamw or sgd.
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Weight decay (not applied to norms, biases, embeddings unless --decay-all).
    #[arg(long, default_value_t = 0.1, value_parser = args::non_negative)]
    pub weight_decay: f64,
    /// Apply weight decay to every parameter.
    #[arg(long)]
    pub decay_all: bool,
    /// AdamW's first-moment decay.
    #[arg(long, default_value_t = 0.9, value_parser = args::fraction)]
    pub beta1: f64,
    /// AdamW's second-moment decay (0.99 suits small batches; 0.95 is the large-batch default).
    #[arg(long, default_value_t = 0.95, value_parser = args::fraction)]
    pub beta2: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, value_parser = args::fraction)]
    pub momentum: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0, value_parser = args::non_negative)]
    pub clip: f64,
    /// Output folder: metrics.jsonl, checkpoint.safetensors, loss.svg, logits.svg.
    #[arg(long, default_value = "out/train")]
    pub out: PathBuf,
    /// Continue from a checkpoint, with its settings (data, batch, sequence, schedule,
    /// optimizer); a flag given with it overrides that setting and is reported.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Replace the run already in --out (its checkpoint and metrics) instead of refusing.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// With --resume: start a new schedule (warmup, peak, horizon) at the checkpoint's step.
    #[arg(long, requires = "resume")]
    pub rewarm: bool,
    /// With --resume: start the optimizer moments from zero.
    #[arg(long, requires = "resume")]
    pub reset_optimizer: bool,
    /// Seed of initialisation and data sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `bytes` (256 tokens) or `bpe` (trained on the training split; needs the `bpe` feature).
    #[arg(long, default_value = "bytes")]
    pub tokenizer: String,
    /// BPE vocabulary size.
    #[arg(long, default_value_t = 512, value_parser = args::count)]
    pub vocab_size: usize,
    /// Stop cleanly (with a final checkpoint) after this many seconds.
    #[arg(long, value_parser = args::positive)]
    pub max_seconds: Option<f64>,
    /// With --max-seconds: fit the schedule's horizon (cosine or wsd) to the time, so
    /// that the decay ends when it runs out; measured step times re-estimate the
    /// number of steps until the end of warmup (cosine) or the start of decay (wsd).
    #[arg(long, requires = "max_seconds")]
    pub fit_to_time: bool,
    /// Evaluate validation loss every N steps (0: only at the end).
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// Validation windows per evaluation.
    #[arg(long, default_value_t = 16, value_parser = args::count)]
    pub eval_windows: usize,
    /// Write a checkpoint every N steps (and at the end), once the step after it
    /// shows its weights are sound (see --spike-factor).
    #[arg(long, default_value_t = 100, value_parser = args::steps)]
    pub ckpt_every: u64,
    /// A loss above this multiple of its running mean (after warmup) is a spike:
    /// a warning, and the weights before it are not checkpointed.
    #[arg(long, default_value_t = 1.5, value_parser = args::above_one)]
    pub spike_factor: f64,
    /// A loss above this multiple of its running mean, or not finite, stops the run
    /// as diverged (exit 2), leaving the newest good checkpoint on disk.
    #[arg(long, default_value_t = 3.0, value_parser = args::above_one)]
    pub diverge_factor: f64,
    /// Record the attention-logit monitor every N steps.
    #[arg(long, default_value_t = 10, value_parser = args::steps)]
    pub monitor_every: u64,
    /// Bytes of text to sample from the trained model at the end (0: none).
    #[arg(long, default_value_t = 160)]
    pub sample_tokens: usize,
    /// Print the time per op kind of the last step.
    #[arg(long)]
    pub profile: bool,
    /// Recompute called functions (MoR's shared block) in the backward instead of
    /// keeping their forward values: less memory, one more forward pass of each.
    #[arg(long)]
    pub recompute_calls: bool,
    /// Train the primitive step graph, without equality saturation (an ablation).
    #[arg(long)]
    pub no_fuse: bool,
    #[command(flatten)]
    pub backend: crate::source::BackendArg,
    /// Print one final JSON line: steps, tokens_per_s, train_loss, val_loss, wall_s.
    #[arg(long)]
    pub json_summary: bool,
    /// The ids of the flags given on the command line (filled in by `main`), so
    /// that `--resume` tells an override from a default.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

fn config_from(a: &TrainArgs, seq: usize, vocab: usize) -> Result<TrainConfig, CliError> {
    let schedule = Schedule::from_cli(&a.schedule, a.lr, a.min_lr, a.warmup, a.steps, a.decay_steps)
        .map_err(|e| CliError::with_fix(e, "pass --schedule constant|cosine|wsd|inverse-sqrt"))?;
    let optimizer = match a.optimizer.as_str() {
        "adamw" => Optimizer::AdamW { beta1: a.beta1, beta2: a.beta2, eps: 1e-8, weight_decay: a.weight_decay },
        "sgd" => Optimizer::Sgd { momentum: a.momentum, weight_decay: a.weight_decay },
        o => return Err(CliError::with_fix(format!("unknown optimizer `{o}`"), "pass --optimizer adamw or sgd")),
    };
    let loss_terms =
        if a.model == "mor" { vec![("aux_loss".to_string(), lsc_models::mor::AUX_LOSS_COEF)] } else { vec![] };
    Ok(TrainConfig {
        model: a.model.clone(),
        config: a.config.clone(),
        data: a.data.clone(),
        batch: a.batch,
        seq,
        steps: a.steps,
        schedule,
        optimizer,
        clip_norm: (a.clip > 0.0).then_some(a.clip),
        decay_all: a.decay_all,
        seed: a.seed,
        loss_terms,
        tokenizer: a.tokenizer.clone(),
        vocab,
        fuse: !a.no_fuse,
        backend: a.backend.backend,
        precision: a.backend.precision,
        recompute_calls: a.recompute_calls,
    })
}

/// Attention-logit monitors of one step: per layer, the max over local and over global heads.
fn logit_monitors(stats: &StepStats, n_local: usize) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (name, v) in &stats.monitors {
        if let Some(layer) = name.strip_prefix("max_logit.") {
            let max = |s: &[f64]| s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if n_local > 0 {
                out.push((format!("max_logit.{layer}.local"), max(&v[..n_local.min(v.len())])));
            }
            if n_local < v.len() {
                out.push((format!("max_logit.{layer}.global"), max(&v[n_local..])));
            }
        } else if v.len() == 1 {
            out.push((name.clone(), v[0]));
        }
    }
    out
}

/// The training settings: the checkpoint's when resuming (with the overrides
/// given), else the flags; and the tokenizer and text they name.
struct Setup {
    cfg: TrainConfig,
    overrides: Vec<String>,
    tokenizer: Tokenizer,
    text: Vec<u8>,
    resumed: Option<(PathBuf, Checkpoint)>,
}

fn setup(a: &TrainArgs) -> Result<Setup, CliError> {
    if let Some(path) = &a.resume {
        let ckpt = Checkpoint::load(path)?;
        let r = super::resume::config(a, &ckpt, path)?;
        let tokenizer = match &ckpt.tokenizer {
            Some(json) => Tokenizer::from_json(json)?,
            None => Tokenizer::Bytes,
        };
        if tokenizer.vocab_size() != r.cfg.vocab {
            return Err(CliError::with_fix(
                format!(
                    "{}: its tokenizer has {} tokens but its model was built for {}",
                    path.display(),
                    tokenizer.vocab_size(),
                    r.cfg.vocab
                ),
                "the checkpoint was edited or corrupted; resume from another checkpoint",
            ));
        }
        let text = data::load_text(&r.cfg.data, r.cfg.seed)?;
        return Ok(Setup { cfg: r.cfg, overrides: r.overrides, tokenizer, text, resumed: Some((path.clone(), ckpt)) });
    }
    let max_len = lsc_models::max_seq_len(&a.model, &a.config).map_err(|e| CliError::new(e.to_string()))?;
    let text = data::load_text(&a.data, a.seed)?;
    let tokenizer = match a.tokenizer.as_str() {
        "bytes" => Tokenizer::Bytes,
        "bpe" => Tokenizer::train_bpe(data::split(&text, Split::Train), a.vocab_size)?,
        other => {
            return Err(CliError::with_fix(format!("unknown tokenizer `{other}`"), "pass --tokenizer bytes or bpe"))
        }
    };
    let cfg = config_from(a, a.seq.unwrap_or(max_len.min(256)), tokenizer.vocab_size())?;
    Ok(Setup { cfg, overrides: Vec::new(), tokenizer, text, resumed: None })
}

/// Prepares `--out`: removes the temp files of killed writes, refuses another
/// run's files unless `--resume` or `--overwrite`, and after a resume keeps the
/// metrics only up to the resumed step. Returns the metrics file to append to.
fn prepare_out(a: &TrainArgs, resumed_step: Option<u64>) -> Result<std::fs::File, CliError> {
    std::fs::create_dir_all(&a.out).map_err(|e| {
        CliError::with_fix(format!("cannot create {}: {e}", a.out.display()), "choose a writable --out")
    })?;
    for (path, bytes) in lsc_runtime::weights::remove_stale_temps(&a.out) {
        eprintln!("note: removed {} ({bytes} bytes), left by a write that was killed", path.display());
    }
    let ckpt_path = a.out.join("checkpoint.safetensors");
    let metrics_path = a.out.join("metrics.jsonl");
    let io = |p: &Path, e: std::io::Error| CliError::new(format!("{}: {e}", p.display()));
    let old_metrics = std::fs::read_to_string(&metrics_path).unwrap_or_default();
    match resumed_step {
        None if a.overwrite => {
            for p in [&ckpt_path, &metrics_path] {
                if p.exists() {
                    std::fs::remove_file(p).map_err(|e| io(p, e))?;
                }
            }
        }
        None if ckpt_path.exists() || !old_metrics.trim().is_empty() => {
            let held = match Checkpoint::load(&ckpt_path) {
                Ok(c) => {
                    format!("a checkpoint at step {} of {}", c.meta.step, c.meta.train["model"].as_str().unwrap_or("?"))
                }
                Err(_) if ckpt_path.exists() => "a checkpoint".to_string(),
                Err(_) => "the metrics of a run".to_string(),
            };
            return Err(CliError::with_fix(
                format!("{} already holds another run ({held})", a.out.display()),
                format!(
                    "pass --resume {} to continue it, --overwrite to replace it, or another --out",
                    ckpt_path.display()
                ),
            ));
        }
        None => {}
        Some(step) => {
            let kept: String = old_metrics
                .lines()
                .take_while(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|r| r["step"].as_u64())
                        .is_some_and(|s| s <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            if kept.len() != old_metrics.len() {
                lsc_runtime::weights::write_atomic(&metrics_path, kept.as_bytes())?;
            }
        }
    }
    std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(|e| io(&metrics_path, e))
}

/// Runs `lsc train`.
pub fn run(a: &TrainArgs) -> CliResult {
    let Setup { cfg, overrides, tokenizer, text, resumed } = setup(a)?;
    let (model, config) = (cfg.model.clone(), cfg.config.clone());
    let max_len = lsc_models::max_seq_len(&model, &config).map_err(|e| CliError::new(e.to_string()))?;
    let (batch, seq) = (cfg.batch, cfg.seq);
    if seq > max_len {
        return Err(CliError::with_fix(
            format!("--seq {seq} does not fit {model}/{config}, whose context is {max_len}"),
            format!("use 1 ≤ --seq ≤ {max_len}"),
        ));
    }
    let vocab = tokenizer.vocab_size();
    let train = tokenizer.encode(data::split(&text, Split::Train))?;
    let valid = tokenizer.encode(data::split(&text, Split::Validation))?;
    if train.len() <= seq || valid.len() < 2 {
        return Err(CliError::with_fix(
            format!(
                "`{}` has {} training and {} validation tokens; a batch needs {} (--seq + 1) and validation 2",
                cfg.data,
                train.len(),
                valid.len(),
                seq + 1
            ),
            "pass a larger text as --data, or a smaller --seq",
        ));
    }
    let metrics_path = a.out.join("metrics.jsonl");
    let mut metrics = prepare_out(a, resumed.as_ref().map(|(_, c)| c.meta.step))?;
    let ckpt_path = a.out.join("checkpoint.safetensors");
    let same_file = |p: &Path| p.canonicalize().ok().is_some_and(|p| Some(p) == ckpt_path.canonicalize().ok());
    let on_disk = resumed.as_ref().filter(|(p, _)| same_file(p)).map(|(_, c)| c.meta.step);
    let mut keeper = Keeper::new(&ckpt_path, on_disk);

    let graph = |kind| lsc_models::build_graph(&model, &config, vocab, kind).map_err(|e| CliError::new(e.to_string()));
    let forward = graph(GraphKind::Forward)?;
    let inference = lsc_runtime::prepare::optimize_for_inference(&graph(GraphKind::Inference)?)?;
    let tokenizer_json = tokenizer.to_json()?;
    let optimizer_name = if matches!(cfg.optimizer, Optimizer::AdamW { .. }) { "adamw" } else { "sgd" };
    let mut trainer = match resumed {
        Some((path, ckpt)) => {
            let line = if overrides.is_empty() {
                "with its settings".to_string()
            } else {
                format!("with its settings except {}", overrides.join(", "))
            };
            println!("resuming {model}/{config} at step {} from {} {line}", ckpt.meta.step, path.display());
            Trainer::resume(cfg, &forward, ckpt, a.rewarm, a.reset_optimizer)?
        }
        None => {
            let params = lsc_runtime::init::init_params(&forward, cfg.seed).map_err(CliError::new)?;
            Trainer::new(cfg, &forward, params)?
        }
    };
    let nodes = |p: &lsc_ir::Program| p.graphs().map(|g| g.dag.node_count()).sum::<usize>();
    println!(
        "{model}/{config}: compiled the training step (forward + backward + {optimizer_name}) into one graph of {} nodes (forward alone {}); {} parameters; batch {batch} × {seq} tokens of `{}`",
        nodes(trainer.step_program()),
        nodes(&forward),
        lsc_passes::parameter_count(&forward).unwrap_or(0),
        trainer.cfg.data
    );
    if a.profile {
        trainer.enable_profile();
    }
    let n_local = lsc_models::transformer_config(&model, &config).map(|c| c.n_local_heads).unwrap_or(0);
    let run_on = trainer.cfg.run_on();
    let mean_nll = |params: &lsc_interp::Tensors<f32>, tokens: &[u32]| {
        let p = lsc_runtime::prepare::bind_weights(&inference, params, run_on)?;
        lsc_runtime::eval::mean_nll(&p.exe, &p.params, tokens, seq, Some(a.eval_windows), batch)
    };
    let eval = |t: &Trainer| mean_nll(&t.params()?, &valid);
    // Why a run stopped, with the state of the checkpoint on disk and the fix that applies.
    let stop = |problem: String, keeper: &Keeper, diverged: bool| {
        let resume = match keeper.on_disk() {
            Some(_) => format!("resume from {}", keeper.path().display()),
            None => "start again".to_string(),
        };
        let fix = if diverged { format!("lower --lr (or raise --diverge-factor) and {resume}") } else { resume };
        CliError::with_fix(format!("{problem}; stopping: {}", keeper.describe()), fix)
    };

    let mut time_fit = match (a.fit_to_time, a.max_seconds) {
        (true, Some(budget)) if trainer.cfg.schedule.horizon().is_some() => Some(TimeFit::new(budget)),
        (true, _) => {
            return Err(CliError::with_fix(
                "--fit-to-time needs a schedule that decays to an end, not a constant or inverse-sqrt one",
                "pass --schedule cosine or wsd with --max-seconds",
            ))
        }
        (false, _) => None,
    };
    let mut goal = trainer.cfg.steps;
    let max_steps = goal;
    let bar = indicatif::ProgressBar::new(goal);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.step);
    let start = Instant::now();
    let first_step = trainer.step;
    let mut watch = LossWatch::new(a.spike_factor, a.diverge_factor, trainer.cfg.schedule.warmup());
    let (mut last_loss, mut last_val) = (f64::NAN, f64::NAN);
    let mut curve: Vec<(f64, f64)> = Vec::new();
    let mut val_curve: Vec<(f64, f64)> = Vec::new();
    let mut logit_curves: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    while trainer.step < goal {
        if a.max_seconds.is_some_and(|m| start.elapsed().as_secs_f64() >= m) {
            bar.println(format!(
                "stopping at step {} after --max-seconds {}",
                trainer.step,
                a.max_seconds.unwrap_or_default()
            ));
            break;
        }
        let t0 = Instant::now();
        let stats = match trainer.step(&train) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                keeper.discard();
                let diverged = matches!(e, lsc_runtime::RuntimeError::Diverged(_));
                return Err(stop(e.to_string(), &keeper, diverged));
            }
        };
        let dt = t0.elapsed().as_secs_f64();
        let tok_s = (batch * seq) as f64 / dt;
        last_loss = stats.loss;
        curve.push((stats.step as f64, stats.loss));
        let mut rec = json!({
            "step": stats.step, "loss": stats.loss, "lm_loss": stats.lm_loss, "lr": stats.lr,
            "grad_norm": stats.grad_norm, "tokens_per_s": tok_s, "elapsed_s": start.elapsed().as_secs_f64(),
        });
        // The loss of this step judges the weights of the step before it.
        match watch.observe(stats.step, stats.lm_loss) {
            Verdict::Diverged { loss, mean } => {
                bar.abandon();
                keeper.discard();
                return Err(stop(
                    format!(
                        "step {}: the loss {loss:.4} is over {}× its running mean {mean:.4}: the run diverged",
                        stats.step, a.diverge_factor
                    ),
                    &keeper,
                    true,
                ));
            }
            Verdict::Spike { loss, mean } => {
                rec["spike"] = json!(true);
                bar.println(format!("warning: loss spike at step {}: {loss:.4} (running mean {mean:.4})", stats.step));
                if let Some(held) = keeper.discard() {
                    bar.println(format!("note: not writing the checkpoint of step {held}: the step after it spiked"));
                }
            }
            Verdict::Sound => {
                keeper.confirm()?;
            }
        }
        if stats.step % a.monitor_every == 0 || stats.step == 1 {
            for (k, v) in logit_monitors(&stats, n_local) {
                rec[&k] = json!(v);
                if k.starts_with("max_logit") {
                    logit_curves.entry(k).or_default().push((stats.step as f64, v));
                }
            }
        }
        if let Some(fit) = time_fit.as_mut() {
            let now = start.elapsed().as_secs_f64();
            if let Some(s) = fit.refit(&trainer.cfg.schedule, trainer.schedule_start, trainer.step, now, max_steps) {
                goal = trainer.schedule_start + s.horizon().unwrap_or(max_steps);
                trainer.cfg.schedule = s;
                trainer.cfg.steps = goal;
                bar.set_length(goal);
                rec["fitted_steps"] = json!(goal);
            }
        }
        let last = stats.step == goal;
        if (a.eval_every > 0 && stats.step % a.eval_every == 0) || last {
            let l = eval(&trainer)?;
            last_val = l.nll;
            val_curve.push((stats.step as f64, l.nll));
            rec["val_loss"] = json!(l.nll);
        }
        writeln!(metrics, "{rec}").map_err(|e| CliError::new(format!("{}: {e}", metrics_path.display())))?;
        bar.set_position(stats.step);
        bar.set_message(format!("loss {:.4} lr {:.2e} {:.0} tok/s", stats.loss, stats.lr, tok_s));
        if stats.step % a.ckpt_every == 0 && !last {
            keeper.hold(trainer.checkpoint(tokenizer_json.clone())?).map_err(|e| stop(e, &keeper, true))?;
        }
    }
    bar.finish_and_clear();
    // One download of the final weights serves the last evaluation, the probe and the checkpoint.
    let final_ckpt = trainer.checkpoint(tokenizer_json.clone())?;
    if val_curve.last().map(|(s, _)| *s as u64) != Some(trainer.step) {
        last_val = mean_nll(&final_ckpt.params, &valid)?.nll;
        val_curve.push((trainer.step as f64, last_val));
    }
    // The final weights have no next step to vouch for them: their loss on
    // training windows stands in for it.
    let probe = mean_nll(&final_ckpt.params, &train)?.nll;
    keeper.hold(final_ckpt).map_err(|e| stop(e, &keeper, true))?;
    if let Verdict::Spike { loss, mean } | Verdict::Diverged { loss, mean } = watch.judge(trainer.step + 1, probe) {
        keeper.discard();
        return Err(stop(
            format!(
                "the final weights (step {}) give a training loss of {loss:.4} against a running mean of {mean:.4}, so they are not written",
                trainer.step
            ),
            &keeper,
            true,
        ));
    }
    keeper.confirm()?;
    if let Some(json) = &tokenizer_json {
        lsc_runtime::weights::write_atomic(&a.out.join("tokenizer.json"), json.as_bytes())?;
    }
    let wall = start.elapsed().as_secs_f64();
    let steps_run = trainer.step - first_step;
    let tokens_per_s = (steps_run as usize * batch * seq) as f64 / wall.max(1e-9);
    write_plots(&a.out, &model, &curve, &val_curve, &logit_curves)?;
    println!(
        "{model}/{config}: {} steps in {wall:.1}s ({tokens_per_s:.0} tokens/s), train loss {last_loss:.4}, validation loss {last_val:.4}; wrote {}",
        trainer.step,
        a.out.display()
    );
    let profile = if a.profile { trainer.profile() } else { Vec::new() };
    if !profile.is_empty() {
        let total: f64 = profile.iter().map(|p| p.2).sum();
        println!("time per op kind per step ({}), {total:.3}s in all:", trainer.cfg.backend);
        for (op, calls, secs) in profile.iter().take(12) {
            println!("  {op:<16} {calls:>5} calls {secs:>8.3}s {:>5.1}%", 100.0 * secs / total.max(1e-12));
        }
    }
    if a.sample_tokens > 0 {
        let prompt: Vec<u32> = valid.iter().copied().take(24).collect();
        let args = super::generate::GenerateArgs {
            source: crate::source::TrainedArgs {
                ckpt: None,
                model: None,
                config: config.clone(),
                weights: None,
                allow_unused: false,
                backend: a.backend,
            },
            prompt: String::new(),
            max_tokens: a.sample_tokens.min(max_len.saturating_sub(prompt.len())),
            temperature: 0.8,
            top_k: 40,
            seed: trainer.cfg.seed,
        };
        let mut text = Vec::new();
        let params = trainer.params()?;
        let m = super::generate::Model { name: &model, config: &config, vocab, params: &params, tokenizer: &tokenizer };
        super::generate::continue_text(&m, &prompt, &args, &mut |b| text.extend_from_slice(b))?;
        println!(
            "sample (temperature 0.8, top-k 40, prompt from the validation text):\n{}",
            String::from_utf8_lossy(&text)
        );
    }
    if a.json_summary {
        println!(
            "{}",
            json!({"steps": trainer.step, "tokens_per_s": tokens_per_s, "train_loss": last_loss, "val_loss": last_val, "wall_s": wall})
        );
    }
    Ok(())
}

fn write_plots(
    out: &Path,
    model: &str,
    curve: &[(f64, f64)],
    val: &[(f64, f64)],
    logits: &std::collections::BTreeMap<String, Vec<(f64, f64)>>,
) -> CliResult {
    let series = vec![
        Series { name: "train".into(), points: curve.to_vec() },
        Series { name: "validation".into(), points: val.to_vec() },
    ];
    plot::write(&out.join("loss.svg"), &format!("{model}: loss"), "step", "nats / token", &series)?;
    if !logits.is_empty() {
        let series: Vec<Series> = logits
            .iter()
            .map(|(k, v)| Series { name: k.trim_start_matches("max_logit.").into(), points: v.clone() })
            .collect();
        plot::write(
            &out.join("logits.svg"),
            &format!("{model}: max pre-softmax attention logit"),
            "step",
            "logit",
            &series,
        )?;
    }
    Ok(())
}
