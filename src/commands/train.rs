//! `lsc train`: trains a built-in model on text, with a progress bar,
//! `metrics.jsonl`, checkpoints, loss and attention-logit plots.

use crate::error::{CliError, CliResult};
use crate::plot::{self, Series};
use lsc_models::GraphKind;
use lsc_passes::train::Optimizer;
use lsc_runtime::checkpoint::Checkpoint;
use lsc_runtime::data::{self, Split};
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
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per sequence (default: the model's context, at most 256).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Floor of the decaying schedules.
    #[arg(long, default_value_t = 3e-4)]
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
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Apply weight decay to every parameter.
    #[arg(long)]
    pub decay_all: bool,
    /// AdamW's first-moment decay.
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// AdamW's second-moment decay (0.99 suits small batches; 0.95 is the large-batch default).
    #[arg(long, default_value_t = 0.95)]
    pub beta2: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Output folder: metrics.jsonl, checkpoint.safetensors, loss.svg, logits.svg.
    #[arg(long, default_value = "out/train")]
    pub out: PathBuf,
    /// Continue from a checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
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
    #[arg(long, default_value_t = 512)]
    pub vocab_size: usize,
    /// Stop cleanly (with a final checkpoint) after this many seconds.
    #[arg(long)]
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
    #[arg(long, default_value_t = 16)]
    pub eval_windows: usize,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub ckpt_every: u64,
    /// Record the attention-logit monitor every N steps.
    #[arg(long, default_value_t = 10)]
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
}

fn config_from(a: &TrainArgs, seq: usize, vocab: usize) -> Result<TrainConfig, CliError> {
    let schedule = Schedule::from_cli(&a.schedule, a.lr, a.min_lr, a.warmup, a.steps, a.decay_steps)
        .map_err(|e| CliError::with_fix(e, "pass --schedule constant|cosine|wsd|inverse-sqrt"))?;
    let optimizer = match a.optimizer.as_str() {
        "adamw" => {
            for (name, b) in [("--beta1", a.beta1), ("--beta2", a.beta2)] {
                if !(0.0..1.0).contains(&b) {
                    return Err(CliError::with_fix(
                        format!("{name} {b} is outside [0, 1)"),
                        format!("pass {name} between 0 and 1, e.g. 0.9"),
                    ));
                }
            }
            Optimizer::AdamW { beta1: a.beta1, beta2: a.beta2, eps: 1e-8, weight_decay: a.weight_decay }
        }
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

/// Runs `lsc train`.
pub fn run(a: &TrainArgs) -> CliResult {
    let max_len = lsc_models::max_seq_len(&a.model, &a.config).map_err(|e| CliError::new(e.to_string()))?;
    let seq = a.seq.unwrap_or(max_len.min(256));
    if seq == 0 || seq > max_len || a.batch == 0 {
        return Err(CliError::with_fix(
            format!("--seq {seq} / --batch {} do not fit the model (context {max_len})", a.batch),
            "use 1 ≤ --seq ≤ context and --batch ≥ 1",
        ));
    }
    let text = data::load_text(&a.data, a.seed)?;
    let resumed = a.resume.as_ref().map(|p| Checkpoint::load(p)).transpose()?;
    let tokenizer = match (&resumed, a.tokenizer.as_str()) {
        (Some(c), _) => match &c.tokenizer {
            Some(json) => Tokenizer::from_json(json)?,
            None => Tokenizer::Bytes,
        },
        (None, "bytes") => Tokenizer::Bytes,
        (None, "bpe") => Tokenizer::train_bpe(data::split(&text, Split::Train), a.vocab_size)?,
        (None, other) => {
            return Err(CliError::with_fix(format!("unknown tokenizer `{other}`"), "pass --tokenizer bytes or bpe"))
        }
    };
    let vocab = tokenizer.vocab_size();
    let cfg = config_from(a, seq, vocab)?;
    let graph =
        |kind| lsc_models::build_graph(&a.model, &a.config, vocab, kind).map_err(|e| CliError::new(e.to_string()));
    let forward = graph(GraphKind::Forward)?;
    let inference = lsc_runtime::prepare::optimize_for_inference(&graph(GraphKind::Inference)?)?;
    let train = tokenizer.encode(data::split(&text, Split::Train))?;
    let valid = tokenizer.encode(data::split(&text, Split::Validation))?;
    let tokenizer_json = tokenizer.to_json()?;
    let mut trainer = match resumed {
        Some(ckpt) => {
            let path = a.resume.as_deref().unwrap_or(Path::new("?"));
            let (m, c) =
                (ckpt.meta.train["model"].as_str().unwrap_or(""), ckpt.meta.train["config"].as_str().unwrap_or(""));
            if m != a.model || c != a.config {
                return Err(CliError::with_fix(
                    format!("{} holds {m}/{c}, not {}/{}", path.display(), a.model, a.config),
                    format!("pass --model {m} --config {c}"),
                ));
            }
            Trainer::resume(cfg.clone(), &forward, ckpt, a.rewarm, a.reset_optimizer)?
        }
        None => {
            let params = lsc_runtime::init::init_params(&forward, a.seed).map_err(CliError::new)?;
            Trainer::new(cfg.clone(), &forward, params)?
        }
    };
    let nodes = |p: &lsc_ir::Program| p.graphs().map(|g| g.dag.node_count()).sum::<usize>();
    println!(
        "{}/{}: compiled the training step (forward + backward + {}) into one graph of {} nodes (forward alone {}); {} parameters; batch {} × {seq} tokens of `{}`",
        a.model,
        a.config,
        a.optimizer,
        nodes(trainer.step_program()),
        nodes(&forward),
        lsc_passes::parameter_count(&forward).unwrap_or(0),
        a.batch,
        a.data
    );
    if a.profile {
        trainer.enable_profile();
    }
    std::fs::create_dir_all(&a.out).map_err(|e| {
        CliError::with_fix(format!("cannot create {}: {e}", a.out.display()), "choose a writable --out")
    })?;
    let ckpt_path = a.out.join("checkpoint.safetensors");
    let metrics_path = a.out.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(a.resume.is_some())
        .write(true)
        .truncate(a.resume.is_none())
        .open(&metrics_path)
        .map_err(|e| CliError::new(format!("{}: {e}", metrics_path.display())))?;
    let n_local = lsc_models::transformer_config(&a.model, &a.config).map(|c| c.n_local_heads).unwrap_or(0);
    let eval = |t: &Trainer| {
        let p = lsc_runtime::prepare::bind_weights(&inference, &t.params()?, t.cfg.run_on())?;
        lsc_runtime::eval::mean_nll(&p.exe, &p.params, &valid, seq, Some(a.eval_windows), a.batch)
    };

    let mut time_fit = match (a.fit_to_time, a.max_seconds) {
        (true, Some(budget)) if trainer.cfg.schedule.horizon().is_some() => Some(TimeFit::new(budget)),
        (true, _) => {
            return Err(CliError::with_fix(
                format!("--fit-to-time needs a schedule that decays to an end, not `{}`", a.schedule),
                "pass --schedule cosine or wsd with --max-seconds",
            ))
        }
        (false, _) => None,
    };
    let mut goal = a.steps;
    let bar = indicatif::ProgressBar::new(goal);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.step);
    let start = Instant::now();
    let first_step = trainer.step;
    let (mut ema, mut last_loss, mut last_val) = (None::<f64>, f64::NAN, f64::NAN);
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
                return Err(CliError::with_fix(
                    e.to_string(),
                    format!("lower --lr or resume from {}", ckpt_path.display()),
                ));
            }
        };
        let dt = t0.elapsed().as_secs_f64();
        let tok_s = (a.batch * seq) as f64 / dt;
        let spike = ema.is_some_and(|m| stats.loss > 1.5 * m && stats.step > a.warmup);
        ema = Some(ema.map_or(stats.loss, |m| 0.95 * m + 0.05 * stats.loss));
        last_loss = stats.loss;
        curve.push((stats.step as f64, stats.loss));
        let mut rec = json!({
            "step": stats.step, "loss": stats.loss, "lm_loss": stats.lm_loss, "lr": stats.lr,
            "grad_norm": stats.grad_norm, "tokens_per_s": tok_s, "elapsed_s": start.elapsed().as_secs_f64(),
        });
        if spike {
            rec["spike"] = json!(true);
            bar.println(format!(
                "warning: loss spike at step {}: {:.4} (running mean {:.4})",
                stats.step,
                stats.loss,
                ema.unwrap_or_default()
            ));
        }
        if stats.step % a.monitor_every.max(1) == 0 || stats.step == 1 {
            for (k, v) in logit_monitors(&stats, n_local) {
                rec[&k] = json!(v);
                if k.starts_with("max_logit") {
                    logit_curves.entry(k).or_default().push((stats.step as f64, v));
                }
            }
        }
        if let Some(fit) = time_fit.as_mut() {
            let now = start.elapsed().as_secs_f64();
            if let Some(s) = fit.refit(&trainer.cfg.schedule, trainer.schedule_start, trainer.step, now, a.steps) {
                goal = trainer.schedule_start + s.horizon().unwrap_or(a.steps);
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
        if stats.step % a.ckpt_every.max(1) == 0 {
            trainer.checkpoint(tokenizer_json.clone())?.save(&ckpt_path)?;
        }
    }
    bar.finish_and_clear();
    if val_curve.last().map(|(s, _)| *s as u64) != Some(trainer.step) {
        last_val = eval(&trainer)?.nll;
        val_curve.push((trainer.step as f64, last_val));
    }
    trainer.checkpoint(tokenizer_json.clone())?.save(&ckpt_path)?;
    if let Some(json) = &tokenizer_json {
        lsc_runtime::weights::write_atomic(&a.out.join("tokenizer.json"), json.as_bytes())?;
    }
    let wall = start.elapsed().as_secs_f64();
    let steps_run = trainer.step - first_step;
    let tokens_per_s = (steps_run as usize * a.batch * seq) as f64 / wall.max(1e-9);
    write_plots(&a.out, &a.model, &curve, &val_curve, &logit_curves)?;
    println!(
        "{}/{}: {} steps in {:.1}s ({:.0} tokens/s), train loss {:.4}, validation loss {:.4}; wrote {}",
        a.model,
        a.config,
        trainer.step,
        wall,
        tokens_per_s,
        last_loss,
        last_val,
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
                config: a.config.clone(),
                weights: None,
                backend: a.backend,
            },
            prompt: String::new(),
            max_tokens: a.sample_tokens.min(max_len.saturating_sub(prompt.len())),
            temperature: 0.8,
            top_k: 40,
            seed: a.seed,
        };
        let mut text = Vec::new();
        let params = trainer.params()?;
        let model =
            super::generate::Model { name: &a.model, config: &a.config, vocab, params: &params, tokenizer: &tokenizer };
        super::generate::continue_text(&model, &prompt, &args, &mut |b| text.extend_from_slice(b))?;
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
