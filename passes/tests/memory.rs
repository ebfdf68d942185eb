//! The memory plan reuses a slot once its value is dead, never earlier.

use lsc_frontend::ModelBuilder;
use lsc_ir::{DType, Dim};
use lsc_passes::memory::plan;
use lsc_passes::partition::partition;

#[test]
fn dead_values_give_their_slot_to_later_kernels() {
    // x → exp → matmul → tanh → matmul → sigmoid: each intermediate dies two kernels later.
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::new(16), Dim::new(16)]);
    let w = b.param("w", DType::F32, &[Dim::new(16), Dim::new(16)]);
    let y = x.exp().matmul(&w).tanh().matmul(&w).sigmoid();
    b.output("y", &y);
    let p = b.finish().unwrap();
    let parts = partition(&p.main).unwrap();
    let pl = plan(&p.main, &parts, &Default::default()).unwrap();
    assert_eq!(pl.assignment.len(), 5, "{parts:?}");
    assert_eq!(pl.unshared_bytes, 5 * 16 * 16 * 4);
    assert!(pl.slots.len() < 5 && pl.peak_bytes < pl.unshared_bytes, "{pl:?}");
    // A value and the values live at the same time never share a slot: exp's output is read by
    // the first matmul, which writes while exp's slot is still live.
    let slot = |k: usize| pl.assignment[k].1;
    assert_ne!(slot(0), slot(1));
    assert_ne!(slot(1), slot(2));
    // The returned value keeps its slot to the end.
    assert_ne!(slot(4), slot(3));
}

#[test]
fn a_function_is_planned_at_the_largest_shapes_its_calls_pass() {
    // `@f(h [N, 4])` called on 6 rows and on 2 rows: one plan at N = 6 serves both calls.
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::new(6), Dim::new(4)]);
    b.function("f", &[("h", lsc_ir::TensorType::new(DType::F32, [Dim::sym("N"), Dim::new(4)]))], |_, a| {
        vec![("out".to_string(), a[0].exp().tanh())]
    });
    let big = b.call("f", &[&x]).remove(0);
    let small = b.call("f", &[&big.slice(0, 0i64, Dim::new(2))]).remove(0);
    b.output("y", &small);
    let p = b.finish().unwrap();
    let bounds = lsc_passes::memory::upper_bounds(&p, &Default::default()).unwrap();
    assert_eq!(bounds["f"].get("N"), Some(&6), "{bounds:?}");
    let f = p.function("f").unwrap();
    let pl = plan(f, &partition(f).unwrap(), &bounds["f"]).unwrap();
    assert_eq!(pl.unshared_bytes, 6 * 4 * 4, "exp → tanh fuse into one kernel writing 6×4 floats");
    let unbound = plan(f, &partition(f).unwrap(), &Default::default());
    assert!(unbound.is_err(), "without the call's bounds N is unknown");
}
