//! `lsc repro flatness`: Liu et al., "Same Pre-training Loss, Better
//! Downstream" at small scale. On an HMM language whose optimal loss is known,
//! models trained to that loss are made to differ in flatness by (a) training
//! on after convergence, (b) a larger width and (c) the optimizer of the
//! continuation (SGD or AdamW), and each is measured for validation loss,
//! Hessian trace (Hutchinson), Fisher trace (sampled labels) and the accuracy
//! of a linear probe that reads a hidden state of the HMM from frozen features.
//!
//! One departure from the paper: lsc's models are causal, so the loss is
//! next-token prediction over whole sentences, not one masked token; its floor
//! is the HMM's exact conditional entropy, from the forward algorithm.

use super::{verdict, Metrics, ReproArgs, Verdict};
use crate::error::{CliError, CliResult};
use crate::plot::{self, Series};
use lsc_interp::{Tensors, Value};
use lsc_ir::Program;
use lsc_models::TransformerConfig;
use lsc_passes::train::Optimizer;
use lsc_runtime::backend::{Executable, Loaded, RunOn};
use lsc_runtime::flatness::{Batch, Curvature, Estimate};
use lsc_runtime::hmm::{Hmm, Sentence};
use lsc_runtime::init::Rng;
use lsc_runtime::probe::{self, Labelled, ProbeConfig};
use lsc_runtime::schedule::Schedule;
use lsc_runtime::train::{TrainConfig, Trainer};
use serde_json::json;
use std::fmt::Write;

/// The DIGEST's smallest reproduction: 20 states, 50 tokens, sentences of 12.
const STATES: usize = 20;
const VOCAB: usize = 50;
const LENGTH: usize = 12;
/// The probe reads hidden state 6 (1-based), as in the paper's HMM task.
const PROBED: usize = 5;
const BATCH: usize = 64;
const SEED: u64 = 2026;

/// How long each part runs.
struct Scale {
    widths: [usize; 2],
    pretrain: u64,
    continued: u64,
    every: u64,
    probes: usize,
    fisher: usize,
    power_iters: usize,
    probe_train: usize,
    probe_test: usize,
}

const FULL: Scale = Scale {
    widths: [32, 96],
    pretrain: 3000,
    continued: 3000,
    every: 500,
    probes: 48,
    fisher: 48,
    power_iters: 20,
    probe_train: 3000,
    probe_test: 1500,
};

const QUICK: Scale = Scale {
    widths: [16, 32],
    pretrain: 250,
    continued: 250,
    every: 125,
    probes: 8,
    fisher: 8,
    power_iters: 5,
    probe_train: 600,
    probe_test: 400,
};

/// The input of a sentence is BOS and its first `L − 1` tokens; the targets are its `L` tokens.
fn batch_of(hmm: &Hmm, sentences: &[Sentence]) -> Batch {
    let mut b = Batch { ids: Vec::new(), targets: Vec::new() };
    for s in sentences {
        b.ids.push(hmm.bos() as i64);
        b.ids.extend(s.tokens[..LENGTH - 1].iter().map(|&x| x as i64));
        b.targets.extend(s.tokens.iter().map(|&x| x as i64));
    }
    b
}

fn model_config(width: usize) -> TransformerConfig {
    let mut cfg = TransformerConfig::named("tiny", false).expect("the tiny config exists");
    cfg.vocab = VOCAB + 1;
    cfg.d_model = width;
    cfg.n_heads = 4;
    cfg.d_hidden = 4 * width;
    cfg.max_pos = LENGTH + 4;
    cfg
}

/// One measurement of a model.
struct Measurement {
    loss: f64,
    trace: Estimate,
    fisher: Estimate,
    /// λ_max(H) by power iteration on one batch.
    top: f64,
    probe: f64,
}

/// The fixed validation sentences (the probe's training then test sets),
/// their model input and the HMM's optimal loss on them.
struct Validation {
    sentences: Vec<Sentence>,
    batch: Batch,
    floor: f64,
}

impl Validation {
    fn sample(hmm: &Hmm, rows: usize) -> Validation {
        let mut rng = Rng::new(SEED ^ 0xfeed);
        let sentences: Vec<Sentence> = (0..rows).map(|_| hmm.sample(&mut rng)).collect();
        let floor = sentences.iter().flat_map(|s| hmm.optimal_losses(&s.tokens)).sum::<f64>() / (rows * LENGTH) as f64;
        Validation { batch: batch_of(hmm, &sentences), sentences, floor }
    }
}

/// What measures a model of one width: the curvature programs, and the
/// forward pass with features over the validation sentences.
struct Meter<'a> {
    curvature: Curvature,
    features: Box<dyn Loaded>,
    hmm: &'a Hmm,
    valid: &'a Validation,
    scale: &'a Scale,
}

impl<'a> Meter<'a> {
    fn new(
        forward: &Program,
        params: &Tensors<f32>,
        on: RunOn,
        (hmm, valid): (&'a Hmm, &'a Validation),
        scale: &'a Scale,
    ) -> Result<Meter<'a>, CliError> {
        let curvature = Curvature::new(forward, params, on, BATCH, LENGTH)?;
        let with = lsc_models::with_features(forward).map_err(|e| CliError::new(e.to_string()))?;
        let features = Executable::new(with, on)?.load_with(valid.sentences.len(), LENGTH, params)?;
        Ok(Meter { curvature, features, hmm, valid, scale })
    }

    fn measure(&mut self, params: &Tensors<f32>) -> Result<Measurement, CliError> {
        self.curvature.set_params(params)?;
        // The same probes and batches at every measurement (common random numbers).
        let mut data = Rng::new(SEED ^ 0xbeef);
        let hmm = self.hmm;
        let mut next = || Ok(batch_of(hmm, &(0..BATCH).map(|_| hmm.sample(&mut data)).collect::<Vec<_>>()));
        let mut rng = Rng::new(SEED ^ 0xcafe);
        let trace = self.curvature.hutchinson(&mut next, self.scale.probes, &mut rng, &mut || ())?;
        let fisher = self.curvature.fisher_trace(&mut next, self.scale.fisher, &mut rng, &mut || ())?;
        let top = self.curvature.top_eigenvalue(&next()?, self.scale.power_iters, &mut rng, &mut || ())?.value;
        let (loss, probe) = self.loss_and_probe(params)?;
        Ok(Measurement { loss, trace, fisher, top, probe })
    }

    /// The validation loss over the probe's sentences and the probe's test accuracy.
    fn loss_and_probe(&mut self, params: &Tensors<f32>) -> Result<(f64, f64), CliError> {
        let (rows, b) = (self.valid.sentences.len(), &self.valid.batch);
        for (name, v) in params {
            if self.features.has(name) {
                self.features.set(name, v)?;
            }
        }
        self.features.set("input_ids", &Value::ints(vec![rows, LENGTH], b.ids.clone()))?;
        self.features.run()?;
        let logits = self.features.output("logits")?;
        let (feats, logits) = (self.features.output("features")?, logits.as_floats().unwrap_or_default());
        let v = VOCAB + 1;
        let mut nll = 0.0;
        for (row, &y) in logits.chunks(v).zip(&b.targets) {
            let p = lsc_runtime::generate::softmax(row);
            nll -= p[y as usize].max(f64::MIN_POSITIVE).ln();
        }
        let feats = feats.as_floats().unwrap_or_default();
        let per = feats.len() / rows;
        let set = |range: std::ops::Range<usize>| Labelled {
            features: feats[range.start * per..range.end * per].to_vec(),
            labels: self.valid.sentences[range].iter().map(|s| s.states[PROBED]).collect(),
            dim: per,
        };
        let n = self.scale.probe_train;
        let acc = probe::accuracy(&set(0..n), &set(n..rows), STATES, ProbeConfig::default()).map_err(CliError::new)?;
        Ok((nll / (rows * LENGTH) as f64, acc))
    }
}

/// A run's measurements over steps, for the plots and tables.
struct Run {
    name: String,
    points: Vec<(u64, Measurement)>,
}

fn train_config(width: usize, steps: u64, optimizer: Optimizer, schedule: Schedule, on: RunOn) -> TrainConfig {
    TrainConfig {
        model: "transformer".into(),
        config: format!("hmm-d{width}"),
        data: format!("hmm:{STATES}x{VOCAB}x{LENGTH}"),
        batch: BATCH,
        seq: LENGTH,
        steps,
        schedule,
        optimizer,
        clip_norm: Some(1.0),
        decay_all: false,
        seed: SEED,
        loss_terms: Vec::new(),
        tokenizer: "hmm".into(),
        vocab: VOCAB + 1,
        fuse: true,
        backend: on.backend,
        precision: on.precision,
        recompute_calls: false,
    }
}

/// Trains `steps` steps on fresh sentences, measuring every `every` steps
/// (and at the end); `offset` is the step count before this phase.
#[allow(clippy::too_many_arguments)]
fn phase(
    trainer: &mut Trainer,
    meter: &mut Meter,
    run: &mut Run,
    (offset, steps): (u64, u64),
    data_seed: u64,
    metrics: &mut Metrics,
    bar: &indicatif::ProgressBar,
) -> CliResult {
    let hmm = meter.hmm;
    let mut rng = Rng::new(data_seed);
    for s in 1..=steps {
        let b = batch_of(hmm, &(0..BATCH).map(|_| hmm.sample(&mut rng)).collect::<Vec<_>>());
        let stats = trainer.step_on(b.ids, b.targets)?;
        bar.inc(1);
        if s % 25 == 0 {
            metrics.push(&json!({ "run": run.name, "step": offset + s, "train_loss": stats.loss, "lr": stats.lr }))?;
        }
        if s % meter.scale.every == 0 || s == steps {
            let m = meter.measure(&trainer.params()?)?;
            metrics.push(&json!({
                "run": run.name, "step": offset + s, "loss": m.loss, "floor": meter.valid.floor,
                "trace": m.trace.mean, "trace_ci95": m.trace.half_width,
                "fisher": m.fisher.mean, "fisher_ci95": m.fisher.half_width, "top_eigenvalue": m.top,
                "probe_accuracy": m.probe,
            }))?;
            bar.set_message(format!(
                "{}: loss − floor {:.3}, Tr(H) {:.1}",
                run.name,
                m.loss - meter.valid.floor,
                m.trace.mean
            ));
            run.points.push((offset + s, m));
        }
    }
    Ok(())
}

/// The three runs of one width: AdamW to convergence, then SGD or AdamW on.
fn width_runs(
    width: usize,
    data: (&Hmm, &Validation),
    scale: &Scale,
    on: RunOn,
    metrics: &mut Metrics,
    bar: &indicatif::ProgressBar,
) -> Result<[Run; 3], CliError> {
    let forward = lsc_models::transformer::build(&model_config(width)).map_err(|e| CliError::new(e.to_string()))?;
    let params = lsc_runtime::init::init_params(&forward, SEED).map_err(CliError::new)?;
    let mut meter = Meter::new(&forward, &params, on, data, scale)?;
    let warm = |steps: u64, frac: f64, lr: f64| Schedule::Cosine {
        max_lr: lr,
        min_lr: lr,
        warmup: (steps as f64 * frac) as u64,
        decay_end: (steps as f64 * frac) as u64,
    };
    let adamw = Optimizer::AdamW { beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.01 };
    // Pretraining: AdamW with 6 % warmup then a constant rate (the paper's recipe).
    let cfg = train_config(width, scale.pretrain, adamw, warm(scale.pretrain, 0.06, 3e-3), on);
    let mut trainer = Trainer::new(cfg, &forward, params)?;
    let mut pre = Run { name: format!("d={width} AdamW"), points: Vec::new() };
    phase(&mut trainer, &mut meter, &mut pre, (0, scale.pretrain), SEED, metrics, bar)?;
    let converged = trainer.checkpoint(None)?;
    let total = scale.pretrain + scale.continued;
    let mut runs = Vec::new();
    // SGD with 12 % warmup then a constant rate, and AdamW continuing at its rate.
    for (name, optimizer, schedule, reset) in [
        ("then SGD", Optimizer::Sgd { momentum: 0.0, weight_decay: 0.0 }, warm(scale.continued, 0.12, 0.3), true),
        ("then AdamW", adamw, warm(scale.continued, 0.0, 3e-3), false),
    ] {
        let cfg = train_config(width, total, optimizer, schedule, on);
        let mut trainer = Trainer::resume(cfg, &forward, converged.clone(), true, reset)?;
        let mut run = Run { name: format!("d={width} {name}"), points: Vec::new() };
        phase(&mut trainer, &mut meter, &mut run, (scale.pretrain, scale.continued), SEED + 1, metrics, bar)?;
        runs.push(run);
    }
    let [sgd, adam]: [Run; 2] = runs.try_into().map_err(|_| CliError::new("two continuations"))?;
    Ok([pre, sgd, adam])
}

/// The last measurement of a run.
fn last(r: &Run) -> Result<&Measurement, CliError> {
    r.points.last().map(|(_, m)| m).ok_or_else(|| CliError::new(format!("{}: no measurement", r.name)))
}

/// 95 % half-width of a difference of two accuracies on `n` test examples each.
fn accuracy_noise(p: f64, n: usize) -> f64 {
    1.96 * (2.0 * p * (1.0 - p) / n as f64).sqrt()
}

/// Runs the experiment and returns the report.
pub fn run(a: &ReproArgs, metrics: &mut Metrics) -> Result<String, CliError> {
    let scale = if a.quick { &QUICK } else { &FULL };
    let on = a.backend.run_on();
    let hmm = Hmm::random(STATES, VOCAB, LENGTH, SEED);
    let steps = 2 * (scale.pretrain + 2 * scale.continued);
    let bar = indicatif::ProgressBar::new(steps).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let valid = Validation::sample(&hmm, scale.probe_train + scale.probe_test);
    let mut runs = Vec::new();
    for &w in &scale.widths {
        runs.push(width_runs(w, (&hmm, &valid), scale, on, metrics, &bar)?);
    }
    bar.finish_and_clear();
    let minutes = started.elapsed().as_secs_f64() / 60.0;

    // The probe's ceiling: the Bayes posterior of z_6 given the model's input.
    let meter_floor = valid.floor;
    let (ceiling, majority) = {
        let set = &valid.sentences;
        let test = &set[scale.probe_train..];
        let bayes = test
            .iter()
            .filter(|s| {
                let post = &hmm.posteriors(&s.tokens[..LENGTH - 1])[PROBED];
                (0..STATES).max_by(|&a, &b| post[a].total_cmp(&post[b])) == Some(s.states[PROBED])
            })
            .count();
        let mut counts = [0usize; STATES];
        set[..scale.probe_train].iter().for_each(|s| counts[s.states[PROBED]] += 1);
        let top = (0..STATES).max_by_key(|&k| counts[k]).unwrap_or(0);
        let majority = test.iter().filter(|s| s.states[PROBED] == top).count();
        (bayes as f64 / test.len() as f64, majority as f64 / test.len() as f64)
    };

    for (what, file, pick) in [
        ("validation loss − optimal loss", "loss.svg", 0usize),
        ("Hessian trace (Hutchinson)", "trace.svg", 1),
        ("linear-probe accuracy of hidden state 6", "probe.svg", 2),
    ] {
        let series: Vec<Series> = runs
            .iter()
            .flatten()
            .map(|r| Series {
                name: r.name.clone(),
                points: r
                    .points
                    .iter()
                    .map(|(s, m)| (*s as f64, [m.loss - meter_floor, m.trace.mean, m.probe][pick]))
                    .collect(),
            })
            .collect();
        plot::write(&a.out.join(file), what, "step", what, &series)?;
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Same loss, different flatness (Liu et al., arXiv 2210.14199) at small scale\n");
    let _ = writeln!(
        md,
        "`lsc repro flatness{}` on backend {}, {minutes:.1} minutes. An HMM language ({STATES} hidden states, \
         {VOCAB} tokens, sentences of {LENGTH} after a BOS token, seed {SEED}); causal next-token loss (the paper \
         masks one token per sentence), whose optimum is the HMM's conditional entropy: **{meter_floor:.4} nats per token** \
         (forward algorithm over the {} validation sentences). Models: 2-layer transformers of width {} and {}, \
         AdamW (6 % warmup, constant 3e-3) for {} steps of {BATCH} fresh sentences, then {} more steps of SGD \
         (12 % warmup, constant 0.3) or of AdamW. Tr(H): Hutchinson with {} Rademacher probes on fresh batches; \
         Tr(F): the paper's estimator (squared gradient norms at labels sampled from the model) over {} batches; \
         both with 95 % intervals; λ_max(H): {} power iterations on one batch. Probe: logistic regression from the concatenated last hidden states of all \
         positions to hidden state 6, trained on {} sentences and tested on {} (Bayes ceiling given the same tokens \
         {:.1} %, majority class {:.1} %).\n",
        if a.quick { " --quick" } else { "" },
        on.backend,
        scale.probe_train + scale.probe_test,
        scale.widths[0],
        scale.widths[1],
        scale.pretrain,
        scale.continued,
        scale.probes,
        scale.fisher,
        scale.power_iters,
        scale.probe_train,
        scale.probe_test,
        100.0 * ceiling,
        100.0 * majority,
    );
    let _ = writeln!(
        md,
        "| run | steps | loss − optimum | Tr(H) (Hutchinson) | Tr(F) (sampled labels) | λ_max(H) | probe accuracy |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in runs.iter().flatten() {
        let (s, m) = r.points.last().ok_or_else(|| CliError::new(format!("{}: no measurement", r.name)))?;
        let _ = writeln!(
            md,
            "| {} | {s} | {:.4} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} | {:.1} % |",
            r.name,
            m.loss - meter_floor,
            m.trace.mean,
            m.trace.half_width,
            m.fisher.mean,
            m.fisher.half_width,
            m.top,
            100.0 * m.probe
        );
    }
    let n = scale.probe_test;
    let mut claims = Vec::new();
    let trace_noise = |x: &Measurement, y: &Measurement| x.trace.half_width.hypot(y.trace.half_width);
    for [pre, sgd, adam] in &runs {
        let p = last(pre)?;
        for cont in [adam, sgd] {
            let c = last(cont)?;
            claims.push((
                format!("(a) training on after convergence lowers Tr(H) ({} → {})", pre.name, cont.name),
                "Tr(H) falls while the loss stays flat",
                format!(
                    "Tr(H) {:.2} → {:.2}; loss − optimum {:.4} → {:.4}",
                    p.trace.mean,
                    c.trace.mean,
                    p.loss - meter_floor,
                    c.loss - meter_floor
                ),
                verdict(p.trace.mean, c.trace.mean, trace_noise(p, c), 1.0),
            ));
            claims.push((
                format!("(a) … and raises the probe's accuracy ({} → {})", pre.name, cont.name),
                "+4.0 % (HMM task 10, 67M), +1.6 % (PCFG task C, 235M)",
                format!("{:.1} % → {:.1} %", 100.0 * p.probe, 100.0 * c.probe),
                verdict(c.probe, p.probe, accuracy_noise(p.probe, n), 1.0),
            ));
        }
        let (s, ad) = (last(sgd)?, last(adam)?);
        claims.push((
            format!("(c) SGD ends flatter than AdamW from the same point ({} vs {})", sgd.name, adam.name),
            "SGD's implicit bias drifts toward lower Tr(H) (the paper's theory)",
            format!(
                "Tr(H) {:.2} (SGD) vs {:.2} (AdamW); probe {:.1} % vs {:.1} %",
                s.trace.mean,
                ad.trace.mean,
                100.0 * s.probe,
                100.0 * ad.probe
            ),
            verdict(ad.trace.mean, s.trace.mean, trace_noise(s, ad), 1.0),
        ));
    }
    if let [small, large] = &runs[..] {
        let (s, l) = (last(&small[2])?, last(&large[2])?);
        claims.push((
            format!("(b) the wider model has the lower Tr(H) ({} vs {})", small[2].name, large[2].name),
            "Tr(H) 19.8 → 12.6 from 9M parameters up (PCFG)",
            format!(
                "Tr(H) {:.2} vs {:.2}; loss − optimum {:.4} vs {:.4}",
                s.trace.mean,
                l.trace.mean,
                s.loss - meter_floor,
                l.loss - meter_floor
            ),
            verdict(s.trace.mean, l.trace.mean, s.trace.half_width.hypot(l.trace.half_width), 1.0),
        ));
        claims.push((
            format!("(b) … and the better probe ({} vs {})", small[2].name, large[2].name),
            "+4.5 % (HMM), +6.9 % (PCFG), +2.0 % (OPT data) at the same loss",
            format!("{:.1} % vs {:.1} %", 100.0 * s.probe, 100.0 * l.probe),
            verdict(l.probe, s.probe, accuracy_noise(s.probe, n), 1.0),
        ));
    }
    let _ = writeln!(md, "\n| claim | the paper | measured here | verdict |\n|---|---|---|---|");
    for (claim, paper, measured, verdict) in &claims {
        let _ = writeln!(md, "| {claim} | {paper} | {measured} | **{}** |", verdict.text());
    }
    let held = claims.iter().filter(|c| c.3 == Verdict::Reproduced).count();
    let _ = writeln!(
        md,
        "\n**Verdict: {held} of {} claims reproduced at this scale** (a difference within the 95 % noise of both \
         estimates is inconclusive). Tr(H) across widths compares different parameterisations: the paper embeds \
         the smaller models into the larger architecture first, which this run does not.\n\n\
         Plots: `loss.svg`, `trace.svg`, `probe.svg`; every measurement is in `metrics.jsonl`.",
        claims.len()
    );
    Ok(md)
}
