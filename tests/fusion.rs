//! The fusion rule groups beyond attention (`inference`, `ternary`, `gam`,
//! `step`): each fires where it must and not where it must not, and every
//! rewrite is proved by execution on the interpreter. Also: random small
//! graphs, the trainer's pipeline (egg(forward) → autodiff → egg(step)), and
//! snapshots of every built-in model's optimised IR.

mod common;

use lsc_frontend::modules::quant::{quantized_weight, WeightQuant};
use lsc_frontend::{ModelBuilder, Tensor};
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Op, Program};
use lsc_passes::saturate::{optimize, Config, Stats};
use lsc_passes::train::{training_step, Optimizer, StepOptions};
use lsc_runtime::init;
use lsc_runtime::numerics::{compare, tolerance};
use proptest::prelude::*;

fn dims(s: &[i64]) -> Vec<Dim> {
    s.iter().map(|&d| Dim::new(d)).collect()
}

fn count(p: &Program, pred: impl Fn(&Op) -> bool) -> usize {
    p.graphs().flat_map(|g| g.dag.node_weights()).filter(|n| pred(&n.op)).count()
}

fn forward_values_only() -> Config {
    Config { keep_gradients: false, ..Config::default() }
}

fn assert_same(a: &Program, b: &Program, inputs: &Tensors<f32>, params: &Tensors<f32>) {
    let x = Interpreter::new(a).unwrap().run(inputs, params).unwrap();
    let y = Interpreter::new(b).unwrap().run(inputs, params).unwrap();
    for ((n, u), (_, v)) in x.iter().zip(&y) {
        let c = compare(&v.to_f64_vec(), &u.to_f64_vec(), tolerance(DType::F32));
        assert!(c.ok(), "output {n} changed: max |Δ| {}", c.max_abs_diff);
    }
}

/// Optimises under `cfg` and proves the result by execution.
fn run_both(p: &Program, inputs: &Tensors<f32>, params: &Tensors<f32>, cfg: &Config) -> (Program, Stats) {
    let (q, stats) = optimize(p, cfg).unwrap();
    assert_same(p, &q, inputs, params);
    (q, stats)
}

/// Random values for every input and parameter of `p` (symbols bound by `b`).
fn feed(p: &Program, b: &[(&str, i64)], seed: u64) -> (Tensors<f32>, Tensors<f32>) {
    let bindings: lsc_ir::Bindings = b.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let mut rng = init::Rng::new(seed);
    let mut value = |t: &lsc_ir::TensorType| {
        let shape = t.concrete_shape(&bindings).unwrap();
        let n: usize = shape.iter().product();
        if t.dtype == DType::I64 {
            Value::ints(shape, (0..n).map(|_| (rng.next_u64() % 7) as i64).collect())
        } else {
            Value::floats(shape, (0..n).map(|_| rng.normal() as f32).collect())
        }
    };
    let inputs = p.main.input_types().into_iter().map(|(n, t)| (n.to_string(), value(t))).collect();
    let params =
        p.main.params().into_iter().map(|(n, name)| (name.to_string(), value(&p.main.node(n).outputs[0]))).collect();
    (inputs, params)
}

/// `p` with the loss `Σ y²` of its first output and the loss's gradient
/// with respect to every parameter as outputs `grad.{name}`.
fn with_gradients(p: &Program) -> Program {
    let mut p = p.clone();
    let table = lsc_passes::autodiff::VjpTable::standard();
    let y = p.main.outputs[0].1;
    let mut e = lsc_passes::autodiff::Emit { g: &mut p.main, functions: &mut Vec::new(), table: &table };
    let t = e.ty(y);
    let sq = e.mul(y, y).unwrap();
    let loss = e.sum(sq, (0..t.rank()).collect()).unwrap();
    p.main.outputs = vec![("loss".into(), loss)];
    let g = lsc_passes::autodiff::add_parameter_gradients(&mut p, "loss", &table).unwrap();
    p.main.outputs.extend(g.into_iter().map(|(n, v)| (format!("grad.{n}"), v)));
    p
}

#[test]
fn fused_attention_and_its_backward_match_primitives_across_query_blocks() {
    // T spans several 64-row blocks; windows inside a block, across blocks, and global.
    let p = common::attention_program(3, &[5, 70, 0], 0, true);
    let (inputs, params) = feed(&p, &[("T", 150)], 9);
    let (q, _) = optimize(&p, &Config::default()).unwrap();
    assert_eq!(count(&q, |o| matches!(o, Op::LsAttention { .. })), 1);
    assert_same(&with_gradients(&p), &with_gradients(&q), &inputs, &params);
}

/// `y = x · quant(w)ᵀ` over `x [2, 3, 8]`, `w [4, 8]`.
fn linear(quant: impl Fn(&Tensor) -> Tensor) -> Program {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &dims(&[2, 3, 8]));
    let w = b.param("w", DType::F32, &dims(&[4, 8]));
    b.output("y", &x.matmul_t(&quant(&w)));
    b.finish().unwrap()
}

#[test]
fn ternary_matmul_replaces_a_ternarized_weight() {
    let ste = linear(|w| quantized_weight(w, WeightQuant::Ternary));
    let (inputs, params) = feed(&ste, &[], 1);
    let (q, stats) = run_both(&ste, &inputs, &params, &forward_values_only());
    assert_eq!(count(&q, |o| matches!(o, Op::TernaryMatmul { trans_b: true })), 1, "{:?}", stats.fired);
    assert_eq!(count(&q, |o| matches!(o, Op::MatMul { .. } | Op::Unary(lsc_ir::UnaryOp::Round))), 0);
    assert!(stats.fired.contains_key("straight-through-forward"));

    // Before autodiff the straight-through spelling must stay (its gradient differs from the value's).
    let (kept, stats) = run_both(&ste, &inputs, &params, &Config::default());
    assert_eq!(count(&kept, |o| matches!(o, Op::TernaryMatmul { .. })), 0, "{:?}", stats.fired);
    assert_eq!(count(&kept, |o| matches!(o, Op::StopGradient)), 2);
}

#[test]
fn ternary_matmul_does_not_fire_for_other_quantisers() {
    // Two-bit levels {−2..2} are not ternary; a per-row scale is not the op's scalar scale.
    let five_levels = linear(|w| {
        let s = w.abs().mean(&[0, 1], false);
        &(w / &s).round().clamp(-2.0, 2.0) * &s
    });
    let per_row = linear(|w| {
        let s = w.abs().mean(&[1], true);
        &(w / &s).round().clamp(-1.0, 1.0) * &s
    });
    for p in [five_levels, per_row] {
        let (inputs, params) = feed(&p, &[], 2);
        let (q, stats) = run_both(&p, &inputs, &params, &forward_values_only());
        assert_eq!(count(&q, |o| matches!(o, Op::TernaryMatmul { .. })), 0, "{:?}", stats.fired);
    }
}

/// GAM's mixer on `x [2, T, 16]`; with `other_memory` the read uses a second matrix.
fn gam_program(other_memory: bool) -> Program {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::new(2), Dim::sym("T"), Dim::new(16)]);
    let mixer = lsc_models::gam::GamMixer::new(&b, "gam", 16);
    let y = if other_memory {
        let second = b.param("memory2", DType::F32, &dims(&[64, 16]));
        let d = 16i64;
        let gates = mixer.gate_proj.forward(&x).sigmoid();
        let glob = x.matmul_t(&mixer.memory).softmax(-1).matmul(&second);
        &(&gates.slice(-1, 0i64, d) * &mixer.local(&x)) + &(&gates.slice(-1, d, 2 * d) * &glob)
    } else {
        mixer.forward(&x)
    };
    b.output("y", &y);
    b.finish().unwrap()
}

#[test]
fn gam_fuses_its_mixer_and_differentiates_through_the_fused_op() {
    let p = gam_program(false);
    let (inputs, params) = feed(&p, &[("T", 9)], 3);
    let (q, stats) = run_both(&p, &inputs, &params, &Config::default());
    assert_eq!(count(&q, |o| *o == Op::Gam), 1, "{:?}", stats.fired);
    assert_eq!(count(&q, |o| matches!(o, Op::Softmax { .. } | Op::CausalConv1d)), 0);

    // Its VJP (through the decomposition) gives the unfused gradients.
    assert_same(&with_gradients(&p), &with_gradients(&q), &inputs, &params);
}

#[test]
fn gam_does_not_fire_when_the_memory_read_differs() {
    let p = gam_program(true);
    let (inputs, params) = feed(&p, &[("T", 5)], 4);
    let (q, stats) = run_both(&p, &inputs, &params, &Config::default());
    assert_eq!(count(&q, |o| *o == Op::Gam), 0, "{:?}", stats.fired);
}

/// `cross_entropy(l1, t)` and `(softmax(l2) − one_hot(t)) · g`, with `l2 = l1` or not.
fn loss_and_gradient(same_logits: bool) -> Program {
    let b = ModelBuilder::new();
    let (bt, v) = ([Dim::new(2), Dim::new(5)], [Dim::new(2), Dim::new(5), Dim::new(7)]);
    let x = b.input("x", DType::F32, &v);
    let t = b.input("t", DType::I64, &bt);
    let g = b.input("g", DType::F32, &bt);
    let l1 = &x * 2.0;
    let l2 = if same_logits { l1.clone() } else { &x * 3.0 };
    let hot = b.iota(DType::I64, &v, 2).eq(&t.reshape(&dims(&[2, 5, 1])).broadcast_to(&v)).cast(DType::F32);
    let d = &(&l2.softmax(-1) - &hot) * &g.reshape(&dims(&[2, 5, 1])).broadcast_to(&v);
    b.output("loss", &l1.cross_entropy(&t));
    b.output("d_logits", &d);
    b.finish().unwrap()
}

#[test]
fn softmax_cross_entropy_fuses_only_the_loss_with_its_own_gradient() {
    for (same, want) in [(true, 1), (false, 0)] {
        let p = loss_and_gradient(same);
        let (inputs, params) = feed(&p, &[], 5);
        let (q, stats) = run_both(&p, &inputs, &params, &Config::default());
        assert_eq!(count(&q, |o| *o == Op::SoftmaxCrossEntropy), want, "same logits {same}: {:?}", stats.fired);
    }
}

#[test]
fn one_adamw_updates_every_parameter_and_sgd_is_left_alone() {
    let forward = lsc_models::build("transformer", "tiny").unwrap();
    let n_params = forward.main.params().len();
    for (optimizer, want) in [(Optimizer::adamw(), 1), (Optimizer::Sgd { momentum: 0.9, weight_decay: 0.0 }, 0)] {
        let step = training_step(&forward, &StepOptions { optimizer, ..Default::default() }).unwrap();
        let (q, _) = optimize(&step, &forward_values_only()).unwrap();
        assert_eq!(count(&q, |o| matches!(o, Op::AdamW { .. })), want, "{optimizer:?}");
        if let Some(Op::AdamW { decay, .. }) =
            q.main.dag.node_weights().map(|n| &n.op).find(|o| matches!(o, Op::AdamW { .. }))
        {
            assert_eq!(decay.len(), n_params, "every parameter in the one update");
            assert!(decay.iter().any(|&d| d) && decay.iter().any(|&d| !d), "norms and embeddings are not decayed");
        }
    }
}

/// `Σ_b op_a(x_b)·op_b(y_b)` for every pair of transposes: one `matmul_sum`
/// (proved by execution: the one-product path for `xᵀ·y`, the summed
/// products otherwise), and never on a graph autodiff will differentiate.
#[test]
fn a_sum_of_batched_products_is_one_matmul_sum() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let b = ModelBuilder::new();
        let x = b.input("x", DType::F32, &dims(if ta { &[3, 4, 5] } else { &[3, 5, 4] }));
        let y = b.input("y", DType::F32, &dims(if tb { &[3, 6, 4] } else { &[3, 4, 6] }));
        let x = if ta { x.swap_axes(-1, -2) } else { x };
        let product = if tb { x.matmul_t(&y) } else { x.matmul(&y) };
        b.output("w_grad", &product.sum(&[0], false));
        let p = b.finish().unwrap();
        let (inputs, params) = feed(&p, &[], 9);
        let (q, stats) = run_both(&p, &inputs, &params, &forward_values_only());
        let fused = count(&q, |o| matches!(o, Op::MatMulSum { .. }));
        assert_eq!(fused, 1, "{ta} {tb}: {:?}", stats.fired);
        let (q, _) = run_both(&p, &inputs, &params, &Config::default());
        assert_eq!(count(&q, |o| matches!(o, Op::MatMulSum { .. })), 0, "kept for autodiff");
    }
    // A training step's weight gradients (and the embedding's) become matmul_sum.
    let forward = lsc_models::build("transformer", "tiny").unwrap();
    let step = training_step(&forward, &StepOptions::default()).unwrap();
    let (q, _) = optimize(&step, &forward_values_only()).unwrap();
    assert!(count(&q, |o| matches!(o, Op::MatMulSum { trans_a: true, trans_b: false })) >= 8);
}

/// Inlining `main`'s calls before autodiff (the default) computes the same
/// step as differentiating them through a recomputing `f__vjp`, for every MoR
/// variant (the shared block called per recursion, KV sharing's `@kv` and
/// `@block_kv`, token choice), and leaves no call behind.
#[test]
fn an_inlined_step_equals_the_recomputing_one() {
    use lsc_models::mor::{build, MorConfig, Routing, Rule};
    let base = MorConfig::named("tiny").unwrap();
    let variants = [
        base.clone(),
        MorConfig { kv_sharing: true, ..base.clone() },
        MorConfig { routing: Routing::TokenChoice, ..base.clone() },
    ];
    for cfg in variants {
        let forward = build(&cfg, Rule::TopK).unwrap();
        let terms = vec![(forward.main.outputs.last().unwrap().0.clone(), 0.1)];
        let opts = |recompute_calls| StepOptions { loss_terms: terms.clone(), recompute_calls, ..Default::default() };
        let recomputing = training_step(&forward, &opts(true)).unwrap();
        let inlined = training_step(&forward, &opts(false)).unwrap();
        assert!(count(&recomputing, |o| matches!(o, Op::Call { .. })) >= 8, "{cfg:?}");
        assert_eq!(count(&inlined, |o| matches!(o, Op::Call { .. })), 0, "{cfg:?}");
        let (mut inputs, params) = feed(&recomputing, &[("B", 2), ("T", 8)], 3);
        inputs.insert("lr".into(), Value::floats(vec![], vec![1e-3]));
        inputs.insert("adam.bc1".into(), Value::floats(vec![], vec![0.1]));
        inputs.insert("adam.bc2".into(), Value::floats(vec![], vec![0.05]));
        for (_, v) in inputs.iter_mut().filter(|(k, _)| k.starts_with("adam.v.")) {
            *v = Value::floats(v.shape.clone(), v.to_f64_vec().iter().map(|x| x.abs() as f32).collect());
        }
        assert_same(&recomputing, &inlined, &inputs, &params);
    }
}

#[test]
fn the_trainers_pipeline_computes_the_unfused_step() {
    // egg(forward) → autodiff → egg(step) against autodiff on the primitive forward.
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let forward = lsc_models::build(m, "tiny").unwrap();
        let raw = training_step(&forward, &StepOptions::default()).unwrap();
        let (fused_forward, _) = optimize(&forward, &Config::default()).unwrap();
        let step = training_step(&fused_forward, &StepOptions::default()).unwrap();
        let (step, _) = optimize(&step, &forward_values_only()).unwrap();
        let (mut inputs, params) = feed(&raw, &[("B", 2), ("T", 10)], 6);
        inputs.insert("lr".into(), Value::floats(vec![], vec![1e-3]));
        inputs.insert("adam.bc1".into(), Value::floats(vec![], vec![0.1]));
        inputs.insert("adam.bc2".into(), Value::floats(vec![], vec![0.05]));
        for (k, v) in inputs.iter_mut().filter(|(k, _)| k.starts_with("adam.v.")) {
            let _ = k;
            *v = Value::floats(v.shape.clone(), v.to_f64_vec().iter().map(|x| x.abs() as f32).collect());
        }
        assert_same(&raw, &step, &inputs, &params);
    }
}

/// A random chain of algebra-group-relevant ops over `x [2, 3, 4]` and `w [4, 4]`.
fn random_program(choices: &[u8]) -> Program {
    let b = ModelBuilder::new();
    let mut x = b.input("x", DType::F32, &dims(&[2, 3, 4]));
    let w = b.param("w", DType::F32, &dims(&[4, 4]));
    for &c in choices {
        let last_is_4 = x.dim(-1) == Dim::new(4);
        x = match c % 8 {
            0 => x.transpose(&[1, 0, 2]),
            1 => x.swap_axes(-1, -2),
            2 => x.reshape(&dims(&[6, 4])).reshape(&dims(&[2, 3, 4])),
            3 => -&(-&x),
            4 => &x * [1.0, 0.5, -2.0][c as usize % 3],
            5 => &x + [0.0, 1.5][c as usize % 2],
            6 if last_is_4 => x.matmul(&w.transpose(&[1, 0])),
            7 if last_is_4 => (&x * 0.25).matmul_t(&w),
            _ => x.tanh(),
        };
    }
    b.output("y", &x);
    b.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_compute_the_same_after_saturation(choices in proptest::collection::vec(any::<u8>(), 1..10)) {
        let p = random_program(&choices);
        let (inputs, params) = feed(&p, &[], 7);
        let (_, stats) = run_both(&p, &inputs, &params, &Config::default());
        prop_assert!(stats.cost_after <= stats.cost_before * (1.0 + 1e-9));
    }
}

#[test]
fn optimised_ir_of_every_model() {
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let p = lsc_models::build_inference(m, "tiny").unwrap();
        let (q, _) = optimize(&p, &forward_values_only()).unwrap();
        insta::assert_snapshot!(format!("opt-{m}-tiny"), lsc_ir::print_program(&q).unwrap());
    }
}

#[test]
fn inference_packs_ternary_weights_once_when_they_are_bound() {
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let p = lsc_models::build_inference(m, "tiny").unwrap();
        let params = init::init_params(&p, 8).unwrap();
        let ids = Value::ints(vec![2, 9], (0..18).map(|i| (i * 29 % 256) as i64).collect());
        let inputs = Tensors::from([("input_ids".to_string(), ids)]);
        let prepared = lsc_runtime::prepare::prepare(&p, &params, lsc_runtime::backend::Backend::Interp).unwrap();
        let x = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
        let y = Interpreter::new(prepared.exe.program()).unwrap().run(&inputs, &prepared.params).unwrap();
        let c = compare(&y[0].1.to_f64_vec(), &x[0].1.to_f64_vec(), tolerance(DType::F32));
        assert!(c.ok(), "{m}: logits changed: max |Δ| {}", c.max_abs_diff);
        if m == "trilm" {
            let per_call = |o: &Op| matches!(o, Op::TernaryPack | Op::Unary(lsc_ir::UnaryOp::Round));
            assert_eq!(count(prepared.exe.program(), per_call), 0, "packing left in the per-call program");
            assert!(count(prepared.exe.program(), |o| matches!(o, Op::TernaryMatmul { .. })) > 0);
            let packed = prepared.params.iter().filter(|(k, v)| k.starts_with("hoisted.") && v.dtype == DType::Ternary);
            assert!(packed.count() > 0, "packed weights are bound once");
        }
    }
}

#[test]
fn constant_arguments_let_mors_shared_block_fuse_its_attention() {
    // Training (top-k routing): every call passes an all-true `active`, so @block is
    // specialised, its mask is plain causal, and its attention fuses.
    let train = lsc_models::build("mor", "tiny").unwrap();
    let (inputs, params) = feed(&train, &[("B", 2), ("T", 12)], 10);
    let (q, stats) = run_both(&train, &inputs, &params, &Config::default());
    assert_eq!(stats.fired.get("constant-argument"), Some(&1), "{:?}", stats.fired);
    let block = q.function("block").unwrap();
    assert_eq!(block.dag.node_weights().filter(|n| matches!(n.op, Op::LsAttention { .. })).count(), 1);
    // Inference (σ ≥ 0.5 rule): `active` depends on the data; nothing to specialise.
    let infer = lsc_models::build_inference("mor", "tiny").unwrap();
    let (q, stats) = run_both(&infer, &inputs, &params, &forward_values_only());
    assert_eq!(stats.fired.get("constant-argument"), None);
    assert_eq!(count(&q, |o| matches!(o, Op::LsAttention { .. })), 0);
}
