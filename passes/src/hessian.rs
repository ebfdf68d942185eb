//! Second-order programs of the language-model loss: its gradient, and exact
//! Hessian-vector products by reverse-over-reverse autodiff. The gradient
//! graph that [`add_parameter_gradients`] builds is made of ordinary ops
//! with VJP rules of their own, so differentiating `s = Σ_p ⟨∇_p L, v_p⟩`
//! once more gives `∇_θ s = H·v` (every parameter's block of it) in one
//! extra backward pass, without forming `H`.
//!
//! Interface, beyond the forward graph's `input_ids`: input `targets: i64[B,T]`;
//! outputs `loss` (the mean cross-entropy) and `grad.{p}` per parameter `p`;
//! with [`hessian_vector_program`], also inputs `hvp.v.{p}` (the direction,
//! shaped like `p`) and outputs `hvp.{p}`.

use crate::autodiff::{add_parameter_gradients, backpropagate, Emit, VjpTable};
use lsc_ir::{DType, Op, Program, TensorType, ValueRef};

/// The input holding parameter `param`'s block of the direction `v`.
pub fn direction_input(param: &str) -> String {
    format!("hvp.v.{param}")
}

/// The loss and its gradient with respect to every parameter.
pub fn gradient_program(forward: &Program) -> Result<Program, String> {
    build(forward, false)
}

/// The loss, its gradient and the Hessian-vector product `H·v` for the
/// direction given in the inputs `hvp.v.{p}`.
pub fn hessian_vector_program(forward: &Program) -> Result<Program, String> {
    build(forward, true)
}

fn build(forward: &Program, hvp: bool) -> Result<Program, String> {
    // Inlined like the training step, so the backward reads the forward's values.
    let mut p = crate::inline::inline_calls(forward)?;
    let table = VjpTable::standard();
    crate::train::add_loss(&mut p, &[], &table)?;
    let grads = add_parameter_gradients(&mut p, "lm_loss", &table)?;
    let loss = p.main.outputs.iter().find(|(n, _)| n == "lm_loss").map(|(_, v)| *v).ok_or("no `lm_loss` output")?;
    let mut outputs = vec![("loss".to_string(), loss)];
    outputs.extend(grads.iter().map(|(name, g)| (format!("grad.{name}"), *g)));
    if hvp {
        outputs.extend(add_hessian_vector_products(&mut p, &grads, &table)?);
    }
    p.main.outputs = outputs;
    crate::dce::eliminate_dead_code(&mut p);
    lsc_ir::verify(&p).map_err(|e| format!("the second-order program is invalid: {e}"))?;
    Ok(p)
}

/// Adds the inputs `hvp.v.{p}` and returns the outputs `hvp.{p}` = `∇_p ⟨g, v⟩`.
fn add_hessian_vector_products(
    p: &mut Program,
    grads: &[(String, ValueRef)],
    table: &VjpTable,
) -> Result<Vec<(String, ValueRef)>, String> {
    let params: Vec<(String, ValueRef)> =
        p.main.params().into_iter().map(|(n, name)| (name.to_string(), ValueRef::first(n))).collect();
    let mut e = Emit { g: &mut p.main, functions: &mut p.functions, table };
    let scalar = TensorType::scalar(DType::F32);
    let mut s = e.full(0.0, &scalar)?;
    for (name, g) in grads {
        let ty = e.ty(*g);
        let v = ValueRef::first(e.g.add_node(Op::Input { name: direction_input(name) }, &[], vec![ty.clone()]));
        let gv = e.mul(*g, v)?;
        let dot = e.sum(gv, (0..ty.rank()).collect())?;
        s = e.add(s, dot)?;
    }
    let one = e.full(1.0, &scalar)?;
    let adj = backpropagate(&mut e, &[(s, one)])?;
    let mut out = Vec::new();
    for (name, w) in params {
        let hv = match adj.get(&w) {
            Some(&hv) => hv,
            None => e.zeros_like(w)?,
        };
        out.push((format!("hvp.{name}"), hv));
    }
    Ok(out)
}
