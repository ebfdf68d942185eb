//! Routed recursion: the `routed` group turns a recursion step written over
//! the whole sequence into a call on the active rows only, where the callee's
//! body proves that is safe, and computes the same (proof by execution); the
//! `unroll` group unrolls small loops.

mod common;

use lsc_frontend::{ModelBuilder, Tensor};
use lsc_interp::{Interpreter, Tensors, Value};
use lsc_ir::{DType, Dim, Op, Program, TensorType};
use lsc_models::mor::{self, MorConfig, Routing, Rule};
use lsc_passes::saturate::{optimize, Config};
use lsc_runtime::init;
use lsc_runtime::numerics::{compare, tolerance};

fn count(p: &Program, pred: impl Fn(&Op) -> bool) -> usize {
    p.graphs().flat_map(|g| g.dag.node_weights()).filter(|n| pred(&n.op)).count()
}

fn routed_calls(p: &Program) -> usize {
    count(p, |o| matches!(o, Op::RoutedCall { .. }))
}

fn forward_values_only() -> Config {
    Config { keep_gradients: false, ..Config::default() }
}

fn token_ids(b: usize, t: usize, seed: u64) -> Tensors<f32> {
    let mut rng = init::Rng::new(seed);
    let ids = Value::ints(vec![b, t], (0..b * t).map(|_| (rng.next_u64() % 256) as i64).collect());
    Tensors::from([("input_ids".to_string(), ids)])
}

#[test]
fn mor_inference_runs_each_data_dependent_recursion_step_on_its_active_tokens() {
    let base = MorConfig::named("tiny").unwrap();
    // (variant, routed calls expected): depth 0 of expert choice keeps every token, so it is not routed.
    let cases = [
        ("expert choice", base.clone(), 3),
        ("expert choice + KV sharing", MorConfig { kv_sharing: true, ..base.clone() }, 3),
        ("token choice", MorConfig { routing: Routing::TokenChoice, ..base.clone() }, 4),
        ("token choice + KV sharing", MorConfig { routing: Routing::TokenChoice, kv_sharing: true, ..base.clone() }, 4),
    ];
    for (name, cfg, want) in cases {
        let p = mor::build(&cfg, Rule::Threshold).unwrap();
        let params = init::init_params(&p, 5).unwrap();
        let inputs = token_ids(3, 40, 6);
        let (q, stats) = common::optimised_agrees(&p, &inputs, &params, &forward_values_only());
        assert_eq!(routed_calls(&q), want, "{name}: {:?}", stats.fired);
        assert!(stats.cost_after < stats.cost_before, "{name}: routing should be estimated cheaper");
        // The check is only meaningful if some tokens leave and some stay.
        let out = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
        let last = &out.iter().find(|(n, _)| n == &format!("route.{}", cfg.capacities.len() - 1)).unwrap().1;
        let active = last.to_f64_vec().iter().filter(|&&x| x != 0.0).count();
        assert!(active > 0 && active < 3 * 40, "{name}: {active} of 120 tokens active at the last depth");
    }
}

#[test]
fn routing_keeps_gradients_and_decoding_alone() {
    // Before autodiff, `routed_call` has no VJP: the group only runs where nothing differentiates.
    let p = mor::build(&MorConfig::named("tiny").unwrap(), Rule::Threshold).unwrap();
    let (q, _) = optimize(&p, &Config::default()).unwrap();
    assert_eq!(routed_calls(&q), 0);
    // Decoding's block also updates the KV caches, which are not per-row outputs.
    let d = lsc_models::build_decode("mor", "tiny").unwrap();
    let (q, _) = optimize(&d, &forward_values_only()).unwrap();
    assert_eq!(routed_calls(&q), 0);
    // Training's top-k routing already gathers its tokens; nothing is left to route.
    let t = lsc_models::build("mor", "tiny").unwrap();
    let (q, _) = optimize(&t, &forward_values_only()).unwrap();
    assert_eq!(routed_calls(&q), 0);
}

/// How the test block's attention treats inactive rows, and what else it does.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Block {
    /// Keys must be active (or the query itself): routable.
    MasksInactiveKeys,
    /// The same, with the mask added as a 0/−∞ bias: routable.
    AddsMaskAsBias,
    /// Plain causal: inactive keys are seen, so packing would change results.
    SeesInactiveKeys,
    /// Masks keys but adds the row position to its output.
    ReadsPositions,
    /// Masks keys but averages over every row.
    AveragesRows,
}

/// `y = select(rows(a), 2·blk(x, m) − x, x)` with a one-head attention block;
/// `a` is the block's own mask `m` unless `other_mask`.
fn program(block: Block, other_mask: bool) -> Program {
    let b = ModelBuilder::new();
    let (bd, t, n) = (Dim::sym("B"), Dim::sym("T"), Dim::sym("N"));
    let d = Dim::new(8);
    let x = b.input("x", DType::F32, &[bd.clone(), t.clone(), d.clone()]);
    let gate = b.param("gate", DType::F32, &[Dim::new(1), d.clone()]);
    let h_ty = TensorType::new(DType::F32, [bd.clone(), n.clone(), d.clone()]);
    let m_ty = TensorType::new(DType::Bool, [bd.clone(), n.clone()]);
    let (bd2, n2) = (bd.clone(), n.clone());
    b.function("blk", &[("h", h_ty), ("active", m_ty)], move |fb, a| {
        let w = fb.param("w", DType::F32, &[Dim::new(8), Dim::new(8)]);
        let h = &a[0];
        let scores = h.matmul_t(&w).matmul_t(h);
        let square = [n2.clone(), n2.clone()];
        let (rows, cols) = (fb.iota(DType::I64, &square, 0), fb.iota(DType::I64, &square, 1));
        let causal = cols.le(&rows);
        let keys = a[1].reshape(&[bd2.clone(), Dim::new(1), n2.clone()]).or(&rows.eq(&cols));
        let allowed =
            if block == Block::SeesInactiveKeys { causal.broadcast_to(&scores.shape()) } else { causal.and(&keys) };
        let neg_inf = scores.full_like_scalar(f64::NEG_INFINITY);
        let masked = if block == Block::AddsMaskAsBias {
            &scores + &allowed.select(&scores.full_like_scalar(0.0), &neg_inf)
        } else {
            allowed.select(&scores, &neg_inf)
        };
        let mut out = &masked.softmax(-1).matmul(h) + h;
        if block == Block::ReadsPositions {
            let pos = fb.iota(DType::I64, std::slice::from_ref(&n2), 0).cast(DType::F32).reshape(&[
                Dim::new(1),
                n2.clone(),
                Dim::new(1),
            ]);
            out = &out + &pos.broadcast_to(&out.shape());
        }
        if block == Block::AveragesRows {
            out = &out + &h.mean(&[1], true).broadcast_to(&out.shape());
        }
        vec![("out".into(), out)]
    });
    let score = x.matmul_t(&gate).reshape(&[bd.clone(), t.clone()]);
    let active = score.ge(&score.full_like_scalar(0.0));
    let out = b.call("blk", &[&x, &active]).remove(0);
    let rows = |m: &Tensor| m.reshape(&[bd.clone(), t.clone(), Dim::new(1)]).broadcast_to(&x.shape());
    let keep = if other_mask { active.not() } else { active };
    b.output("y", &rows(&keep).select(&(&(&out * 2.0) - &x), &x));
    b.finish().unwrap()
}

fn feed(p: &Program, b: usize, t: usize) -> (Tensors<f32>, Tensors<f32>) {
    let params = init::init_params(p, 11).unwrap();
    let mut rng = init::Rng::new(12);
    let x = Value::floats(vec![b, t, 8], (0..b * t * 8).map(|_| rng.normal() as f32).collect());
    (Tensors::from([("x".to_string(), x)]), params)
}

#[test]
fn a_block_is_routed_only_when_its_body_ignores_inactive_rows() {
    for (block, other_mask, routed) in [
        (Block::MasksInactiveKeys, false, true),
        (Block::AddsMaskAsBias, false, true),
        (Block::SeesInactiveKeys, false, false),
        (Block::ReadsPositions, false, false),
        (Block::AveragesRows, false, false),
        (Block::MasksInactiveKeys, true, false),
    ] {
        let p = program(block, other_mask);
        for (b, t) in [(1, 5), (3, 37)] {
            let (inputs, params) = feed(&p, b, t);
            let (q, _) = common::optimised_agrees(&p, &inputs, &params, &forward_values_only());
            assert_eq!(routed_calls(&q) == 1, routed, "{block:?}, other mask {other_mask}");
        }
    }
}

#[test]
fn the_analysis_says_why_a_body_is_not_routable() {
    let why = |block| {
        let p = program(block, false);
        lsc_passes::routing::check_routable(p.function("blk").unwrap(), 2, Some(1)).unwrap_err()
    };
    assert!(why(Block::SeesInactiveKeys).contains("without masking inactive rows"), "{}", why(Block::SeesInactiveKeys));
    assert!(why(Block::ReadsPositions).contains("row position"), "{}", why(Block::ReadsPositions));
    assert!(why(Block::AveragesRows).contains("Mean over rows"), "{}", why(Block::AveragesRows));
    let p = program(Block::MasksInactiveKeys, false);
    let f = p.function("blk").unwrap();
    assert!(lsc_passes::routing::check_routable(f, 2, Some(1)).is_ok());
    // Without knowing which input is the mask, nothing proves inactive keys are dropped.
    assert!(lsc_passes::routing::check_routable(f, 2, None).is_err());
}

/// `@step(i, h, w) = tanh(h·w + i)` applied `trips` times.
fn looped(trips: u64) -> Program {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::new(4)]);
    let w = b.param("w", DType::F32, &[Dim::new(4), Dim::new(4)]);
    let args = [
        ("i", TensorType::scalar(DType::I64)),
        ("h", TensorType::new(DType::F32, [Dim::sym("B"), Dim::new(4)])),
        ("w", TensorType::new(DType::F32, [Dim::new(4), Dim::new(4)])),
    ];
    b.function("step", &args, |_, a| {
        let i = a[0].cast(DType::F32).broadcast_to(&a[1].shape());
        vec![("h".into(), (&a[1].matmul(&a[2]) + &i).tanh())]
    });
    let out = b.repeat("step", trips, &[&x], &[&w]).remove(0);
    b.output("y", &out);
    b.finish().unwrap()
}

#[test]
fn small_loops_are_unrolled_into_calls_and_large_ones_are_kept() {
    let run = |p: &Program| {
        let params = init::init_params(p, 2).unwrap();
        let x = Value::floats(vec![3, 4], (0..12).map(|i| i as f32 * 0.1 - 0.5).collect());
        let (q, stats) =
            common::optimised_agrees(p, &Tensors::from([("x".to_string(), x)]), &params, &Config::default());
        (q, stats)
    };
    let (q, stats) = run(&looped(3));
    assert_eq!(count(&q, |o| matches!(o, Op::Loop { .. })), 0, "{:?}", stats.fired);
    assert_eq!(count(&q, |o| matches!(o, Op::Call { .. })), 3);
    assert!(stats.cost_after < stats.cost_before);
    let too_many = lsc_passes::saturate::UNROLL_MAX_TRIPS + 1;
    let (q, _) = run(&looped(too_many));
    assert_eq!(count(&q, |o| matches!(o, Op::Loop { .. })), 1, "{too_many} trips stay a loop");
    // `--no-rules unroll` keeps even a small loop.
    let cfg = Config { without: vec!["unroll".into()], ..Config::default() };
    let (q, _) = optimize(&looped(3), &cfg).unwrap();
    assert_eq!(count(&q, |o| matches!(o, Op::Loop { .. })), 1);
}

#[test]
fn malformed_routed_calls_are_rejected_by_the_verifier() {
    let text = |mask: &str, routed: usize| {
        format!(
            "lsir 1\n\ngraph @main {{\n  %0 = input \"x\" : f32[B,T,4]\n  %1 = input \"m\" : {mask}\n  \
             %2 = routed_call(%1, %0) {{callee=@f, routed={routed}}} : f32[B,T,4]\n  output \"y\" = %2\n}}\n\n\
             graph @f {{\n  %0 = input \"h\" : f32[B,N,4]\n  %1 = neg(%0) : f32[B,N,4]\n  output \"out\" = %1\n}}\n"
        )
    };
    assert!(lsc_ir::parse_and_verify(&text("bool[B,T]", 1)).is_ok());
    let e = lsc_ir::parse_and_verify(&text("f32[B,T]", 1)).unwrap_err().to_string();
    assert!(e.contains("bool[B, T] mask"), "{e}");
    let e = lsc_ir::parse_and_verify(&text("bool[B,T]", 2)).unwrap_err().to_string();
    assert!(e.contains("`routed` = 2"), "{e}");
}

#[test]
fn routed_mor_runs_on_generated_code_at_several_lengths() {
    use lsc_runtime::backend::{Backend, Executable};
    let p = lsc_models::build_inference("mor", "tiny").unwrap();
    let q = lsc_runtime::prepare::optimize_for_inference(&p).unwrap();
    assert_eq!(routed_calls(&q), 3, "what `lsc run` executes is routed");
    let params = init::init_params(&p, 7).unwrap();
    for t in [9, 33] {
        let inputs = token_ids(2, t, t as u64);
        let want = Interpreter::new(&p).unwrap().run(&inputs, &params).unwrap();
        for backend in Backend::native() {
            let got = Executable::new(q.clone(), backend).unwrap().run(&inputs, &params).unwrap();
            for ((n, x), (_, y)) in want.iter().zip(&got) {
                let c = compare(&y.to_f64_vec(), &x.to_f64_vec(), tolerance(DType::F32));
                assert!(c.ok(), "T = {t}, {backend}: {n} differs by {}", c.max_abs_diff);
            }
        }
    }
}
