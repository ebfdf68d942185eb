//! The LLVM backend against the kernel-IR conformance suite (bit for bit
//! with the evaluator, the transcendentals' ulp bounds, bounds checks), and
//! the vector code it is expected to emit for this CPU.
#![cfg(feature = "llvm")]

use lsc_kir::native::NativeCompiler;
use lsc_llvm::Jit;

lsc_kir::conformance_tests!(Jit::new());

#[test]
fn vector_loops_and_reductions_use_vector_registers() {
    let mut jit = Jit::new().unwrap();
    lsc_kir::conformance::rms_norm_matches_f64(&mut jit).unwrap();
    let w = jit.vector_width();
    let ir = jit.ir("rms").unwrap();
    assert!(ir.contains(&format!("<{w} x float>")) && ir.contains("target-cpu"), "{ir}");
    // The registers of the widest vectors this CPU has.
    let register = match w {
        16 => "zmm",
        8 => "ymm",
        _ => "xmm",
    };
    let asm = jit.asm("rms").unwrap();
    assert!(asm.contains(register), "{asm}");
    assert!(jit.kernels().contains("rms"));
    println!("LLVM code for {}", jit.cpu());
}
