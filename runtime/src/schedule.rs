//! Learning-rate schedules. A schedule is a function of the number of steps
//! since it started, so re-warming (`--resume CKPT --rewarm`) simply starts a
//! new schedule at the resumed step.

/// A learning-rate schedule.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// A fixed learning rate.
    Constant {
        /// The rate.
        lr: f64,
    },
    /// Linear warmup from 0 to `max_lr`, then cosine decay to `min_lr` at
    /// `decay_end`, constant after that.
    Cosine {
        /// Peak rate.
        max_lr: f64,
        /// Floor.
        min_lr: f64,
        /// Warmup steps.
        warmup: u64,
        /// Step where the decay ends.
        decay_end: u64,
    },
    /// Warmup–stable–decay: linear warmup, constant `max_lr`, then a linear
    /// decay to `min_lr` over the last `decay` steps before `total`.
    Wsd {
        /// Peak rate.
        max_lr: f64,
        /// Floor.
        min_lr: f64,
        /// Warmup steps.
        warmup: u64,
        /// Decay steps.
        decay: u64,
        /// Total steps.
        total: u64,
    },
    /// Linear warmup, then `max_lr · sqrt(warmup / step)`.
    InverseSqrt {
        /// Peak rate.
        max_lr: f64,
        /// Warmup steps (at least 1).
        warmup: u64,
    },
}

fn warm(max_lr: f64, warmup: u64, s: u64) -> Option<f64> {
    (s < warmup).then(|| max_lr * (s + 1) as f64 / warmup as f64)
}

impl Schedule {
    /// The learning rate `s` steps after the schedule started.
    pub fn lr(&self, s: u64) -> f64 {
        match *self {
            Schedule::Constant { lr } => lr,
            Schedule::Cosine { max_lr, min_lr, warmup, decay_end } => warm(max_lr, warmup, s).unwrap_or_else(|| {
                if s >= decay_end || decay_end <= warmup {
                    return min_lr;
                }
                let progress = (s - warmup) as f64 / (decay_end - warmup) as f64;
                min_lr + 0.5 * (max_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }),
            Schedule::Wsd { max_lr, min_lr, warmup, decay, total } => warm(max_lr, warmup, s).unwrap_or_else(|| {
                let decay_start = total.saturating_sub(decay);
                if s < decay_start {
                    max_lr
                } else if s >= total || decay == 0 {
                    min_lr
                } else {
                    max_lr + (min_lr - max_lr) * (s - decay_start) as f64 / decay as f64
                }
            }),
            Schedule::InverseSqrt { max_lr, warmup } => {
                let warmup = warmup.max(1);
                warm(max_lr, warmup, s).unwrap_or_else(|| max_lr * (warmup as f64 / (s + 1) as f64).sqrt())
            }
        }
    }

    /// Parses `--schedule` with its numbers: `constant`, `cosine`, `wsd`, `inverse-sqrt`.
    pub fn from_cli(
        kind: &str,
        max_lr: f64,
        min_lr: f64,
        warmup: u64,
        total: u64,
        decay: Option<u64>,
    ) -> Result<Schedule, String> {
        Ok(match kind {
            "constant" => Schedule::Constant { lr: max_lr },
            "cosine" => Schedule::Cosine { max_lr, min_lr, warmup, decay_end: decay.unwrap_or(total) },
            "wsd" => Schedule::Wsd { max_lr, min_lr, warmup, decay: decay.unwrap_or(total / 5), total },
            "inverse-sqrt" => Schedule::InverseSqrt { max_lr, warmup },
            other => return Err(format!("unknown schedule `{other}`; use constant, cosine, wsd or inverse-sqrt")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn cosine_warms_up_decays_and_holds_the_floor() {
        let s = Schedule::Cosine { max_lr: 1e-3, min_lr: 1e-4, warmup: 10, decay_end: 110 };
        close(s.lr(0), 1e-4);
        close(s.lr(9), 1e-3);
        close(s.lr(10), 1e-3);
        close(s.lr(60), 1e-4 + 0.5 * 9e-4);
        close(s.lr(110), 1e-4);
        close(s.lr(500), 1e-4);
    }

    #[test]
    fn wsd_is_flat_then_decays_linearly() {
        let s = Schedule::Wsd { max_lr: 2e-3, min_lr: 0.0, warmup: 4, decay: 20, total: 100 };
        close(s.lr(1), 1e-3);
        close(s.lr(50), 2e-3);
        close(s.lr(79), 2e-3);
        close(s.lr(90), 1e-3);
        close(s.lr(100), 0.0);
    }

    #[test]
    fn inverse_sqrt_and_constant() {
        let s = Schedule::InverseSqrt { max_lr: 1e-3, warmup: 100 };
        close(s.lr(99), 1e-3);
        close(s.lr(399), 5e-4);
        close(Schedule::Constant { lr: 3e-4 }.lr(12345), 3e-4);
    }
}
