//! Learning-rate schedules, evaluated per optimiser step.
//!
//! The train loop asks for the rate of every step instead of stepping a stateful scheduler, so a
//! resumed run only needs the step counter to land on exactly the same rate. All schedules share a
//! linear warm-up from `warmup_lr` to the base rate over `warmup_epochs · steps_per_epoch` steps
//! (timm's warm-up: the rate at step `s < W` is `warmup_lr + (base − warmup_lr)·s/W`).
//!
//! `cosine` is a single half-period from the base rate to `min_lr` over the steps left after
//! warm-up, with no restarts. The blog's template steps `CosineAnnealingLR(T_max = 20)` once per
//! epoch over 300 epochs, which makes the rate oscillate with a 40-epoch period; that is a bug we
//! do not reproduce.

use crate::field::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the learning rate evolves over training (`train.schedule` in the spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warm-up, then one cosine half-period from the base rate down to `min_lr`.
    Cosine(CosineSchedule),
    /// Linear warm-up, then the base rate until the end.
    Constant(ConstantSchedule),
    /// Linear warm-up, then the base rate multiplied by `gamma` every `step_epochs` epochs.
    Step(StepSchedule),
}

/// Parameters of [`Schedule::Cosine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CosineSchedule {
    /// Rate reached at the end of training.
    #[serde(default = "default_min_lr")]
    pub min_lr: f64,
    /// Length of the linear warm-up in epochs (fractions allowed).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// Rate at the first warm-up step.
    #[serde(default)]
    pub warmup_lr: f64,
}

/// Parameters of [`Schedule::Constant`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstantSchedule {
    /// Length of the linear warm-up in epochs (fractions allowed).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// Rate at the first warm-up step.
    #[serde(default)]
    pub warmup_lr: f64,
}

/// Parameters of [`Schedule::Step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSchedule {
    /// The rate is multiplied by `gamma` at every multiple of this many epochs (counted from the
    /// start of training, warm-up included, like `torch.optim.lr_scheduler.StepLR`).
    pub step_epochs: u64,
    /// Multiplier applied at each boundary.
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Length of the linear warm-up in epochs (fractions allowed).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// Rate at the first warm-up step.
    #[serde(default)]
    pub warmup_lr: f64,
}

fn default_min_lr() -> f64 {
    1e-6
}

fn default_gamma() -> f64 {
    0.1
}

impl Default for CosineSchedule {
    fn default() -> Self {
        Self {
            min_lr: default_min_lr(),
            warmup_epochs: 0.0,
            warmup_lr: 0.0,
        }
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Cosine(CosineSchedule::default())
    }
}

impl Schedule {
    /// Checks the parameters; the error is the message tail after `train.schedule.`,
    /// e.g. `cosine.min_lr: must be ≥ 0 (got -1)`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let (name, warmup_epochs, warmup_lr) = match self {
            Schedule::Cosine(cosine) => {
                non_negative("cosine", "min_lr", cosine.min_lr)?;
                ("cosine", cosine.warmup_epochs, cosine.warmup_lr)
            }
            Schedule::Constant(constant) => {
                ("constant", constant.warmup_epochs, constant.warmup_lr)
            }
            Schedule::Step(step) => {
                if step.step_epochs == 0 {
                    return Err(FieldError::new("step.step_epochs", "must be ≥ 1 (got 0)"));
                }
                if !(step.gamma > 0.0 && step.gamma <= 1.0) {
                    return Err(crate::field_error!(
                        "step.gamma",
                        "must be in (0, 1] (got {})",
                        step.gamma
                    ));
                }
                ("step", step.warmup_epochs, step.warmup_lr)
            }
        };
        non_negative(name, "warmup_epochs", warmup_epochs)?;
        non_negative(name, "warmup_lr", warmup_lr)
    }

    /// The learning rate of optimiser step `step` (counted from 0 over the whole run) for a run
    /// of `epochs` epochs of `steps_per_epoch` steps. Steps past the end keep the final rate.
    pub fn lr_at(&self, base_lr: f64, step: u64, steps_per_epoch: u64, epochs: u64) -> f64 {
        let (warmup_epochs, warmup_lr) = match self {
            Schedule::Cosine(cosine) => (cosine.warmup_epochs, cosine.warmup_lr),
            Schedule::Constant(constant) => (constant.warmup_epochs, constant.warmup_lr),
            Schedule::Step(step) => (step.warmup_epochs, step.warmup_lr),
        };
        let total_steps = steps_per_epoch * epochs;
        let warmup_steps = warmup_step_count(warmup_epochs, steps_per_epoch).min(total_steps);
        if step < warmup_steps {
            let progress = step as f64 / warmup_steps as f64;
            return warmup_lr + (base_lr - warmup_lr) * progress;
        }
        match self {
            Schedule::Cosine(cosine) => {
                let decay_steps = total_steps - warmup_steps;
                if decay_steps == 0 {
                    return base_lr;
                }
                let progress = ((step - warmup_steps) as f64 / decay_steps as f64).min(1.0);
                let cosine_factor = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                cosine.min_lr + (base_lr - cosine.min_lr) * cosine_factor
            }
            Schedule::Constant(_) => base_lr,
            Schedule::Step(step_schedule) => {
                let epoch = step.min(total_steps.saturating_sub(1)) / steps_per_epoch.max(1);
                let drops = epoch / step_schedule.step_epochs.max(1);
                base_lr
                    * step_schedule
                        .gamma
                        .powi(i32::try_from(drops).unwrap_or(i32::MAX))
            }
        }
    }
}

/// Warm-up length in whole steps; fractional epochs round to the nearest step.
fn warmup_step_count(warmup_epochs: f64, steps_per_epoch: u64) -> u64 {
    (warmup_epochs.max(0.0) * steps_per_epoch as f64).round() as u64
}

fn non_negative(schedule: &str, field: &str, value: f64) -> Result<(), FieldError> {
    if value >= 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(crate::field_error!(
            "{schedule}.{field}",
            "must be ≥ 0 (got {value})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: f64 = 1e-3;
    const MIN: f64 = 1e-6;

    fn cosine(warmup_epochs: f64, warmup_lr: f64) -> Schedule {
        Schedule::Cosine(CosineSchedule {
            min_lr: MIN,
            warmup_epochs,
            warmup_lr,
        })
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-12,
            "expected {expected}, got {actual}"
        );
    }

    #[test]
    fn cosine_with_warmup_matches_hand_values() {
        // 10 epochs of 100 steps, 2 warm-up epochs from 1e-5: warm-up covers steps 0..200, the
        // cosine the 800 steps 200..1000.
        let schedule = cosine(2.0, 1e-5);
        close(schedule.lr_at(BASE, 0, 100, 10), 1e-5);
        close(
            schedule.lr_at(BASE, 100, 100, 10),
            1e-5 + (BASE - 1e-5) * 0.5,
        );
        close(schedule.lr_at(BASE, 200, 100, 10), BASE);
        close(schedule.lr_at(BASE, 600, 100, 10), (BASE + MIN) / 2.0);
        // A quarter into the cosine: min + (base − min)·(1 + cos(π/4))/2.
        let quarter = MIN + (BASE - MIN) * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
        close(schedule.lr_at(BASE, 400, 100, 10), quarter);
        // The last step sits one step before the end of the half-period.
        let last = MIN + (BASE - MIN) * (1.0 + (std::f64::consts::PI * 799.0 / 800.0).cos()) / 2.0;
        close(schedule.lr_at(BASE, 999, 100, 10), last);
        assert!(last - MIN < 1e-8);
        close(schedule.lr_at(BASE, 5000, 100, 10), MIN);
    }

    #[test]
    fn cosine_without_warmup_starts_at_base_and_never_rises() {
        let schedule = cosine(0.0, 0.0);
        close(schedule.lr_at(BASE, 0, 7, 300), BASE);
        let mut previous = f64::INFINITY;
        for step in 0..7 * 300 {
            let lr = schedule.lr_at(BASE, step, 7, 300);
            assert!(lr <= previous, "rose at step {step}: {previous} → {lr}");
            assert!(lr >= MIN);
            previous = lr;
        }
    }

    #[test]
    fn warmup_rises_linearly_then_decays_monotonically() {
        let schedule = cosine(1.5, 0.0);
        let rates: Vec<f64> = (0..40)
            .map(|step| schedule.lr_at(BASE, step, 10, 4))
            .collect();
        for (step, &rate) in rates.iter().enumerate().take(15) {
            close(rate, BASE * step as f64 / 15.0);
        }
        close(rates[15], BASE);
        assert!(rates[15..].windows(2).all(|pair| pair[1] <= pair[0]));
    }

    #[test]
    fn constant_holds_the_base_after_warmup() {
        let schedule = Schedule::Constant(ConstantSchedule {
            warmup_epochs: 1.0,
            warmup_lr: 0.0,
        });
        close(schedule.lr_at(BASE, 0, 4, 3), 0.0);
        close(schedule.lr_at(BASE, 2, 4, 3), BASE / 2.0);
        close(schedule.lr_at(BASE, 4, 4, 3), BASE);
        close(schedule.lr_at(BASE, 11, 4, 3), BASE);
    }

    #[test]
    fn step_schedule_drops_exactly_at_boundaries() {
        let schedule = Schedule::Step(StepSchedule {
            step_epochs: 3,
            gamma: 0.5,
            warmup_epochs: 0.0,
            warmup_lr: 0.0,
        });
        // 5 steps per epoch: epochs 0–2 are steps 0..15, epochs 3–5 steps 15..30.
        close(schedule.lr_at(BASE, 0, 5, 9), BASE);
        close(schedule.lr_at(BASE, 14, 5, 9), BASE);
        close(schedule.lr_at(BASE, 15, 5, 9), BASE * 0.5);
        close(schedule.lr_at(BASE, 29, 5, 9), BASE * 0.5);
        close(schedule.lr_at(BASE, 30, 5, 9), BASE * 0.25);
        close(schedule.lr_at(BASE, 44, 5, 9), BASE * 0.25);
    }

    #[test]
    fn warmup_longer_than_the_run_never_divides_by_zero() {
        let schedule = cosine(50.0, 0.0);
        let lr = schedule.lr_at(BASE, 9, 10, 1);
        close(lr, BASE * 9.0 / 10.0);
        close(schedule.lr_at(BASE, 10, 10, 1), BASE);
    }

    #[test]
    fn parses_with_defaults_and_rejects_unknown_fields() {
        let parsed: Schedule = serde_json::from_str(r#"{"cosine": {"warmup_epochs": 5}}"#).unwrap();
        assert_eq!(parsed, cosine(5.0, 0.0));
        let error = serde_json::from_str::<Schedule>(r#"{"cosine": {"t_max": 20}}"#).unwrap_err();
        assert!(error.to_string().contains("t_max"), "{error}");
        let step: Schedule = serde_json::from_str(r#"{"step": {"step_epochs": 30}}"#).unwrap();
        assert_eq!(step.lr_at(1.0, 30, 1, 100), 0.1);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Schedule::Cosine(CosineSchedule {
            min_lr: -1.0,
            ..CosineSchedule::default()
        });
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "cosine.min_lr: must be ≥ 0 (got -1)"
        );
        let bad_step = Schedule::Step(StepSchedule {
            step_epochs: 0,
            gamma: 0.1,
            warmup_epochs: 0.0,
            warmup_lr: 0.0,
        });
        assert_eq!(
            bad_step.validate().unwrap_err().to_string(),
            "step.step_epochs: must be ≥ 1 (got 0)"
        );
        assert!(Schedule::default().validate().is_ok());
    }
}
