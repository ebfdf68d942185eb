//! Every built-in model on the emulated GPU (`--backend cuda-emu`): the
//! CUDA target's kernels — every fused group and every library op lowered
//! to GPU kernel IR — run by the GPU-semantics evaluator, against the
//! reference interpreter: the inference pass and the training step (loss,
//! updated parameters, optimizer state), and PyTorch's golden logits.

mod common;

use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::DType;
use lsc_runtime::backend::{Backend, Executable};
use lsc_runtime::numerics::{compare, tolerance};
use lsc_runtime::{init, weights};
use std::path::Path;

fn same(want: &[(String, Value<f32>)], got: &[(String, Value<f32>)], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: outputs");
    for ((n, x), (_, y)) in want.iter().zip(got) {
        let c = compare(&y.to_f64_vec(), &x.to_f64_vec(), tolerance(DType::F32));
        assert!(c.ok(), "{what}: output {n} differs: max |Δ| {}", c.max_abs_diff);
    }
}

#[test]
fn every_model_runs_the_same_on_the_emulated_gpu() {
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let p = lsc_runtime::prepare::optimize_for_inference(&lsc_models::build_inference(m, "tiny").unwrap()).unwrap();
        let params = init::init_params(&p, 11).unwrap();
        let ids = Value::ints(vec![2, 13], (0..26).map(|i| (i * 53 % 256) as i64).collect());
        let inputs = Tensors::from([("input_ids".to_string(), ids)]);
        let want = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
        let got = Executable::new(p, Backend::CudaEmu).unwrap().run(&inputs, &params).unwrap();
        same(&want, &got, &format!("{m} inference on the emulated GPU"));

        let forward = lsc_models::build(m, "tiny").unwrap();
        let (step, _) =
            lsc_passes::saturate::optimize_training_step(&forward, &Default::default(), &Default::default()).unwrap();
        let params = init::init_params(&forward, 12).unwrap();
        let feed = common::step_feed(&step, 0.01);
        let want = Interpreter::new(&step).unwrap().run(&feed, &params).unwrap();
        let got = Executable::new(step, Backend::CudaEmu).unwrap().run(&feed, &params).unwrap();
        same(&want, &got, &format!("{m} training step on the emulated GPU"));
    }
}

#[test]
fn the_emulated_gpu_reproduces_pytorch_golden_logits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let p = lsc_models::build(m, "tiny").unwrap();
        let (params, _) = weights::load_params(&dir.join(format!("{m}-tiny.weights.safetensors")), &p).unwrap();
        let io = weights::load_tensors(&dir.join(format!("{m}-tiny.io.safetensors"))).unwrap();
        let prepared = lsc_runtime::prepare::prepare(&p, &params, Backend::CudaEmu).unwrap();
        let got = lsc_runtime::generate::logits(&prepared.exe, &prepared.params, &io["input_ids"]).unwrap();
        let c = compare(&got.to_f64_vec(), &io["logits"].to_f64_vec(), tolerance(DType::F32));
        println!("{m}: emulated GPU vs PyTorch max |Δ| = {:.3e}", c.max_abs_diff);
        assert!(c.ok(), "{m}: max |Δ| {} exceeds {}", c.max_abs_diff, c.bound);
    }
}
