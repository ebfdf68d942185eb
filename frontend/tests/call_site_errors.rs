//! Shape errors are reported at the user's line, as errors, never as panics.

use lsc_frontend::modules::{CausalSelfAttention, Linear};
use lsc_frontend::ModelBuilder;
use lsc_ir::{DType, Dim};

#[test]
fn matmul_mismatch_points_at_the_callers_line() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::new(16)]);
    let w = b.param("w", DType::F32, &[Dim::new(8), Dim::new(4)]);
    let line = line!() + 1;
    let y = x.matmul(&w);
    b.output("y", &y.exp());
    let err = b.finish().expect_err("inner dims 16 and 8 differ");
    assert_eq!(err.location.file(), file!());
    assert_eq!(err.location.line(), line);
    assert!(err.message.contains("inner dimensions 16 and 8 differ"), "{err}");
    assert!(err.to_string().starts_with(&format!("{}:{line}:", file!())));
}

#[test]
fn module_errors_point_at_the_module_call() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::sym("T"), Dim::new(24)]);
    let proj = Linear::new(&b, "proj", 32, 32, false);
    let line = line!() + 1;
    let y = proj.forward(&x);
    b.output("y", &y);
    let err = b.finish().unwrap_err();
    assert_eq!(err.location.line(), line, "{err}");
}

#[test]
fn operator_overloads_report_broadcast_errors_at_the_operator() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::new(3), Dim::new(4)]);
    let y = b.input("y", DType::F32, &[Dim::new(5)]);
    let line = line!() + 1;
    let z = &x + &y;
    b.output("z", &(&z * 2.0));
    let err = b.finish().unwrap_err();
    assert_eq!(err.location.line(), line);
    assert!(err.message.contains("cannot broadcast f32[3,4] with f32[5]"), "{err}");
}

#[test]
fn only_the_first_error_is_reported() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::new(3)]);
    let line = line!() + 1;
    let bad = x.softmax(4);
    let worse = bad.reshape(&[Dim::new(7)]);
    b.output("z", &worse);
    let err = b.finish().unwrap_err();
    assert_eq!(err.location.line(), line);
    assert!(err.message.contains("axis 4 is out of range"), "{err}");
}

#[test]
fn invalid_attention_config_is_an_error() {
    let b = ModelBuilder::new();
    let line = line!() + 1;
    let _ = CausalSelfAttention::mhsa(&b, "attn", 30, 4, false);
    let err = b.finish().unwrap_err();
    assert_eq!(err.location.line(), line);
    assert!(err.message.contains("divisible"), "{err}");
}

#[test]
fn duplicate_parameter_names_are_rejected() {
    let b = ModelBuilder::new();
    let _ = b.param("w", DType::F32, &[Dim::new(2)]);
    let line = line!() + 1;
    let _ = b.param("w", DType::F32, &[Dim::new(2)]);
    let err = b.finish().unwrap_err();
    assert_eq!(err.location.line(), line);
}

#[test]
fn functions_and_loops_share_weights_explicitly() {
    let b = ModelBuilder::new();
    let x = b.input("x", DType::F32, &[Dim::sym("N"), Dim::new(4)]);
    let w = b.param("shared.weight", DType::F32, &[Dim::new(4), Dim::new(4)]);
    let h_ty = lsc_ir::TensorType::new(DType::F32, [Dim::sym("M"), Dim::new(4)]);
    let w_ty = lsc_ir::TensorType::new(DType::F32, [Dim::new(4), Dim::new(4)]);
    let i_ty = lsc_ir::TensorType::scalar(DType::I64);
    b.function("step", &[("i", i_ty), ("h", h_ty), ("w", w_ty)], |_, args| {
        vec![("h".to_string(), &args[1] + &args[1].matmul_t(&args[2]).tanh())]
    });
    let out = b.repeat("step", 3, &[&x], &[&w]);
    b.output("y", &out[0]);
    let p = b.finish().expect("valid");
    assert_eq!(p.functions.len(), 1);
    assert_eq!(p.main.params().len(), 1, "one parameter, used by every iteration");
}
