//! `lsc bench --kernels`: the library and generated kernels at the shapes the
//! papers care about, each figure next to a baseline timed in the same run:
//! GEMM against the measured FMA peak, LS- and local attention against
//! global attention, ternary against f32 matmul, greedy decoding on the
//! default backend against the interpreter alone, MoR inference with routed
//! recursion against every step over every token, and where one training
//! step's time goes.

use crate::error::{CliError, CliResult};
use lsc_interp::{Tensors, Value};
use lsc_ir::{DType, Op};
use lsc_runtime::backend::Backend;
use lsc_runtime::generate::Decoder;
use lsc_runtime::{calibrate, init};
use serde_json::{json, Value as Json};
use std::time::Instant;

/// Best wall time of `reps` runs of `f` (after one untimed run).
fn best_of(reps: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, CliError> {
    f().map_err(CliError::new)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let start = Instant::now();
        f().map_err(CliError::new)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn random(shape: &[usize], seed: u64) -> Value<f32> {
    let mut rng = init::Rng::new(seed);
    let n = shape.iter().product();
    Value::floats(shape.to_vec(), (0..n).map(|_| rng.normal() as f32).collect())
}

fn out(shape: &[usize]) -> Vec<(DType, Vec<usize>)> {
    vec![(DType::F32, shape.to_vec())]
}

/// Runs `op` of the CPU kernel library on new outputs of the given types.
fn library(op: &Op, args: &[&Value<f32>], outs: &[(DType, Vec<usize>)]) -> Result<(), String> {
    let views: Vec<_> = args.iter().map(|a| a.view()).collect();
    let mut values: Vec<Value<f32>> = outs.iter().map(|(t, s)| Value::zeros(*t, s.clone())).collect();
    let mut out_views: Vec<_> = values.iter_mut().map(Value::view_mut).collect();
    lsc_cpu::run_op(op, &views, &mut out_views)
}

/// GEMM GFLOP/s at `(m, n, k)` (`trans_b`: `x · wᵀ` as the models' linears), against `peak`.
fn gemm(peak: f64) -> Result<Vec<Json>, CliError> {
    let shapes = [(4096, 4096, 4096, false), (2048, 256, 256, true), (2048, 768, 256, true), (2048, 256, 768, true)];
    let mut rows = Vec::new();
    for (m, n, k, tb) in shapes {
        let a = random(&[m, k], 1);
        let b = random(&if tb { [n, k] } else { [k, n] }, 2);
        let reps = if m * n * k > 1 << 30 { 2 } else { 10 };
        let secs = best_of(reps, || library(&Op::MatMul { trans_a: false, trans_b: tb }, &[&a, &b], &out(&[m, n])))?;
        let gflops = 2.0 * (m * n * k) as f64 / secs / 1e9;
        rows.push(json!({ "m": m, "n": n, "k": k, "trans_b": tb, "gflops": gflops, "of_peak": gflops * 1e9 / peak }));
    }
    Ok(rows)
}

/// Attention forward (B = 1, 8 heads of 32, w = 64): global, LS (4 local + 4 global), local only.
fn attention() -> Result<Vec<Json>, CliError> {
    let mut rows = Vec::new();
    for t in [1024, 2048, 4096] {
        let shape = [1, 8, t, 32];
        let (q, k, v) = (random(&shape, 3), random(&shape, 4), random(&shape, 5));
        let outs = vec![(DType::F32, shape.to_vec()), (DType::F32, vec![1, 8, t])];
        let time = |windows: &[usize]| {
            best_of(3, || {
                let op = Op::LsAttention { windows: windows.to_vec(), scale: 32f64.powf(-0.5) };
                library(&op, &[&q, &k, &v], &outs)
            })
        };
        let global = time(&[0; 8])?;
        let ls = time(&[64, 64, 64, 64, 0, 0, 0, 0])?;
        let local = time(&[64; 8])?;
        rows.push(json!({
            "t": t, "global_ms": global * 1e3, "ls_ms": ls * 1e3, "local_ms": local * 1e3,
            "ls_speedup": global / ls, "local_speedup": global / local,
        }));
    }
    Ok(rows)
}

/// Ternary `x · Wᵀ · s` at 4096 × 4096 (2-bit planes, adds and subtracts up to
/// 64 rows, unpacked blocks through the GEMM above) against the f32 product,
/// for M = 1, 16 and 256.
fn ternary() -> Result<Vec<Json>, CliError> {
    let (n, k) = (4096, 4096);
    let w = random(&[n, k], 6);
    let s = Value::floats(vec![], vec![0.02]);
    let mut packed = Value::zeros(DType::Ternary, vec![n, k]);
    lsc_cpu::run_op(&Op::TernaryPack, &[w.view(), s.view()], &mut [packed.view_mut()]).map_err(CliError::new)?;
    let mut rows = Vec::new();
    for m in [1, 16, 256] {
        let x = random(&[m, k], 7);
        let reps = if m == 1 { 20 } else { 3 };
        let f32_s = best_of(reps, || library(&Op::MatMul { trans_a: false, trans_b: true }, &[&x, &w], &out(&[m, n])))?;
        let ternary_s =
            best_of(reps, || library(&Op::TernaryMatmul { trans_b: true }, &[&x, &packed, &s], &out(&[m, n])))?;
        rows.push(
            json!({ "m": m, "f32_ms": f32_s * 1e3, "ternary_ms": ternary_s * 1e3, "speedup": f32_s / ternary_s }),
        );
    }
    Ok(rows)
}

/// Greedy-decode tokens/s of `ls-transformer` `small` (after a 16-token
/// prompt and one untimed token; the median of 10 sequences) on every code
/// generator built, B = 1 and 8.
/// `bench/pytorch/bench_decode.py` times PyTorch the same way, as the baseline.
fn decode() -> Result<Vec<Json>, CliError> {
    let mut rows = Vec::new();
    for batch in [1, 8] {
        for b in Backend::native() {
            let tps = greedy_tokens_per_s("ls-transformer", "small", b, batch)?;
            rows.push(json!({ "batch": batch, "backend": b.name(), "tokens_per_s": tps }));
        }
    }
    Ok(rows)
}

/// Greedy-decode tokens/s of `model` at `config` (random weights) on `backend`,
/// as `lsc generate` runs it: the median of 10 sequences of 64 tokens (fewer
/// where the context is shorter) after a 16-token prompt, following a warm-up
/// sequence that compiles the programs.
pub(crate) fn greedy_tokens_per_s(model: &str, config: &str, backend: Backend, batch: usize) -> Result<f64, CliError> {
    let full = lsc_models::build(model, config).map_err(|e| CliError::new(e.to_string()))?;
    let step = lsc_models::build_decode(model, config).map_err(|e| CliError::new(e.to_string()))?;
    let params: Tensors<f32> = init::init_params(&full, 0).map_err(CliError::new)?;
    let prepared = lsc_runtime::prepare::prepare(&step, &params, backend)?;
    let mut dec = Decoder::on(&prepared.exe, &prepared.params, batch)?;
    let context = lsc_models::max_seq_len(model, config).map_err(|e| CliError::new(e.to_string()))?;
    let tokens = 64.min(context.saturating_sub(17)).max(1);
    let mut speeds = Vec::new();
    for _ in 0..11 {
        dec.reset();
        dec.feed(&Value::ints(vec![batch, 16], vec![1; batch * 16]))?;
        dec.feed(&Value::ints(vec![batch, 1], vec![1; batch]))?;
        let start = Instant::now();
        let mut next = vec![1i64; batch];
        for _ in 0..tokens {
            let logits = dec.feed(&Value::ints(vec![batch, 1], next.clone()))?;
            let v = *logits.shape.last().unwrap_or(&1);
            let data = logits.as_floats().unwrap_or(&[]);
            next = (0..batch)
                .map(|r| {
                    let row = &data[r * v..(r + 1) * v];
                    (0..v).max_by(|&i, &j| row[i].total_cmp(&row[j])).unwrap_or(0) as i64
                })
                .collect();
        }
        speeds.push((batch * tokens) as f64 / start.elapsed().as_secs_f64());
    }
    speeds.remove(0);
    speeds.sort_by(f64::total_cmp);
    Ok(speeds[speeds.len() / 2])
}

/// `mor` `small` batch inference (B = 8, T = 256, random weights) with its
/// recursion steps routed to their active tokens, against the same program
/// saturated without the `routed` group (every step over every token), on
/// `backend`; and the share of tokens active at each depth.
fn routed(backend: Backend) -> Result<Json, CliError> {
    let p = lsc_models::build_inference("mor", "small").map_err(|e| CliError::new(e.to_string()))?;
    let params: Tensors<f32> = init::init_params(&p, 0).map_err(CliError::new)?;
    let (b, t) = (8, 256);
    let ids = Value::ints(vec![b, t], (0..b * t).map(|i| (i * 7919 % 256) as i64).collect());
    let inputs = Tensors::from([("input_ids".to_string(), ids)]);
    let (machine, _) = calibrate::machine()?;
    let mut ms = Vec::new();
    let mut active = Vec::new();
    for without in [vec!["routed".to_string()], vec![]] {
        let cfg = lsc_passes::saturate::Config { keep_gradients: false, machine, without, ..Default::default() };
        let (q, _) = lsc_passes::saturate::optimize(&p, &cfg).map_err(CliError::new)?;
        let exe = lsc_runtime::backend::Executable::new(q, backend)?;
        let mut loaded = exe.load(&exe.bindings_for(&inputs)?)?;
        exe.set_params(loaded.as_mut(), &params)?;
        loaded.set("input_ids", &inputs["input_ids"])?;
        ms.push(1e3 * best_of(3, || loaded.run().map_err(|e| e.to_string()))?);
        let outs = loaded.outputs()?;
        active = outs
            .iter()
            .filter(|(n, _)| n.starts_with("route."))
            .map(|(_, v)| v.to_f64_vec().iter().sum::<f64>() / (b * t) as f64)
            .collect();
    }
    Ok(
        json!({ "batch": b, "seq": t, "full_ms": ms[0], "routed_ms": ms[1], "speedup": ms[0] / ms[1], "active_share": active }),
    )
}

/// Time per op kind (generated kernels as one kind) of one `ls-transformer` training
/// step at `a`'s config and shapes, on the default backend: where a step goes.
fn step_breakdown(a: &super::bench::BenchArgs) -> Result<Vec<Json>, CliError> {
    let forward = lsc_models::build("ls-transformer", &a.config).map_err(|e| CliError::new(e.to_string()))?;
    let params = init::init_params(&forward, 0).map_err(CliError::new)?;
    let cfg = lsc_runtime::train::TrainConfig {
        fuse: true,
        backend: Backend::default(),
        ..super::bench::config(a, "ls-transformer")
    };
    let mut t = lsc_runtime::train::Trainer::new(cfg, &forward, params)?;
    t.enable_profile();
    let tokens: Vec<u32> = lsc_runtime::data::load_text("synthetic", 0)?.into_iter().map(u32::from).collect();
    t.step(&tokens)?; // generates the kernels
    t.step(&tokens)?;
    let profile = t.profile();
    let total: f64 = profile.iter().map(|p| p.2).sum();
    Ok(profile
        .into_iter()
        .map(
            |(op, calls, secs)| json!({ "op": op, "calls": calls, "ms": secs * 1e3, "share": secs / total.max(1e-12) }),
        )
        .collect())
}

/// The sections `--only` selects.
const SECTIONS: [&str; 6] = ["gemm", "attention", "ternary", "decode", "routed", "step"];

/// Runs the kernel benchmarks and prints them (`--json`: one document).
pub fn run(a: &super::bench::BenchArgs) -> CliResult {
    let json_out = a.json;
    let backend = Backend::default();
    let machine = calibrate::calibrate();
    let peak = machine.machine.peak_flops;
    for o in &a.only {
        if !SECTIONS.contains(&o.as_str()) {
            return Err(CliError::with_fix(
                format!("unknown --only section `{o}`"),
                format!("use {}", SECTIONS.join(", ")),
            ));
        }
    }
    let wanted = |s: &str| a.only.is_empty() || a.only.iter().any(|o| o == s);
    let mut doc = json!({ "fma_peak_gflops": peak / 1e9, "isa": machine.isa, "threads": machine.threads });
    if wanted("gemm") {
        doc["gemm"] = json!(gemm(peak)?);
    }
    if wanted("attention") {
        doc["attention"] = json!(attention()?);
    }
    if wanted("ternary") {
        doc["ternary"] = json!(ternary()?);
    }
    if wanted("decode") {
        doc["decode"] = json!({ "rows": decode()? });
    }
    if wanted("routed") {
        doc["routed"] = json!({ "backend": backend.to_string(), "mor": routed(backend)? });
    }
    if wanted("step") {
        doc["step_breakdown"] =
            json!({ "backend": backend.to_string(), "batch": a.batch, "seq": a.seq, "ops": step_breakdown(a)? });
    }
    if json_out {
        println!("{doc}");
        return Ok(());
    }
    let f = |v: &Json, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!(
        "FMA peak ({}, {} threads): {:.1} GFLOP/s, measured in this run",
        doc["isa"],
        doc["threads"],
        f(&doc, "fma_peak_gflops")
    );
    if !doc["gemm"].is_null() {
        println!("GEMM (the library kernel):");
    }
    for r in doc["gemm"].as_array().into_iter().flatten() {
        println!(
            "  {:>4}×{:<4}×{:<4}{}  {:7.1} GFLOP/s  {:5.1}% of peak",
            r["m"],
            r["n"],
            r["k"],
            if r["trans_b"] == true { " (x·wᵀ)" } else { "       " },
            f(r, "gflops"),
            100.0 * f(r, "of_peak")
        );
    }
    if !doc["attention"].is_null() {
        println!("attention forward, B = 1, 8 heads × 32, w = 64 (time; speedup over 8 global heads):");
    }
    for r in doc["attention"].as_array().into_iter().flatten() {
        println!(
            "  T = {:<5} global {:8.2} ms   LS 4+4 {:8.2} ms ({:.2}×)   local {:8.2} ms ({:.2}×)",
            r["t"],
            f(r, "global_ms"),
            f(r, "ls_ms"),
            f(r, "ls_speedup"),
            f(r, "local_ms"),
            f(r, "local_speedup")
        );
    }
    if !doc["ternary"].is_null() {
        println!("ternary x·Wᵀ at 4096×4096 against f32:");
    }
    for r in doc["ternary"].as_array().into_iter().flatten() {
        println!(
            "  M = {:<4} f32 {:8.3} ms   ternary {:8.3} ms ({:.2}×)",
            r["m"],
            f(r, "f32_ms"),
            f(r, "ternary_ms"),
            f(r, "speedup")
        );
    }
    if !doc["decode"].is_null() {
        println!("greedy decode, ls-transformer small (bench/pytorch/bench_decode.py times PyTorch alike):");
    }
    for r in doc["decode"]["rows"].as_array().into_iter().flatten() {
        println!(
            "  B = {:<2} {:<10} {:8.1} tokens/s",
            r["batch"],
            r["backend"].as_str().unwrap_or("?"),
            f(r, "tokens_per_s")
        );
    }
    let r = &doc["routed"]["mor"];
    if r.is_null() {
        return Ok(());
    }
    let shares: Vec<String> = r["active_share"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("{:.0}%", 100.0 * s.as_f64().unwrap_or(0.0)))
        .collect();
    println!(
        "mor small inference, B = {} × T = {} ({backend}; tokens active per depth {}):\n  every token {:8.2} ms   routed {:8.2} ms ({:.2}×)",
        r["batch"],
        r["seq"],
        shares.join(", "),
        f(r, "full_ms"),
        f(r, "routed_ms"),
        f(r, "speedup")
    );
    println!(
        "one ls-transformer {} training step, batch {} × {} ({backend}), time per op kind:",
        a.config, a.batch, a.seq
    );
    for r in doc["step_breakdown"]["ops"].as_array().into_iter().flatten().take(12) {
        println!(
            "  {:<24} {:>4} calls {:9.2} ms {:5.1}%",
            r["op"].as_str().unwrap_or("?"),
            r["calls"],
            f(r, "ms"),
            100.0 * f(r, "share")
        );
    }
    Ok(())
}
