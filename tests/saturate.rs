//! Equality saturation: every rule fires where it must and not where it must
//! not, and every built-in model computes the same before and after (proof by
//! execution on the interpreter), forward pass and training step.

mod common;

use common::attention_program;
use lsc_frontend::{ModelBuilder, Tensor};
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Op, Program};
use lsc_passes::saturate::{optimize, Config};
use lsc_runtime::init;
use lsc_runtime::numerics::{compare, F64_TOLERANCE};

fn dims(s: &[i64]) -> Vec<Dim> {
    s.iter().map(|&d| Dim::new(d)).collect()
}

fn program(f: impl Fn(&ModelBuilder, &Tensor, &Tensor) -> Tensor) -> Program {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &dims(&[2, 3, 4]));
    let w = b.param("w", DType::F32, &dims(&[4, 4]));
    let y = f(&b, &x, &w);
    b.output("y", &y);
    b.finish().unwrap()
}

fn count(p: &Program, pred: impl Fn(&Op) -> bool) -> usize {
    p.graphs().flat_map(|g| g.dag.node_weights()).filter(|n| pred(&n.op)).count()
}

/// Optimises and checks the result computes what the input did.
fn run_both(p: &Program, inputs: &Tensors<f32>, params: &Tensors<f32>) -> (Program, lsc_passes::saturate::Stats) {
    run_both_with(p, inputs, params, &Config::default())
}

fn run_both_with(
    p: &Program,
    inputs: &Tensors<f32>,
    params: &Tensors<f32>,
    cfg: &Config,
) -> (Program, lsc_passes::saturate::Stats) {
    common::optimised_agrees(p, inputs, params, cfg)
}

fn forward_values_only() -> Config {
    Config { keep_gradients: false, ..Config::default() }
}

fn small_feed() -> (Tensors<f32>, Tensors<f32>) {
    let mut rng = init::Rng::new(1);
    let mut r = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let inputs = Tensors::from([("x".to_string(), Value::floats(vec![2, 3, 4], r(24)))]);
    let params = Tensors::from([("w".to_string(), Value::floats(vec![4, 4], r(16)))]);
    (inputs, params)
}

/// Selects the ops a rule should remove.
type OpTest = fn(&Op) -> bool;

/// For each algebra and inference rule, a program where it must fire, the
/// ops it removes, and the saturation config to run.
fn rule_cases() -> Vec<(&'static str, Program, OpTest, Config)> {
    let scalar = |b: &ModelBuilder, v: f64| b.constant(v, DType::F32, &[]);
    let mut cases: Vec<(&str, Program, OpTest, Config)> = vec![
        (
            "reshape-identity",
            program(|_, x, _| x.reshape(&dims(&[2, 3, 4])).exp()),
            |o| matches!(o, Op::Reshape { .. }),
            Config::default(),
        ),
        (
            "broadcast-broadcast",
            program(|b, x, _| &scalar(b, 0.5).broadcast_to(&dims(&[3, 4])).broadcast_to(&dims(&[2, 3, 4])) * x),
            |o| matches!(o, Op::Broadcast { .. }),
            Config::default(),
        ),
        (
            "reshape-broadcast-scalar",
            program(|b, x, _| &scalar(b, 0.5).broadcast_to(&dims(&[6, 4])).reshape(&dims(&[2, 3, 4])) * x),
            |o| matches!(o, Op::Reshape { .. }),
            Config::default(),
        ),
        (
            "boolean-constant",
            program(|b, x, _| {
                let mask = x.gt(&scalar(b, 0.0).broadcast_to(&dims(&[2, 3, 4])));
                let always = b.constant(1.0, DType::Bool, &[]).broadcast_to(&dims(&[2, 3, 4]));
                mask.and(&always).select(x, &x.exp())
            }),
            |o| matches!(o, Op::Binary(lsc_ir::BinaryOp::And)),
            Config::default(),
        ),
        (
            "drop-stop-gradient",
            program(|_, x, _| x.stop_gradient().exp()),
            |o| matches!(o, Op::StopGradient),
            forward_values_only(),
        ),
    ];
    // A loop of 3 trips of `h ← tanh(h·w)`, which becomes 3 calls.
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &dims(&[2, 3, 4]));
    let w = b.param("w", DType::F32, &dims(&[4, 4]));
    let args = [
        ("i", lsc_ir::TensorType::scalar(DType::I64)),
        ("h", lsc_ir::TensorType::new(DType::F32, dims(&[2, 3, 4]))),
        ("w", lsc_ir::TensorType::new(DType::F32, dims(&[4, 4]))),
    ];
    b.function("step", &args, |_, a| vec![("h".into(), a[1].matmul(&a[2]).tanh())]);
    let y = b.repeat("step", 3, &[&x], &[&w]).remove(0);
    b.output("y", &y);
    cases.push(("loop-unroll", b.finish().unwrap(), |o| matches!(o, Op::Loop { .. }), Config::default()));
    let plain: Vec<(&str, Program, OpTest)> = vec![
        ("transpose-transpose", program(|_, x, _| x.transpose(&[1, 0, 2]).transpose(&[1, 0, 2]).exp()), |o| {
            matches!(o, Op::Transpose { .. })
        }),
        ("reshape-reshape", program(|_, x, _| x.reshape(&dims(&[6, 4])).reshape(&dims(&[2, 12])).exp()), |o| {
            matches!(o, Op::Reshape { .. })
        }),
        ("neg-neg", program(|_, x, _| (-&(-x)).exp()), |o| matches!(o, Op::Unary(lsc_ir::UnaryOp::Neg))),
        ("mul-one", program(|_, x, _| (x * 1.0).exp()), |o| matches!(o, Op::Binary(lsc_ir::BinaryOp::Mul))),
        ("add-zero", program(|_, x, _| (x + 0.0).exp()), |o| matches!(o, Op::Binary(lsc_ir::BinaryOp::Add))),
        ("matmul-absorb-transpose", program(|_, x, w| x.matmul(&w.transpose(&[1, 0]))), |o| {
            matches!(o, Op::Transpose { .. })
        }),
        // The gradient of a value split in two: each half's gradient padded with zeros, summed.
        ("add-concat", program(|b, x, w| padded_halves_sum(b, &x.matmul_t(w), &x.exp())), |o| {
            matches!(o, Op::Binary(lsc_ir::BinaryOp::Add) | Op::Concat { .. })
        }),
    ];
    cases.extend(plain.into_iter().map(|(r, p, t)| (r, p, t, Config::default())));
    cases
}

/// Each rule of [`rule_cases`] fires, removes what it targets, and the result
/// computes what the input did.
#[test]
fn algebra_rules_fire_where_they_must() {
    let (inputs, params) = small_feed();
    for (rule, p, counted, cfg) in rule_cases() {
        let (q, stats) = run_both_with(&p, &inputs, &params, &cfg);
        assert!(stats.fired.get(rule).copied().unwrap_or(0) > 0, "{rule} did not fire: {:?}", stats.fired);
        assert!(count(&q, counted) < count(&p, counted), "{rule}: the extracted program still has the op");
    }
}

/// Every rule of the saturation passes fires somewhere in the suite's
/// programs: the cases above, or a built-in model's inference or training step.
#[test]
fn every_rule_fires_on_a_case_or_a_built_in_model() {
    let mut fired: std::collections::BTreeSet<String> = Default::default();
    for (_, p, _, cfg) in rule_cases() {
        fired.extend(optimize(&p, &cfg).unwrap().1.fired.into_keys());
    }
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let inference = lsc_models::build_inference(m, "tiny").unwrap();
        fired.extend(optimize(&inference, &forward_values_only()).unwrap().1.fired.into_keys());
        let forward = lsc_models::build(m, "tiny").unwrap();
        let (_, stats) =
            lsc_passes::saturate::optimize_training_step(&forward, &Default::default(), &Config::default()).unwrap();
        fired.extend(stats.fired.into_keys());
    }
    let missing: Vec<&str> = lsc_passes::saturate::rule_names().into_iter().filter(|r| !fired.contains(*r)).collect();
    assert!(missing.is_empty(), "rules that fire nowhere: {missing:?}");
}

/// `concat(a, 0) + concat(0, b)` along the last axis, zeros broadcast from a scalar
/// as autodiff makes them.
fn padded_halves_sum(b: &ModelBuilder, a: &Tensor, c: &Tensor) -> Tensor {
    let zeros = b.constant(0.0, DType::F32, &[]).broadcast_to(&a.shape());
    &a.concat(&[&zeros], -1) + &zeros.concat(&[c], -1)
}

#[test]
fn add_concat_needs_parts_of_one_shape() {
    let (inputs, params) = small_feed();
    // Splits at 3 and at 4 along the same axis: the parts do not line up, so the sum stays.
    let p = program(|b, x, _| {
        let zeros = |n: i64| b.constant(0.0, DType::F32, &[]).broadcast_to(&dims(&[2, 3, n]));
        let left = x.slice(-1, 0i64, 3i64).concat(&[&zeros(5)], -1);
        let right = zeros(4).concat(&[x], -1);
        &left + &right
    });
    let (q, stats) = run_both(&p, &inputs, &params);
    assert_eq!(stats.fired.get("add-concat"), None);
    assert_eq!(count(&q, |o| matches!(o, Op::Binary(lsc_ir::BinaryOp::Add))), 1);
}

#[test]
fn algebra_rules_do_not_fire_where_they_must_not() {
    let (inputs, params) = small_feed();
    // Two different transposes compose to a third, not to the identity; a scale by 2 stays.
    let p = program(|_, x, _| (&x.transpose(&[1, 0, 2]).transpose(&[0, 2, 1]) * 2.0).exp());
    let (q, stats) = run_both(&p, &inputs, &params);
    assert_eq!(stats.fired.get("transpose-identity"), None);
    assert_eq!(stats.fired.get("mul-one"), None);
    assert_eq!(count(&q, |o| matches!(o, Op::Transpose { .. })), 1, "composed into one transpose");
    assert_eq!(count(&q, |o| matches!(o, Op::Binary(lsc_ir::BinaryOp::Mul))), 1);
}

#[test]
fn scale_moves_to_the_smaller_side_of_a_matmul() {
    // Attention-like: scaling the [.., T, T] scores costs more than scaling q [.., T, d].
    let b = ModelBuilder::new();
    let q = b.input("q", DType::F32, &dims(&[2, 64, 8]));
    let k = b.input("k", DType::F32, &dims(&[2, 64, 8]));
    b.output("s", &(&q.matmul_t(&k) * 0.125).softmax(-1));
    let p = b.finish().unwrap();
    let mut rng = init::Rng::new(2);
    let mut r = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let inputs = Tensors::from([
        ("q".to_string(), Value::floats(vec![2, 64, 8], r(1024))),
        ("k".to_string(), Value::floats(vec![2, 64, 8], r(1024))),
    ]);
    let (out, stats) = run_both(&p, &inputs, &Tensors::new());
    assert!(stats.fired.contains_key("scale-through-matmul"));
    assert!(stats.cost_after < stats.cost_before, "{} → {}", stats.cost_before, stats.cost_after);
    let scaled_bigger =
        out.main.dag.node_weights().any(|n| {
            matches!(n.op, Op::Binary(lsc_ir::BinaryOp::Mul)) && n.outputs[0].shape.last() == Some(&Dim::new(64))
        });
    assert!(!scaled_bigger, "the scale should now apply to q, not to the scores");
}

#[test]
fn every_model_computes_the_same_after_saturation() {
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let p = lsc_models::build_inference(m, "tiny").unwrap();
        let params = init::init_params(&p, 3).unwrap();
        let mut rng = init::Rng::new(4);
        let ids = Value::ints(vec![2, 12], (0..24).map(|_| (rng.next_u64() % 256) as i64).collect());
        let inputs = Tensors::from([("input_ids".to_string(), ids.clone())]);
        let (_, stats) = run_both_with(&p, &inputs, &params, &forward_values_only());
        assert!(stats.seconds < 5.0, "{m}: saturation took {}s", stats.seconds);
        assert!(stats.cost_after <= stats.cost_before * (1.0 + 1e-9), "{m}: cost went up");

        // The training step too (one graph of forward, backward and update).
        let step =
            lsc_passes::train::training_step(&lsc_models::build(m, "tiny").unwrap(), &Default::default()).unwrap();
        let feed = common::step_feed(&step, 0.5);
        let (q, stats) = run_both_with(&step, &feed, &params, &forward_values_only());
        assert_eq!(count(&q, |o| matches!(o, Op::AdamW { .. })), 1, "{m}: one fused AdamW");
        assert_eq!(count(&q, |o| matches!(o, Op::SoftmaxCrossEntropy)), 1, "{m}: fused softmax + cross-entropy");
        assert_eq!(count(&q, |o| matches!(o, Op::CrossEntropy)), 0, "{m}: unfused loss left");
        // The updated parameters agree tightly in f64.
        let wide = |t: &Tensors<f32>| -> Tensors<f64> { t.iter().map(|(k, v)| (k.clone(), v.convert())).collect() };
        let a = Interpreter::new(&step).unwrap().run(&wide(&feed), &wide(&params)).unwrap();
        let b = Interpreter::new(&q).unwrap().run(&wide(&feed), &wide(&params)).unwrap();
        for ((n, x), (_, y)) in a.iter().zip(&b).filter(|((n, _), _)| n.starts_with("param.")) {
            let c = compare(&y.to_f64_vec(), &x.to_f64_vec(), F64_TOLERANCE);
            assert!(c.ok(), "{m}: f64 {n} changed: max |Δ| {}", c.max_abs_diff);
        }
        println!(
            "{m}: training step {:.2e}s → {:.2e}s estimated, fired {:?}",
            stats.cost_before, stats.cost_after, stats.fired
        );
    }
}

fn qkv_feed(heads: usize, t: usize) -> Tensors<f32> {
    let mut rng = init::Rng::new(9);
    let mut r = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let n = heads * t * 8;
    ["q", "k", "v"].iter().map(|s| (s.to_string(), Value::floats(vec![1, heads, t, 8], r(n)))).collect()
}

fn fused_windows(p: &Program) -> Vec<Vec<usize>> {
    p.main
        .dag
        .node_weights()
        .filter_map(|n| match &n.op {
            Op::LsAttention { windows, .. } => Some(windows.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn attention_is_recognised_however_it_is_spelled() {
    for spelling in 0..4 {
        for windows in [vec![0, 0], vec![3, 3], vec![3, 0], vec![2, 5, 0]] {
            let p = attention_program(windows.len(), &windows, spelling, false);
            let (q, stats) = run_both(&p, &qkv_feed(windows.len(), 11), &Tensors::new());
            assert_eq!(
                fused_windows(&q),
                vec![windows.clone()],
                "spelling {spelling}, windows {windows:?}: {:?}",
                stats.fired
            );
            assert!(
                !q.main.dag.node_weights().any(|n| matches!(n.op, Op::Softmax { .. })),
                "the unfused chain is gone"
            );
        }
    }
}

#[test]
fn attention_is_not_recognised_for_other_masks() {
    // Strictly causal (j < i) is not one of the fused op's masks.
    let b = ModelBuilder::new();
    let shape = [Dim::new(1), Dim::new(2), Dim::sym("T"), Dim::new(8)];
    let (q, k, v) =
        (b.input("q", DType::F32, &shape), b.input("k", DType::F32, &shape), b.input("v", DType::F32, &shape));
    let sq = [Dim::sym("T"), Dim::sym("T")];
    let strict = b
        .iota(DType::I64, &sq, 1)
        .lt(&b.iota(DType::I64, &sq, 0))
        .or(&b.iota(DType::I64, &sq, 0).eq(&b.constant(0.0, DType::I64, &[])));
    let masked = strict.select(&(&q.matmul_t(&k) * 0.5), &b.constant(f64::NEG_INFINITY, DType::F32, &[]));
    b.output("out", &masked.softmax(-1).matmul(&v));
    let p = b.finish().unwrap();
    let (q, stats) = run_both(&p, &qkv_feed(2, 7), &Tensors::new());
    assert!(fused_windows(&q).is_empty() && !stats.fired.contains_key("ls-attention"));
}

#[test]
fn built_in_attention_layers_fuse_with_their_windows_and_monitor() {
    for (model, want) in [("transformer", vec![0, 0, 0, 0]), ("ls-transformer", vec![4, 4, 0, 0])] {
        let p = lsc_models::build(model, "tiny").unwrap();
        let (q, stats) = optimize(&p, &Config::default()).unwrap();
        assert_eq!(fused_windows(&q), vec![want.clone(); 2], "{model}");
        assert_eq!(stats.fired.get("attention-row-max"), Some(&2), "{model}: the monitor reads the fused row max");
        let scores_left =
            q.main.dag.node_weights().any(|n| n.outputs.iter().any(|t| t.rank() == 4 && t.shape[2] == t.shape[3]));
        assert!(!scores_left, "{model}: no [B,H,T,T] tensor remains");
    }
}
