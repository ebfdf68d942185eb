//! `lsc bench --backend cuda` (or `cuda-emu`): the GPU figures, each next to
//! a baseline timed in the same run — GEMM against the chip's peak, LS and
//! local attention (forward and backward) against all-global, the ternary
//! GEMV against the f32 one, every model's training step in f32 and bf16
//! against the CPU's default backend (and its model-FLOPs utilisation), and
//! greedy decoding at B = 1 and 64. On `cuda-emu` the shapes are tiny: that
//! checks the benchmark itself without a GPU, and its times mean nothing.

use super::bench::BenchArgs;
use crate::error::{CliError, CliResult};
use lsc_interp::Value;
use lsc_runtime::backend::{Backend, Executable, Loaded, RunOn};
use lsc_runtime::target::gpu::Precision;
use lsc_runtime::train::Trainer;
use serde_json::{json, Value as Json};
use std::time::Instant;

/// The shapes timed: the papers' on a GPU, tiny ones on the emulated device.
struct Shapes {
    gemm: Vec<usize>,
    seq: Vec<usize>,
    heads: usize,
    dim: usize,
    window: usize,
    ternary: Vec<usize>,
    /// Training steps: config, batch, tokens per sequence, and whether the CPU is timed as well.
    training: Vec<(&'static str, usize, usize, bool)>,
    /// The decoding config, and its batches.
    config: &'static str,
    decode: Vec<usize>,
}

impl Shapes {
    fn for_backend(b: Backend) -> Shapes {
        if b == Backend::Cuda {
            Shapes {
                gemm: vec![1024, 4096, 8192],
                seq: vec![1024, 2048, 4096, 8192, 16384],
                heads: 8,
                dim: 64,
                window: 256,
                ternary: vec![4096, 8192],
                // `medium` on the CPU would take longer than the whole GPU run: bf16 is timed against f32.
                training: vec![("small", 8, 256, true), ("medium", 8, 1024, false)],
                config: "small",
                decode: vec![1, 64],
            }
        } else {
            Shapes {
                gemm: vec![32],
                seq: vec![64],
                heads: 8,
                dim: 8,
                window: 16,
                ternary: vec![64],
                training: vec![("tiny", 2, 16, true)],
                config: "tiny",
                decode: vec![1, 2],
            }
        }
    }
}

fn random(shape: &[usize], seed: u64) -> Value<f32> {
    let mut rng = lsc_runtime::init::Rng::new(seed);
    let n = shape.iter().product();
    Value::floats(shape.to_vec(), (0..n).map(|_| rng.normal() as f32).collect())
}

fn dims(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
}

/// A one-op program loaded at fixed shapes with `inputs` set.
fn one_op(body: &str, inputs: &[(&str, Value<f32>)], on: RunOn) -> Result<Box<dyn Loaded>, CliError> {
    let text = format!("lsir 1\n\ngraph @main {{\n{body}\n}}\n");
    let program = lsc_ir::parse_and_verify(&text).map_err(|e| CliError::new(format!("bench program: {e}")))?;
    let mut loaded = Executable::new(program, on)?.load(&Default::default())?;
    for (name, v) in inputs {
        loaded.set(name, v)?;
    }
    Ok(loaded)
}

/// The median seconds of 10 runs (after one untimed run), each waited for.
fn median_run(loaded: &mut dyn Loaded) -> Result<f64, CliError> {
    loaded.run()?;
    loaded.synchronize()?;
    let mut times = Vec::with_capacity(10);
    for _ in 0..10 {
        let start = Instant::now();
        loaded.run()?;
        loaded.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Dense peak FLOP/s `(bf16 tensor cores, f32)` of the GPU, where there is one.
fn peaks(b: Backend) -> Result<Option<(f64, f64)>, CliError> {
    #[cfg(feature = "cuda")]
    if b == Backend::Cuda {
        let device = lsc_runtime::target::gpu::cuda::Cuda::new().map_err(CliError::new)?;
        return Ok(Some(device.peak_flops().map_err(CliError::new)?));
    }
    let _ = b;
    Ok(None)
}

fn of_peak(flops: f64, peak: Option<f64>) -> Json {
    peak.map_or(Json::Null, |p| json!(flops / p))
}

fn gemm(s: &Shapes, b: Backend, peak: Option<(f64, f64)>) -> Result<Vec<Json>, CliError> {
    let mut rows = Vec::new();
    for &n in &s.gemm {
        let body = format!(
            "  %0 = input \"a\" : f32[{n},{n}]\n  %1 = input \"b\" : f32[{n},{n}]\n  \
             %2 = matmul(%0, %1) {{trans_a=false, trans_b=false}} : f32[{n},{n}]\n  output \"c\" = %2"
        );
        let inputs = [("a", random(&[n, n], 1)), ("b", random(&[n, n], 2))];
        for precision in [Precision::F32, Precision::Bf16] {
            let mut l = one_op(&body, &inputs, RunOn { backend: b, precision })?;
            let secs = median_run(l.as_mut())?;
            let flops = 2.0 * (n as f64).powi(3) / secs;
            let p = peak.map(|(bf16, f32)| if precision == Precision::Bf16 { bf16 } else { f32 });
            rows.push(json!({ "n": n, "precision": format!("{precision:?}").to_lowercase(),
                "ms": secs * 1e3, "tflops": flops / 1e12, "of_peak": of_peak(flops, p) }));
        }
    }
    Ok(rows)
}

/// Causal attention FLOPs (QKᵀ and PV) of heads with these windows (0: global).
fn attention_flops(t: usize, d: usize, windows: &[usize]) -> f64 {
    let keys = |w: usize| (0..t).map(|i| if w == 0 { i + 1 } else { (i + 1).min(w) }).sum::<usize>() as f64;
    windows.iter().map(|&w| 4.0 * d as f64 * keys(w)).sum()
}

fn attention(s: &Shapes, b: Backend) -> Result<Vec<Json>, CliError> {
    let (h, d, w) = (s.heads, s.dim, s.window);
    let layouts: [(&str, Vec<usize>); 3] = [
        ("global", vec![0; h]),
        ("ls", (0..h).map(|i| if i < h / 2 { w } else { 0 }).collect()),
        ("local", vec![w; h]),
    ];
    let mut rows = Vec::new();
    for &t in &s.seq {
        let shape = [1, h, t, d];
        let x = dims(&shape);
        let mut row = json!({ "t": t, "heads": h, "dim": d, "window": w });
        let mut global = (0.0, 0.0);
        for (name, windows) in &layouts {
            let attrs = format!("{{windows=[{}], scale={}}}", dims(windows), (d as f64).powf(-0.5));
            let fwd = format!(
                "  %0 = input \"q\" : f32[{x}]\n  %1 = input \"k\" : f32[{x}]\n  %2 = input \"v\" : f32[{x}]\n  \
                 %3 = ls_attention(%0, %1, %2) {attrs} : (f32[{x}], f32[1,{h},{t}])\n  output \"o\" = %3.0"
            );
            let bwd = format!(
                "  %0 = input \"q\" : f32[{x}]\n  %1 = input \"k\" : f32[{x}]\n  %2 = input \"v\" : f32[{x}]\n  \
                 %3 = input \"o\" : f32[{x}]\n  %4 = input \"g\" : f32[{x}]\n  \
                 %5 = ls_attention_grad(%0, %1, %2, %3, %4) {attrs} : (f32[{x}], f32[{x}], f32[{x}])\n  \
                 output \"dq\" = %5.0\n  output \"dk\" = %5.1\n  output \"dv\" = %5.2"
            );
            let ins: Vec<(&str, Value<f32>)> =
                ["q", "k", "v", "o", "g"].iter().enumerate().map(|(i, n)| (*n, random(&shape, 3 + i as u64))).collect();
            let f = median_run(one_op(&fwd, &ins[..3], b.into())?.as_mut())?;
            let g = median_run(one_op(&bwd, &ins, b.into())?.as_mut())?;
            let flops = attention_flops(t, d, windows);
            if *name == "global" {
                global = (f, g);
            }
            row[format!("{name}_fwd_ms")] = json!(f * 1e3);
            row[format!("{name}_bwd_ms")] = json!(g * 1e3);
            row[format!("{name}_fwd_tflops")] = json!(flops / f / 1e12);
            row[format!("{name}_bwd_tflops")] = json!(2.5 * flops / g / 1e12);
            row[format!("{name}_fwd_speedup")] = json!(global.0 / f);
            row[format!("{name}_bwd_speedup")] = json!(global.1 / g);
        }
        rows.push(row);
    }
    Ok(rows)
}

fn ternary(s: &Shapes, b: Backend) -> Result<Vec<Json>, CliError> {
    let mut rows = Vec::new();
    for &n in &s.ternary {
        let w = random(&[n, n], 6);
        let x = random(&[1, n], 7);
        let dense = format!(
            "  %0 = input \"x\" : f32[1,{n}]\n  %1 = input \"w\" : f32[{n},{n}]\n  \
             %2 = matmul(%0, %1) {{trans_a=false, trans_b=true}} : f32[1,{n}]\n  output \"y\" = %2"
        );
        let packed = format!(
            "  %0 = input \"x\" : f32[1,{n}]\n  %1 = input \"w\" : ternary[{n},{n}]\n  %2 = input \"s\" : f32[]\n  \
             %3 = ternary_matmul(%0, %1, %2) {{trans_b=true}} : f32[1,{n}]\n  output \"y\" = %3"
        );
        let f32_s = median_run(one_op(&dense, &[("x", x.clone()), ("w", w.clone())], b.into())?.as_mut())?;
        let s_val = Value::floats(vec![], vec![0.02]);
        let t_s = median_run(one_op(&packed, &[("x", x), ("w", w), ("s", s_val)], b.into())?.as_mut())?;
        rows.push(json!({ "n": n, "f32_gemv_ms": f32_s * 1e3, "ternary_ms": t_s * 1e3, "speedup": f32_s / t_s }));
    }
    Ok(rows)
}

/// Training-step tokens/s of `m` at `(config, batch, seq)` (median of `a.steps` steps after one warm-up).
fn step_tokens_per_s(
    a: &BenchArgs,
    m: &str,
    (config, batch, seq): (&str, usize, usize),
    on: RunOn,
) -> Result<f64, CliError> {
    let forward = lsc_models::build(m, config).map_err(|e| CliError::new(e.to_string()))?;
    let mut cfg = super::bench::config(a, m);
    (cfg.config, cfg.batch, cfg.seq, cfg.backend, cfg.precision) =
        (config.to_string(), batch, seq, on.backend, on.precision);
    let params = lsc_runtime::init::init_params(&forward, cfg.seed).map_err(CliError::new)?;
    let text: Vec<u32> =
        lsc_runtime::data::load_text("synthetic", 0).map_err(CliError::from)?.into_iter().map(u32::from).collect();
    let mut t = Trainer::new(cfg, &forward, params)?;
    t.step(&text)?;
    let mut times = Vec::new();
    for _ in 0..a.steps.max(1) {
        let start = Instant::now();
        t.step(&text)?; // reads the loss back: the step has finished
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((batch * seq) as f64 / times[times.len() / 2])
}

fn training(a: &BenchArgs, s: &Shapes, b: Backend, peak: Option<(f64, f64)>) -> Result<Vec<Json>, CliError> {
    let mut rows = Vec::new();
    let models: Vec<&str> = lsc_models::MODELS
        .iter()
        .map(|m| m.name)
        .filter(|m| a.models.is_empty() || a.models.iter().any(|x| x == m))
        .collect();
    for &(config, batch, seq, with_cpu) in &s.training {
        for &m in &models {
            let forward = lsc_models::build(m, config).map_err(|e| CliError::new(e.to_string()))?;
            let n_params = lsc_passes::parameter_count(&forward).unwrap_or(0) as f64;
            let shape = (config, batch, seq);
            let mut row = json!({ "model": m, "config": config, "batch": batch, "seq": seq, "parameters": n_params });
            let cpu = if with_cpu { Some(step_tokens_per_s(a, m, shape, Backend::default().into())?) } else { None };
            if let Some(cpu) = cpu {
                row["cpu_backend"] = json!(Backend::default().name());
                row["cpu_tokens_per_s"] = json!(cpu);
            }
            let mut f32_tps = None;
            for precision in [Precision::F32, Precision::Bf16] {
                let tps = step_tokens_per_s(a, m, shape, RunOn { backend: b, precision })?;
                let p = format!("{precision:?}").to_lowercase();
                // Model FLOPs: 6 per parameter per token (forward and backward), attention left out.
                let mfu = peak.map_or(Json::Null, |(bf16, _)| json!(6.0 * n_params * tps / bf16));
                row[format!("{p}_tokens_per_s")] = json!(tps);
                row[format!("{p}_mfu")] = mfu;
                if let Some(cpu) = cpu {
                    row[format!("{p}_speedup_over_cpu")] = json!(tps / cpu);
                }
                match f32_tps {
                    None => f32_tps = Some(tps),
                    Some(f) => row["bf16_speedup_over_f32"] = json!(tps / f),
                }
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

fn decode(s: &Shapes, b: Backend) -> Result<Vec<Json>, CliError> {
    let mut rows = Vec::new();
    for &batch in &s.decode {
        let tps = super::microbench::greedy_tokens_per_s("ls-transformer", s.config, b, batch)?;
        rows.push(json!({ "model": "ls-transformer", "config": s.config, "batch": batch, "tokens_per_s": tps }));
    }
    Ok(rows)
}

/// Runs the GPU benchmark on `a`'s GPU backend.
pub fn run(a: &BenchArgs) -> CliResult {
    let b = a.on.backend;
    let s = Shapes::for_backend(b);
    let peak = peaks(b)?;
    let bar = indicatif::ProgressBar::new(5);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let section = |name: &str| {
        bar.set_message(name.to_string());
        bar.inc(1);
    };
    section("gemm");
    let gemm = gemm(&s, b, peak)?;
    section("attention");
    let attention = attention(&s, b)?;
    section("ternary");
    let ternary = ternary(&s, b)?;
    section("training step");
    let training = training(a, &s, b, peak)?;
    section("decode");
    let decode = decode(&s, b)?;
    bar.finish_and_clear();
    let doc = json!({
        "backend": b.name(),
        "emulated": b != Backend::Cuda,
        "peak_bf16_tflops": peak.map(|p| p.0 / 1e12),
        "peak_f32_tflops": peak.map(|p| p.1 / 1e12),
        "gemm": gemm, "attention": attention, "ternary": ternary, "training_step": training, "decode": decode,
    });
    if a.json {
        println!("{doc}");
        return Ok(());
    }
    print_table(&doc);
    Ok(())
}

fn print_table(doc: &Json) {
    let f = |r: &Json, k: &str| r[k].as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
    let rows = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
    if doc["emulated"].as_bool() == Some(true) {
        println!("(emulated device: tiny shapes, times meaningless; this checks the benchmark itself)");
    }
    println!("GEMM (n×n×n)            ms      TFLOP/s  of peak");
    for r in rows("gemm") {
        println!(
            "  n {:>5} {:<5} {:>10} {:>10} {:>8}",
            r["n"],
            r["precision"].as_str().unwrap_or(""),
            f(&r, "ms"),
            f(&r, "tflops"),
            f(&r, "of_peak")
        );
    }
    println!("attention fwd/bwd ms (speedup over all-global)");
    for r in rows("attention") {
        println!(
            "  T {:>6}: global {} / {}  ls {} / {} ({}× / {}×)  local {} / {} ({}× / {}×)",
            r["t"],
            f(&r, "global_fwd_ms"),
            f(&r, "global_bwd_ms"),
            f(&r, "ls_fwd_ms"),
            f(&r, "ls_bwd_ms"),
            f(&r, "ls_fwd_speedup"),
            f(&r, "ls_bwd_speedup"),
            f(&r, "local_fwd_ms"),
            f(&r, "local_bwd_ms"),
            f(&r, "local_fwd_speedup"),
            f(&r, "local_bwd_speedup")
        );
    }
    println!("ternary GEMV vs f32 GEMV (1×n·n×n)");
    for r in rows("ternary") {
        println!(
            "  n {:>5}: f32 {} ms, ternary {} ms ({}×)",
            r["n"],
            f(&r, "f32_gemv_ms"),
            f(&r, "ternary_ms"),
            f(&r, "speedup")
        );
    }
    println!("training step tokens/s: CPU ({}) | GPU f32 (× CPU) | GPU bf16 (× CPU, × f32, MFU)", Backend::default());
    for r in rows("training_step") {
        println!(
            "  {:<15} {:<7} {:>10} | {:>10} ({}×) | {:>10} ({}×, {}×, MFU {})",
            r["model"].as_str().unwrap_or(""),
            r["config"].as_str().unwrap_or(""),
            f(&r, "cpu_tokens_per_s"),
            f(&r, "f32_tokens_per_s"),
            f(&r, "f32_speedup_over_cpu"),
            f(&r, "bf16_tokens_per_s"),
            f(&r, "bf16_speedup_over_cpu"),
            f(&r, "bf16_speedup_over_f32"),
            f(&r, "bf16_mfu")
        );
    }
    for r in rows("decode") {
        println!("greedy decode B = {}: {} tokens/s", r["batch"], f(&r, "tokens_per_s"));
    }
}
