//! `lsc bench`: measured figures, each next to a baseline timed in the same run.
//!
//! - `--calibrate`: the machine (FMA peak, bandwidth, op cost) for the cost
//!   model, saved where `lsc compile` and `lsc train` read it;
//! - `--kernels`: kernel figures ([`super::microbench`]);
//! - default: training-step tokens/s per model with equality saturation on
//!   every code generator built, against the primitive step (the baseline)
//!   compiled by the default backend, the saturation time, and the cost
//!   model's estimate of the same ratio.

use crate::error::{CliError, CliResult};
use lsc_runtime::backend::Backend;
use lsc_runtime::calibrate;
use lsc_runtime::data::load_text;
use lsc_runtime::schedule::Schedule;
use lsc_runtime::train::{TrainConfig, Trainer};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `lsc bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Measure this machine for the cost model and save it (see `--machine-file`).
    #[arg(long)]
    pub calibrate: bool,
    /// Where the calibration is saved (default `$LSC_MACHINE` or `~/.cache/lsc/machine.json`).
    #[arg(long)]
    pub machine_file: Option<PathBuf>,
    /// Models whose training step to time (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Config of every model.
    #[arg(long, default_value = "small")]
    pub config: String,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8, value_parser = crate::args::count)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256, value_parser = crate::args::count)]
    pub seq: usize,
    /// Timed steps per variant (after one untimed warm-up step).
    #[arg(long, default_value_t = 2, value_parser = crate::args::steps)]
    pub steps: u64,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Time the kernels instead of training steps: GEMM against the FMA peak, LS and local
    /// attention against global, ternary against f32 matmul, greedy decoding.
    #[arg(long, conflicts_with = "calibrate")]
    pub kernels: bool,
    /// With --kernels: only these sections (gemm, attention, ternary, decode, routed, step).
    #[arg(long, value_delimiter = ',', requires = "kernels")]
    pub only: Vec<String>,
    /// With a GPU backend (`cuda`, `cuda-emu`): the GPU figures instead (see `lsc bench --help`).
    #[command(flatten)]
    pub on: crate::source::BackendArg,
}

/// Runs the benchmark.
pub fn run(a: &BenchArgs) -> CliResult {
    if a.calibrate {
        return run_calibrate(a);
    }
    if a.on.backend.is_gpu() {
        return super::gpubench::run(a);
    }
    if a.kernels {
        return super::microbench::run(a);
    }
    if a.steps == 0 || a.batch == 0 || a.seq == 0 {
        return Err(CliError::with_fix(
            "--steps, --batch and --seq must be positive",
            "e.g. --steps 2 --batch 8 --seq 256",
        ));
    }
    let models: Vec<String> = if a.models.is_empty() {
        lsc_models::MODELS.iter().map(|m| m.name.to_string()).collect()
    } else {
        a.models.clone()
    };
    let tokens: Vec<u32> = load_text("synthetic", 0).map_err(CliError::from)?.into_iter().map(u32::from).collect();
    let (machine, source) = calibrate::machine()?;
    let mut rows = Vec::new();
    // The saturated step on every code generator built, against the primitive step.
    let native = Backend::native();
    let bar = indicatif::ProgressBar::new(models.len() as u64 * (1 + native.len() as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for m in &models {
        let max = lsc_models::max_seq_len(m, &a.config).map_err(|e| {
            CliError::with_fix(e.to_string(), "see `lsc models` for the built-in models and their configs")
        })?;
        if a.seq > max {
            return Err(CliError::with_fix(
                format!("--seq {} exceeds {m}/{}'s context {max}", a.seq, a.config),
                format!("pass --seq {max} or less"),
            ));
        }
        let forward = lsc_models::build(m, &a.config).map_err(|e| CliError::new(e.to_string()))?;
        let cfg = config(a, m);
        let start = Instant::now();
        let opts = cfg.step_options();
        let sat = lsc_passes::saturate::Config { machine, ..Default::default() };
        let (_, stats) = lsc_passes::saturate::optimize_training_step(&forward, &opts, &sat).map_err(CliError::new)?;
        let compile_s = start.elapsed().as_secs_f64();
        let primitive = lsc_passes::train::training_step(&forward, &opts).map_err(CliError::new)?;
        let cost_before = lsc_passes::saturate::estimated_cost(&primitive, &machine).map_err(CliError::new)?;
        let mut variants = vec![(false, Backend::default())];
        variants.extend(native.iter().map(|&b| (true, b)));
        let mut speed = Vec::new();
        for (fuse, backend) in variants {
            bar.set_message(format!("{m} ({})", if fuse { backend.to_string() } else { "primitive".into() }));
            speed.push(tokens_per_s(a, &forward, TrainConfig { fuse, backend, ..cfg.clone() }, &tokens)?);
            bar.inc(1);
        }
        let mut row = json!({
            "model": m,
            "config": a.config,
            "primitive_tokens_per_s": speed[0],
            "primitive_backend": Backend::default().name(),
            "estimated_speedup": cost_before / stats.cost_after,
            "saturation_s": stats.seconds,
            "compile_s": compile_s,
        });
        for (b, &tps) in native.iter().zip(&speed[1..]) {
            row[format!("{b}_tokens_per_s")] = json!(tps);
            row[format!("{b}_speedup")] = json!(tps / speed[0]);
        }
        rows.push(row);
    }
    bar.finish_and_clear();
    if a.json {
        let doc = json!({ "batch": a.batch, "seq": a.seq, "steps": a.steps, "machine": source, "training_step": rows });
        println!("{doc}");
        return Ok(());
    }
    let names: Vec<String> = native.iter().map(|b| b.to_string()).collect();
    println!(
        "training step, batch {} × seq {}, {} timed steps (the primitive step on {}, then the saturated step on: {}); cost model: {source}",
        a.batch, a.seq, a.steps, Backend::default(), names.join(", ")
    );
    let mut header = format!("{:<16} {:>14} {:>10}", "model", "primitive t/s", "estimated");
    for n in &names {
        header += &format!(" {:>14} {:>10}", format!("{n} t/s"), "speedup");
    }
    println!("{header} {:>12} {:>10}", "saturation", "compile");
    let num = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(0.0);
    for r in &rows {
        let mut line = format!(
            "{:<16} {:>14.0} {:>9.2}×",
            r["model"].as_str().unwrap_or("?"),
            num(r, "primitive_tokens_per_s"),
            num(r, "estimated_speedup"),
        );
        for n in &names {
            line +=
                &format!(" {:>14.0} {:>9.2}×", num(r, &format!("{n}_tokens_per_s")), num(r, &format!("{n}_speedup")));
        }
        println!("{line} {:>11.3}s {:>9.3}s", num(r, "saturation_s"), num(r, "compile_s"));
    }
    Ok(())
}

/// The training configuration `lsc bench` times for `model`.
pub(crate) fn config(a: &BenchArgs, model: &str) -> TrainConfig {
    let loss_terms =
        if model == "mor" { vec![("aux_loss".to_string(), lsc_models::mor::AUX_LOSS_COEF)] } else { vec![] };
    TrainConfig {
        model: model.to_string(),
        config: a.config.clone(),
        data: "synthetic".into(),
        batch: a.batch,
        seq: a.seq,
        steps: a.steps + 1,
        schedule: Schedule::Constant { lr: 1e-3 },
        optimizer: lsc_passes::train::Optimizer::adamw(),
        clip_norm: Some(1.0),
        decay_all: false,
        seed: 0,
        loss_terms,
        tokenizer: "bytes".into(),
        vocab: 256,
        fuse: true,
        backend: Backend::default(),
        precision: Default::default(),
        recompute_calls: false,
    }
}

/// Tokens per second of `a.steps` steps after one warm-up step.
fn tokens_per_s(a: &BenchArgs, forward: &lsc_ir::Program, cfg: TrainConfig, tokens: &[u32]) -> Result<f64, CliError> {
    let params = lsc_runtime::init::init_params(forward, cfg.seed).map_err(CliError::new)?;
    let mut t = Trainer::new(cfg, forward, params).map_err(CliError::from)?;
    t.step(tokens).map_err(CliError::from)?;
    let start = Instant::now();
    for _ in 0..a.steps {
        t.step(tokens).map_err(CliError::from)?;
    }
    Ok((a.steps as usize * a.batch * a.seq) as f64 / start.elapsed().as_secs_f64())
}

fn run_calibrate(a: &BenchArgs) -> CliResult {
    let path = a.machine_file.clone().or_else(calibrate::default_path).ok_or_else(|| {
        CliError::with_fix("no place to save the calibration (HOME is not set)", "pass --machine-file PATH")
    })?;
    eprintln!("calibrating (FMA loop, memory triad, op cost)…");
    let c = calibrate::calibrate();
    calibrate::save(&path, &c)?;
    let defaults = lsc_passes::saturate::Machine::default();
    if a.json {
        println!("{}", json!({ "calibration": c, "defaults": defaults, "path": path }));
        return Ok(());
    }
    println!("{:<22} {:>14} {:>14} {:>8}", "", "measured", "default", "ratio");
    let row = |what: &str, unit: &str, m: f64, d: f64, scale: f64| {
        println!("{what:<22} {:>10.2} {unit:<3} {:>10.2} {unit:<3} {:>7.2}×", m / scale, d / scale, m / d);
    };
    row("f32 FMA peak", "GF", c.machine.peak_flops, defaults.peak_flops, 1e9);
    row("memory bandwidth", "GB", c.machine.bandwidth, defaults.bandwidth, 1e9);
    row("op launch", "µs", c.machine.launch, defaults.launch, 1e-6);
    println!("isa {}, {} threads; saved to {}", c.isa, c.threads, path.display());
    Ok(())
}
