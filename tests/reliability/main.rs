//! Reliability under hostile input and faults, through the real `lsc` binary:
//! no checkpoint lost to divergence or reuse, resume keeps its settings, every
//! number validated, resources checked before work, compile time bounded, no
//! NaN passed off as a result; and (in `fuzz`) a harness of mutated inputs.

#[path = "../common/cli.rs"]
mod cli_support;
mod fuzz;

use cli_support::{assert_bad, lsc, scratch, stderr, stdout};
use lsc_interp::Value;
use lsc_runtime::checkpoint::Checkpoint;
use std::path::Path;
use std::process::{Command, Output};

/// The small, fast training run every test here starts from.
const TINY: [&str; 10] =
    ["--model", "transformer", "--config", "tiny", "--batch", "2", "--seq", "16", "--sample-tokens", "0"];

/// `lsc train --out OUT` with [`TINY`]'s settings, except those `extra` gives.
fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend(pair);
        }
    }
    args.extend(extra);
    lsc(&args)
}

fn steps_in_metrics(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_diverging_run_never_replaces_the_good_checkpoint_and_metrics_never_repeat() {
    let dir = scratch("diverge");
    let ckpt = dir.join("checkpoint.safetensors");
    let o = train(&dir, &["--steps", "20", "--ckpt-every", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let good = std::fs::read(&ckpt).unwrap();
    let resume = ["--resume", ckpt.to_str().unwrap(), "--steps", "30", "--schedule", "constant"];
    for (lr, every) in [("1e38", "1"), ("1e4", "5")] {
        let o = train(&dir, &[&resume[..], &["--lr", lr, "--ckpt-every", every]].concat());
        assert_bad(&o, "holds step 20, the newest good one");
        assert!(stderr(&o).contains("lower --lr"), "{}", stderr(&o));
        assert_eq!(std::fs::read(&ckpt).unwrap(), good, "--lr {lr}: the step-20 checkpoint is untouched");
    }
    let c = Checkpoint::load(&ckpt).unwrap();
    assert_eq!(c.meta.step, 20);
    assert!(lsc_runtime::numerics::first_non_finite(&c.params).is_none());
    // The diverged runs logged steps 21.. before stopping; resuming from 20 drops them.
    let o = train(&dir, &["--resume", ckpt.to_str().unwrap(), "--steps", "24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(steps_in_metrics(&dir), (1..=24).collect::<Vec<_>>());
}

#[test]
fn a_fresh_run_refuses_a_folder_holding_another_run_unless_overwrite() {
    let dir = scratch("reuse");
    assert!(train(&dir, &["--steps", "3"]).status.success());
    let before = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let o = train(&dir, &["--steps", "2"]);
    assert_bad(&o, "already holds another run (a checkpoint at step 3 of transformer)");
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(std::fs::read(dir.join("checkpoint.safetensors")).unwrap(), before);
    assert_eq!(steps_in_metrics(&dir), vec![1, 2, 3], "the metrics are not emptied");
    let o = train(&dir, &["--steps", "2", "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap().meta.step, 2);
    assert_eq!(steps_in_metrics(&dir), vec![1, 2]);
}

#[test]
fn temp_files_left_by_killed_writes_are_removed_at_the_next_start() {
    let dir = scratch("stale");
    let stale = dir.join(".checkpoint.safetensors.999999999.tmp");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    let o = train(&dir, &["--steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stale.exists());
    assert!(stderr(&o).contains("left by a write that was killed"), "{}", stderr(&o));
}

#[test]
fn resume_continues_with_the_checkpoints_settings_and_reports_overrides() {
    let dir = scratch("resume");
    let ckpt = dir.join("checkpoint.safetensors");
    let o = train(&dir, &["--steps", "4", "--batch", "3", "--seq", "12", "--lr", "0.01", "--schedule", "constant"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = ckpt.to_str().unwrap();
    // Only --out and --steps: everything else comes from the checkpoint, not the defaults.
    let o = lsc(&["train", "--resume", c, "--out", dir.to_str().unwrap(), "--steps", "6", "--sample-tokens", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("with its settings except --steps 6 (was 4)"), "{}", stdout(&o));
    assert!(stdout(&o).contains("batch 3 × 12 tokens"), "{}", stdout(&o));
    let meta = Checkpoint::load(&ckpt).unwrap().meta.train;
    assert_eq!((meta["batch"].as_u64(), meta["seq"].as_u64()), (Some(3), Some(12)));
    assert_eq!(meta["schedule"], serde_json::json!({"kind": "constant", "lr": 0.01}));
    // An explicit flag is an override, reported in one line.
    let o = train(&dir, &["--resume", c, "--steps", "7", "--lr", "0.002"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o).lines().find(|l| l.starts_with("resuming")).unwrap().to_string();
    assert!(line.contains("--batch 2 (was 3)") && line.contains("--lr 0.002 (was 0.01)"), "{line}");
    // What cannot apply to this checkpoint is refused.
    assert_bad(
        &train(&dir, &["--resume", c, "--steps", "9", "--optimizer", "sgd"]),
        "cannot continue with --optimizer sgd",
    );
    let o = lsc(&["train", "--resume", c, "--out", dir.to_str().unwrap(), "--model", "gam"]);
    assert_bad(&o, "holds a run with --model transformer, not gam");
    assert_bad(&train(&dir, &["--resume", c, "--steps", "3"]), "nothing to train");
}

#[test]
fn tampered_settings_in_a_checkpoint_are_refused_naming_the_setting() {
    let dir = scratch("tamper");
    let ckpt = dir.join("checkpoint.safetensors");
    assert!(train(&dir, &["--steps", "2"]).status.success());
    let original = Checkpoint::load(&ckpt).unwrap();
    let cases: [(&str, serde_json::Value, &str); 4] = [
        ("/schedule/max_lr", serde_json::json!("NaN"), "cannot be read"),
        ("/optimizer/beta1", serde_json::json!(2.0), "beta1 is 2, outside [0, 1)"),
        ("/schedule/kind", serde_json::json!("bogus"), "cannot be read"),
        ("/batch", serde_json::json!(0), "batch is 0"),
    ];
    for (pointer, value, needle) in cases {
        let mut c = original.clone();
        *c.meta.train.pointer_mut(pointer).unwrap() = value;
        let bad = dir.join("tampered.safetensors");
        c.save(&bad).unwrap();
        let out = scratch("tamper-out");
        let o = lsc(&["train", "--resume", bad.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", "5"]);
        assert_bad(&o, needle);
    }
}

#[test]
fn every_number_from_the_user_is_validated() {
    let floats = [
        "--lr",
        "--min-lr",
        "--weight-decay",
        "--beta1",
        "--beta2",
        "--momentum",
        "--clip",
        "--max-seconds",
        "--spike-factor",
        "--diverge-factor",
    ];
    for flag in floats {
        for bad in ["NaN", "inf", "-inf", "-1"] {
            let o = lsc(&["train", &format!("{flag}={bad}"), "--steps", "1"]);
            assert_bad(&o, flag);
        }
    }
    for bad in ["NaN", "inf", "-0.5"] {
        assert_bad(
            &lsc(&["generate", "--model", "gam", "--prompt", "a", &format!("--temperature={bad}")]),
            "--temperature",
        );
    }
    let model = ["--model", "gam"];
    for (cmd, flag) in [
        ("train", "--steps"),
        ("train", "--batch"),
        ("train", "--seq"),
        ("train", "--ckpt-every"),
        ("eval", "--max-windows"),
        ("eval", "--batch"),
        ("generate", "--max-tokens"),
        ("bench", "--steps"),
    ] {
        let prompt: &[&str] = if cmd == "generate" { &["--prompt", "a"] } else { &[] };
        let which: &[&str] = if cmd == "bench" { &["--models", "gam"] } else { &model };
        let o = lsc(&[&[cmd][..], which, prompt, &[flag, "0"]].concat());
        assert_bad(&o, flag);
        assert!(stderr(&o).contains("0 leaves nothing to do"), "{}", stderr(&o));
    }
}

#[test]
fn empty_data_gets_a_message_about_the_data_not_the_learning_rate() {
    let dir = scratch("empty");
    let data = dir.join("empty.txt");
    std::fs::write(&data, "").unwrap();
    let o = train(&dir.join("out"), &["--data", data.to_str().unwrap()]);
    assert_bad(&o, "has 0 training and 0 validation tokens");
    assert!(!stderr(&o).contains("--lr"), "{}", stderr(&o));
}

#[test]
fn a_file_size_limit_is_an_error_that_keeps_the_old_file() {
    let dir = scratch("fsize");
    assert!(train(&dir, &["--steps", "1"]).status.success());
    let before = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    // 64 blocks of 512 bytes: the metrics fit, a checkpoint does not.
    let script = format!(
        "ulimit -f 64 && exec {} train --out {} --overwrite {} --steps 1",
        env!("CARGO_BIN_EXE_lsc"),
        dir.display(),
        TINY.join(" ")
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_bad(&o, "File too large");
    assert!(stderr(&o).contains("ulimit -f"), "{}", stderr(&o));
    let temps = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert_eq!(temps.count(), 0, "no temp file is left behind");
    // --overwrite removed the old run first, so the file is gone, never half-written.
    if let Ok(now) = std::fs::read(dir.join("checkpoint.safetensors")) {
        assert_eq!(now, before);
    }
}

#[test]
fn work_that_cannot_fit_in_memory_is_refused_before_allocating() {
    if lsc_runtime::resources::available_memory().is_none() {
        eprintln!("skipped: this system does not report available memory");
        return;
    }
    let dir = scratch("memory");
    // A batch whose logits alone take half the available memory: every tensor is
    // under the element cap, the whole plan (about twelve such tensors) is not.
    let free = lsc_runtime::resources::available_memory().unwrap();
    let batch = (free / (2 * 64 * 256 * 4)).max(1).to_string();
    let o = train(&dir, &["--batch", &batch, "--seq", "64", "--steps", "1"]);
    assert_bad(&o, "is available; lower --batch or --seq");
    let o = train(&dir, &["--batch", "1000000000", "--steps", "1"]);
    assert_bad(&o, "elements, the most this machine's memory holds");
    // A parameter of 10^11 floats: refused by its type, never allocated.
    let ir = transformer_ir(&dir)
        .replace("param \"embed.weight\" : f32[256,32]", "param \"embed.weight\" : f32[3125000000,32]");
    let file = dir.join("huge.lsir");
    std::fs::write(&file, ir).unwrap();
    let o = lsc(&["run", "--ir", file.to_str().unwrap(), "--prompt", "a"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

fn transformer_ir(dir: &Path) -> String {
    let o = lsc(&["compile", "--model", "transformer", "--emit", "ir", "-o", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(dir.join("transformer.lsir")).unwrap()
}

#[test]
fn non_finite_weights_and_logits_are_never_a_result() {
    let dir = scratch("nan");
    assert!(train(&dir, &["--steps", "1"]).status.success());
    let mut c = Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    let w = c.params.get_mut("layers.0.attn.q_proj.weight").unwrap();
    let mut data = w.as_floats().unwrap().to_vec();
    data[5] = f32::NAN;
    *w = Value::floats(w.shape.clone(), data);
    let poisoned = dir.join("poisoned.safetensors");
    c.save(&poisoned).unwrap();
    let p = poisoned.to_str().unwrap();
    for args in [
        vec!["run", "--model", "transformer", "--weights", p, "--prompt", "ab"],
        vec!["generate", "--ckpt", p, "--prompt", "ab", "--max-tokens", "3"],
        vec!["eval", "--ckpt", p, "--max-windows", "1"],
    ] {
        let o = lsc(&args);
        assert_bad(&o, "weight `layers.0.attn.q_proj.weight` holds a non-finite value (at [0, 5])");
        assert!(!stdout(&o).contains("NaN"), "{}", stdout(&o));
    }
    // A graph that computes NaN from finite weights: RMSNorm with eps = -1.
    let ir = transformer_ir(&dir).replacen("constant {value=1e-5}", "constant {value=-1.0}", 1);
    let file = dir.join("negative-eps.lsir");
    std::fs::write(&file, ir).unwrap();
    let o = lsc(&["run", "--ir", file.to_str().unwrap(), "--prompt", "hello"]);
    assert_bad(&o, "the logits are not finite");
    assert!(!stdout(&o).contains("NaN"), "{}", stdout(&o));
}

#[test]
fn run_refuses_graphs_whose_outputs_cannot_be_logits() {
    let dir = scratch("not-lm");
    let ir = transformer_ir(&dir);
    let logits_line = ir.lines().find(|l| l.contains("output \"logits\"")).unwrap().to_string();
    let rank1 = ir.replace(&logits_line, "  output \"logits\" = %33");
    let file = dir.join("rank1.lsir");
    std::fs::write(&file, rank1).unwrap();
    let o = lsc(&["run", "--ir", file.to_str().unwrap(), "--prompt", "a"]);
    assert_bad(&o, "cannot be run as a language model: `logits` is i64[T]");
}

#[test]
fn a_training_checkpoint_passed_as_weights_is_read_as_weights() {
    let dir = scratch("as-weights");
    assert!(train(&dir, &["--steps", "1"]).status.success());
    let ckpt = dir.join("checkpoint.safetensors");
    let o = lsc(&["run", "--model", "transformer", "--weights", ckpt.to_str().unwrap(), "--prompt", "ab"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("top-5 next bytes"), "{}", stdout(&o));
}

#[test]
fn the_training_step_of_a_20000_way_concat_compiles_within_its_bounds() {
    let dir = scratch("concat");
    let ir = transformer_ir(&dir);
    let ops = vec!["%171"; 20_000].join(", ");
    let tail = format!(
        "  %172 = concat({ops}) {{axis=2}} : f32[B,T,{}]\n  %173 = reduce(%172) {{kind=mean, axes=[2], keep_dims=true}} : f32[B,T,1]\n  %174 = broadcast(%173) {{shape=[B,T,256]}} : f32[B,T,256]\n  %175 = add(%171, %174) : f32[B,T,256]\n  output \"logits\" = %175\n",
        256 * 20_000
    );
    let ir = ir.replace("  output \"logits\" = %171\n", &tail);
    let file = dir.join("concat.lsir");
    std::fs::write(&file, ir).unwrap();
    let out = dir.join("out");
    let args =
        ["compile", "--ir", file.to_str().unwrap(), "--train", "--emit", "plan,egraph-stats", "--bind", "B=1,T=8"];
    let bounds = ["--egg-time-limit-ms", "50", "--egg-node-limit", "1000", "-o", out.to_str().unwrap()];
    let o = fuzz::run_bounded(&[&args[..], &bounds].concat(), std::time::Duration::from_secs(120), &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("concat.train.egraph-stats.json")).unwrap()).unwrap();
    let reasons = stats["stop_reason"]["main"].as_str().unwrap();
    assert!(reasons.contains("TimeLimit") || reasons.contains("NodeLimit"), "the limits stopped it: {reasons}");
}

#[test]
fn a_run_killed_at_random_moments_leaves_a_checkpoint_that_loads_and_resumes() {
    let dir = scratch("kill");
    let mut rng = lsc_runtime::init::Rng::new(7);
    for round in 0..3 {
        let mut args = vec!["train", "--out", dir.to_str().unwrap(), "--steps", "100000", "--ckpt-every", "3"];
        args.extend(TINY);
        if round > 0 {
            args.extend(["--resume", "CKPT"]);
        }
        let ckpt = dir.join("checkpoint.safetensors");
        let args: Vec<String> =
            args.iter().map(|a| if *a == "CKPT" { ckpt.display().to_string() } else { a.to_string() }).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lsc"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Long enough for the first checkpoints, then anywhere in a write or a step.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ckpt.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(50 + rng.next_u64() % 400));
        child.kill().unwrap();
        child.wait().unwrap();
        let c = Checkpoint::load(&ckpt).expect("the newest checkpoint loads");
        assert!(c.meta.step >= 3 && lsc_runtime::numerics::first_non_finite(&c.params).is_none());
    }
    let step = Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap().meta.step;
    let until = (step + 2).to_string();
    let o = train(&dir, &["--resume", dir.join("checkpoint.safetensors").to_str().unwrap(), "--steps", &until]);
    assert!(o.status.success(), "{}", stderr(&o));
    let steps = steps_in_metrics(&dir);
    assert_eq!(steps, (1..=step + 2).collect::<Vec<_>>(), "metrics continue without repeats");
}

#[test]
fn weights_holding_tensors_the_model_does_not_use_are_refused_unless_allowed() {
    let dir = scratch("unused");
    // The RoPE transformer's weights plus a learned position table, as a learned-position model has.
    let program = lsc_models::build("transformer", "tiny").unwrap();
    let mut params = lsc_runtime::init::init_params(&program, 1).unwrap();
    params.insert("pos_embed.weight".into(), Value::floats(vec![64, 32], vec![0.5; 64 * 32]));
    let file = dir.join("learned-positions.safetensors");
    lsc_runtime::weights::save_tensors(&file, &params).unwrap();
    let f = file.to_str().unwrap();
    let o = lsc(&["run", "--model", "transformer", "--weights", f, "--prompt", "ab"]);
    assert_bad(&o, "tensor `pos_embed.weight` is not used by transformer/tiny (it is a parameter of gam/tiny");
    assert!(stderr(&o).contains("--allow-unused"), "{}", stderr(&o));
    let o = lsc(&["generate", "--model", "transformer", "--weights", f, "--prompt", "ab", "--max-tokens", "2"]);
    assert_bad(&o, "`pos_embed.weight`");
    let o = lsc(&["run", "--model", "transformer", "--weights", f, "--prompt", "ab", "--allow-unused"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: ") && stderr(&o).contains("ignoring tensor `pos_embed.weight`"));
}
