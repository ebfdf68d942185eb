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

    /// The same schedule with its decay ending `steps` after its start: the
    /// cosine's `decay_end`, the wsd's `total` (its decay keeps its length, or
    /// all steps after warmup when shorter). `None` for schedules without a horizon.
    pub fn with_horizon(&self, steps: u64) -> Option<Schedule> {
        match *self {
            Schedule::Cosine { max_lr, min_lr, warmup, .. } => {
                Some(Schedule::Cosine { max_lr, min_lr, warmup, decay_end: steps })
            }
            Schedule::Wsd { max_lr, min_lr, warmup, decay, .. } => Some(Schedule::Wsd {
                max_lr,
                min_lr,
                warmup,
                decay: decay.min(steps.saturating_sub(warmup)),
                total: steps,
            }),
            Schedule::Constant { .. } | Schedule::InverseSqrt { .. } => None,
        }
    }

    /// The step (after the start) where the decay ends, for schedules that have one.
    pub fn horizon(&self) -> Option<u64> {
        match *self {
            Schedule::Cosine { decay_end, .. } => Some(decay_end),
            Schedule::Wsd { total, .. } => Some(total),
            Schedule::Constant { .. } | Schedule::InverseSqrt { .. } => None,
        }
    }

    /// The step (after the start) from which the rate depends on the horizon:
    /// the cosine's end of warmup, the wsd's start of decay.
    fn horizon_matters_from(&self) -> u64 {
        match *self {
            Schedule::Cosine { warmup, .. } => warmup,
            Schedule::Wsd { decay, total, .. } => total.saturating_sub(decay),
            Schedule::Constant { .. } | Schedule::InverseSqrt { .. } => 0,
        }
    }
}

/// The numbers a schedule is built from on the command line, so that a
/// resumed run can change one of them and keep the others.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleArgs {
    /// `constant`, `cosine`, `wsd` or `inverse-sqrt`.
    pub kind: String,
    /// Peak (or constant) rate.
    pub max_lr: f64,
    /// Floor of the decaying schedules.
    pub min_lr: f64,
    /// Warmup steps.
    pub warmup: u64,
    /// Decay length: the cosine's end, the wsd's final decay.
    pub decay: Option<u64>,
    /// The run's total steps (the default horizon).
    pub total: u64,
}

impl ScheduleArgs {
    /// The schedule these numbers describe.
    pub fn build(&self) -> Result<Schedule, String> {
        Schedule::from_cli(&self.kind, self.max_lr, self.min_lr, self.warmup, self.total, self.decay)
    }
}

impl Schedule {
    /// The command-line numbers that rebuild this schedule in a run of `total` steps.
    pub fn args(&self, total: u64) -> ScheduleArgs {
        let (kind, max_lr, min_lr, warmup, decay, total) = match *self {
            Schedule::Constant { lr } => ("constant", lr, lr, 0, None, total),
            Schedule::Cosine { max_lr, min_lr, warmup, decay_end } => {
                ("cosine", max_lr, min_lr, warmup, Some(decay_end), total)
            }
            Schedule::Wsd { max_lr, min_lr, warmup, decay, total } => {
                ("wsd", max_lr, min_lr, warmup, Some(decay), total)
            }
            Schedule::InverseSqrt { max_lr, warmup } => ("inverse-sqrt", max_lr, 0.0, warmup, None, total),
        };
        ScheduleArgs { kind: kind.to_string(), max_lr, min_lr, warmup, decay, total }
    }

    /// Warmup steps (0 for a constant rate).
    pub fn warmup(&self) -> u64 {
        match *self {
            Schedule::Constant { .. } => 0,
            Schedule::Cosine { warmup, .. } | Schedule::Wsd { warmup, .. } | Schedule::InverseSqrt { warmup, .. } => {
                warmup
            }
        }
    }

    /// Checks that every rate is finite and non-negative and the peak positive
    /// (a schedule read from a checkpoint is checked like one built from flags).
    pub fn validate(&self) -> Result<(), String> {
        let a = self.args(0);
        if !(a.max_lr.is_finite() && a.max_lr > 0.0) {
            return Err(format!("the learning rate {} is not a positive finite number", a.max_lr));
        }
        if !(a.min_lr.is_finite() && a.min_lr >= 0.0) {
            return Err(format!("the floor rate {} is not a finite number ≥ 0", a.min_lr));
        }
        Ok(())
    }
}

/// Fits a schedule's horizon to a time budget (`lsc train --fit-to-time`): the
/// number of steps is re-estimated from the measured time per step until the
/// rate starts to depend on it (the end of a cosine's warmup, the start of a
/// wsd's decay), then held, so that the decay ends when the time runs out.
#[derive(Clone, Debug)]
pub struct TimeFit {
    budget_s: f64,
    /// `(step, elapsed seconds)` when the first timed step ended: the first
    /// step of a run also warms caches and the allocator, so it is not timed.
    first: Option<(u64, f64)>,
    settled: bool,
}

/// The share of the budget the fitted schedule plans for; the rest absorbs
/// the machine's speed moving during the run and the final step's overrun.
const TIME_FIT_MARGIN: f64 = 0.98;

impl TimeFit {
    /// A fit to `budget_s` seconds, counted from the run's start.
    pub fn new(budget_s: f64) -> TimeFit {
        TimeFit { budget_s, first: None, settled: false }
    }

    /// After a step ends at `step` (`elapsed` seconds into the run): the
    /// schedule refitted to the steps that fit in the budget (never more than
    /// `max_steps`), or `None` once the horizon is settled or not yet measurable.
    /// `start` is the step where `schedule` began.
    pub fn refit(
        &mut self,
        schedule: &Schedule,
        start: u64,
        step: u64,
        elapsed: f64,
        max_steps: u64,
    ) -> Option<Schedule> {
        if self.settled {
            return None;
        }
        if step.saturating_sub(start) >= schedule.horizon_matters_from() && self.first.is_some() {
            self.settled = true;
            return None;
        }
        let (s0, t0) = *self.first.get_or_insert((step, elapsed));
        if step <= s0 {
            return None;
        }
        let per_step = (elapsed - t0) / (step - s0) as f64;
        let left = ((self.budget_s * TIME_FIT_MARGIN - elapsed) / per_step.max(1e-9)).max(0.0) as u64;
        let horizon = (step + left).min(max_steps).max(step + 1);
        schedule.with_horizon(horizon - start)
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

    #[test]
    fn args_rebuild_every_schedule() {
        for s in [
            Schedule::Constant { lr: 1e-3 },
            Schedule::Cosine { max_lr: 1e-3, min_lr: 1e-4, warmup: 10, decay_end: 70 },
            Schedule::Wsd { max_lr: 1e-3, min_lr: 0.0, warmup: 4, decay: 9, total: 50 },
            Schedule::InverseSqrt { max_lr: 2e-3, warmup: 7 },
        ] {
            assert_eq!(s.args(100).build(), Ok(s.clone()));
            assert_eq!(s.validate(), Ok(()));
        }
        assert!(Schedule::Constant { lr: f64::NAN }.validate().is_err());
        assert!(Schedule::Cosine { max_lr: 1e-3, min_lr: -1.0, warmup: 0, decay_end: 9 }.validate().is_err());
    }

    #[test]
    fn horizons_move_the_decay_end() {
        let c = Schedule::Cosine { max_lr: 1e-3, min_lr: 1e-4, warmup: 10, decay_end: 100 };
        assert_eq!(
            c.with_horizon(50),
            Some(Schedule::Cosine { max_lr: 1e-3, min_lr: 1e-4, warmup: 10, decay_end: 50 })
        );
        let w = Schedule::Wsd { max_lr: 1e-3, min_lr: 0.0, warmup: 10, decay: 40, total: 200 };
        assert_eq!(
            w.with_horizon(300),
            Some(Schedule::Wsd { max_lr: 1e-3, min_lr: 0.0, warmup: 10, decay: 40, total: 300 })
        );
        assert_eq!(
            w.with_horizon(30),
            Some(Schedule::Wsd { max_lr: 1e-3, min_lr: 0.0, warmup: 10, decay: 20, total: 30 })
        );
        assert_eq!(Schedule::Constant { lr: 1e-3 }.with_horizon(10), None);
    }

    #[test]
    fn time_fit_follows_the_speed_until_the_decay_starts() {
        // A 100 s budget plans for 98 s: at 1.5 s per step, 63 more steps after step 2.
        let mut fit = TimeFit::new(100.0);
        let mut s = Schedule::Wsd { max_lr: 1e-3, min_lr: 0.0, warmup: 0, decay: 20, total: 1000 };
        assert_eq!(fit.refit(&s, 0, 1, 1.0, 1000), None);
        s = fit.refit(&s, 0, 2, 2.5, 1000).unwrap();
        assert_eq!(s, Schedule::Wsd { max_lr: 1e-3, min_lr: 0.0, warmup: 0, decay: 20, total: 65 });
        // The machine slows (1.8 s per step on average): the horizon comes in.
        s = fit.refit(&s, 0, 11, 19.0, 1000).unwrap();
        assert_eq!(s, Schedule::Wsd { max_lr: 1e-3, min_lr: 0.0, warmup: 0, decay: 20, total: 11 + 43 });
        // Never past --steps.
        assert_eq!(fit.clone().refit(&s, 0, 12, 12.5, 40), s.with_horizon(40));
        // Once the decay has begun the horizon holds.
        assert_eq!(fit.refit(&s, 0, 34, 60.0, 1000), None);
        assert_eq!(fit.refit(&s, 0, 35, 61.0, 1000), None);
    }

    #[test]
    fn time_fit_of_a_cosine_settles_after_warmup() {
        let mut fit = TimeFit::new(10.0);
        let c = Schedule::Cosine { max_lr: 1e-3, min_lr: 0.0, warmup: 3, decay_end: 1000 };
        assert_eq!(fit.refit(&c, 0, 1, 0.5, 1000), None);
        // 0.25 s per step, 9.8 s planned: 36 more steps after step 2 at 0.75 s.
        assert_eq!(fit.refit(&c, 0, 2, 0.75, 1000), c.with_horizon(2 + 36));
        assert_eq!(fit.refit(&c, 0, 3, 0.7, 1000), None);
    }
}
