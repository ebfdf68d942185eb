//! Which training checkpoints reach the disk. The weights after step N are
//! judged by the loss they give at step N+1, so a checkpoint is held in
//! memory until that loss is known and written only if it is sound: a
//! diverging run never replaces the newest good checkpoint with a worse one.

use crate::checkpoint::Checkpoint;
use crate::error::RuntimeError;
use crate::numerics::first_non_finite;
use std::path::{Path, PathBuf};

/// What one step's loss says about the weights that produced it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// An ordinary loss.
    Sound,
    /// Above `spike_factor` × the running mean: a warning, and the weights
    /// that produced it are not checkpointed.
    Spike {
        /// The step's loss.
        loss: f64,
        /// The running mean before it.
        mean: f64,
    },
    /// Non-finite, or above `diverge_factor` × the running mean: the run stops.
    Diverged {
        /// The step's loss.
        loss: f64,
        /// The running mean before it (NaN before the first step).
        mean: f64,
    },
}

/// The running mean of the loss and the rules that judge a new one.
#[derive(Clone, Debug)]
pub struct LossWatch {
    /// A loss above this multiple of the running mean is a spike.
    pub spike_factor: f64,
    /// A loss above this multiple of the running mean is divergence.
    pub diverge_factor: f64,
    /// Spikes are not counted before this step (the loss falls fast in warmup).
    pub warmup: u64,
    mean: Option<f64>,
}

impl LossWatch {
    /// A watch with no history yet.
    pub fn new(spike_factor: f64, diverge_factor: f64, warmup: u64) -> LossWatch {
        LossWatch { spike_factor, diverge_factor, warmup, mean: None }
    }

    /// The running mean (an exponential moving average, weight 0.05).
    pub fn mean(&self) -> Option<f64> {
        self.mean
    }

    /// Judges `loss`, computed at `step` by the weights of the step before, without
    /// recording it.
    pub fn judge(&self, step: u64, loss: f64) -> Verdict {
        let mean = self.mean.unwrap_or(f64::NAN);
        if !loss.is_finite() || self.mean.is_some_and(|m| loss > self.diverge_factor * m) {
            Verdict::Diverged { loss, mean }
        } else if step > self.warmup && self.mean.is_some_and(|m| loss > self.spike_factor * m) {
            Verdict::Spike { loss, mean }
        } else {
            Verdict::Sound
        }
    }

    /// Judges `loss` and adds it to the running mean unless it diverged.
    pub fn observe(&mut self, step: u64, loss: f64) -> Verdict {
        let verdict = self.judge(step, loss);
        if !matches!(verdict, Verdict::Diverged { .. }) {
            self.mean = Some(self.mean.map_or(loss, |m| 0.95 * m + 0.05 * loss));
        }
        verdict
    }
}

/// Holds the newest checkpoint until the next step vouches for it.
pub struct Keeper {
    path: PathBuf,
    pending: Option<Checkpoint>,
    on_disk: Option<u64>,
}

impl Keeper {
    /// A keeper writing to `path`, which already holds step `on_disk` (if any).
    pub fn new(path: &Path, on_disk: Option<u64>) -> Keeper {
        Keeper { path: path.to_path_buf(), pending: None, on_disk }
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The step the file on disk holds, if this run wrote or resumed it.
    pub fn on_disk(&self) -> Option<u64> {
        self.on_disk
    }

    /// Holds `ckpt` until [`Keeper::confirm`]. Weights or optimizer state that
    /// are not finite are refused at once, naming the tensor.
    pub fn hold(&mut self, ckpt: Checkpoint) -> Result<(), String> {
        for (kind, tensors) in [("parameter", &ckpt.params), ("optimizer state", &ckpt.state)] {
            if let Some(name) = first_non_finite(tensors) {
                return Err(format!("after step {} the {kind} `{name}` is not finite", ckpt.meta.step));
            }
        }
        self.pending = Some(ckpt);
        Ok(())
    }

    /// Writes the held checkpoint (atomically) and returns its step.
    pub fn confirm(&mut self) -> Result<Option<u64>, RuntimeError> {
        let Some(ckpt) = self.pending.take() else { return Ok(None) };
        ckpt.save(&self.path)?;
        self.on_disk = Some(ckpt.meta.step);
        Ok(self.on_disk)
    }

    /// Drops the held checkpoint, returning its step.
    pub fn discard(&mut self) -> Option<u64> {
        self.pending.take().map(|c| c.meta.step)
    }

    /// One sentence on what the file on disk holds, for messages about a stopped run.
    pub fn describe(&self) -> String {
        match self.on_disk {
            Some(step) => format!("{} holds step {step}, the newest good one", self.path.display()),
            None => format!("no checkpoint of this run was written to {}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_flags_spikes_after_warmup_and_divergence_always() {
        let mut w = LossWatch::new(1.5, 3.0, 2);
        assert_eq!(w.observe(1, 5.0), Verdict::Sound);
        assert_eq!(w.observe(2, 8.0), Verdict::Sound, "in warmup a rise is not a spike");
        let m = w.mean().unwrap();
        assert_eq!(w.observe(3, 1.6 * m), Verdict::Spike { loss: 1.6 * m, mean: m });
        let m = w.mean().unwrap();
        assert_eq!(w.observe(4, 3.5 * m), Verdict::Diverged { loss: 3.5 * m, mean: m });
        assert_eq!(w.mean(), Some(m), "a diverged loss does not move the mean");
        assert!(matches!(w.observe(5, f64::NAN), Verdict::Diverged { .. }));
        assert!(matches!(LossWatch::new(1.5, 3.0, 0).observe(1, f64::INFINITY), Verdict::Diverged { .. }));
    }
}
