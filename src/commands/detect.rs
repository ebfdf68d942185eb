//! `lsc detect`: AI-generated text detection with PAWN over a frozen lsc
//! language model. `features` caches each text's next-token metrics and
//! hidden states; `train` fits the PAWN head and, in the same run, its
//! mean-aggregation ablation and two zero-shot thresholds; `eval` scores them
//! all; `predict` gives a probability per text.

use crate::error::{CliError, CliResult};
use lsc_interp::Tensors;
use lsc_models::pawn::{Aggregation, PawnConfig};
use lsc_runtime::checkpoint::{Checkpoint, CheckpointMeta};
use lsc_runtime::detect::{self, Extractor, Part, Record, Scores, TextFeatures};
use lsc_runtime::pawn::{self, Head, MetricNorm, TrainOptions};
use lsc_runtime::tokenizer::Tokenizer;
use serde_json::json;
use std::path::{Path, PathBuf};

/// `lsc detect` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DetectCommand {
    /// Run the language model over each text once and cache its per-token features.
    Features(FeaturesCommand),
    /// Train the PAWN head (and its mean-aggregation ablation and zero-shot thresholds).
    Train(TrainArgs),
    /// Accuracy, macro-F1 and AUROC of a trained head and its baselines.
    Eval(EvalArgs),
    /// The probability that each text is machine-generated, as JSON lines.
    Predict(EvalArgs),
}

/// Where texts and features come from.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// JSON files of labelled texts (comma-separated): fast-detect-gpt's
    /// `{"original": [...], "sampled": [...]}` or `[{"text": ..., "label": 0|1}]`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub data: Vec<PathBuf>,
    /// Which records of each file: the fixed 80 % train part, the 20 % test part, or all.
    #[arg(long, value_enum)]
    pub part: Option<Part>,
    /// Leave out texts that also appear in these files' train part (held-out splits without leaks).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<PathBuf>,
    /// The feature cache (one safetensors file per model and text).
    #[arg(long, default_value = "detect-cache")]
    pub cache: PathBuf,
}

/// Arguments of `lsc detect features`.
#[derive(clap::Args, Debug, Clone)]
pub struct FeatureArgs {
    /// The frozen language model's training checkpoint.
    #[arg(long)]
    pub ckpt: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Tokens read per text (PAWN's 512 by default), in windows of the model's context.
    #[arg(long, value_parser = crate::args::count)]
    pub max_tokens: Option<usize>,
    #[command(flatten)]
    pub backend: crate::source::BackendArg,
}

/// Arguments of `lsc detect features`.
#[derive(clap::Args, Debug, Clone)]
pub struct FeaturesCommand {
    #[command(flatten)]
    pub features: FeatureArgs,
    /// The cache folder to fill (the same as --cache; this one wins).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `lsc detect train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Where to write the head.
    #[arg(long)]
    pub out: PathBuf,
    /// Features F (and gates).
    #[arg(long, default_value_t = 64, value_parser = crate::args::count)]
    pub width: usize,
    /// Residual hidden layers per MLP.
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// Passes over the training texts.
    #[arg(long, default_value_t = 5, value_parser = crate::args::count)]
    pub epochs: usize,
    /// Texts per step.
    #[arg(long, default_value_t = 32, value_parser = crate::args::count)]
    pub batch: usize,
    /// AdamW's peak learning rate (cosine decay, no warmup).
    #[arg(long, default_value_t = 1e-3, value_parser = crate::args::positive)]
    pub lr: f64,
    /// Tokens dropped from the gate softmax per step.
    #[arg(long, default_value_t = 0.15, value_parser = crate::args::fraction)]
    pub token_dropout: f64,
    /// Label smoothing s: targets y(1 − s) + s/2.
    #[arg(long, default_value_t = 0.2, value_parser = crate::args::fraction)]
    pub label_smoothing: f64,
    /// Weight of the machine class in the BCE (the paper's 0.413 balanced MAGE).
    #[arg(long, default_value_t = 1.0, value_parser = crate::args::positive)]
    pub pos_weight: f64,
    /// Seed of the initialisation, shuffling and token dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Arguments of `lsc detect eval` and `predict`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// A head written by `lsc detect train`.
    #[arg(long)]
    pub head: PathBuf,
    /// The language model (default: the one the head was trained on).
    #[arg(long)]
    pub ckpt: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of a table (eval).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: crate::source::BackendArg,
}

/// Runs `lsc detect`.
pub fn run(c: &DetectCommand) -> CliResult {
    match c {
        DetectCommand::Features(c) => {
            let mut a = c.features.clone();
            if let Some(out) = &c.out {
                a.data.cache = out.clone();
            }
            let (records, feats, ex) = load(&a, Part::All)?;
            let machine = records.iter().filter(|r| r.label == 1).count();
            let tokens: usize = feats.iter().map(|f| f.tokens).sum();
            println!(
                "{} texts ({machine} machine, {} human), {tokens} tokens: {} from the cache, {} computed, in {}",
                records.len(),
                records.len() - machine,
                ex.hits,
                ex.misses,
                a.data.cache.display()
            );
            Ok(())
        }
        DetectCommand::Train(a) => train(a),
        DetectCommand::Eval(a) => eval(a, false),
        DetectCommand::Predict(a) => eval(a, true),
    }
}

/// The backbone: its checkpoint, tokenizer, context and a key of its weights.
pub(crate) struct Backbone {
    ckpt: Checkpoint,
    tokenizer: Tokenizer,
    model: String,
    config: String,
    key: String,
}

impl Backbone {
    /// The built-in model's name.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    /// Its config.
    pub fn config_name(&self) -> &str {
        &self.config
    }

    /// Its parameter count.
    pub fn parameters(&self) -> usize {
        self.ckpt.params.values().map(|v| v.numel()).sum()
    }
}

/// Loads a language model's checkpoint (refusing a detector head).
pub(crate) fn backbone(path: &Path) -> Result<Backbone, CliError> {
    let ckpt = Checkpoint::load(path)?;
    let field = |k: &str| ckpt.meta.train[k].as_str().unwrap_or_default().to_string();
    let (model, config) = (field("model"), field("config"));
    if ckpt.meta.train["kind"] == "pawn-head" {
        return Err(CliError::with_fix(
            format!("{} is a detector head, not a language model", path.display()),
            "pass the language model's checkpoint as --ckpt and the head as --head",
        ));
    }
    let tokenizer = match &ckpt.tokenizer {
        Some(json) => Tokenizer::from_json(json)?,
        None => Tokenizer::Bytes,
    };
    let mut parts: Vec<Vec<u8>> = vec![model.clone().into_bytes(), config.clone().into_bytes()];
    for (name, v) in &ckpt.params {
        parts.push(name.clone().into_bytes());
        parts.push(v.as_floats().unwrap_or_default().iter().flat_map(|x| x.to_le_bytes()).collect());
    }
    let key = detect::content_key(&parts.iter().map(|p| &p[..]).collect::<Vec<_>>());
    Ok(Backbone { ckpt, tokenizer, model, config, key })
}

/// The records of `data` (per `part`), with the excluded texts left out.
fn records(d: &DataArgs, default: Part) -> Result<Vec<Record>, CliError> {
    let part = d.part.unwrap_or(default);
    let mut excluded = std::collections::HashSet::new();
    for path in &d.exclude {
        excluded.extend(detect::read_records(path)?.into_iter().filter(|r| Part::Train.holds(&r.text)).map(|r| r.text));
    }
    let mut out = Vec::new();
    for path in &d.data {
        out.extend(
            detect::read_records(path)?.into_iter().filter(|r| part.holds(&r.text) && !excluded.contains(&r.text)),
        );
    }
    if out.is_empty() {
        return Err(CliError::with_fix(
            format!("no texts in {:?} of {:?}", part, d.data),
            "pass --part all or more --data",
        ));
    }
    Ok(out)
}

fn extractor(b: &Backbone, a: &FeatureArgs, max_tokens: Option<usize>) -> Result<Extractor, CliError> {
    open_extractor(b, a.max_tokens.or(max_tokens), &a.data.cache, a.backend.run_on())
}

/// The feature extractor of a backbone (`max_tokens` default: its context, at most 512).
pub(crate) fn open_extractor(
    b: &Backbone,
    max_tokens: Option<usize>,
    cache: &Path,
    on: lsc_runtime::backend::RunOn,
) -> Result<Extractor, CliError> {
    let context = lsc_models::max_seq_len(&b.model, &b.config).map_err(|e| CliError::new(e.to_string()))?;
    let max_tokens = max_tokens.unwrap_or(512);
    if !(detect::MIN_TOKENS..=MAX_TOKENS).contains(&max_tokens) {
        return Err(CliError::with_fix(
            format!("--max-tokens {max_tokens} is outside {}..={MAX_TOKENS}", detect::MIN_TOKENS),
            "pass --max-tokens 512 (PAWN's limit)",
        ));
    }
    // Longer texts are read in consecutive windows of the model's context.
    let reading = detect::Reading { max_tokens, window: context.min(max_tokens) };
    let forward =
        lsc_models::build_graph(&b.model, &b.config, b.tokenizer.vocab_size(), lsc_models::GraphKind::Inference)
            .map_err(|e| CliError::new(e.to_string()))?;
    let forward = lsc_models::with_features(&forward).map_err(|e| CliError::new(e.to_string()))?;
    Ok(Extractor::new(forward, &b.ckpt.params, on, b.tokenizer.clone(), reading, b.key.clone(), cache.to_path_buf())?)
}

fn load(a: &FeatureArgs, default: Part) -> Result<(Vec<Record>, Vec<TextFeatures>, Extractor), CliError> {
    let b = backbone(&a.ckpt)?;
    let records = records(&a.data, default)?;
    let mut ex = extractor(&b, a, None)?;
    let feats = ex.features(&records)?;
    Ok((records, feats, ex))
}

/// The most tokens read per text.
const MAX_TOKENS: usize = 4096;

/// A text's mean log-likelihood and negated mean entropy (machine text is
/// expected to score higher; the direction is taken from the training texts).
fn zero_shot(f: &TextFeatures) -> [f64; 2] {
    let k = detect::METRICS.len();
    let n = (f.metrics.len() / k).max(1) as f64;
    let mean = |j: usize| f.metrics.chunks(k).map(|r| r[j] as f64).sum::<f64>() / n;
    [mean(0), -mean(1)]
}

/// How the heads are trained.
pub(crate) struct HeadSettings {
    /// Features F.
    pub width: usize,
    /// Residual hidden layers.
    pub layers: usize,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// The machine class's weight.
    pub pos_weight: f64,
    /// The optimisation.
    pub opts: TrainOptions,
}

/// The PAWN head, its mean-aggregation ablation and the zero-shot thresholds,
/// all fitted on the same texts.
pub(crate) struct Detectors {
    weighted: (Head, Tensors<f32>),
    mean: (Head, Tensors<f32>),
    /// Each zero-shot score's direction (±1: which side is machine, from the
    /// training texts) and threshold.
    zero_shot: [(f64, f64); 2],
    /// Each head's loss at every training step (PAWN, mean aggregation).
    pub losses: [Vec<f64>; 2],
}

/// Fits every detector on `texts` (features of `positions + 1` tokens at most).
pub(crate) fn fit(
    texts: &[&TextFeatures],
    labels: &[u8],
    positions: usize,
    s: &HeadSettings,
    on: lsc_runtime::backend::RunOn,
) -> Result<Detectors, CliError> {
    if labels.iter().all(|&y| y == labels[0]) {
        return Err(CliError::with_fix(
            "the training texts are all of one class",
            "pass files with human and machine texts",
        ));
    }
    let cfg = |aggregation| PawnConfig {
        metrics: detect::METRICS.len(),
        hidden: texts[0].dim,
        features: s.width,
        layers: s.layers,
        aggregation,
        label_smoothing: s.label_smoothing,
        pos_weight: s.pos_weight,
    };
    let norm = MetricNorm::fit(texts);
    let mut heads = Vec::new();
    for aggregation in [Aggregation::Weighted, Aggregation::Mean] {
        let head = Head { cfg: cfg(aggregation), positions, norm: norm.clone() };
        let steps = (texts.len() / s.opts.batch.min(texts.len()).max(1) * s.opts.epochs) as u64;
        let bar = indicatif::ProgressBar::new(steps).with_message(format!("{aggregation:?} head"));
        let (p, losses) = pawn::train(&head, texts, labels, &s.opts, on, &mut || bar.inc(1))?;
        bar.finish_and_clear();
        heads.push((head, p, losses));
    }
    let zs = |j: usize| texts.iter().map(|f| zero_shot(f)[j]).collect::<Vec<_>>();
    let oriented = |j: usize| {
        let s = zs(j);
        let sign = if detect::auroc(&s, labels) >= 0.5 { 1.0 } else { -1.0 };
        let s: Vec<f64> = s.iter().map(|x| sign * x).collect();
        (sign, detect::best_threshold(&s, labels))
    };
    let zero_shot = [oriented(0), oriented(1)];
    let (mean, weighted) = (heads.pop().expect("two heads"), heads.pop().expect("two heads"));
    Ok(Detectors {
        losses: [weighted.2, mean.2],
        weighted: (weighted.0, weighted.1),
        mean: (mean.0, mean.1),
        zero_shot,
    })
}

/// The detectors' names, in the order [`score`] gives them.
pub(crate) const DETECTORS: [&str; 4] =
    ["PAWN", "PAWN, mean aggregation", "zero-shot: mean log-likelihood", "zero-shot: −mean entropy"];

/// Every detector's score of every text (higher: machine) and its threshold.
pub(crate) fn raw_scores(
    d: &Detectors,
    texts: &[&TextFeatures],
    on: lsc_runtime::backend::RunOn,
) -> Result<Vec<(Vec<f64>, f64)>, CliError> {
    let mut out = vec![
        (pawn::logits(&d.weighted.0, &d.weighted.1, texts, on)?, 0.0),
        (pawn::logits(&d.mean.0, &d.mean.1, texts, on)?, 0.0),
    ];
    for j in 0..2 {
        let (sign, threshold) = d.zero_shot[j];
        out.push((texts.iter().map(|f| sign * zero_shot(f)[j]).collect(), threshold));
    }
    Ok(out)
}

/// Every detector's accuracy, macro-F1 and AUROC on `texts`.
pub(crate) fn score(
    d: &Detectors,
    texts: &[&TextFeatures],
    labels: &[u8],
    on: lsc_runtime::backend::RunOn,
) -> Result<Vec<Scores>, CliError> {
    Ok(raw_scores(d, texts, on)?.iter().map(|(s, t)| detect::evaluate(s, labels, *t)).collect())
}

fn train(a: &TrainArgs) -> CliResult {
    let (records, feats, ex) = load(&a.features, Part::Train)?;
    let labels: Vec<u8> = records.iter().map(|r| r.label).collect();
    let texts: Vec<&TextFeatures> = feats.iter().collect();
    let settings = HeadSettings {
        width: a.width,
        layers: a.layers,
        label_smoothing: a.label_smoothing,
        pos_weight: a.pos_weight,
        opts: TrainOptions {
            epochs: a.epochs,
            batch: a.batch,
            lr: a.lr,
            weight_decay: 1e-2,
            token_dropout: a.token_dropout,
            seed: a.seed,
        },
    };
    let d = fit(&texts, &labels, ex.max_tokens() - 1, &settings, a.features.backend.run_on())?;
    let mut params = d.weighted.1.clone();
    params.extend(d.mean.1.iter().map(|(k, v)| (format!("mean.{k}"), v.clone())));
    let meta = json!({
        "kind": "pawn-head",
        "backbone": a.features.ckpt.display().to_string(),
        "backbone_key": ex.model_key(),
        "max_tokens": ex.max_tokens(),
        "width": a.width, "layers": a.layers, "hidden": feats[0].dim,
        "label_smoothing": a.label_smoothing, "pos_weight": a.pos_weight,
        "norm": d.weighted.0.norm, "train": settings.opts, "zero_shot": d.zero_shot,
        "data": a.features.data.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "texts": records.len(),
    });
    let ckpt = Checkpoint {
        params,
        state: Tensors::new(),
        meta: CheckpointMeta {
            step: 0,
            schedule_start: 0,
            data_draws: 0,
            train: meta,
            lsc_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        tokenizer: None,
    };
    ckpt.save(&a.out)?;
    println!(
        "trained on {} texts ({} machine): final loss {:.4} (PAWN), {:.4} (mean aggregation); wrote {}",
        records.len(),
        labels.iter().filter(|&&y| y == 1).count(),
        d.losses[0].last().copied().unwrap_or(f64::NAN),
        d.losses[1].last().copied().unwrap_or(f64::NAN),
        a.out.display()
    );
    Ok(())
}

/// A head file's contents.
struct TrainedHead {
    detectors: Detectors,
    backbone: PathBuf,
    backbone_key: String,
    max_tokens: usize,
}

fn read_head(path: &Path) -> Result<TrainedHead, CliError> {
    let ckpt = Checkpoint::load(path)?;
    let m = &ckpt.meta.train;
    let bad = |what: &str| {
        CliError::with_fix(
            format!("{}: not a detector head ({what})", path.display()),
            "pass a file written by `lsc detect train --out`",
        )
    };
    if m["kind"] != "pawn-head" {
        return Err(bad("no `kind: pawn-head` in its metadata"));
    }
    let num = |k: &str| m[k].as_f64().ok_or_else(|| bad(&format!("no `{k}`")));
    let norm: MetricNorm = serde_json::from_value(m["norm"].clone()).map_err(|e| bad(&format!("`norm`: {e}")))?;
    let zero_shot: Vec<(f64, f64)> =
        serde_json::from_value(m["zero_shot"].clone()).map_err(|e| bad(&format!("`zero_shot`: {e}")))?;
    let cfg = |aggregation| -> Result<PawnConfig, CliError> {
        Ok(PawnConfig {
            metrics: detect::METRICS.len(),
            hidden: num("hidden")? as usize,
            features: num("width")? as usize,
            layers: num("layers")? as usize,
            aggregation,
            label_smoothing: num("label_smoothing")?,
            pos_weight: num("pos_weight")?,
        })
    };
    let max_tokens = num("max_tokens")? as usize;
    let head = |aggregation| -> Result<Head, CliError> {
        Ok(Head { cfg: cfg(aggregation)?, positions: max_tokens - 1, norm: norm.clone() })
    };
    let (mean, weighted): (Tensors<f32>, Tensors<f32>) =
        ckpt.params.into_iter().partition(|(k, _)| k.starts_with("mean."));
    let mean = mean.into_iter().map(|(k, v)| (k["mean.".len()..].to_string(), v)).collect();
    let zero_shot = match zero_shot[..] {
        [a, b] => [a, b],
        _ => return Err(bad("`zero_shot` is not two (direction, threshold) pairs")),
    };
    Ok(TrainedHead {
        detectors: Detectors {
            weighted: (head(Aggregation::Weighted)?, weighted),
            mean: (head(Aggregation::Mean)?, mean),
            zero_shot,
            losses: [Vec::new(), Vec::new()],
        },
        backbone: PathBuf::from(m["backbone"].as_str().unwrap_or_default()),
        backbone_key: m["backbone_key"].as_str().unwrap_or_default().to_string(),
        max_tokens,
    })
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn eval(a: &EvalArgs, predict: bool) -> CliResult {
    let h = read_head(&a.head)?;
    let ckpt = a.ckpt.clone().unwrap_or_else(|| h.backbone.clone());
    let b = backbone(&ckpt)?;
    if b.key != h.backbone_key {
        return Err(CliError::with_fix(
            format!("{} holds other weights than the language model the head was trained on", ckpt.display()),
            format!("pass --ckpt {} (or retrain the head)", h.backbone.display()),
        ));
    }
    let fa = FeatureArgs { ckpt, data: a.data.clone(), max_tokens: Some(h.max_tokens), backend: a.backend };
    let records = records(&a.data, if predict { Part::All } else { Part::Test })?;
    let feats = extractor(&b, &fa, Some(h.max_tokens))?.features(&records)?;
    let texts: Vec<&TextFeatures> = feats.iter().collect();
    let on = a.backend.run_on();
    let labels: Vec<u8> = records.iter().map(|r| r.label).collect();
    if predict {
        let d = &h.detectors;
        for (r, z) in records.iter().zip(pawn::logits(&d.weighted.0, &d.weighted.1, &texts, on)?) {
            println!("{}", json!({ "source": r.source, "label": r.label, "probability": sigmoid(z) }));
        }
        return Ok(());
    }
    let rows: Vec<(&str, Scores)> = DETECTORS.into_iter().zip(score(&h.detectors, &texts, &labels, on)?).collect();
    let machine = labels.iter().filter(|&&y| y == 1).count();
    if a.json {
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, s)| json!({ "detector": n, "accuracy": s.accuracy, "macro_f1": s.macro_f1, "auroc": s.auroc }))
            .collect();
        println!("{}", json!({ "texts": records.len(), "machine": machine, "results": doc }));
        return Ok(());
    }
    println!("{} texts ({machine} machine, {} human)", records.len(), records.len() - machine);
    println!("{:<34} {:>9} {:>9} {:>7}", "detector", "accuracy", "macro-F1", "AUROC");
    for (n, s) in rows {
        println!("{n:<34} {:>8.1}% {:>8.1}% {:>7.4}", 100.0 * s.accuracy, 100.0 * s.macro_f1, s.auroc);
    }
    Ok(())
}
