//! The training loop's state machine: one compiled training-step graph, the
//! parameters and optimizer state, the data sampler and the LR schedule.
//! Everything that affects the next step is in a [`Checkpoint`], so a resumed
//! run continues bit for bit.

use crate::backend::Loaded;
use crate::checkpoint::{zero_state, Checkpoint, CheckpointMeta};
use crate::data::Sampler;
use crate::error::RuntimeError;
use crate::schedule::Schedule;
use lsc_interp::{Tensors, Value};
use lsc_ir::Program;
use lsc_passes::train::{Optimizer, StepOptions};
use serde::{Deserialize, Serialize};

/// A whole training run's configuration (saved in every checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Built-in model name.
    pub model: String,
    /// Its config.
    pub config: String,
    /// `synthetic`, a corpus name or a text file.
    pub data: String,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Steps to train (total, including resumed ones).
    pub steps: u64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Optimizer.
    pub optimizer: Optimizer,
    /// Global-norm gradient clipping.
    pub clip_norm: Option<f64>,
    /// Weight decay on norms, biases and embeddings too.
    pub decay_all: bool,
    /// Seed of initialisation and data sampling.
    pub seed: u64,
    /// Extra loss terms (output name, weight), e.g. MoR's router loss.
    pub loss_terms: Vec<(String, f64)>,
    /// `bytes` or `bpe`.
    pub tokenizer: String,
    /// Vocabulary size the model was built with.
    pub vocab: usize,
    /// Equality saturation of the step (off: the primitive graph, for ablations).
    #[serde(default = "fuse_by_default")]
    pub fuse: bool,
    /// What runs the step.
    #[serde(default)]
    pub backend: crate::backend::Backend,
    /// The precision of the step's matrix products (bf16 on the GPU backends).
    #[serde(default)]
    pub precision: crate::target::gpu::Precision,
    /// Recompute called functions' forward values in the backward
    /// ([`StepOptions::recompute_calls`]) instead of keeping them.
    #[serde(default)]
    pub recompute_calls: bool,
}

impl TrainConfig {
    /// Where the step runs.
    pub fn run_on(&self) -> crate::backend::RunOn {
        crate::backend::RunOn { backend: self.backend, precision: self.precision }
    }

    /// Checks every setting as the command line would: settings read from a
    /// checkpoint are not trusted more than flags. The error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |name: &str, x: f64| {
            if (0.0..1.0).contains(&x) {
                Ok(())
            } else {
                Err(format!("{name} is {x}, outside [0, 1)"))
            }
        };
        let non_negative = |name: &str, x: f64| {
            if x.is_finite() && x >= 0.0 {
                Ok(())
            } else {
                Err(format!("{name} is {x}, not a finite number ≥ 0"))
            }
        };
        for (name, n) in [("batch", self.batch), ("seq", self.seq), ("vocab", self.vocab)] {
            if n == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        if self.steps == 0 {
            return Err("steps is 0".into());
        }
        self.schedule.validate().map_err(|e| format!("schedule: {e}"))?;
        match self.optimizer {
            Optimizer::AdamW { beta1, beta2, eps, weight_decay } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(format!("eps is {eps}, not a positive finite number"));
                }
                non_negative("weight_decay", weight_decay)?;
            }
            Optimizer::Sgd { momentum, weight_decay } => {
                unit("momentum", momentum)?;
                non_negative("weight_decay", weight_decay)?;
            }
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("clip_norm is {c}, not a positive finite number"));
            }
        }
        for (name, w) in &self.loss_terms {
            if !w.is_finite() {
                return Err(format!("the weight of loss term `{name}` is {w}"));
            }
        }
        Ok(())
    }

    /// What the training-step graph is built with.
    pub fn step_options(&self) -> StepOptions {
        StepOptions {
            optimizer: self.optimizer,
            clip_norm: self.clip_norm,
            decay_all: self.decay_all,
            loss_terms: self.loss_terms.clone(),
            recompute_calls: self.recompute_calls,
        }
    }
}

fn fuse_by_default() -> bool {
    true
}

/// What one step reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// The step just taken (1-based).
    pub step: u64,
    /// Total loss (LM + weighted extra terms).
    pub loss: f64,
    /// LM cross-entropy.
    pub lm_loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Monitor outputs (`max_logit.*`, auxiliary losses), flattened to scalars.
    pub monitors: Vec<(String, Vec<f64>)>,
}

/// The training state: the step program loaded on its backend, where the
/// parameters and optimizer state stay between steps.
pub struct Trainer {
    /// The configuration.
    pub cfg: TrainConfig,
    step_program: crate::backend::Executable,
    loaded: Box<dyn Loaded>,
    param_names: Vec<String>,
    state_names: Vec<String>,
    /// Steps taken.
    pub step: u64,
    /// Where the current schedule began.
    pub schedule_start: u64,
    sampler: Sampler,
    optimizer: Optimizer,
    /// Steps taken since [`Trainer::enable_profile`].
    profiled_steps: u64,
}

impl Trainer {
    /// A fresh run from initial parameters.
    pub fn new(cfg: TrainConfig, forward: &Program, params: Tensors<f32>) -> Result<Trainer, RuntimeError> {
        let optimizer = cfg.optimizer;
        let state = zero_state(&params, |n| optimizer.state_names(n));
        Trainer::assemble(cfg, forward, params, state, 0, 0, 0)
    }

    /// Continues from a checkpoint. With `rewarm`, `cfg.schedule` starts anew at
    /// the checkpoint's step; with `reset_optimizer`, the moments start at zero.
    pub fn resume(
        cfg: TrainConfig,
        forward: &Program,
        ckpt: Checkpoint,
        rewarm: bool,
        reset_optimizer: bool,
    ) -> Result<Trainer, RuntimeError> {
        let optimizer = cfg.optimizer;
        let state = if reset_optimizer { zero_state(&ckpt.params, |n| optimizer.state_names(n)) } else { ckpt.state };
        let start = if rewarm { ckpt.meta.step } else { ckpt.meta.schedule_start };
        Trainer::assemble(cfg, forward, ckpt.params, state, ckpt.meta.step, start, ckpt.meta.data_draws)
    }

    fn assemble(
        cfg: TrainConfig,
        forward: &Program,
        params: Tensors<f32>,
        state: Tensors<f32>,
        step: u64,
        schedule_start: u64,
        draws: u64,
    ) -> Result<Trainer, RuntimeError> {
        let optimizer = cfg.optimizer;
        let opts = cfg.step_options();
        // egg(forward) → autodiff → egg(training step), as the compiler pipeline prescribes.
        let step_program = if cfg.fuse {
            let (machine, _) = crate::calibrate::machine()?;
            let sat = lsc_passes::saturate::Config { machine, ..Default::default() };
            lsc_passes::saturate::optimize_training_step(forward, &opts, &sat).map_err(RuntimeError::Input)?.0
        } else {
            lsc_passes::train::training_step(forward, &opts).map_err(RuntimeError::Input)?
        };
        let step_program = crate::backend::Executable::new(step_program, cfg.run_on())?;
        let mut loaded = step_program.load_with(cfg.batch, cfg.seq, &params)?;
        for (name, v) in &state {
            loaded.set(name, v)?;
        }
        let param_names = params.keys().cloned().collect();
        let state_names = state.keys().cloned().collect();
        let sampler = Sampler::new(cfg.seed ^ 0xda7a);
        let mut t = Trainer {
            cfg,
            step_program,
            loaded,
            param_names,
            state_names,
            step,
            schedule_start,
            sampler,
            optimizer,
            profiled_steps: 0,
        };
        t.sampler.skip(draws, t.cfg.batch);
        // The host copies of the parameters and state are gone once loaded.
        drop((params, state));
        crate::allocator::release_free_memory();
        Ok(t)
    }

    /// Records the time per op kind of every later step (see [`Trainer::profile`]).
    pub fn enable_profile(&mut self) {
        self.loaded.enable_profile();
    }

    /// `(op, calls, seconds)` per step since [`Trainer::enable_profile`], slowest first.
    pub fn profile(&self) -> Vec<(String, usize, f64)> {
        let steps = self.profiled_steps.max(1);
        self.loaded.profile().into_iter().map(|(op, n, t)| (op, n / steps as usize, t / steps as f64)).collect()
    }

    /// The training-step program (for inspection and `lsc compile --train`).
    pub fn step_program(&self) -> &Program {
        self.step_program.program()
    }

    /// How many generated kernels a step launches.
    pub fn generated_kernels(&self) -> usize {
        self.loaded.plan().map_or(0, |p| p.kernel_count())
    }

    /// The current parameters.
    pub fn params(&self) -> Result<Tensors<f32>, RuntimeError> {
        self.param_names.iter().map(|n| Ok((n.clone(), self.loaded.get(n)?))).collect()
    }

    /// The current optimizer state.
    pub fn state(&self) -> Result<Tensors<f32>, RuntimeError> {
        self.state_names.iter().map(|n| Ok((n.clone(), self.loaded.get(n)?))).collect()
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.cfg.schedule.lr(self.step - self.schedule_start)
    }

    /// Takes one step on a batch drawn from `tokens`. A non-finite loss or
    /// gradient leaves parameters and state untouched and returns an error.
    pub fn step(&mut self, tokens: &[u32]) -> Result<StepStats, RuntimeError> {
        let (ids, targets) = self.sampler.next(tokens, self.cfg.batch, self.cfg.seq)?;
        self.step_on(ids, targets)
    }

    /// Takes one step on a batch the caller made (`batch × seq` input ids and
    /// their targets), e.g. sentences sampled on the fly; the data position in
    /// a checkpoint then says nothing about it.
    pub fn step_on(&mut self, ids: Vec<i64>, targets: Vec<i64>) -> Result<StepStats, RuntimeError> {
        let (b, t) = (self.cfg.batch, self.cfg.seq);
        if ids.len() != b * t || targets.len() != b * t {
            return Err(RuntimeError::Input(format!("a training batch must hold {b} × {t} ids and targets")));
        }
        let lr = self.lr();
        let l = self.loaded.as_mut();
        l.set("input_ids", &Value::ints(vec![b, t], ids))?;
        l.set("targets", &Value::ints(vec![b, t], targets))?;
        crate::fit::set_rate(l, self.optimizer, self.step, lr)?;
        l.run()?;
        self.profiled_steps += 1;
        let scalar = |name: &str| l.output(name).map(|v| v.to_f64_vec()[0]).unwrap_or(f64::NAN);
        let (loss, lm_loss, grad_norm) = (scalar("loss"), scalar("lm_loss"), scalar("grad_norm"));
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(RuntimeError::Diverged(format!(
                "step {}: the loss is {loss} and the gradient norm {grad_norm}",
                self.step + 1
            )));
        }
        let mut monitors = Vec::new();
        for name in crate::fit::apply_update(l, &self.state_names)? {
            if !matches!(name.as_str(), "loss" | "lm_loss" | "grad_norm") {
                monitors.push((name.clone(), l.output(&name)?.to_f64_vec()));
            }
        }
        self.step += 1;
        Ok(StepStats { step: self.step, loss, lm_loss, grad_norm, lr, monitors })
    }

    /// The checkpoint of the current state (with the BPE tokenizer's JSON, if any).
    pub fn checkpoint(&self, tokenizer: Option<String>) -> Result<Checkpoint, RuntimeError> {
        Ok(Checkpoint {
            tokenizer,
            params: self.params()?,
            state: self.state()?,
            meta: CheckpointMeta {
                step: self.step,
                schedule_start: self.schedule_start,
                data_draws: self.sampler.draws,
                train: serde_json::to_value(&self.cfg).unwrap_or_default(),
                lsc_version: env!("CARGO_PKG_VERSION").to_string(),
            },
        })
    }
}
