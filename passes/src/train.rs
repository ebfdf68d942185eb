//! The training step as ONE graph: forward, loss, backward (autodiff),
//! global-norm clipping and the optimizer update, so later passes can
//! optimise and fuse the whole step.
//!
//! Added interface, beyond the forward graph's `input_ids`:
//! - inputs `targets: i64[B,T]`, `lr: f32[]`, and for AdamW the bias
//!   corrections `adam.bc1 = 1 − β1^t`, `adam.bc2 = 1 − β2^t` (f32[]);
//! - per parameter `p`, optimizer-state inputs `adam.m.{p}`, `adam.v.{p}` (AdamW)
//!   or `sgd.buf.{p}` (SGD), returned updated under the same names;
//! - outputs `loss` (LM loss plus weighted auxiliary terms), `lm_loss`,
//!   `grad_norm` (before clipping), `param.{p}` (updated), and the forward's
//!   monitor outputs (`max_logit.*`, `route.*`, auxiliary losses).

use crate::autodiff::{add_parameter_gradients, Emit, VjpTable};
use lsc_ir::{DType, Op, Program, ReduceKind, TensorType, UnaryOp, ValueRef};

/// The optimizer whose update the step graph contains.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// AdamW with decoupled weight decay and bias correction.
    AdamW {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator guard.
        eps: f64,
        /// Decoupled weight decay (scaled by the learning rate).
        weight_decay: f64,
    },
    /// SGD with (heavy-ball) momentum and L2-style weight decay.
    Sgd {
        /// Momentum coefficient.
        momentum: f64,
        /// Weight decay added to the gradient.
        weight_decay: f64,
    },
}

impl Optimizer {
    /// AdamW with β = (0.9, 0.95), ε = 1e-8 and weight decay 0.1.
    pub fn adamw() -> Optimizer {
        Optimizer::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }

    /// The names of the state tensors kept per parameter.
    pub fn state_names(&self, param: &str) -> Vec<String> {
        match self {
            Optimizer::AdamW { .. } => vec![format!("adam.m.{param}"), format!("adam.v.{param}")],
            Optimizer::Sgd { .. } => vec![format!("sgd.buf.{param}")],
        }
    }
}

/// What the step graph computes.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOptions {
    /// The update.
    pub optimizer: Optimizer,
    /// Clip the global gradient norm to this value.
    pub clip_norm: Option<f64>,
    /// Apply weight decay to norms, biases and embeddings too (off by default).
    pub decay_all: bool,
    /// Extra scalar outputs of the forward graph added to the loss with a weight
    /// (MoR's `aux_loss` at 0.001, `balance_loss` at 0.1).
    pub loss_terms: Vec<(String, f64)>,
    /// Differentiate `call f` as `call f__vjp`, which recomputes `f`'s forward
    /// values (less memory, one more forward pass of every called function).
    /// Off by default: `main`'s calls are inlined first, so that the backward
    /// reads the values the forward computed.
    pub recompute_calls: bool,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            optimizer: Optimizer::adamw(),
            clip_norm: Some(1.0),
            decay_all: false,
            loss_terms: Vec::new(),
            recompute_calls: false,
        }
    }
}

/// Whether weight decay applies to `name` by default: not to norms, biases and embeddings.
pub fn decays_by_default(name: &str, rank: usize) -> bool {
    let exempt = rank < 2 || name.ends_with(".bias") || name.contains("embed") || name.contains("norm");
    !exempt
}

/// Adds the training loss to a forward program with a `logits` output: input
/// `targets`, outputs `loss` (mean cross-entropy plus the weighted `terms`) and
/// `lm_loss`, replacing the forward's outputs; returns the monitor outputs it
/// removed (everything but `logits`).
pub fn add_loss(p: &mut Program, terms: &[(String, f64)], table: &VjpTable) -> Result<Vec<(String, ValueRef)>, String> {
    let logits = output(p, "logits")?;
    let ids_ty = p.main.input_types().iter().find(|(n, _)| *n == "input_ids").map(|(_, t)| (*t).clone());
    let ids_ty = ids_ty.ok_or("the forward graph has no `input_ids` input")?;
    let mut extra = Vec::new();
    for (name, w) in terms {
        extra.push((output(p, name)?, *w));
    }
    let monitors: Vec<(String, ValueRef)> = p.main.outputs.iter().filter(|(n, _)| n != "logits").cloned().collect();
    let mut e = Emit { g: &mut p.main, functions: &mut p.functions, table };
    let targets =
        ValueRef::first(e.g.add_node(Op::Input { name: "targets".into() }, &[], vec![ids_ty.with_dtype(DType::I64)]));
    let ce = e.op(Op::CrossEntropy, &[logits, targets])?;
    let axes: Vec<usize> = (0..ids_ty.rank()).collect();
    let lm = e.op(Op::Reduce { kind: ReduceKind::Mean, axes, keep_dims: false }, &[ce])?;
    let mut loss = lm;
    for (v, w) in &extra {
        let t = e.scale(*v, *w)?;
        loss = e.add(loss, t)?;
    }
    p.main.outputs = vec![("loss".into(), loss), ("lm_loss".into(), lm)];
    Ok(monitors)
}

/// Builds the training-step program from a forward program with a `logits` output.
pub fn training_step(forward: &Program, opts: &StepOptions) -> Result<Program, String> {
    let mut p = if opts.recompute_calls { forward.clone() } else { crate::inline::inline_calls(forward)? };
    let table = VjpTable::standard();
    let monitors = add_loss(&mut p, &opts.loss_terms, &table)?;
    add_update(&mut p, monitors, opts, &table)?;
    Ok(p)
}

/// The training step of any program with a scalar `loss` output (a
/// classifier's, say), whose other outputs are kept as monitors: the same
/// gradients, clipping and optimizer update as [`training_step`].
pub fn objective_step(program: &Program, opts: &StepOptions) -> Result<Program, String> {
    let mut p = crate::inline::inline_calls(program)?;
    let loss = output(&p, "loss")?;
    if !p.main.value_type(loss).shape.is_empty() {
        return Err(format!("the `loss` output is {}, not a scalar", p.main.value_type(loss)));
    }
    let monitors: Vec<(String, ValueRef)> = p.main.outputs.iter().filter(|(n, _)| n != "loss").cloned().collect();
    p.main.outputs = vec![("loss".into(), loss)];
    add_update(&mut p, monitors, opts, &VjpTable::standard())?;
    Ok(p)
}

/// Adds the gradients of the `loss` output, their global norm (clipped per
/// `opts`) and the optimizer's update of every parameter, as the outputs
/// `grad_norm`, `param.{p}` and the state's names, then the monitors.
fn add_update(
    p: &mut Program,
    monitors: Vec<(String, ValueRef)>,
    opts: &StepOptions,
    table: &VjpTable,
) -> Result<(), String> {
    let grads = add_parameter_gradients(p, "loss", table)?;
    let params: Vec<(String, ValueRef)> =
        p.main.params().into_iter().map(|(n, name)| (name.to_string(), ValueRef::first(n))).collect();
    let mut e = Emit { g: &mut p.main, functions: &mut p.functions, table };
    let scalar = TensorType::scalar(DType::F32);
    let input = |e: &mut Emit, name: &str, ty: &TensorType| {
        ValueRef::first(e.g.add_node(Op::Input { name: name.into() }, &[], vec![ty.clone()]))
    };
    let lr = input(&mut e, "lr", &scalar);
    // Global gradient norm, and the clipping factor min(1, c / (norm + 1e-6)).
    let mut sq = e.full(0.0, &scalar)?;
    for (_, g) in &grads {
        let g2 = e.mul(*g, *g)?;
        let axes: Vec<usize> = (0..e.ty(g2).rank()).collect();
        let s = e.sum(g2, axes)?;
        sq = e.add(sq, s)?;
    }
    let norm = e.unary(UnaryOp::Sqrt, sq)?;
    let factor = match opts.clip_norm {
        Some(c) => {
            let guard = e.full(1e-6, &scalar)?;
            let denom = e.add(norm, guard)?;
            let cv = e.full(c, &scalar)?;
            let ratio = e.div(cv, denom)?;
            let one = e.full(1.0, &scalar)?;
            Some(e.op(Op::Binary(lsc_ir::BinaryOp::Min), &[ratio, one])?)
        }
        None => None,
    };
    let mut outs = vec![("grad_norm".to_string(), norm)];
    let (bc1, bc2) = match opts.optimizer {
        Optimizer::AdamW { .. } => (Some(input(&mut e, "adam.bc1", &scalar)), Some(input(&mut e, "adam.bc2", &scalar))),
        Optimizer::Sgd { .. } => (None, None),
    };
    for ((name, w), (_, g)) in params.iter().zip(&grads) {
        let ty = e.ty(*w);
        let g = match factor {
            Some(f) => e.mul(*g, f)?,
            None => *g,
        };
        let decay = opts.decay_all || decays_by_default(name, ty.rank());
        let states: Vec<ValueRef> = opts.optimizer.state_names(name).iter().map(|s| input(&mut e, s, &ty)).collect();
        let lr_b = e.broadcast(lr, &ty.shape)?;
        let (new_w, new_states) = match opts.optimizer {
            Optimizer::AdamW { beta1, beta2, eps, weight_decay } => {
                let (m, v) = (states[0], states[1]);
                let m_a = e.scale(m, beta1)?;
                let g_a = e.scale(g, 1.0 - beta1)?;
                let m2 = e.add(m_a, g_a)?;
                let v_a = e.scale(v, beta2)?;
                let gg = e.mul(g, g)?;
                let g_b = e.scale(gg, 1.0 - beta2)?;
                let v2 = e.add(v_a, g_b)?;
                let m_hat = e.div(m2, bc1.expect("adamw has bc1"))?;
                let v_hat = e.div(v2, bc2.expect("adamw has bc2"))?;
                let root = e.unary(UnaryOp::Sqrt, v_hat)?;
                let eps_v = e.scalar_like(eps, root)?;
                let denom = e.add(root, eps_v)?;
                let step = e.div(m_hat, denom)?;
                let step = if decay && weight_decay != 0.0 {
                    let wd = e.scale(*w, weight_decay)?;
                    e.add(step, wd)?
                } else {
                    step
                };
                let delta = e.mul(step, lr_b)?;
                (e.sub(*w, delta)?, vec![m2, v2])
            }
            Optimizer::Sgd { momentum, weight_decay } => {
                let g = if decay && weight_decay != 0.0 {
                    let wd = e.scale(*w, weight_decay)?;
                    e.add(g, wd)?
                } else {
                    g
                };
                let b_a = e.scale(states[0], momentum)?;
                let buf = e.add(b_a, g)?;
                let delta = e.mul(buf, lr_b)?;
                (e.sub(*w, delta)?, vec![buf])
            }
        };
        outs.push((format!("param.{name}"), new_w));
        for (s, v) in opts.optimizer.state_names(name).into_iter().zip(new_states) {
            outs.push((s, v));
        }
    }
    p.main.outputs.extend(outs);
    p.main.outputs.extend(monitors.into_iter().filter(|(n, _)| !n.starts_with("route.")));
    crate::dce::eliminate_dead_code(p);
    lsc_ir::verify(p).map_err(|e| format!("training step is invalid: {e}"))?;
    Ok(())
}

fn output(p: &Program, name: &str) -> Result<ValueRef, String> {
    p.main
        .outputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("the forward graph has no `{name}` output"))
}
