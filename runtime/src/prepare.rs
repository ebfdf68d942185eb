//! Programs prepared for inference on fixed weights: equality saturation
//! with the forward-value rules (fused attention, ternary matmul, GAM), then
//! the parameter-only work (ternary packing, weight scales) computed once,
//! when the weights are bound, instead of on every call.

use crate::backend::{Executable, RunOn};
use crate::RuntimeError;
use lsc_interp::{Tensors, Value};
use lsc_ir::Program;

/// Saturates `program` for inference (it is never differentiated).
pub fn optimize_for_inference(program: &Program) -> Result<Program, RuntimeError> {
    let (machine, _) = crate::calibrate::machine()?;
    let cfg = lsc_passes::saturate::Config { keep_gradients: false, machine, ..Default::default() };
    let (p, _) = lsc_passes::saturate::optimize(program, &cfg).map_err(RuntimeError::Input)?;
    Ok(p)
}

/// A program and the weights it runs on, with parameter-only work done.
pub struct Prepared {
    /// The program (reading hoisted values as parameters `hoisted.{i}`) on its backend.
    pub exe: Executable,
    /// The weights plus the hoisted values.
    pub params: Tensors<f32>,
}

/// Computes `program`'s parameter-only work on `params` once.
/// Weights holding NaN or ±Inf are refused, naming the tensor.
pub fn bind_weights(program: &Program, params: &Tensors<f32>, on: impl Into<RunOn>) -> Result<Prepared, RuntimeError> {
    if let Some(name) = crate::numerics::first_non_finite(params) {
        let at = params.get(name).and_then(crate::numerics::non_finite_at).unwrap_or_default();
        return Err(RuntimeError::Input(format!(
            "weight `{name}` holds a non-finite value (at {at:?}): the weights are corrupt or come from a diverged run"
        )));
    }
    let backend = on.into();
    let Some(split) = lsc_passes::hoist::hoist_parameter_work(program).map_err(RuntimeError::Input)? else {
        return Ok(Prepared { exe: Executable::new(program.clone(), backend)?, params: params.clone() });
    };
    let hoisted: Vec<(String, Value<f32>)> = Executable::new(split.prologue, backend)?.run(&Tensors::new(), params)?;
    let mut all = params.clone();
    all.extend(hoisted);
    Ok(Prepared { exe: Executable::new(split.main, backend)?, params: all })
}

/// [`optimize_for_inference`] then [`bind_weights`].
pub fn prepare(program: &Program, params: &Tensors<f32>, on: impl Into<RunOn>) -> Result<Prepared, RuntimeError> {
    bind_weights(&optimize_for_inference(program)?, params, on)
}
