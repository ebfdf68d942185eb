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
