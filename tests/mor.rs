//! Mixture-of-Recursions: routing invariants and its limiting cases.

use lsc_interp::{Buffer, Interpreter, Tensors, Value};
use lsc_ir::DType;
use lsc_models::mor::{self, MorConfig, Routing, Rule};
use lsc_models::transformer::{self, TransformerConfig};
use lsc_runtime::init;
use lsc_runtime::numerics::{compare, tolerance};

fn ids(b: usize, t: usize, seed: u64) -> Value<f32> {
    let mut rng = init::Rng::new(seed);
    Value::ints(vec![b, t], (0..b * t).map(|_| (rng.next_u64() % 256) as i64).collect())
}

fn run(p: &lsc_ir::Program, params: &Tensors<f32>, x: &Value<f32>) -> Vec<(String, Value<f32>)> {
    let mut feed = Tensors::new();
    feed.insert("input_ids".to_string(), x.clone());
    Interpreter::new(p).unwrap().run(&feed, params).unwrap()
}

fn output<'a>(outs: &'a [(String, Value<f32>)], name: &str) -> &'a Value<f32> {
    &outs.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no output {name}")).1
}

fn bools(v: &Value<f32>) -> Vec<bool> {
    match &v.data {
        Buffer::Bool(b) => b.clone(),
        other => panic!("not bool: {other:?}"),
    }
}

fn scale_routers(params: &mut Tensors<f32>, k: f32) {
    for (name, v) in params.iter_mut() {
        if let (true, Buffer::Float(x)) = (name.starts_with("routers."), &mut v.data) {
            x.iter_mut().for_each(|w| *w *= k);
        }
    }
}

#[test]
fn expert_choice_keeps_k_tokens_per_sequence_each_a_subset_of_the_last() {
    let cfg = MorConfig::named("tiny").unwrap();
    let p = mor::build(&cfg, Rule::TopK).unwrap();
    let mut params = init::init_params(&p, 2).unwrap();
    scale_routers(&mut params, 50.0);
    let (b, t) = (3, 10);
    let outs = run(&p, &params, &ids(b, t, 9));
    let mut prev = vec![true; b * t];
    for (r, &cap) in cfg.capacities.iter().enumerate() {
        let route = bools(output(&outs, &format!("route.{r}")));
        let k = ((cap * t as f64).round_ties_even() as usize).max(1);
        for row in 0..b {
            let sel = &route[row * t..(row + 1) * t];
            assert_eq!(sel.iter().filter(|&&s| s).count(), k, "step {r}, sequence {row}");
        }
        assert!(
            route.iter().zip(&prev).all(|(&now, &before)| !now || before),
            "step {r} is not a subset of step {}",
            r.max(1) - 1
        );
        prev = route;
    }
}

/// A transformer config whose layers all take the MoR shared block's weights.
fn shared_params(mor_params: &Tensors<f32>, layers: usize) -> Tensors<f32> {
    let mut out = Tensors::new();
    for (name, v) in mor_params {
        if let Some(rest) = name.strip_prefix("shared.") {
            for i in 0..layers {
                out.insert(format!("layers.{i}.{rest}"), v.clone());
            }
        } else if !name.starts_with("routers.") {
            out.insert(name.clone(), v.clone());
        }
    }
    out
}

fn equals_shared_stack(capacities: Vec<f64>) {
    let layers = capacities.len();
    let cfg = MorConfig { capacities, gate_forced_one: true, ..MorConfig::named("tiny").unwrap() };
    // MoR keeps learned positions, so the stack it equals does too.
    let stack_cfg =
        TransformerConfig { n_layers: layers, rope_base: None, ..TransformerConfig::named("tiny", false).unwrap() };
    let stack = transformer::build(&stack_cfg).unwrap();
    for rule in [Rule::TopK, Rule::Threshold] {
        let p = mor::build(&cfg, rule).unwrap();
        let params = init::init_params(&p, 8).unwrap();
        let x = ids(2, 12, 4);
        let got = output(&run(&p, &params, &x), "logits").to_f64_vec();
        let want = output(&run(&stack, &shared_params(&params, layers), &x), "logits").to_f64_vec();
        let c = compare(&got, &want, tolerance(DType::F32));
        assert!(c.ok(), "{rule:?}, {layers} recursion(s): max |Δ| {}", c.max_abs_diff);
    }
}

#[test]
fn one_recursion_at_full_capacity_with_gate_one_is_one_block() {
    equals_shared_stack(vec![1.0]);
}

#[test]
fn full_capacities_with_gate_one_equal_a_weight_shared_four_layer_transformer() {
    equals_shared_stack(vec![1.0; 4]);
}

#[test]
fn the_shared_block_is_one_function_called_r_times() {
    let p = mor::build(&MorConfig::named("tiny").unwrap(), Rule::TopK).unwrap();
    assert_eq!(p.functions.len(), 1);
    let calls =
        p.main.dag.node_weights().filter(|n| matches!(&n.op, lsc_ir::Op::Call { callee } if callee == "block")).count();
    assert_eq!(calls, 4);
    assert!(p.main.params().iter().all(|(_, n)| !n.starts_with("layers.")), "no copied blocks");
    assert_eq!(p.main.params().iter().filter(|(_, n)| n.starts_with("shared.")).count(), 9);
}

#[test]
fn aux_loss_is_r_log_2_with_silent_routers() {
    // Zero router weights give logit 0 for every token: BCE = ln 2 whatever the target.
    let cfg = MorConfig::named("tiny").unwrap();
    let p = mor::build(&cfg, Rule::TopK).unwrap();
    let mut params = init::init_params(&p, 3).unwrap();
    scale_routers(&mut params, 0.0);
    let aux = output(&run(&p, &params, &ids(2, 8, 1)), "aux_loss").to_f64_vec()[0];
    assert!((aux - 4.0 * std::f64::consts::LN_2).abs() < 1e-5, "{aux}");
    // Strong routers predict their own choices better than chance.
    scale_routers(&mut params, 0.0);
    let mut strong = init::init_params(&p, 3).unwrap();
    scale_routers(&mut strong, 200.0);
    let aux_strong = output(&run(&p, &strong, &ids(2, 8, 1)), "aux_loss").to_f64_vec()[0];
    assert!(aux_strong < aux, "{aux_strong} vs {aux}");
}

#[test]
fn threshold_rule_drops_tokens_and_keeps_subsets() {
    let cfg = MorConfig::named("tiny").unwrap();
    let p = mor::build(&cfg, Rule::Threshold).unwrap();
    let mut params = init::init_params(&p, 2).unwrap();
    scale_routers(&mut params, 100.0);
    let outs = run(&p, &params, &ids(2, 16, 5));
    let first = bools(output(&outs, "route.0"));
    let last = bools(output(&outs, "route.3"));
    assert!(first.iter().all(|&a| a), "capacity 1.0 keeps every token");
    assert!(last.iter().any(|&a| a) && last.iter().any(|&a| !a), "the rule routes: {last:?}");
}

/// Decodes token by token with `cfg`'s decode graph and compares every
/// position with the full graph under the causal rule.
fn decode_matches_full(cfg: &MorConfig) -> f64 {
    let full = mor::build(cfg, Rule::Threshold).unwrap();
    let step = mor::build_decode(cfg).unwrap();
    let mut params = init::init_params(&full, 6).unwrap();
    scale_routers(&mut params, 100.0);
    if let Some(Value { data: Buffer::Float(w), .. }) = params.get_mut("router.weight") {
        w.iter_mut().for_each(|x| *x *= 100.0);
    }
    let (b, t) = (2, 14);
    let x = ids(b, t, 12);
    let outs = run(&full, &params, &x);
    let routes: Vec<bool> =
        (0..cfg.capacities.len()).flat_map(|r| bools(output(&outs, &format!("route.{r}")))).collect();
    assert!(
        routes.iter().any(|&a| a) && routes.iter().any(|&a| !a),
        "routing must drop some tokens for the test to mean something"
    );
    let want = output(&outs, "logits").to_f64_vec();
    let exe = lsc_runtime::backend::Executable::new(step, lsc_runtime::backend::Backend::Interp).unwrap();
    let mut dec = lsc_runtime::generate::Decoder::on(&exe, &params, b).unwrap();
    let v = 256;
    let mut worst = 0.0f64;
    for pos in 0..t {
        let col: Vec<i64> = (0..b).map(|bi| x.as_ints().unwrap()[bi * t + pos]).collect();
        let got = dec.feed(&Value::ints(vec![b, 1], col)).unwrap().to_f64_vec();
        for bi in 0..b {
            let w = &want[(bi * t + pos) * v..(bi * t + pos + 1) * v];
            let c = compare(&got[bi * v..(bi + 1) * v], w, tolerance(DType::F32));
            assert!(c.ok(), "position {pos}, sequence {bi}: max |Δ| {}", c.max_abs_diff);
            worst = worst.max(c.max_abs_diff);
        }
    }
    worst
}

#[test]
fn every_routing_variant_decodes_like_its_full_pass() {
    let base = MorConfig::named("tiny").unwrap();
    let variants = [
        ("expert choice", base.clone()),
        ("expert choice + KV sharing", MorConfig { kv_sharing: true, ..base.clone() }),
        ("token choice", MorConfig { routing: Routing::TokenChoice, ..base.clone() }),
        ("token choice + KV sharing", MorConfig { routing: Routing::TokenChoice, kv_sharing: true, ..base.clone() }),
        ("paper update", MorConfig { update: mor::Update::Paper { alpha: mor::PAPER_ALPHA }, ..base }),
    ];
    for (what, cfg) in variants {
        let d = decode_matches_full(&cfg);
        println!("mor {what}: decode vs full max |Δ| = {d:.3e}");
    }
}

#[test]
fn kv_sharing_changes_what_later_recursions_see() {
    let base = MorConfig { capacities: vec![1.0; 3], ..MorConfig::named("tiny").unwrap() };
    let shared = MorConfig { kv_sharing: true, ..base.clone() };
    let p = mor::build(&base, Rule::TopK).unwrap();
    let q = mor::build(&shared, Rule::TopK).unwrap();
    assert_eq!(q.functions.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["block", "kv", "block_kv"]);
    let params = init::init_params(&p, 3).unwrap();
    let x = ids(1, 9, 2);
    let a = output(&run(&p, &params, &x), "logits").to_f64_vec();
    let b = output(&run(&q, &params, &x), "logits").to_f64_vec();
    assert!(!compare(&a, &b, tolerance(DType::F32)).ok());
}

#[test]
fn token_choice_balance_loss_and_depths() {
    // A silent router gives uniform probabilities; argmax picks depth 0 for
    // every token, so f = (R, 0, ..), P = (1/R, ..) and Σ P·f = 1.
    let cfg = MorConfig { routing: Routing::TokenChoice, ..MorConfig::named("tiny").unwrap() };
    let p = mor::build(&cfg, Rule::TopK).unwrap();
    let mut params = init::init_params(&p, 1).unwrap();
    if let Some(Value { data: Buffer::Float(w), .. }) = params.get_mut("router.weight") {
        w.iter_mut().for_each(|x| *x = 0.0);
    }
    let outs = run(&p, &params, &ids(2, 6, 3));
    let loss = output(&outs, "balance_loss").to_f64_vec()[0];
    assert!((loss - 1.0).abs() < 1e-6, "{loss}");
    assert!(bools(output(&outs, "route.0")).iter().all(|&a| a));
    assert!(bools(output(&outs, "route.1")).iter().all(|&a| !a));
}
