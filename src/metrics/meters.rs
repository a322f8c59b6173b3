//! A sample-weighted running mean, the meter behind an epoch's reported loss and accuracy.
//!
//! Batches differ in size (the last one of an epoch may be short), so each update carries the
//! number of samples it stands for; the average is then the mean over samples, not over batches.
//! The sum is kept in `f64` so a long epoch of `f32` losses does not drift.

use serde::{Deserialize, Serialize};

/// Running mean of a per-sample quantity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AverageMeter {
    /// Sum of `value · n` over all updates.
    pub sum: f64,
    /// Total number of samples seen.
    pub count: u64,
}

impl AverageMeter {
    /// An empty meter.
    pub fn new() -> AverageMeter {
        AverageMeter::default()
    }

    /// Records `value` as the mean of `n` samples (a batch's mean loss with its batch size).
    pub fn update(&mut self, value: f64, n: u64) {
        self.sum += value * n as f64;
        self.count += n;
    }

    /// Adds another meter's samples, e.g. one kept per device under data parallelism.
    pub fn merge(&mut self, other: &AverageMeter) {
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The mean over every sample recorded, or 0 before the first update (so an empty
    /// validation split prints as 0 instead of NaN in `history.csv`).
    pub fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets everything, for the next epoch.
    pub fn reset(&mut self) {
        *self = AverageMeter::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_weights_each_update_by_its_sample_count() {
        let mut meter = AverageMeter::new();
        assert_eq!(meter.average(), 0.0);
        assert!(meter.is_empty());
        // Two full batches of 4 with mean 1.0 and 2.0, then a short batch of 2 with mean 4.0:
        // per sample (4·1 + 4·2 + 2·4) / 10 = 2.0, whereas the mean of batch means is 7/3.
        meter.update(1.0, 4);
        meter.update(2.0, 4);
        meter.update(4.0, 2);
        assert_eq!(meter.count, 10);
        assert_eq!(meter.sum, 20.0);
        assert_eq!(meter.average(), 2.0);
    }

    #[test]
    fn merge_equals_updating_one_meter_and_reset_empties() {
        let mut first = AverageMeter::new();
        first.update(0.5, 3);
        let mut second = AverageMeter::new();
        second.update(2.0, 1);
        let mut together = AverageMeter::new();
        together.update(0.5, 3);
        together.update(2.0, 1);
        first.merge(&second);
        assert_eq!(first, together);
        assert_eq!(first.average(), 3.5 / 4.0);
        first.reset();
        assert!(first.is_empty());
        assert_eq!(first.average(), 0.0);
    }
}
