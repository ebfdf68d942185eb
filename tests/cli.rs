//! The real `lsc` binary: happy paths end to end, and bad input exits 2 with
//! a one-line message.

#[path = "common/cli.rs"]
mod cli_support;

use cli_support::{assert_bad, assert_one_line, lsc, scratch, stderr, stdout};
use std::path::Path;

#[allow(dead_code)]
#[path = "../examples/custom_model.rs"]
mod custom_model;

fn golden(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file).display().to_string()
}

#[test]
fn models_lists_every_model_and_config() {
    let o = lsc(&["models"]);
    assert!(o.status.success());
    let s = stdout(&o);
    for m in ["transformer", "ls-transformer"] {
        for c in ["tiny", "small", "long"] {
            assert!(s.lines().any(|l| l.starts_with(m) && l.contains(c)), "{m} {c} in\n{s}");
        }
    }
}

#[test]
fn compile_writes_ir_and_manifest_that_check_accepts() {
    let dir = scratch("compile");
    let o =
        lsc(&["compile", "--model", "ls-transformer", "--config", "tiny", "--emit", "ir", "-o", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ir = dir.join("ls-transformer.lsir");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["name"], "ls-transformer");
    assert_eq!(
        manifest["parameter_count"], 37024,
        "the 39072 of learned positions less the 64×32 table that rotary embeddings replace"
    );
    assert_eq!(manifest["inputs"][0]["name"], "input_ids");
    assert_eq!(manifest["outputs"][0]["shape"], serde_json::json!(["B", "T", "256"]));
    let o = lsc(&["check", ir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(": ok"));
}

#[test]
fn compile_inference_routes_mors_recursion_and_rejects_train_with_it() {
    let dir = scratch("inference");
    let out = dir.to_str().unwrap();
    let o = lsc(&["compile", "--model", "mor", "--inference", "--emit", "opt-ir,egraph-stats", "-o", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let opt = std::fs::read_to_string(dir.join("mor.inference.opt.lsir")).unwrap();
    assert_eq!(opt.matches("routed_call(").count(), 3, "{opt}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mor.inference.egraph-stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rules_fired"]["routed-call"], 3);
    // The ablation keeps every step over every token.
    let o = lsc(&["compile", "--model", "mor", "--inference", "--emit", "opt-ir", "--no-rules", "routed", "-o", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::fs::read_to_string(dir.join("mor.inference.opt.lsir")).unwrap().contains("routed_call"));
    let o = lsc(&["compile", "--model", "mor", "--inference", "--train", "-o", out]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

#[test]
fn a_users_own_dsl_model_compiles_and_runs_through_the_cli() {
    let dir = scratch("custom");
    let program = custom_model::build().expect("the example model is well-typed");
    let path = dir.join("custom.lsir");
    std::fs::write(&path, lsc_ir::print_program(&program).unwrap()).unwrap();
    let out = dir.join("out");
    let o = lsc(&["compile", "--ir", path.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("custom.lsir").exists() && out.join("manifest.json").exists());
    let o = lsc(&["run", "--ir", path.to_str().unwrap(), "--prompt", "Hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().filter(|l| l.contains("p = ")).count(), 5);
}

#[test]
fn run_prints_the_top_five_next_bytes_with_probabilities() {
    let o = lsc(&["run", "--model", "transformer", "--config", "tiny", "--prompt", "abc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let probs: Vec<f64> =
        stdout(&o).lines().filter_map(|l| l.split("p = ").nth(1)).map(|p| p.trim().parse().unwrap()).collect();
    assert_eq!(probs.len(), 5);
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "sorted: {probs:?}");
    assert!(probs.iter().all(|&p| p > 0.0 && p < 1.0));
}

#[test]
fn batch_run_reproduces_the_golden_logits() {
    let dir = scratch("batch");
    let out = dir.join("logits.safetensors");
    let o = lsc(&[
        "run",
        "--model",
        "ls-transformer",
        "--config",
        "tiny",
        "--weights",
        &golden("ls-transformer-tiny.weights.safetensors"),
        "--inputs",
        &golden("ls-transformer-tiny.io.safetensors"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = lsc_runtime::weights::load_tensors(&out).unwrap();
    let want = lsc_runtime::weights::load_tensors(Path::new(&golden("ls-transformer-tiny.io.safetensors"))).unwrap();
    let tol = lsc_runtime::numerics::tolerance(lsc_ir::DType::F32);
    assert!(lsc_runtime::numerics::allclose(&got["logits"].to_f64_vec(), &want["logits"].to_f64_vec(), tol));
}

#[test]
fn malformed_lsir_reports_file_line_and_column() {
    let dir = scratch("malformed");
    let path = dir.join("bad.lsir");
    std::fs::write(&path, "lsir 1\ngraph @main {\n  %0 = input \"x\" : f32[4]\n  %1 = exp(%0 : f32[4]\n}\n").unwrap();
    let o = lsc(&["check", path.to_str().unwrap()]);
    assert_bad(&o, &format!("{}:4:15: expected `,`", path.display()));
    assert_one_line(&o);
    let o = lsc(&["compile", "--ir", path.to_str().unwrap(), "-o", dir.to_str().unwrap()]);
    assert_bad(&o, "bad.lsir:4:15");
}

#[test]
fn unknown_model_and_config_name_the_choices() {
    let o = lsc(&["run", "--model", "gpt5", "--prompt", "x"]);
    assert_bad(&o, "unknown model `gpt5`; choose one of transformer, ls-transformer");
    assert_one_line(&o);
    let o = lsc(&["compile", "--model", "transformer", "--config", "huge"]);
    assert_bad(&o, "has no config `huge`; choose one of tiny, small, long, medium");
}

#[test]
fn missing_files_are_reported_with_their_path() {
    let o = lsc(&["check", "/nonexistent/model.lsir"]);
    assert_bad(&o, "/nonexistent/model.lsir");
    let o = lsc(&["run", "--model", "transformer", "--weights", "/nonexistent/w.safetensors", "--prompt", "x"]);
    assert_bad(&o, "/nonexistent/w.safetensors");
    assert_one_line(&o);
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let dir = scratch("truncated");
    let bytes = std::fs::read(golden("transformer-tiny.weights.safetensors")).unwrap();
    let path = dir.join("cut.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let o = lsc(&["run", "--model", "transformer", "--weights", path.to_str().unwrap(), "--prompt", "x"]);
    assert_bad(&o, "not a valid safetensors file");
    assert_one_line(&o);
    std::fs::write(&path, b"garbage").unwrap();
    let o = lsc(&["run", "--model", "transformer", "--weights", path.to_str().unwrap(), "--prompt", "x"]);
    assert_bad(&o, "not a valid safetensors file");
}

#[test]
fn weights_for_another_config_name_the_tensor() {
    let o = lsc(&[
        "run",
        "--model",
        "transformer",
        "--config",
        "small",
        "--weights",
        &golden("transformer-tiny.weights.safetensors"),
        "--prompt",
        "x",
    ]);
    assert_bad(&o, "tensor `embed.weight` is f32[256, 32], expected f32[256,256]");
}

#[test]
fn bad_prompts_and_arguments_exit_2() {
    let long = "x".repeat(100);
    let o = lsc(&["run", "--model", "transformer", "--config", "tiny", "--prompt", &long]);
    assert_bad(&o, "at most 64");
    let o = lsc(&["run", "--model", "transformer", "--prompt", ""]);
    assert_bad(&o, "the prompt is empty");
    let o = lsc(&["compile", "--model", "transformer", "--emit", "wasm"]);
    assert_bad(&o, "unknown --emit kind `wasm`; use one of: ir");
    let o = lsc(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = lsc(&["run", "--model", "transformer"]);
    assert_eq!(o.status.code(), Some(2), "neither --prompt nor --inputs");
}

#[test]
fn eval_reports_mor_loss_under_both_rules() {
    let dir = scratch("eval");
    let text = dir.join("text.txt");
    std::fs::write(&text, "the quick brown fox jumps over the lazy dog. ".repeat(40)).unwrap();
    let o =
        lsc(&["eval", "--model", "mor", "--config", "tiny", "--data", text.to_str().unwrap(), "--max-windows", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let losses: Vec<f64> =
        out.lines().map(|l| l.split("loss ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()).collect();
    assert_eq!(losses.len(), 2, "{out}");
    assert!(out.contains("top-k rule") && out.contains("σ(logit) ≥ 0.5 rule"), "{out}");
    // Random init predicts nearly uniformly over 256 bytes: ln 256 = 5.545.
    assert!(losses.iter().all(|l| (l - 256f64.ln()).abs() < 0.1), "{losses:?}");
    let o = lsc(&["eval", "--model", "gam", "--data", "/nonexistent.txt"]);
    assert_bad(&o, "/nonexistent.txt");
}

#[test]
fn train_writes_metrics_checkpoint_and_plots_then_resumes_generates_and_evaluates() {
    let dir = scratch("train");
    let out = dir.to_str().unwrap();
    let common = [
        "--model",
        "gam",
        "--config",
        "tiny",
        "--batch",
        "2",
        "--seq",
        "16",
        "--eval-every",
        "2",
        "--eval-windows",
        "2",
    ];
    let mut args = vec!["train", "--steps", "4", "--out", out, "--json-summary"];
    args.extend(common);
    let o = lsc(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(summary["steps"], 4);
    for k in ["tokens_per_s", "train_loss", "val_loss", "wall_s"] {
        assert!(summary[k].as_f64().is_some_and(f64::is_finite), "{k} in {summary}");
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    assert!(std::fs::read_to_string(dir.join("loss.svg")).unwrap().contains("<polyline"));
    let ckpt = dir.join("checkpoint.safetensors");

    let mut args = vec!["train", "--steps", "6", "--out", out, "--resume", ckpt.to_str().unwrap(), "--rewarm"];
    args.extend(common);
    let o = lsc(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().count(),
        6,
        "metrics are appended on resume"
    );

    let o =
        lsc(&["generate", "--ckpt", ckpt.to_str().unwrap(), "--prompt", "The ", "--max-tokens", "10", "--seed", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 4 + 10 + 1, "prompt, 10 sampled bytes and a newline");
    assert!(o.stdout.starts_with(b"The "));

    let o = lsc(&["eval", "--ckpt", ckpt.to_str().unwrap(), "--max-windows", "2", "--json", "--baselines"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(r["loss"].as_f64().unwrap() < 6.0 && r["byte_2gram"].as_f64().is_some(), "{r}");

    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() - 100]).unwrap();
    let o = lsc(&["eval", "--ckpt", ckpt.to_str().unwrap()]);
    assert_bad(&o, "not a valid safetensors file");
    assert_one_line(&o);
}

#[test]
fn fit_to_time_moves_the_schedule_horizon_to_the_time_budget() {
    let dir = scratch("fit");
    let out = dir.to_str().unwrap();
    let mut args = vec!["train", "--model", "transformer", "--config", "tiny", "--batch", "2", "--seq", "16"];
    args.extend(["--steps", "1000000", "--schedule", "wsd", "--decay-steps", "10", "--eval-every", "0"]);
    args.extend(["--sample-tokens", "0", "--out", out, "--json-summary", "--max-seconds", "3"]);
    let o = lsc(&[args.as_slice(), &["--fit-to-time"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let fitted: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fitted_steps"].as_u64())
        .collect();
    let goal = *fitted.last().expect("the horizon was fitted");
    assert!(goal < 1_000_000, "fitted to {goal} steps");
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert!(summary["steps"].as_u64().unwrap() <= goal);
    let ckpt = lsc_runtime::checkpoint::Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ckpt.meta.train["schedule"]["total"].as_u64(), Some(goal), "the checkpoint keeps the fitted schedule");

    let o = lsc(&[args.as_slice(), &["--overwrite"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().contains("fitted_steps"));
    let o = lsc(&[args.as_slice(), &["--fit-to-time", "--schedule", "constant"]].concat());
    assert_eq!(o.status.code(), Some(2));
    let o = lsc(&["train", "--fit-to-time", "--steps", "2"]);
    assert_eq!(o.status.code(), Some(2), "--fit-to-time without --max-seconds");
}

#[test]
fn adam_betas_outside_the_unit_interval_are_refused() {
    let o = lsc(&["train", "--model", "transformer", "--config", "tiny", "--steps", "1", "--beta2", "1"]);
    assert_bad(&o, "--beta2");
    assert!(stderr(&o).contains("1 is outside [0, 1)"), "{}", stderr(&o));
}

#[test]
fn compile_train_emits_one_step_graph_with_structured_backward() {
    let dir = scratch("compile-train");
    let train = |extra: &[&str]| {
        let mut args = vec!["compile", "--model", "mor", "--config", "tiny", "--train", "-o", dir.to_str().unwrap()];
        args.extend(extra);
        let o = lsc(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        lsc_ir::parse_and_verify(&std::fs::read_to_string(dir.join("mor.train.lsir")).unwrap()).unwrap()
    };
    let calls = |p: &lsc_ir::Program, f: &str| {
        p.main.dag.node_weights().filter(|n| matches!(&n.op, lsc_ir::Op::Call { callee } if callee == f)).count()
    };
    let p = train(&["--recompute-calls"]);
    let names: Vec<&str> = p.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["block", "block__vjp"], "the shared block and its one backward function");
    assert_eq!(
        (calls(&p, "block"), calls(&p, "block__vjp")),
        (4, 4),
        "four recursions forward and backward, no unrolling"
    );
    let outs: Vec<&str> = p.main.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        outs.contains(&"loss")
            && outs.contains(&"param.shared.attn.q_proj.weight")
            && outs.contains(&"adam.v.routers.3.weight")
    );
    // By default the recursions are inlined, so the backward reads the forward's values.
    let inlined = train(&[]);
    assert!(inlined.functions.is_empty(), "no function is called any more");
    assert_eq!(inlined.main.params().len(), p.main.params().len(), "the shared weights are still declared once");
    let q_proj = |p: &lsc_ir::Program| {
        let q = p.main.params().into_iter().find(|(_, n)| *n == "shared.attn.q_proj.weight").unwrap().0;
        p.main.dag.node_indices().filter(|&n| p.main.operands(n).contains(&lsc_ir::ValueRef::first(q))).count()
    };
    assert!(q_proj(&inlined) >= 4, "each recursion reads the one shared q_proj");
}

#[test]
fn compile_emits_optimised_ir_and_saturation_statistics() {
    let dir = scratch("saturate");
    let out = dir.to_str().unwrap();
    let o = lsc(&["compile", "--model", "transformer", "--train", "--emit", "opt-ir,egraph-stats", "-o", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("transformer.train.egraph-stats.json")).unwrap())
            .unwrap();
    for k in [
        "rules_fired",
        "enodes",
        "eclasses",
        "iterations",
        "stop_reason",
        "op_histogram_before",
        "op_histogram_after",
        "estimated_seconds_before",
        "estimated_seconds_after",
        "saturation_seconds",
    ] {
        assert!(!stats[k].is_null(), "{k} missing");
    }
    assert!(stats["rules_fired"]["scale-through-matmul"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert!(lsc_ir::parse_and_verify(&std::fs::read_to_string(dir.join("transformer.train.opt.lsir")).unwrap()).is_ok());
    let o = lsc(&[
        "compile",
        "--model",
        "transformer",
        "--emit",
        "egraph-stats",
        "--no-rules",
        "algebra,inference,attention",
        "-o",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("transformer.egraph-stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rules_fired"], serde_json::json!({}), "an ablated group fires nothing");
    // Bounds: one iteration per stage cannot saturate the attention stage.
    let o =
        lsc(&["compile", "--model", "ls-transformer", "--emit", "egraph-stats", "--egg-iter-limit", "1", "-o", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ls-transformer.egraph-stats.json")).unwrap()).unwrap();
    assert!(stats["stop_reason"]["main"].as_str().unwrap_or("").contains("IterationLimit"), "{stats}");
    let o = lsc(&["compile", "--model", "transformer", "--emit", "egraph-stats", "--rules", "atention", "-o", out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown rule group `atention`") && stderr(&o).contains("attention"), "{}", stderr(&o));
}

#[test]
fn compile_emits_the_plan_of_launches() {
    let dir = scratch("plan");
    let out = dir.to_str().unwrap();
    let o =
        lsc(&["compile", "--model", "transformer", "--inference", "--emit", "plan", "--bind", "B=1,T=4", "-o", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("plan at"), "{}", stdout(&o));
    let plan = std::fs::read_to_string(dir.join("transformer.inference.plan.txt")).unwrap();
    assert!(plan.contains("kernel main_k") && plan.contains("ls_attention") && plan.contains("load 0:"), "{plan}");
    insta::assert_snapshot!("transformer-tiny-inference-plan", plan);
}

#[test]
fn compile_emits_kernels_kernel_ir_and_cranelift_ir() {
    let dir = scratch("kernels");
    let out = dir.to_str().unwrap();
    let o = lsc(&[
        "compile",
        "--model",
        "transformer",
        "--target",
        "cpu",
        "--emit",
        "kernels,kir,clif",
        "--bind",
        "B=2",
        "-o",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kernels"]["target"], "cpu");
    let launch = manifest["kernels"]["launch_order"].as_array().unwrap();
    assert!(launch.iter().any(|k| k["kind"] == "generated" && k["schedule"].is_object()), "{manifest}");
    assert!(launch.iter().any(|k| k["kind"] == "library" && k["op"] == "matmul"), "GEMMs are library kernels");
    let memory = &manifest["kernels"]["memory"];
    let (arena, unshared) = (memory["arena_bytes"].as_u64().unwrap(), memory["unshared_bytes"].as_u64().unwrap());
    assert!(arena > 0 && arena < unshared, "arena space is reused: {memory}");
    assert!(stdout(&o).contains("plan at"), "{}", stdout(&o));
    let kir = std::fs::read_to_string(dir.join("transformer.kir")).unwrap();
    let clif = std::fs::read_to_string(dir.join("transformer.clif")).unwrap();
    assert!(clif.contains("fadd") && clif.contains("load.f32"), "{clif}");
    insta::assert_snapshot!("transformer-tiny-kir", kir);
    for m in ["ls-transformer", "gam", "trilm", "mor"] {
        let o = lsc(&["compile", "--model", m, "--emit", "kir", "--bind", "B=2", "-o", out]);
        assert!(o.status.success(), "{m}: {}", stderr(&o));
        insta::assert_snapshot!(
            format!("{m}-tiny-kir"),
            std::fs::read_to_string(dir.join(format!("{m}.kir"))).unwrap()
        );
    }
    let o = lsc(&["compile", "--model", "transformer", "--target", "gpu", "--emit", "kir", "-o", out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("use cpu, cuda, cuda:sm_80 or cuda:sm_90"), "{}", stderr(&o));
    let o = lsc(&["compile", "--model", "transformer", "--emit", "kir", "--bind", "B=two", "-o", out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad --bind `B=two`"), "{}", stderr(&o));
}

#[test]
fn compile_emits_llvm_ir_and_assembly_or_names_the_feature() {
    let dir = scratch("llvm");
    let out = dir.to_str().unwrap();
    let o = lsc(&["compile", "--model", "transformer", "--emit", "kernels,kir,ll,asm,obj", "--bind", "B=2", "-o", out]);
    if cfg!(feature = "llvm") {
        assert!(o.status.success(), "{}", stderr(&o));
        // One relocatable object defining every generated kernel, for ahead-of-time linking.
        let object = std::fs::read(dir.join("transformer.o")).unwrap();
        assert!(object.starts_with(b"\x7fELF"), "not an ELF object");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
        for k in manifest["kernels"]["launch_order"].as_array().unwrap().iter().filter(|k| k["kind"] == "elementwise") {
            let name = k["name"].as_str().unwrap().as_bytes();
            assert!(object.windows(name.len()).any(|w| w == name), "the object lacks {}", k["name"]);
        }
        let ll = std::fs::read_to_string(dir.join("transformer.ll")).unwrap();
        let asm = std::fs::read_to_string(dir.join("transformer.asm")).unwrap();
        assert!(ll.contains("x float>") && ll.contains("define"), "{ll}");
        // On an AVX-512 machine the kernels' vector loops are 16 lanes wide: zmm registers.
        let avx512 = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("avx512f"));
        assert!(!avx512 || asm.contains("zmm"), "no zmm registers in the kernels");
        assert!(stdout(&o).contains("llvm: "), "{}", stdout(&o));
    } else {
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("--features llvm"), "{}", stderr(&o));
    }
}

#[test]
fn compile_for_cuda_writes_gpu_kernels_and_their_launches_or_names_what_does_not_lower() {
    let dir = scratch("cuda");
    let d = dir.display().to_string();
    let o = lsc(&["compile", "--model", "gam", "--train", "--target", "cuda:sm_80", "--emit", "kir,kernels", "-o", &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("cuda:sm_80:"), "{}", stdout(&o));
    let kir = std::fs::read_to_string(dir.join("gam.train.kir")).unwrap();
    assert!(kir.contains("launch") && kir.contains("barrier"), "GPU kernel IR:\n{kir}");
    let kernels = std::fs::read_to_string(dir.join("gam.train.kernels.txt")).unwrap();
    assert!(kernels.contains("library (cublas): matmul"), "{kernels}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let k = &m["kernels"];
    assert_eq!(k["target"], "cuda:sm_80");
    let first = &k["gpu_kernels"][0];
    assert!(first["grid"].as_u64().unwrap() >= 1 && first["block"].as_u64().unwrap().is_multiple_of(32), "{first}");
    assert!(first["buffers"][0]["place"].is_string(), "{first}");
    assert_eq!(k["unsupported"], serde_json::json!([]));
    // A program with an op no GPU kernel computes yet (gelu).
    let b = lsc_frontend::ModelBuilder::new();
    let x = b.input("x", lsc_ir::DType::F32, &[lsc_ir::Dim::new(4), lsc_ir::Dim::new(8)]);
    b.output("y", &x.gelu().sum(&[1], false));
    let file = dir.join("mine.lsir");
    std::fs::write(&file, lsc_ir::print_program(&b.finish().unwrap()).unwrap()).unwrap();
    let f = file.display().to_string();
    let o = lsc(&["compile", "--ir", &f, "--target", "cuda", "--emit", "kir", "-o", &d]);
    assert_bad(&o, "model mine: the GPU lowering has no kernel for gelu (1×)");
    assert!(stderr(&o).contains("--partial"), "{}", stderr(&o));
    let o = lsc(&["compile", "--ir", &f, "--target", "cuda", "--partial", "--emit", "kir", "-o", &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["kernels"]["unsupported"][0]["op"], "gelu");
    // Every built-in model's routed inference lowers, its routing included.
    let o = lsc(&["compile", "--model", "mor", "--inference", "--target", "cuda", "--emit", "kernels", "-o", &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(m["kernels"]["workspace"].as_array().is_some_and(|w| !w.is_empty()), "{m}");
    // Bad targets and artifacts that are not made for the target.
    assert_bad(
        &lsc(&["compile", "--model", "gam", "--target", "cuda:sm_75", "--emit", "kir", "-o", &d]),
        "sm_80, sm_90",
    );
    assert_bad(
        &lsc(&["compile", "--model", "gam", "--target", "cuda", "--emit", "clif", "-o", &d]),
        "--emit clif is not made for --target cuda:sm_90",
    );
    assert_bad(&lsc(&["compile", "--model", "gam", "--emit", "ptx", "-o", &d]), "pass --target cuda");
    let ptx = lsc(&["compile", "--model", "gam", "--target", "cuda", "--emit", "ptx", "-o", &d]);
    if cfg!(feature = "llvm") {
        assert!(ptx.status.success(), "{}", stderr(&ptx));
        let text = std::fs::read_to_string(dir.join("gam.ptx")).unwrap();
        assert!(text.contains(".target sm_90") && text.contains(".entry"), "{text}");
    } else {
        assert_bad(&ptx, "--features llvm");
    }
}

#[test]
fn the_cuda_backend_without_a_driver_or_a_cuda_build_and_bf16_on_the_cpu_are_clear_errors() {
    let o = lsc(&["run", "--model", "transformer", "--prompt", "hi", "--backend", "cuda"]);
    if cfg!(feature = "cuda") {
        if o.status.success() {
            println!("a CUDA device is present: the driver-less error is not checked here");
        } else {
            assert_bad(&o, "no CUDA driver");
        }
    } else {
        assert_bad(&o, "--features cuda");
    }
    let o = lsc(&["run", "--model", "transformer", "--prompt", "hi", "--precision", "bf16"]);
    assert_bad(&o, "--precision bf16 runs on the GPU backends");
    let o = lsc(&["run", "--model", "transformer", "--prompt", "hi", "--backend", "cuda-emu", "--precision", "bf16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("cuda-emu, bf16") && stdout(&o).contains("on the GPU"), "{}", stdout(&o));
}

#[test]
fn bench_on_the_emulated_gpu_reports_every_section() {
    let o = lsc(&["bench", "--backend", "cuda-emu", "--steps", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON document");
    assert_eq!(doc["backend"], "cuda-emu");
    assert_eq!(doc["emulated"], true);
    for r in doc["gemm"].as_array().unwrap() {
        assert!(r["tflops"].as_f64().unwrap() > 0.0, "{r}");
    }
    let a = &doc["attention"][0];
    assert!(a["local_fwd_ms"].as_f64().unwrap() > 0.0 && a["ls_bwd_speedup"].as_f64().unwrap() > 0.0, "{a}");
    assert!(doc["ternary"][0]["speedup"].as_f64().unwrap() > 0.0);
    let steps = doc["training_step"].as_array().unwrap();
    assert_eq!(steps.len(), lsc_models::MODELS.len());
    for r in steps {
        assert!(r["bf16_tokens_per_s"].as_f64().unwrap() > 0.0 && r["cpu_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(doc["decode"].as_array().unwrap().len(), 2);
}

#[test]
fn gptq_quantises_a_trained_model_better_than_round_to_nearest_and_the_result_runs() {
    let dir = scratch("quantize");
    let out = dir.to_str().unwrap();
    let mut args = vec!["train", "--model", "transformer", "--config", "tiny", "--steps", "300", "--batch", "8"];
    args.extend(["--seq", "64", "--eval-every", "0", "--sample-tokens", "0", "--out", out]);
    let o = lsc(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = dir.join("checkpoint.safetensors");
    let c = ckpt.to_str().unwrap();
    let after = |method: &str, bits: &str| -> f64 {
        let q = dir.join(format!("{method}{bits}.safetensors"));
        let o = lsc(&["quantize", "--ckpt", c, "--method", method, "--bits", bits, "--out", q.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let line = stdout(&o).lines().find(|l| l.starts_with("validation loss")).unwrap().to_string();
        line.split("f32, ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
    };
    for bits in ["3", "4"] {
        let (rtn, gptq) = (after("rtn", bits), after("gptq", bits));
        assert!(gptq <= rtn, "{bits} bits: GPTQ {gptq} vs RTN {rtn}");
    }
    // The quantised checkpoint runs like any other.
    let q = dir.join("gptq3.safetensors");
    let o = lsc(&["eval", "--ckpt", q.to_str().unwrap(), "--max-windows", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lsc(&["generate", "--ckpt", q.to_str().unwrap(), "--prompt", "The ", "--max-tokens", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bad = |extra: &[&str], needle: &str| {
        let x = dir.join("x.safetensors");
        let mut args = vec!["quantize", "--ckpt", c, "--out", x.to_str().unwrap()];
        args.extend(extra);
        assert_bad(&lsc(&args), needle);
    };
    bad(&["--method", "gptq", "--bits", "9"], "--bits");
    bad(&["--method", "gptq", "--bits", "4", "--group", "24"], "does not divide the 32 input features");
}

#[test]
fn flatness_estimates_the_curvature_of_a_checkpoint_and_refuses_bad_input() {
    let dir = scratch("flatness");
    let out = dir.to_str().unwrap();
    let train = ["train", "--model", "gam", "--steps", "3", "--batch", "2", "--seq", "16", "--sample-tokens", "0"];
    let o = lsc(&[&train[..], &["--out", out]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = dir.join("checkpoint.safetensors");
    let c = ckpt.to_str().unwrap();
    let json = dir.join("flat.json");
    let args =
        ["flatness", "--ckpt", c, "--probes", "4", "--fisher-batches", "3", "--power-iters", "5", "--batch", "2"];
    let o = lsc(&[&args[..], &["--seq", "16", "--json", json.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("Tr(H), Hutchinson") && s.contains("Tr(F), sampled labels") && s.contains("λ_max(H)"), "{s}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((doc["model"].as_str(), doc["data"].as_str()), (Some("gam"), Some("synthetic")), "{doc}");
    assert_eq!(doc["hessian_trace"]["samples"].as_array().map(Vec::len), Some(4), "{doc}");
    assert_eq!(doc["fisher_trace"]["samples"].as_array().map(Vec::len), Some(3), "{doc}");
    assert_eq!(doc["top_eigenvalue"]["history"].as_array().map(Vec::len), Some(5), "{doc}");
    // A Fisher trace is a mean of squared norms: positive.
    assert!(doc["fisher_trace"]["mean"].as_f64().unwrap() > 0.0, "{doc}");
    // Bad input: a window longer than the context, no probes, a corrupt checkpoint.
    assert_bad(&lsc(&[&args[..], &["--seq", "100000"]].concat()), "pass --seq 64 or less");
    let o = lsc(&["flatness", "--ckpt", c, "--probes", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--probes"), "{}", stderr(&o));
    let bytes = std::fs::read(&ckpt).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let o = lsc(&["flatness", "--ckpt", cut.to_str().unwrap()]);
    assert_bad(&o, "cut.safetensors");
    assert_one_line(&o);
}

#[test]
fn repro_flatness_quick_writes_a_report_with_verdicts_plots_and_metrics() {
    let dir = scratch("repro-flatness");
    let o = lsc(&["repro", "flatness", "--quick", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("nats per token") && report.contains("**Verdict:"), "{report}");
    // Six runs in the table, each claim with one of the three verdicts.
    assert_eq!(report.lines().filter(|l| l.starts_with("| d=")).count(), 6, "{report}");
    let verdicts = ["**reproduced**", "**not reproduced**", "**inconclusive at this scale**"];
    let claims: Vec<&str> = report.lines().filter(|l| l.starts_with("| (")).collect();
    assert_eq!(claims.len(), 12, "{report}");
    assert!(claims.iter().all(|l| verdicts.iter().any(|v| l.contains(v))), "{report}");
    for plot in ["loss.svg", "trace.svg", "probe.svg"] {
        assert!(std::fs::read_to_string(dir.join(plot)).unwrap().contains("<polyline"), "{plot}");
    }
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let measured: Vec<&serde_json::Value> = rows.iter().filter(|r| r.get("trace").is_some()).collect();
    assert!(measured.len() >= 12, "{} measurements", measured.len());
    for r in measured {
        // Near a minimum the Fisher and the Hessian traces are both positive;
        // the loss can never beat the HMM's optimum by more than sampling noise.
        assert!(r["trace"].as_f64().unwrap() > 0.0 && r["fisher"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["loss"].as_f64().unwrap() > r["floor"].as_f64().unwrap() - 0.05, "{r}");
        assert!((0.0..=1.0).contains(&r["probe_accuracy"].as_f64().unwrap()), "{r}");
    }
    let o = lsc(&["repro", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("flatness"), "{}", stderr(&o));
}

#[test]
fn detect_features_train_eval_predict_and_bad_input() {
    let dir = scratch("detect");
    let out = dir.to_str().unwrap();
    let o = lsc(&[
        "train",
        "--model",
        "transformer",
        "--steps",
        "3",
        "--batch",
        "2",
        "--seq",
        "16",
        "--sample-tokens",
        "0",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lm = dir.join("checkpoint.safetensors");
    let lm = lm.to_str().unwrap();
    // Human texts in lower case, machine texts in upper case: separable by the metrics.
    let human: Vec<String> =
        (0..30).map(|i| format!("the {i}th plain sentence of this small human corpus, written slowly")).collect();
    let machine: Vec<String> = human.iter().map(|t| t.to_uppercase()).collect();
    let data = dir.join("texts.json");
    std::fs::write(&data, serde_json::json!({ "original": human, "sampled": machine }).to_string()).unwrap();
    let d = data.to_str().unwrap();
    let cache = dir.join("cache");
    let c = cache.to_str().unwrap();
    let o = lsc(&["detect", "features", "--ckpt", lm, "--data", d, "--out", c, "--max-tokens", "48"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("60 texts (30 machine, 30 human)") && stdout(&o).contains("0 from the cache, 60 computed"),
        "{}",
        stdout(&o)
    );
    // A corrupt cache file is recomputed with a warning; the rest come from the cache.
    let first = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&first, b"not safetensors").unwrap();
    let o = lsc(&["detect", "features", "--ckpt", lm, "--data", d, "--cache", c, "--max-tokens", "48"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("59 from the cache, 1 computed"), "{}", stdout(&o));
    assert!(stderr(&o).contains("recomputing a corrupt feature cache file"), "{}", stderr(&o));
    let head = dir.join("head.safetensors");
    let h = head.to_str().unwrap();
    let o = lsc(&[
        "detect", "train", "--ckpt", lm, "--data", d, "--cache", c, "--out", h, "--epochs", "20", "--batch", "8",
        "--lr", "0.01",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(PAWN)") && stdout(&o).contains("(mean aggregation)"), "{}", stdout(&o));
    let o = lsc(&["detect", "eval", "--head", h, "--data", d, "--cache", c, "--part", "all", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["texts"], 60);
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{doc}");
    assert!(results[0]["auroc"].as_f64().unwrap() > 0.9, "PAWN separates upper from lower case: {doc}");
    let o = lsc(&["detect", "predict", "--head", h, "--data", d, "--cache", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 60);
    assert!(lines.iter().all(|l| (0.0..=1.0).contains(&l["probability"].as_f64().unwrap())));
    // Malformed input names the file and the record; heads and language models are not confused.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"original": ["fine text of enough bytes to count", 7], "sampled": []}"#).unwrap();
    let o = lsc(&["detect", "features", "--ckpt", lm, "--data", bad.to_str().unwrap(), "--cache", c]);
    assert_bad(&o, "bad.json: record 1 of `original` is not a string");
    assert_one_line(&o);
    assert_bad(&lsc(&["detect", "eval", "--head", lm, "--data", d, "--cache", c]), "not a detector head");
    assert_bad(&lsc(&["detect", "features", "--ckpt", h, "--data", d, "--cache", c]), "is a detector head");
    assert_bad(&lsc(&["detect", "features", "--ckpt", lm, "--data", d, "--max-tokens", "5000"]), "--max-tokens 5000");
}

#[test]
fn repro_pawn_quick_reports_every_split_and_detector() {
    if !Path::new("../shared/data/ai-text-detection/fast-detect-gpt-gpt3to4").exists() {
        eprintln!("skipped: ../shared/data/ai-text-detection is not beside the repo");
        return;
    }
    let dir = scratch("repro-pawn");
    let o = lsc(&["repro", "pawn", "--quick", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("trained by `lsc train --model transformer --config tiny"), "{report}");
    for split in ["in-distribution", "davinci → gpt-3.5-turbo", "gpt-3.5-turbo → davinci", "held-out domain: pubmed"]
    {
        assert!(report.contains(split), "{split} in {report}");
    }
    assert_eq!(report.lines().filter(|l| l.starts_with("| PAWN |")).count(), 6, "{report}");
    assert!(report.contains("**Verdict:"), "{report}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 24, "6 splits × 4 detectors");
    for r in &rows {
        let auroc = r["auroc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auroc), "{r}");
        assert!(r["test_texts"].as_u64().unwrap() > 0, "{r}");
    }
    for plot in ["roc.svg", "head-loss.svg"] {
        assert!(std::fs::read_to_string(dir.join(plot)).unwrap().contains("<polyline"), "{plot}");
    }
}
