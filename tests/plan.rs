//! Compiled plans: no launch reads memory that another tensor overwrote
//! since it was written (for every built-in model's inference, decoding and
//! training-step plans, regions included), arena space is reused, caches
//! are updated in place only where nothing reads the old cache, work on
//! constants runs at load, and a routed region's plans at fewer rows live
//! in the memory of its plan at all rows.

use lsc_frontend::ModelBuilder;
use lsc_interp::{Tensors, Value};
use lsc_ir::{Bindings, DType, Dim, Program};
use lsc_passes::plan::{build, build_routed, Launch, Place, Plan};
use lsc_runtime::backend::{Backend, Executable};

fn bind(b: i64, t: i64) -> Bindings {
    [("B".to_string(), b), ("T".to_string(), t)].into()
}

/// Replays `plan`'s launches over its arena, recording which storage last
/// wrote each byte, and asserts that every arena tensor a launch reads was
/// last written by its own storage (so nothing clobbered it in between).
fn check_liveness(plan: &Plan) {
    let mut owner: Vec<Option<usize>> = vec![None; plan.arena_bytes as usize];
    let span = |t: usize| match plan.tensors[t].place {
        Place::Arena(o) => Some(o as usize..(o + plan.tensors[t].bytes()) as usize),
        _ => None,
    };
    for l in plan.load.iter().chain(&plan.launches) {
        for t in l.reads() {
            let Some(r) = span(t) else { continue };
            let storage = plan.tensors[t].storage;
            assert!(
                owner[r.clone()].iter().all(|o| *o == Some(storage)),
                "@{}: {} is read by {:?} after another tensor overwrote it",
                plan.graph,
                plan.tensors[t].name,
                l.origin()
            );
        }
        for t in l.writes() {
            if let Some(r) = span(t) {
                owner[r].iter_mut().for_each(|o| *o = Some(plan.tensors[t].storage));
            }
        }
        // A launch's outputs never overlap each other.
        let outs: Vec<_> = l.writes().into_iter().filter_map(|t| span(t).map(|r| (t, r))).collect();
        for (i, (a, ra)) in outs.iter().enumerate() {
            for (b, rb) in &outs[i + 1..] {
                assert!(
                    ra.end <= rb.start || rb.end <= ra.start,
                    "{} and {} overlap",
                    plan.tensors[*a].name,
                    plan.tensors[*b].name
                );
            }
        }
        match l {
            Launch::Loop { body, .. } => check_liveness(body),
            Launch::Routed { region, .. } => check_liveness(&region.bound),
            _ => {}
        }
    }
    for (name, t) in &plan.outputs {
        if let Some(r) = span(*t) {
            assert!(owner[r].iter().all(|o| *o == Some(plan.tensors[*t].storage)), "output {name} was overwritten");
        }
    }
}

fn in_place_count(plan: &Plan) -> usize {
    plan.launches.iter().filter(|l| matches!(l, Launch::InPlace { .. })).count()
}

#[test]
fn no_launch_reads_a_clobbered_tensor_in_any_models_plans() {
    for m in lsc_models::MODELS.iter().map(|m| m.name) {
        let inference =
            lsc_runtime::prepare::optimize_for_inference(&lsc_models::build_inference(m, "tiny").unwrap()).unwrap();
        let decode = lsc_models::build_decode(m, "tiny").unwrap();
        let forward = lsc_models::build(m, "tiny").unwrap();
        let (step, _) =
            lsc_passes::saturate::optimize_training_step(&forward, &Default::default(), &Default::default()).unwrap();
        for (what, p, b) in
            [("inference", &inference, bind(2, 13)), ("decode", &decode, bind(2, 1)), ("step", &step, bind(2, 16))]
        {
            let plan = build(p, &b).unwrap_or_else(|e| panic!("{m} {what}: {e}"));
            check_liveness(&plan);
            assert!(plan.arena_bytes < plan.unshared_bytes, "{m} {what}: arena space is reused");
            if what == "decode" && m != "gam" {
                assert!(in_place_count(&plan) > 0, "{m}: a KV cache is updated in place");
            }
        }
    }
}

#[test]
fn a_cache_is_updated_in_place_only_when_nothing_reads_it_later() {
    for other_reader in [false, true] {
        let b = ModelBuilder::new();
        let cache = b.input("cache", DType::F32, &[Dim::new(2), Dim::new(5), Dim::new(3)]);
        let update = b.input("update", DType::F32, &[Dim::new(2), Dim::new(2), Dim::new(3)]);
        let pos = b.input("pos", DType::I64, &[]);
        let updated = cache.cache_update(1, &update, &pos);
        b.output("cache", &updated);
        if other_reader {
            b.output("old_sum", &cache.sum(&[0, 1, 2], false));
        }
        let p = b.finish().unwrap();
        let plan = build(&p, &Bindings::new()).unwrap();
        check_liveness(&plan);
        assert_eq!(in_place_count(&plan), usize::from(!other_reader), "{}", plan.to_text());
        if !other_reader {
            let (_, out) = plan.outputs[0];
            assert_eq!(plan.tensors[out].place, Place::Input(0), "the update lives in the input's buffer");
        }
        // Either way the compiled program computes what the interpreter does.
        let feed = Tensors::from([
            ("cache".to_string(), Value::<f32>::floats(vec![2, 5, 3], (0..30).map(|i| i as f32).collect())),
            ("update".to_string(), Value::floats(vec![2, 2, 3], vec![-1.0; 12])),
            ("pos".to_string(), Value::ints(vec![], vec![3])),
        ]);
        let want = Executable::new(p.clone(), Backend::Interp).unwrap().run(&feed, &Tensors::new()).unwrap();
        let got = Executable::new(p, Backend::Cranelift).unwrap().run(&feed, &Tensors::new()).unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn work_on_constants_runs_once_at_load() {
    // The rotary tables depend on the positions 0..T only.
    let p = lsc_models::build_inference("transformer", "tiny").unwrap();
    let plan = build(&p, &bind(1, 8)).unwrap();
    let at_load: Vec<&str> = plan.load.iter().map(|l| l.origin().op).collect();
    assert!(at_load.contains(&"iota") && at_load.contains(&"sin") && at_load.contains(&"cos"), "{at_load:?}");
    assert!(plan.launches.iter().all(|l| !matches!(l.origin().op, "sin" | "cos" | "iota")));
}

/// `mor`'s inference program with its recursion steps routed.
fn routed_mor() -> Program {
    lsc_runtime::prepare::optimize_for_inference(&lsc_models::build_inference("mor", "tiny").unwrap()).unwrap()
}

#[test]
fn a_routed_region_at_fewer_rows_fits_in_the_memory_of_all_rows() {
    let plan = build(&routed_mor(), &bind(2, 32)).unwrap();
    let regions: Vec<_> = plan
        .launches
        .iter()
        .filter_map(|l| match l {
            Launch::Routed { region, .. } => Some(region),
            _ => None,
        })
        .collect();
    assert!(!regions.is_empty(), "{}", plan.to_text());
    for region in regions {
        let shapes: Vec<Vec<usize>> = region
            .bound
            .inputs
            .iter()
            .enumerate()
            .map(|(i, (_, t))| {
                let mut s = region.bound.tensors[*t].shape.clone();
                if i < region.routed {
                    s[1] = 16;
                }
                s
            })
            .collect();
        let small = build_routed(region, &shapes).unwrap();
        assert_eq!(small.arena_bytes, region.bound.arena_bytes);
        for (a, b) in small.tensors.iter().zip(&region.bound.tensors) {
            assert_eq!(a.place, b.place);
            assert!(a.bytes() <= b.bytes());
        }
        check_liveness(&small);
    }
}

#[test]
fn a_loop_region_runs_its_body_each_trip() {
    // x ← tanh(x + w), 3 times: a loop whose body is planned once.
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::new(4)]);
    let w = b.input("w", DType::F32, &[Dim::new(4)]);
    let ty = |s: Vec<Dim>| lsc_ir::TensorType::new(DType::F32, s);
    b.function(
        "step",
        &[
            ("i", lsc_ir::TensorType::new(DType::I64, Vec::<Dim>::new())),
            ("h", ty(vec![Dim::sym("N"), Dim::new(4)])),
            ("w", ty(vec![Dim::new(4)])),
        ],
        |_, a| vec![("h".to_string(), (&a[1] + &a[2].broadcast_to(&[Dim::sym("N"), Dim::new(4)])).tanh())],
    );
    let y = b.repeat("step", 3, &[&x], &[&w]).remove(0);
    b.output("y", &y);
    let p = b.finish().unwrap();
    let plan = build(&p, &[("B".to_string(), 2)].into()).unwrap();
    assert!(plan.launches.iter().any(|l| matches!(l, Launch::Loop { trips: 3, .. })), "{}", plan.to_text());
    check_liveness(&plan);
    let feed = Tensors::from([
        ("x".to_string(), Value::<f32>::floats(vec![2, 4], (0..8).map(|i| i as f32 / 8.0).collect())),
        ("w".to_string(), Value::floats(vec![4], vec![0.1, -0.2, 0.3, -0.4])),
    ]);
    let want = Executable::new(p.clone(), Backend::Interp).unwrap().run(&feed, &Tensors::new()).unwrap();
    let got = Executable::new(p, Backend::Cranelift).unwrap().run(&feed, &Tensors::new()).unwrap();
    let c = lsc_runtime::numerics::compare(
        &got[0].1.to_f64_vec(),
        &want[0].1.to_f64_vec(),
        lsc_runtime::numerics::tolerance(DType::F32),
    );
    assert!(c.ok(), "max |Δ| {}", c.max_abs_diff);
}
