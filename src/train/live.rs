//! What a running training tells the world: [`LiveStatus`] after steps and epochs, handed to a
//! [`TrainObserver`] (the train stage's writes it into the run folder, so another terminal or a
//! browser can follow the run; see `stages::train`).
//!
//! Observing never changes what is computed: the observer gets copies of counters and of the
//! history, after the step's state is settled, and nothing it does feeds back into training.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::metrics::HistoryRow;

/// `live/status.json` of a run folder while its training runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// The epoch in progress (1-based), or the one just finished when `step == steps_per_epoch`.
    pub epoch: u32,
    /// Epochs in the recipe.
    pub epochs: u32,
    /// Steps done in `epoch`.
    pub step: u64,
    /// Steps in one epoch.
    pub steps_per_epoch: u64,
    /// Mean training loss of `epoch` so far.
    pub train_loss: Option<f64>,
    /// Training images per second in `epoch` so far.
    pub images_per_second: Option<f64>,
    /// Validation ACC1 of the last finished epoch, in percent.
    pub last_val_acc1: Option<f64>,
    /// Best validation ACC1 so far, in percent.
    pub best_val_acc1: Option<f64>,
    /// Estimated seconds until training ends, from this invocation's pace (validation
    /// included once an epoch has finished).
    pub eta_seconds: Option<f64>,
    /// When this status was written, RFC 3339.
    pub updated_at: String,
    /// The process training, and its host.
    pub pid: u32,
    /// Host name of that process.
    pub host: String,
}

impl LiveStatus {
    /// `epoch 3/10, step 12/40, val ACC1 55.00% (best 57.10%), 120 img/s, eta 1m 20s`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "epoch {}/{}, step {}/{}",
            self.epoch, self.epochs, self.step, self.steps_per_epoch
        );
        if let Some(acc1) = self.last_val_acc1 {
            text.push_str(&format!(", val ACC1 {acc1:.2}%"));
            if let Some(best) = self.best_val_acc1.filter(|best| *best > acc1) {
                text.push_str(&format!(" (best {best:.2}%)"));
            }
        }
        if let Some(speed) = self.images_per_second {
            text.push_str(&format!(", {speed:.0} img/s"));
        }
        if let Some(eta) = self.eta_seconds {
            text.push_str(&format!(", eta {}", human_duration(eta)));
        }
        text
    }
}

/// `1h 02m`, `3m 20s`, `45s`.
pub fn human_duration(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// Told about a training's progress. Implementations must be cheap on [`Self::step`] (it is
/// called after every optimiser step) and must not fail the training: they log their own
/// errors.
pub trait TrainObserver: Send + Sync + std::fmt::Debug {
    /// Whether [`Self::step`] would use a status now; when it says no, the trainer does not
    /// build one (the status is made after every step, so a throttled observer saves it).
    fn wants_step(&self) -> bool {
        true
    }
    /// After an optimiser step.
    fn step(&self, status: &LiveStatus);
    /// After an epoch's validation, with the history so far.
    fn epoch(&self, status: &LiveStatus, history: &[HistoryRow]);
}

/// Keeps the counters a [`LiveStatus`] is made of.
#[derive(Debug)]
pub(super) struct Pace {
    started: Instant,
    /// Global steps done when this invocation started (a resumed run starts above 0).
    first_step: u64,
    pub(super) epochs: u32,
    pub(super) steps_per_epoch: u64,
}

impl Pace {
    pub(super) fn new(first_step: u64, epochs: u32, steps_per_epoch: u64) -> Self {
        Self {
            started: Instant::now(),
            first_step,
            epochs,
            steps_per_epoch,
        }
    }

    /// The status after `step` steps of `epoch` (1-based), given the epoch's running meters
    /// and the history so far.
    pub(super) fn status(
        &self,
        epoch: u32,
        step: u64,
        meters: (Option<f64>, Option<f64>),
        history: &[HistoryRow],
    ) -> LiveStatus {
        let done = u64::from(epoch.saturating_sub(1)) * self.steps_per_epoch + step;
        let total = u64::from(self.epochs) * self.steps_per_epoch;
        let steps_here = done.saturating_sub(self.first_step);
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta_seconds = (steps_here > 0)
            .then(|| elapsed / steps_here as f64 * total.saturating_sub(done) as f64);
        LiveStatus {
            epoch,
            epochs: self.epochs,
            step,
            steps_per_epoch: self.steps_per_epoch,
            train_loss: meters.0,
            images_per_second: meters.1,
            last_val_acc1: history.last().map(|row| row.val_acc1),
            best_val_acc1: history
                .iter()
                .map(|row| row.val_acc1)
                .filter(|value| value.is_finite())
                .reduce(f64::max),
            eta_seconds,
            updated_at: crate::files::now_rfc3339(),
            pid: std::process::id(),
            host: crate::files::host_name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(45.4), "45s");
        assert_eq!(human_duration(200.0), "3m 20s");
        assert_eq!(human_duration(3720.0), "1h 02m");
        assert_eq!(human_duration(-1.0), "0s");
    }

    #[test]
    fn the_status_line_names_epoch_step_accuracy_and_eta() {
        let pace = Pace::new(0, 10, 40);
        let status = pace.status(3, 12, (Some(1.5), Some(120.0)), &[]);
        assert_eq!(status.epochs, 10);
        assert!(status.eta_seconds.is_some());
        let mut line = status.describe();
        line.truncate(line.find(", eta").unwrap_or(line.len()));
        assert_eq!(line, "epoch 3/10, step 12/40, 120 img/s");
    }
}
