//! `lsc repro pawn`: PAWN (Miralles-González et al., arXiv 2501.03940) at
//! small scale. A byte-level lsc transformer trained on WikiText-2 is the
//! frozen backbone; PAWN, its mean-aggregation ablation and two zero-shot
//! scores are trained and tested on fast-detect-gpt's human vs davinci and
//! gpt-3.5-turbo texts (xsum, writing, pubmed), in-distribution, across
//! generators and across domains.

use super::{verdict, Metrics, ReproArgs, Verdict};
use crate::commands::detect::{self, HeadSettings, DETECTORS};
use crate::error::CliError;
use crate::plot::{self, Series};
use lsc_runtime::detect::{Part, Record, Scores, TextFeatures};
use lsc_runtime::pawn::TrainOptions;
use serde_json::json;
use std::collections::HashSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

const DOMAINS: [&str; 3] = ["xsum", "writing", "pubmed"];
const GENERATORS: [&str; 2] = ["davinci", "gpt-3.5-turbo"];
/// Where the texts are, relative to the project root.
const DATA: &str = "../shared/data/ai-text-detection/fast-detect-gpt-gpt3to4";

/// The backbone's training command (`--quick`: the `tiny` config for a minute).
fn backbone_args(quick: bool, out: &Path) -> Vec<String> {
    let args = if quick {
        "train --model transformer --config tiny --data wikitext-2 --seq 64 --batch 8 --steps 150 --sample-tokens 0"
    } else {
        "train --model transformer --config small --data wikitext-2 --seq 256 --batch 8 --steps 3000 --max-seconds 600 --fit-to-time --sample-tokens 0"
    };
    let mut v: Vec<String> = args.split(' ').map(String::from).collect();
    v.extend(["--out".to_string(), out.display().to_string(), "--overwrite".to_string()]);
    v
}

/// One train/test split of the records, by index.
struct Split {
    name: String,
    train: Vec<usize>,
    test: Vec<usize>,
}

fn domain_of(r: &Record) -> &str {
    DOMAINS.iter().find(|d| r.source.starts_with(*d)).copied().unwrap_or("")
}

fn generator_of(r: &Record) -> &str {
    GENERATORS.iter().find(|g| r.source.contains(&format!("_{g}."))).copied().unwrap_or("")
}

/// The splits; a test text that also is a training text is left out.
fn splits(records: &[Record]) -> Vec<Split> {
    let make = |name: String, train: &dyn Fn(&Record) -> bool, test: &dyn Fn(&Record) -> bool| {
        let train: Vec<usize> = (0..records.len()).filter(|&i| train(&records[i])).collect();
        let seen: HashSet<&str> = train.iter().map(|&i| records[i].text.as_str()).collect();
        let test =
            (0..records.len()).filter(|&i| test(&records[i]) && !seen.contains(records[i].text.as_str())).collect();
        Split { name, train, test }
    };
    let mut out = vec![make("in-distribution (80/20 of every file)".into(), &|r| Part::Train.holds(&r.text), &|r| {
        Part::Test.holds(&r.text)
    })];
    for (a, b) in [(0, 1), (1, 0)] {
        out.push(make(
            format!("held-out generator: {} → {}", GENERATORS[a], GENERATORS[b]),
            &|r| generator_of(r) == GENERATORS[a],
            &|r| generator_of(r) == GENERATORS[b],
        ));
    }
    for d in DOMAINS {
        out.push(make(format!("held-out domain: {d}"), &|r| domain_of(r) != d, &|r| domain_of(r) == d));
    }
    out
}

/// The AUROC's standard error (Hanley and McNeil).
fn auroc_se(auc: f64, pos: usize, neg: usize) -> f64 {
    let (q1, q2) = (auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc));
    let (p, n) = (pos as f64, neg as f64);
    ((auc * (1.0 - auc) + (p - 1.0) * (q1 - auc * auc) + (n - 1.0) * (q2 - auc * auc)) / (p * n)).max(0.0).sqrt()
}

/// The ROC curve's points `(false positive rate, true positive rate)`.
fn roc(scores: &[f64], labels: &[u8]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&y| y == 1).count().max(1) as f64;
    let neg = labels.iter().filter(|&&y| y == 0).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![(0.0, 0.0)];
    for i in order {
        if labels[i] == 1 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        points.push((fp / neg, tp / pos));
    }
    points
}

/// Runs the experiment and returns the report.
pub fn run(a: &ReproArgs, metrics: &mut Metrics) -> Result<String, CliError> {
    let started = std::time::Instant::now();
    let on = a.backend.run_on();
    let (ckpt, command) = match &a.ckpt {
        Some(c) => (c.clone(), format!("(given) {}", c.display())),
        None => {
            let out = a.out.join("backbone");
            let args = backbone_args(a.quick, &out);
            println!("training the backbone: lsc {}", args.join(" "));
            let exe = std::env::current_exe().map_err(|e| CliError::new(format!("cannot find the lsc binary: {e}")))?;
            let status = std::process::Command::new(exe)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .status()
                .map_err(|e| CliError::new(format!("cannot run lsc train: {e}")))?;
            if !status.success() {
                return Err(CliError::new(format!("training the backbone failed ({status})")));
            }
            (out.join("checkpoint.safetensors"), format!("`lsc {}`", args.join(" ")))
        }
    };
    let backbone = detect::backbone(&ckpt)?;
    let mut records = Vec::new();
    for d in DOMAINS {
        for g in GENERATORS {
            let path = PathBuf::from(DATA).join(format!("{d}_{g}.raw_data.json"));
            let mut r = lsc_runtime::detect::read_records(&path)
                .map_err(|e| CliError::with_fix(e.to_string(), "run from the project root, beside ../shared/data"))?;
            if a.quick {
                // The first 40 of each class.
                let (h, m): (Vec<Record>, Vec<Record>) = r.into_iter().partition(|x| x.label == 0);
                r = h.into_iter().take(40).chain(m.into_iter().take(40)).collect();
            }
            records.extend(r);
        }
    }
    let mut ex = detect::open_extractor(&backbone, None, &a.out.join("cache"), on)?;
    let bar = indicatif::ProgressBar::new_spinner().with_message(format!("features of {} texts", records.len()));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let feats: Vec<TextFeatures> = ex.features(&records)?;
    bar.finish_and_clear();
    let settings = HeadSettings {
        width: 64,
        layers: 1,
        label_smoothing: 0.2,
        pos_weight: 1.0,
        opts: TrainOptions { epochs: 5, batch: 32, lr: 3e-3, ..Default::default() },
    };
    let positions = ex.max_tokens() - 1;

    let mut md = String::new();
    let mut results: Vec<(String, Vec<Scores>, usize, usize)> = Vec::new();
    let mut curves = Vec::new();
    for (k, split) in splits(&records).into_iter().enumerate() {
        let pick = |idx: &[usize]| -> (Vec<&TextFeatures>, Vec<u8>) {
            idx.iter().map(|&i| (&feats[i], records[i].label)).unzip()
        };
        let (train, train_y) = pick(&split.train);
        let (test, test_y) = pick(&split.test);
        let d = detect::fit(&train, &train_y, positions, &settings, on)?;
        let raw = detect::raw_scores(&d, &test, on)?;
        let scores: Vec<Scores> = raw.iter().map(|(s, t)| lsc_runtime::detect::evaluate(s, &test_y, *t)).collect();
        for (name, s) in DETECTORS.iter().zip(&scores) {
            metrics.push(&json!({
                "split": split.name, "detector": name, "train_texts": train.len(), "test_texts": test.len(),
                "accuracy": s.accuracy, "macro_f1": s.macro_f1, "auroc": s.auroc,
            }))?;
        }
        if k == 0 {
            curves = DETECTORS
                .iter()
                .zip(&raw)
                .map(|(n, (s, _))| Series { name: n.to_string(), points: roc(s, &test_y) })
                .collect();
            let losses = ["PAWN", "PAWN, mean aggregation"].iter().zip(&d.losses);
            let series: Vec<Series> = losses
                .map(|(n, l)| Series {
                    name: n.to_string(),
                    points: l.iter().enumerate().map(|(i, x)| (i as f64, *x)).collect(),
                })
                .collect();
            plot::write(
                &a.out.join("head-loss.svg"),
                "detector heads: training loss (in-distribution)",
                "step",
                "smoothed BCE",
                &series,
            )?;
        }
        let pos = test_y.iter().filter(|&&y| y == 1).count();
        results.push((split.name, scores, pos, test.len() - pos));
    }
    plot::write(
        &a.out.join("roc.svg"),
        "ROC, in-distribution test texts",
        "false positive rate",
        "true positive rate",
        &curves,
    )?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;

    let _ = writeln!(md, "# PAWN (arXiv 2501.03940) at small scale\n");
    let _ = writeln!(
        md,
        "`lsc repro pawn{}` on backend {}, {minutes:.1} minutes. Backbone: {}/{} (byte tokens), trained by {command}; \
         {} features per text (the first {} tokens: the five next-token metrics and the last hidden state of {} values). \
         Texts: fast-detect-gpt's human vs machine texts ({} in all: xsum, writing, pubmed × davinci, gpt-3.5-turbo; the \
         machine texts continue the human texts' first words). Heads: F = 64, 1 hidden layer, AdamW at 3e-3 with cosine \
         decay, {} epochs of batches of 32, token dropout 0.15, label smoothing 0.2. The zero-shot scores' directions and thresholds \
         are fitted on the training texts. A test text that is also a training text is left out.\n",
        if a.quick { " --quick" } else { "" },
        on.backend,
        backbone.model_name(),
        backbone.config_name(),
        ex.max_tokens() - 1,
        ex.max_tokens(),
        feats.first().map_or(0, |f| f.dim),
        records.len(),
        settings.opts.epochs,
    );
    for (name, scores, pos, neg) in &results {
        let _ = writeln!(md, "**{name}** ({} test texts: {pos} machine, {neg} human)\n", pos + neg);
        let _ = writeln!(md, "| detector | accuracy | macro-F1 | AUROC |\n|---|---|---|---|");
        for (d, s) in DETECTORS.iter().zip(scores) {
            let _ =
                writeln!(md, "| {d} | {:.1} % | {:.1} % | {:.3} |", 100.0 * s.accuracy, 100.0 * s.macro_f1, s.auroc);
        }
        let _ = writeln!(md);
    }
    // The paper's claim: gate-weighted aggregation beats the mean.
    let _ = writeln!(
        md,
        "| claim | the paper | measured here (AUROC, PAWN vs mean aggregation) | verdict |\n|---|---|---|---|"
    );
    let mut held = 0;
    for (name, scores, pos, neg) in &results {
        let (w, m) = (scores[0].auroc, scores[1].auroc);
        let noise = 1.96 * auroc_se(w, *pos, *neg).hypot(auroc_se(m, *pos, *neg));
        let v = verdict(w, m, noise, 1.0);
        held += usize::from(v == Verdict::Reproduced);
        let _ = writeln!(
            md,
            "| weighted ≥ mean aggregation, {name} | the paper's ablation: attention-weighted pooling beats the mean | {w:.3} vs {m:.3} | **{}** |",
            v.text()
        );
    }
    let zs: Vec<(f64, f64)> = results.iter().map(|(_, s, _, _)| (s[0].auroc, s[2].auroc.max(s[3].auroc))).collect();
    let beats = zs.iter().filter(|(p, z)| p > z).count();
    let _ = writeln!(
        md,
        "\n**Verdict: weighted pooling beats the mean beyond the noise in {held} of {} splits**; PAWN's AUROC is above \
         the better zero-shot score in {beats} of {} splits. The paper reports a mean macro-F1 of 81.46 % for a \
         LLaMA-3-1B backbone in 9-language cross-validation, and that PAWN generalises across domains and generators \
         better than fine-tuned LMs; per-table numbers were not recovered (DIGEST). This backbone is a {}-parameter \
         byte model, so the absolute numbers are far below the paper's.\n\n\
         Plots: `roc.svg` (in-distribution ROC of every detector), `head-loss.svg`; every score is in `metrics.jsonl`.",
        results.len(),
        results.len(),
        backbone.parameters(),
    );
    Ok(md)
}
