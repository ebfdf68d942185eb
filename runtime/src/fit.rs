//! Fitting any program with a scalar `loss` output (a detector head, a
//! probe) with lsc's autodiff and optimizers: the step program of
//! `lsc_passes::train::objective_step`, compiled once at fixed shapes, the
//! parameters and optimizer state resident between steps.

use crate::backend::{Executable, Loaded, RunOn};
use crate::checkpoint::zero_state;
use crate::error::RuntimeError;
use lsc_interp::{Tensors, Value};
use lsc_ir::{Bindings, Program};
use lsc_passes::train::{Optimizer, StepOptions};

/// A program being fitted.
pub struct Fitter {
    loaded: Box<dyn Loaded>,
    param_names: Vec<String>,
    state_names: Vec<String>,
    data_inputs: Vec<String>,
    optimizer: Optimizer,
    steps: u64,
}

impl Fitter {
    /// Compiles the step of `program` at the shapes `bindings` give its
    /// symbols, starting from `params` with zero optimizer state.
    pub fn new(
        program: &Program,
        opts: &StepOptions,
        params: &Tensors<f32>,
        on: RunOn,
        bindings: &Bindings,
    ) -> Result<Fitter, RuntimeError> {
        let step = lsc_passes::train::objective_step(program, opts).map_err(RuntimeError::Input)?;
        let step = crate::prepare::optimize_for_inference(&step)?;
        let exe = Executable::new(step, on)?;
        let mut loaded = exe.load(bindings)?;
        exe.set_params(loaded.as_mut(), params)?;
        let state = zero_state(params, |n| opts.optimizer.state_names(n));
        for (name, v) in &state {
            loaded.set(name, v)?;
        }
        let data_inputs = program.main.input_types().into_iter().map(|(n, _)| n.to_string()).collect();
        Ok(Fitter {
            loaded,
            param_names: params.keys().cloned().collect(),
            state_names: state.keys().cloned().collect(),
            data_inputs,
            optimizer: opts.optimizer,
            steps: 0,
        })
    }

    /// One step on `inputs` (every input of the program) at rate `lr`; returns the loss.
    pub fn step(&mut self, inputs: &Tensors<f32>, lr: f64) -> Result<f64, RuntimeError> {
        let l = self.loaded.as_mut();
        for name in &self.data_inputs {
            let v = inputs.get(name).ok_or_else(|| RuntimeError::Input(format!("missing input `{name}`")))?;
            l.set(name, v)?;
        }
        set_rate(l, self.optimizer, self.steps, lr)?;
        l.run()?;
        let loss = l.output("loss")?.to_f64_vec()[0];
        let norm = l.output("grad_norm")?.to_f64_vec()[0];
        if !loss.is_finite() || !norm.is_finite() {
            return Err(RuntimeError::Diverged(format!(
                "step {}: the loss is {loss} and the gradient norm {norm}",
                self.steps + 1
            )));
        }
        apply_update(l, &self.state_names)?;
        self.steps += 1;
        Ok(loss)
    }

    /// The current parameters.
    pub fn params(&self) -> Result<Tensors<f32>, RuntimeError> {
        self.param_names.iter().map(|n| Ok((n.clone(), self.loaded.get(n)?))).collect()
    }
}

/// Sets a step program's `lr` and, for AdamW, the bias corrections of step
/// `done + 1`.
pub(crate) fn set_rate(l: &mut dyn Loaded, optimizer: Optimizer, done: u64, lr: f64) -> Result<(), RuntimeError> {
    l.set("lr", &Value::floats(vec![], vec![lr as f32]))?;
    if let Optimizer::AdamW { beta1, beta2, .. } = optimizer {
        let n = (done + 1) as i32;
        l.set("adam.bc1", &Value::floats(vec![], vec![(1.0 - beta1.powi(n)) as f32]))?;
        l.set("adam.bc2", &Value::floats(vec![], vec![(1.0 - beta2.powi(n)) as f32]))?;
    }
    Ok(())
}

/// Makes a step's updated parameters (`param.{p}`) and optimizer state the
/// next step's; returns the names of the other outputs.
pub(crate) fn apply_update(l: &mut dyn Loaded, state_names: &[String]) -> Result<Vec<String>, RuntimeError> {
    let mut others = Vec::new();
    for name in l.output_names() {
        if let Some(p) = name.strip_prefix("param.") {
            l.feed_back(&name, p)?;
        } else if state_names.contains(&name) {
            l.feed_back(&name, &name)?;
        } else {
            others.push(name);
        }
    }
    Ok(others)
}
