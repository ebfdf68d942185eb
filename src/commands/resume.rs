//! `lsc train --resume`: the checkpoint's own training settings, validated
//! like flags, with the flags given on the command line as reported overrides.

use super::train::TrainArgs;
use crate::error::CliError;
use lsc_passes::train::Optimizer;
use lsc_runtime::checkpoint::Checkpoint;
use lsc_runtime::train::TrainConfig;
use std::fmt::Display;
use std::path::Path;

/// A resumed run's configuration and the overrides, one `--flag new (was old)` each.
pub struct Resumed {
    /// What the run continues with.
    pub cfg: TrainConfig,
    /// The settings the command line changed.
    pub overrides: Vec<String>,
}

/// The checkpoint's training config, validated, with the explicit flags of `a`
/// applied. Flags that cannot apply to a resumed run (another model, tokenizer
/// or optimizer) are refused.
pub fn config(a: &TrainArgs, ckpt: &Checkpoint, path: &Path) -> Result<Resumed, CliError> {
    let bad = |what: String| {
        CliError::with_fix(
            format!("{}: {what}", path.display()),
            "the checkpoint's settings were edited or corrupted; resume from another checkpoint",
        )
    };
    let mut cfg: TrainConfig = serde_json::from_value(ckpt.meta.train.clone())
        .map_err(|e| bad(format!("its training settings cannot be read ({e})")))?;
    cfg.validate().map_err(|e| bad(format!("its training setting {e}")))?;
    let given = |id: &str| a.explicit.iter().any(|e| e == id);
    for (flag, id, want, have) in [
        ("--model", "model", a.model.as_str(), cfg.model.as_str()),
        ("--config", "config", a.config.as_str(), cfg.config.as_str()),
        ("--tokenizer", "tokenizer", a.tokenizer.as_str(), cfg.tokenizer.as_str()),
    ] {
        if given(id) && want != have {
            return Err(CliError::with_fix(
                format!("{} holds a run with {flag} {have}, not {want}", path.display()),
                format!("drop {flag} to continue it, or start a new run without --resume"),
            ));
        }
    }
    if given("vocab_size") && cfg.tokenizer == "bpe" && a.vocab_size != cfg.vocab {
        return Err(CliError::with_fix(
            format!("{} holds a model with a vocabulary of {}, not {}", path.display(), cfg.vocab, a.vocab_size),
            "drop --vocab-size to continue it",
        ));
    }
    let kind = |o: &Optimizer| if matches!(o, Optimizer::AdamW { .. }) { "adamw" } else { "sgd" };
    if given("optimizer") && a.optimizer != kind(&cfg.optimizer) {
        return Err(CliError::with_fix(
            format!(
                "{} holds {} state; it cannot continue with --optimizer {}",
                path.display(),
                kind(&cfg.optimizer),
                a.optimizer
            ),
            "drop --optimizer, or start a new run without --resume",
        ));
    }

    let mut overrides = Vec::new();
    let mut set = |id: &str, flag: &str, old: &dyn Display, new: &dyn Display| {
        let (old, new) = (old.to_string(), new.to_string());
        if given(id) && old != new {
            overrides.push(format!("{flag} {new} (was {old})"));
            true
        } else {
            false
        }
    };
    if set("data", "--data", &cfg.data, &a.data) {
        cfg.data = a.data.clone();
    }
    if set("batch", "--batch", &cfg.batch, &a.batch) {
        cfg.batch = a.batch;
    }
    if let Some(seq) = a.seq {
        if set("seq", "--seq", &cfg.seq, &seq) {
            cfg.seq = seq;
        }
    }
    if set("steps", "--steps", &cfg.steps, &a.steps) {
        cfg.steps = a.steps;
    }
    if set("seed", "--seed", &cfg.seed, &a.seed) {
        cfg.seed = a.seed;
    }
    let clip = (a.clip > 0.0).then_some(a.clip);
    if set("clip", "--clip", &show(cfg.clip_norm.map(num)), &show(clip.map(num))) {
        cfg.clip_norm = clip;
    }
    if set("decay_all", "--decay-all", &cfg.decay_all, &a.decay_all) {
        cfg.decay_all = a.decay_all;
    }
    if set("no_fuse", "--no-fuse", &!cfg.fuse, &a.no_fuse) {
        cfg.fuse = !a.no_fuse;
    }
    if set("recompute_calls", "--recompute-calls", &cfg.recompute_calls, &a.recompute_calls) {
        cfg.recompute_calls = a.recompute_calls;
    }
    if set("backend", "--backend", &cfg.backend, &a.backend.backend) {
        cfg.backend = a.backend.backend;
    }
    if set("precision", "--precision", &cfg.precision, &a.backend.precision) {
        cfg.precision = a.backend.precision;
    }
    match &mut cfg.optimizer {
        Optimizer::AdamW { beta1, beta2, weight_decay, .. } => {
            if set("beta1", "--beta1", &num(*beta1), &num(a.beta1)) {
                *beta1 = a.beta1;
            }
            if set("beta2", "--beta2", &num(*beta2), &num(a.beta2)) {
                *beta2 = a.beta2;
            }
            if set("weight_decay", "--weight-decay", &num(*weight_decay), &num(a.weight_decay)) {
                *weight_decay = a.weight_decay;
            }
        }
        Optimizer::Sgd { momentum, weight_decay } => {
            if set("momentum", "--momentum", &num(*momentum), &num(a.momentum)) {
                *momentum = a.momentum;
            }
            if set("weight_decay", "--weight-decay", &num(*weight_decay), &num(a.weight_decay)) {
                *weight_decay = a.weight_decay;
            }
        }
    }

    // The schedule: the checkpoint's numbers, each replaced by its flag when given.
    // With --rewarm the new schedule starts at the checkpoint's step, and its
    // horizon (unless --decay-steps) is the rest of the run.
    let mut s = cfg.schedule.args(cfg.steps);
    if a.rewarm {
        let rest = cfg.steps.saturating_sub(ckpt.meta.step);
        s.total = rest;
        s.decay = match s.kind.as_str() {
            "cosine" => Some(rest),
            "wsd" => Some(s.decay.unwrap_or(rest / 5).min(rest)),
            _ => s.decay,
        };
    }
    if set("schedule", "--schedule", &s.kind, &a.schedule) {
        s.kind = a.schedule.clone();
    }
    if set("lr", "--lr", &num(s.max_lr), &num(a.lr)) {
        s.max_lr = a.lr;
    }
    if set("min_lr", "--min-lr", &num(s.min_lr), &num(a.min_lr)) {
        s.min_lr = a.min_lr;
    }
    if set("warmup", "--warmup", &s.warmup, &a.warmup) {
        s.warmup = a.warmup;
    }
    if let Some(d) = a.decay_steps {
        if set("decay_steps", "--decay-steps", &show(s.decay), &d) {
            s.decay = Some(d);
        }
    }
    cfg.schedule = s.build().map_err(|e| CliError::with_fix(e, "pass --schedule constant|cosine|wsd|inverse-sqrt"))?;
    if cfg.steps <= ckpt.meta.step {
        return Err(CliError::with_fix(
            format!(
                "{} is at step {} and the run ends at step {}: nothing to train",
                path.display(),
                ckpt.meta.step,
                cfg.steps
            ),
            format!("pass --steps above {}", ckpt.meta.step),
        ));
    }
    Ok(Resumed { cfg, overrides })
}

fn show<T: Display>(x: Option<T>) -> String {
    x.map_or_else(|| "none".into(), |v| v.to_string())
}

/// A number as a person would write it: `0.003`, `1e38`.
fn num(x: f64) -> String {
    let plain = x.to_string();
    if plain.len() > 10 {
        format!("{x:e}")
    } else {
        plain
    }
}
