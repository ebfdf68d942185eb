//! Generated code against the interpreter: every built-in model's forward
//! pass and training step agree (allclose) when the fused elementwise
//! kernels run as Cranelift machine code, and training on generated code
//! resumes bit-exactly.

mod common;

use lsc_frontend::{ModelBuilder, Tensor};
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Program};
use lsc_runtime::backend::{Backend, Executable};
use lsc_runtime::init;
use lsc_runtime::numerics::{compare, tolerance};

/// How many generated kernels `exe` launches at the shapes of `inputs`.
fn kernels(exe: &Executable, inputs: &Tensors<f32>) -> usize {
    exe.generated_kernels(&exe.bindings_for(inputs).unwrap()).unwrap()
}

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
        for backend in Backend::native() {
            let exe = Executable::new(p.clone(), backend).unwrap();
            assert!(kernels(&exe, &inputs) > 0, "{m}: no generated kernels");
            let got = exe.run(&inputs, &params).unwrap();
            same(&want, &got, &format!("{m} inference on {backend}"));
        }

        // The training step (loss, gradients' effect on every parameter, optimizer state),
        // saturated as `lsc train` runs it and in primitives as `lsc train --no-fuse` does.
        let forward = lsc_models::build(m, "tiny").unwrap();
        let (fused, _) = lsc_passes::saturate::optimize_training_step(
            &forward,
            &Default::default(),
            &lsc_passes::saturate::Config::default(),
        )
        .unwrap();
        let primitive = lsc_passes::train::training_step(&forward, &Default::default()).unwrap();
        let params = init::init_params(&forward, 12).unwrap();
        for (step, what) in [(fused, "training step"), (primitive, "primitive training step")] {
            let feed = common::step_feed(&step, 0.01);
            let want = Interpreter::new(&step).unwrap().run(&feed, &params).unwrap();
            for backend in Backend::native() {
                let exe = Executable::new(step.clone(), backend).unwrap();
                let got = exe.run(&feed, &params).unwrap();
                same(&want, &got, &format!("{m} {what} on {backend}"));
            }
        }
    }
}

/// A random chain of row-wise ops over `x [B, T, D]` spelled in primitives,
/// each of which becomes one row kernel: norms, centring, softmax and
/// log-softmax, and normalisation over the last two axes.
fn row_program(d: usize, choices: &[u8]) -> Program {
    let b = ModelBuilder::new();
    let mut x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::sym("T"), Dim::new(d as i64)]);
    let w = b.param("w", DType::F32, &[Dim::new(d as i64)]);
    let keep = |t: &Tensor, f: fn(&Tensor, &[isize], bool) -> Tensor| f(t, &[-1], true);
    for &c in choices {
        x = match c % 6 {
            0 => &(&x * &(&keep(&(&x * &x), Tensor::mean) + 1e-5).rsqrt()) * &w,
            1 => &x - &keep(&x, Tensor::mean),
            2 => {
                let e = (&x - &keep(&x, Tensor::max)).exp();
                &e / &keep(&e, Tensor::sum)
            }
            3 => {
                let m = keep(&x, Tensor::max);
                &(&x - &m) - &keep(&(&x - &m).exp(), Tensor::sum).log()
            }
            4 => &x / &(&x.abs().sum(&[-2, -1], true) + 1.0),
            _ => &x.silu() + &x,
        };
    }
    b.output("y", &x);
    // A sum of squares: no cancellation, so summation order stays within tolerance.
    b.output("total", &(&x * &x).sum(&[-1], false));
    b.finish().unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    #[test]
    fn row_kernels_compute_what_the_interpreter_computes(
        (bsz, t, d) in (1usize..3, 1usize..7, 1usize..40),
        choices in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..6),
        seed in 0u64..1000,
    ) {
        let p = row_program(d, &choices);
        let mut rng = init::Rng::new(seed);
        let x = Value::floats(vec![bsz, t, d], (0..bsz * t * d).map(|_| 2.0 * rng.normal() as f32).collect());
        let w = Value::floats(vec![d], (0..d).map(|_| rng.normal() as f32).collect());
        let inputs = Tensors::from([("x".to_string(), x)]);
        let params = Tensors::from([("w".to_string(), w)]);
        let want = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
        for backend in Backend::native() {
            let exe = Executable::new(p.clone(), backend).unwrap();
            proptest::prop_assert!(kernels(&exe, &inputs) > 0);
            let got = exe.run(&inputs, &params).unwrap();
            same(&want, &got, &format!("{choices:?} on {backend}"));
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 10, ..Default::default() })]

    #[test]
    fn every_model_agrees_with_the_interpreter_at_random_shapes(
        model in 0usize..lsc_models::MODELS.len(),
        (bsz, t) in (1usize..4, 1usize..25),
        seed in 0u64..1000,
    ) {
        let m = lsc_models::MODELS[model].name;
        let p = lsc_runtime::prepare::optimize_for_inference(&lsc_models::build_inference(m, "tiny").unwrap()).unwrap();
        let params = init::init_params(&p, seed).unwrap();
        // A ternarised weight at a rounding tie (|w|/mean|w| within float error of
        // 1/2) rounds either way depending on the scale's summation order.
        proptest::prop_assume!(!has_ternary_tie(m, &params), "a ternarised weight at a rounding tie");
        let mut rng = init::Rng::new(seed);
        let ids = Value::ints(vec![bsz, t], (0..bsz * t).map(|_| (rng.next_u64() % 256) as i64).collect());
        let inputs = Tensors::from([("input_ids".to_string(), ids)]);
        let want = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
        for backend in Backend::native() {
            let exe = Executable::new(p.clone(), backend).unwrap();
            let got = exe.run(&inputs, &params).unwrap();
            same(&want, &got, &format!("{m} at B={bsz}, T={t} on {backend}"));
        }
    }
}

/// Whether a weight `model` ternarises lies within 1e-5 of a rounding tie.
fn has_ternary_tie(model: &str, params: &Tensors<f32>) -> bool {
    lsc_models::quantized_weights(model, "tiny").unwrap().iter().any(|(name, _)| {
        let w = params[name].to_f64_vec();
        let scale = w.iter().map(|x| x.abs()).sum::<f64>() / w.len() as f64;
        w.iter().any(|x| (x.abs() / scale - 0.5).abs() < 1e-5)
    })
}

#[test]
fn a_norm_and_its_consumers_are_one_kernel() {
    let p = row_program(16, &[0]);
    let parts = lsc_passes::partition::partition(&p.main).unwrap();
    let fused: Vec<_> = parts.iter().filter(|part| part.elementwise).collect();
    let ops = |part: &lsc_passes::partition::Part| -> Vec<&str> {
        part.nodes.iter().map(|&n| p.main.node(n).op.name()).collect()
    };
    // mul → mean → add ε → rsqrt → scale → weight: one row kernel (plus the `total` reduction).
    let norm = fused.iter().find(|part| ops(part).contains(&"rsqrt")).expect("a norm kernel");
    assert!(ops(norm).contains(&"reduce") && ops(norm).ends_with(&["mul"]), "{:?}", ops(norm));
    assert!(lsc_passes::partition::lowerable(&p.main, norm).is_ok());
}

#[test]
fn the_training_steps_norm_is_one_kernel_with_its_saved_values_as_outputs() {
    // Forward RMSNorm in a step: the residual add, the mean of squares, the
    // rsqrt and the scaled output fuse; the values backward needs are extra outputs.
    let forward = lsc_models::build("transformer", "tiny").unwrap();
    let (step, _) = lsc_passes::saturate::optimize_training_step(
        &forward,
        &Default::default(),
        &lsc_passes::saturate::Config::default(),
    )
    .unwrap();
    let step = lsc_passes::partition::unshare_broadcasts(&step);
    let parts = lsc_passes::partition::partition(&step.main).unwrap();
    let g = &step.main;
    let norm = parts
        .iter()
        .find(|part| {
            let ops: Vec<&str> = part.nodes.iter().map(|&n| g.node(n).op.name()).collect();
            ops.contains(&"reduce") && ops.contains(&"rsqrt") && ops.ends_with(&["mul"])
        })
        .expect("a fused forward norm");
    assert!(norm.outputs.len() > 1, "saved values are outputs: {:?}", norm.outputs);
    lsc_passes::partition::lowerable(g, norm).unwrap();
}

/// An LS-transformer with heads of 32 (the head size the CPU library's
/// online-softmax attention kernels take): inference and the training step
/// on generated code agree with the interpreter, so the fast attention
/// forward and backward are checked inside a real model.
#[test]
fn an_ls_transformer_with_heads_of_32_agrees_with_the_interpreter() {
    let cfg = lsc_models::TransformerConfig {
        d_model: 64,
        n_layers: 1,
        n_heads: 2,
        n_local_heads: 1,
        window: 5,
        d_hidden: 96,
        max_pos: 40,
        ..lsc_models::TransformerConfig::named("tiny", true).unwrap()
    };
    let forward = lsc_models::transformer::build(&cfg).unwrap();
    let params = init::init_params(&forward, 5).unwrap();
    let p = lsc_runtime::prepare::optimize_for_inference(&forward).unwrap();
    let ids = Value::ints(vec![2, 37], (0..74).map(|i| (i * 31 % 256) as i64).collect());
    let inputs = Tensors::from([("input_ids".to_string(), ids)]);
    let want = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
    let (step, _) =
        lsc_passes::saturate::optimize_training_step(&forward, &Default::default(), &Default::default()).unwrap();
    assert!(step.main.dag.node_weights().any(|n| matches!(n.op, lsc_ir::Op::LsAttentionGrad { .. })));
    let feed = common::step_feed(&step, 0.01);
    let want_step = Interpreter::new(&step).unwrap().run(&feed, &params).unwrap();
    for backend in Backend::native() {
        let got = Executable::new(p.clone(), backend).unwrap().run(&inputs, &params).unwrap();
        same(&want, &got, &format!("head size 32, inference on {backend}"));
        let got = Executable::new(step.clone(), backend).unwrap().run(&feed, &params).unwrap();
        same(&want_step, &got, &format!("head size 32, training step on {backend}"));
    }
}
