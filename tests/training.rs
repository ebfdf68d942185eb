//! Training: bit-exact resume, re-warming, checkpoints that detect corruption,
//! and the loss going down.

mod common;

use lsc_runtime::checkpoint::Checkpoint;
use lsc_runtime::data;
use lsc_runtime::schedule::Schedule;
use lsc_runtime::train::{TrainConfig, Trainer};

fn tokens(seed: u64, n: usize) -> Vec<u32> {
    data::synthetic_corpus(seed, n).into_iter().map(u32::from).collect()
}

fn config(model: &str, steps: u64) -> TrainConfig {
    common::train_config(model, steps)
}

fn fresh(model: &str, steps: u64) -> (Trainer, lsc_ir::Program) {
    let forward = lsc_models::build(model, "tiny").unwrap();
    let params = lsc_runtime::init::init_params(&forward, 5).unwrap();
    (Trainer::new(config(model, steps), &forward, params).unwrap(), forward)
}

#[test]
fn resuming_continues_bit_exactly() {
    let text = tokens(0, 50_000);
    let n = 6;
    for model in ["ls-transformer", "mor"] {
        let (mut straight, forward) = fresh(model, n);
        assert!(straight.generated_kernels() > 0, "{model}: the step runs generated kernels");
        let losses: Vec<f64> = (0..n).map(|_| straight.step(&text).unwrap().loss).collect();

        let (mut first, _) = fresh(model, n);
        let mut resumed_losses: Vec<f64> = (0..n / 2).map(|_| first.step(&text).unwrap().loss).collect();
        let dir = std::env::temp_dir().join(format!("lsc-resume-{}-{model}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ckpt.safetensors");
        first.checkpoint(None).unwrap().save(&path).unwrap();
        drop(first);
        let ckpt = Checkpoint::load(&path).unwrap();
        let mut second = Trainer::resume(config(model, n), &forward, ckpt, false, false).unwrap();
        resumed_losses.extend((n / 2..n).map(|_| second.step(&text).unwrap().loss));
        assert_eq!(losses, resumed_losses, "{model}: losses");
        assert_eq!(straight.params().unwrap(), second.params().unwrap(), "{model}: parameters");
        assert_eq!(straight.state().unwrap(), second.state().unwrap(), "{model}: optimizer state");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn the_loss_goes_down() {
    let text = tokens(1, 50_000);
    for model in lsc_models::MODELS.iter().map(|m| m.name) {
        let (mut t, _) = fresh(model, 30);
        let first = t.step(&text).unwrap().lm_loss;
        let mut last = first;
        for _ in 1..30 {
            last = t.step(&text).unwrap().lm_loss;
        }
        assert!(last < first - 1.0, "{model}: {first} → {last}");
    }
}

#[test]
fn rewarming_starts_a_new_schedule_and_reset_clears_moments() {
    let text = tokens(0, 20_000);
    let (mut t, forward) = fresh("transformer", 4);
    for _ in 0..4 {
        t.step(&text).unwrap();
    }
    let ckpt = t.checkpoint(None).unwrap();
    let mut cfg = config("transformer", 10);
    cfg.schedule = Schedule::Cosine { max_lr: 1e-3, min_lr: 1e-4, warmup: 3, decay_end: 6 };
    let kept = Trainer::resume(cfg.clone(), &forward, ckpt.clone(), false, false).unwrap();
    assert!((kept.lr() - cfg.schedule.lr(4)).abs() < 1e-15, "without --rewarm the schedule continues from step 0");
    let rewarmed = Trainer::resume(cfg.clone(), &forward, ckpt.clone(), true, true).unwrap();
    assert!((rewarmed.lr() - 1e-3 / 3.0).abs() < 1e-15, "a new warmup starts at the resumed step");
    assert!(rewarmed.state().unwrap().values().all(|v| v.as_floats().unwrap().iter().all(|&x| x == 0.0)));
    assert_eq!(rewarmed.params().unwrap(), ckpt.params);
}

#[test]
fn corrupt_and_truncated_checkpoints_are_rejected() {
    let text = tokens(0, 20_000);
    let (mut t, _) = fresh("gam", 2);
    t.step(&text).unwrap();
    let dir = std::env::temp_dir().join(format!("lsc-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    t.checkpoint(None).unwrap().save(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    std::fs::write(&path, &bytes[..n / 2]).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
