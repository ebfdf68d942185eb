//! The Cranelift backend against the kernel-IR conformance suite (bit for
//! bit with the evaluator, the transcendentals' ulp bounds, bounds checks),
//! and the f32x4 code it is expected to emit.

use lsc_cranelift::Jit;
use lsc_kir::native::NativeCompiler;

lsc_kir::conformance_tests!(Jit::new());

#[test]
fn vector_loops_and_reductions_run_four_lanes_at_a_time() {
    let mut jit = Jit::new().unwrap();
    lsc_kir::conformance::rms_norm_matches_f64(&mut jit).unwrap();
    let clif = jit.clif("rms").unwrap();
    // The mean of squares runs 4 lanes at a time (partial sums), and so does the scaling loop.
    assert!(clif.matches("f32x4").count() >= 2 && clif.contains("extractlane"), "{clif}");
    lsc_kir::conformance::max_ulps(&mut jit, "exp", lsc_kir::math::exp, f64::exp).unwrap();
    assert!(jit.clif("exp").unwrap().contains("f32x4"), "exp runs 4 lanes at a time");
    let _ = jit.kernels();
}
