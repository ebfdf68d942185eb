//! Flatness of a language model's loss at given weights, from exact
//! Hessian-vector products (`lsc_passes::hessian`): the Hessian trace by
//! Hutchinson's estimator, the top eigenvalue by power iteration, and the
//! Fisher-trace estimator of Liu et al. (squared gradient norms with the
//! labels sampled from the model).
//!
//! The loss is the training loss, the mean next-token cross-entropy over a
//! batch of `B × T` tokens, so every estimate is of the per-token
//! population loss's Hessian (a batch's Hessian is an unbiased estimate of it).

use crate::backend::{Executable, Loaded, RunOn};
use crate::error::RuntimeError;
use crate::init::Rng;
use lsc_interp::{Tensors, Value};
use lsc_ir::Program;
use lsc_passes::hessian::{direction_input, gradient_program, hessian_vector_program};

/// A batch of `batch × seq` input ids and their next-token targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Input ids, row-major.
    pub ids: Vec<i64>,
    /// Targets (the next token of each input).
    pub targets: Vec<i64>,
}

/// A Monte-Carlo estimate: the mean of independent samples and its 95 %
/// confidence half-width (normal approximation, `1.96·s/√n`).
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// The sample mean.
    pub mean: f64,
    /// Half the width of the 95 % confidence interval (`NaN` for one sample).
    pub half_width: f64,
    /// The samples.
    pub samples: Vec<f64>,
}

impl Estimate {
    /// The estimate from independent samples.
    pub fn from_samples(samples: Vec<f64>) -> Estimate {
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Estimate { mean, half_width: 1.96 * (var / n).sqrt(), samples }
    }
}

/// The result of power iteration on the Hessian of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct TopEigenvalue {
    /// The Rayleigh quotient `vᵀHv` of the last iterate: the largest eigenvalue.
    pub value: f64,
    /// The Rayleigh quotient after each iteration (of the shifted pass, if one ran).
    pub history: Vec<f64>,
}

impl TopEigenvalue {
    /// `|λ_k − λ_{k−1}| / |λ_k|` at the last iteration.
    pub fn relative_change(&self) -> f64 {
        match self.history[..] {
            [.., a, b] => (b - a).abs() / b.abs().max(f64::MIN_POSITIVE),
            _ => f64::NAN,
        }
    }
}

/// The curvature programs of one model at fixed batch shape, compiled once:
/// the forward pass (for sampled labels), the loss's gradient and its
/// Hessian-vector product.
pub struct Curvature {
    forward: Box<dyn Loaded>,
    gradient: Box<dyn Loaded>,
    hvp: Box<dyn Loaded>,
    /// Every parameter's name and shape, in the programs' order.
    params: Vec<(String, Vec<usize>)>,
    batch: usize,
    seq: usize,
}

/// `program` saturated (fused kernels for the second-order graph too: 1.2× on a
/// `transformer/small` HVP, measured with `lsc flatness`) and loaded at `B × T`.
fn run_on_shape(
    program: Program,
    on: RunOn,
    batch: usize,
    seq: usize,
    params: &Tensors<f32>,
) -> Result<Box<dyn Loaded>, RuntimeError> {
    let program = crate::prepare::optimize_for_inference(&program)?;
    Executable::new(program, on)?.load_with(batch, seq, params)
}

impl Curvature {
    /// Compiles the programs of `forward` (a graph with `input_ids` and
    /// `logits`) for batches of `batch × seq` and sets `params`.
    pub fn new(
        forward: &Program,
        params: &Tensors<f32>,
        on: impl Into<RunOn>,
        batch: usize,
        seq: usize,
    ) -> Result<Curvature, RuntimeError> {
        let on = on.into();
        let hvp_program = hessian_vector_program(forward).map_err(RuntimeError::Input)?;
        let mut names = Vec::new();
        for (_, name) in hvp_program.main.params() {
            let v = params.get(name).ok_or_else(|| RuntimeError::Input(format!("missing parameter `{name}`")))?;
            names.push((name.to_string(), v.shape.clone()));
        }
        let gradient = gradient_program(forward).map_err(RuntimeError::Input)?;
        let mut forward_only = forward.clone();
        forward_only.main.outputs.retain(|(n, _)| n == "logits");
        Ok(Curvature {
            forward: run_on_shape(forward_only, on, batch, seq, params)?,
            gradient: run_on_shape(gradient, on, batch, seq, params)?,
            hvp: run_on_shape(hvp_program, on, batch, seq, params)?,
            params: names,
            batch,
            seq,
        })
    }

    /// Replaces the parameters (the programs stay compiled).
    pub fn set_params(&mut self, params: &Tensors<f32>) -> Result<(), RuntimeError> {
        for (name, _) in &self.params {
            let v = params.get(name).ok_or_else(|| RuntimeError::Input(format!("missing parameter `{name}`")))?;
            for l in [&mut self.forward, &mut self.gradient, &mut self.hvp] {
                if l.has(name) {
                    l.set(name, v)?;
                }
            }
        }
        Ok(())
    }

    /// The number of parameters (the Hessian's side).
    pub fn dimension(&self) -> usize {
        self.params.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// A symmetric linear operator `v ↦ Av` (a Hessian-vector product, say).
pub type Operator<'a> = dyn FnMut(&[f32]) -> Result<Vec<f32>, RuntimeError> + 'a;

/// The largest eigenvalue of the symmetric `n × n` operator `apply`, by power
/// iteration `v ← (A − σI)v / ‖(A − σI)v‖` from a random start, `iterations`
/// times: first with σ = 0, which finds the eigenvalue of largest magnitude;
/// if that one is negative (a batch's Hessian is indefinite), again with σ at
/// it, which makes the largest eigenvalue the dominant one.
pub fn largest_eigenvalue(
    apply: &mut Operator,
    n: usize,
    iterations: usize,
    rng: &mut Rng,
    progress: &mut dyn FnMut(),
) -> Result<TopEigenvalue, RuntimeError> {
    let mut history = power_iteration(apply, n, iterations, 0.0, rng, progress)?;
    let dominant = history.last().copied().unwrap_or(0.0);
    if dominant < 0.0 {
        history = power_iteration(apply, n, iterations, dominant, rng, progress)?;
    }
    let value = history.last().copied().unwrap_or(0.0);
    if !value.is_finite() {
        return Err(RuntimeError::Diverged(format!("power iteration reached a non-finite eigenvalue ({value})")));
    }
    Ok(TopEigenvalue { value, history })
}

/// The Rayleigh quotients `vᵀAv` of power iteration on `A − shift·I`.
fn power_iteration(
    apply: &mut Operator,
    n: usize,
    iterations: usize,
    shift: f64,
    rng: &mut Rng,
    progress: &mut dyn FnMut(),
) -> Result<Vec<f64>, RuntimeError> {
    let mut v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    normalize(&mut v);
    let mut history = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let mut av = apply(&v)?;
        history.push(dot(&v, &av));
        av.iter_mut().zip(&v).for_each(|(a, x)| *a -= (shift * *x as f64) as f32);
        if normalize(&mut av) == 0.0 {
            break;
        }
        v = av;
        progress();
    }
    Ok(history)
}

/// Sets `input_ids` (and `targets`) of a program loaded at `B = b`, `T = t`.
fn set_batch(
    l: &mut dyn Loaded,
    (b, t): (usize, usize),
    ids: &[i64],
    targets: Option<&[i64]>,
) -> Result<(), RuntimeError> {
    if ids.len() != b * t || targets.is_some_and(|x| x.len() != b * t) {
        return Err(RuntimeError::Input(format!("a curvature batch must hold {b} × {t} ids and targets")));
    }
    l.set("input_ids", &Value::ints(vec![b, t], ids.to_vec()))?;
    if let Some(targets) = targets {
        l.set("targets", &Value::ints(vec![b, t], targets.to_vec()))?;
    }
    Ok(())
}

impl Curvature {
    /// `(loss, H·v)` on `batch`, with `v` flattened in parameter order.
    pub fn hessian_vector(&mut self, batch: &Batch, v: &[f32]) -> Result<(f64, Vec<f32>), RuntimeError> {
        if v.len() != self.dimension() {
            return Err(RuntimeError::Input(format!(
                "a direction of {} values for {} parameters",
                v.len(),
                self.dimension()
            )));
        }
        let hvp = self.hvp.as_mut();
        set_batch(hvp, (self.batch, self.seq), &batch.ids, Some(&batch.targets))?;
        let mut at = 0;
        for (name, shape) in &self.params {
            let n: usize = shape.iter().product();
            hvp.set(&direction_input(name), &Value::floats(shape.clone(), v[at..at + n].to_vec()))?;
            at += n;
        }
        hvp.run()?;
        let loss = hvp.output("loss")?.to_f64_vec()[0];
        let mut out = Vec::with_capacity(v.len());
        for (name, _) in &self.params {
            out.extend(hvp.output(&format!("hvp.{name}"))?.as_floats().unwrap_or_default());
        }
        Ok((loss, out))
    }

    /// `(loss, ∇L)` on `ids` with `targets`, the gradient flattened in parameter order.
    pub fn gradient(&mut self, ids: &[i64], targets: &[i64]) -> Result<(f64, Vec<f32>), RuntimeError> {
        let g = self.gradient.as_mut();
        set_batch(g, (self.batch, self.seq), ids, Some(targets))?;
        g.run()?;
        let loss = g.output("loss")?.to_f64_vec()[0];
        let mut out = Vec::new();
        for (name, _) in &self.params {
            out.extend(g.output(&format!("grad.{name}"))?.as_floats().unwrap_or_default());
        }
        Ok((loss, out))
    }

    /// Hutchinson's estimator: `E[vᵀHv] = Tr(H)` for Rademacher `v`, one
    /// fresh batch from `next_batch` per probe.
    pub fn hutchinson(
        &mut self,
        next_batch: &mut dyn FnMut() -> Result<Batch, RuntimeError>,
        probes: usize,
        rng: &mut Rng,
        progress: &mut dyn FnMut(),
    ) -> Result<Estimate, RuntimeError> {
        let n = self.dimension();
        let mut samples = Vec::with_capacity(probes);
        for _ in 0..probes {
            let v: Vec<f32> = (0..n).map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 }).collect();
            let (_, hv) = self.hessian_vector(&next_batch()?, &v)?;
            samples.push(dot(&v, &hv));
            progress();
        }
        finite(Estimate::from_samples(samples), "Hutchinson's trace")
    }

    /// The largest eigenvalue of the Hessian of one batch (see [`largest_eigenvalue`]).
    pub fn top_eigenvalue(
        &mut self,
        batch: &Batch,
        iterations: usize,
        rng: &mut Rng,
        progress: &mut dyn FnMut(),
    ) -> Result<TopEigenvalue, RuntimeError> {
        let n = self.dimension();
        largest_eigenvalue(&mut |v| Ok(self.hessian_vector(batch, v)?.1), n, iterations, rng, progress)
    }

    /// The Fisher trace `E_x E_{ŷ∼p_θ(·|x)} ‖∇ log p_θ(ŷ|x)‖²` (per token), the
    /// estimator of Liu et al. (at a minimum of the cross-entropy, the Fisher
    /// equals the Hessian). Each batch gives `N·‖∇L̂‖²`, where `L̂` is the mean
    /// loss of its `N = B·T` tokens at labels sampled from the model: the
    /// cross terms vanish in expectation (the score has mean zero and the
    /// labels are drawn independently), so it is unbiased without per-example
    /// gradients.
    pub fn fisher_trace(
        &mut self,
        next_batch: &mut dyn FnMut() -> Result<Batch, RuntimeError>,
        batches: usize,
        rng: &mut Rng,
        progress: &mut dyn FnMut(),
    ) -> Result<Estimate, RuntimeError> {
        let tokens = (self.batch * self.seq) as f64;
        let mut samples = Vec::with_capacity(batches);
        for _ in 0..batches {
            let b = next_batch()?;
            let sampled = self.sample_labels(&b.ids, rng)?;
            let (_, g) = self.gradient(&b.ids, &sampled)?;
            samples.push(tokens * dot(&g, &g));
            progress();
        }
        finite(Estimate::from_samples(samples), "the Fisher trace")
    }

    /// One label per position drawn from the model's next-token distribution.
    fn sample_labels(&mut self, ids: &[i64], rng: &mut Rng) -> Result<Vec<i64>, RuntimeError> {
        let f = self.forward.as_mut();
        set_batch(f, (self.batch, self.seq), ids, None)?;
        f.run()?;
        let logits = f.output("logits")?;
        crate::generate::check_finite(&logits)?;
        let vocab = *logits.shape.last().unwrap_or(&1);
        let data = logits.as_floats().unwrap_or_default();
        Ok(data.chunks(vocab).map(|row| rng.categorical(&crate::generate::softmax(row)) as i64).collect())
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Scales `v` to unit length; returns its former norm.
fn normalize(v: &mut [f32]) -> f64 {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
    norm
}

fn finite(e: Estimate, what: &str) -> Result<Estimate, RuntimeError> {
    if e.samples.iter().all(|x| x.is_finite()) {
        Ok(e)
    } else {
        Err(RuntimeError::Diverged(format!(
            "{what} has a non-finite sample: the weights give a non-finite loss or gradient"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `diag(−5, 3, 1, 0.5)`: power iteration alone finds −5; the shifted pass, 3.
    #[test]
    fn the_largest_eigenvalue_of_an_indefinite_operator() {
        let d = [-5.0f32, 3.0, 1.0, 0.5];
        let mut apply = |v: &[f32]| Ok(v.iter().zip(&d).map(|(x, l)| x * l).collect());
        let top = largest_eigenvalue(&mut apply, 4, 200, &mut Rng::new(1), &mut || ()).unwrap();
        assert!((top.value - 3.0).abs() < 1e-4, "{}", top.value);
        let positive = [5.0f32, 3.0, -1.0, 0.5];
        let mut apply = |v: &[f32]| Ok(v.iter().zip(&positive).map(|(x, l)| x * l).collect());
        let top = largest_eigenvalue(&mut apply, 4, 200, &mut Rng::new(1), &mut || ()).unwrap();
        assert!((top.value - 5.0).abs() < 1e-4 && top.history.len() == 200, "{:?}", top.value);
    }

    #[test]
    fn estimates_have_a_mean_and_an_interval() {
        let e = Estimate::from_samples(vec![1.0, 2.0, 3.0]);
        assert_eq!(e.mean, 2.0);
        assert!((e.half_width - 1.96 / 3f64.sqrt()).abs() < 1e-12);
    }
}
