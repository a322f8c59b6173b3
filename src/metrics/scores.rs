//! Scores of a model on a split: the softmax and cross-entropy of logit rows (in f64, as the
//! validation pass and the evaluate stage both compute them), percentages, and `metrics.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The scores' file name (the evaluate stage's `metrics.json`; the train stage's too).
pub const METRICS_FILE: &str = "metrics.json";
/// The per-class report of the evaluated weights on a split.
pub const REPORT_FILE: &str = "classification_report.csv";

/// Scores of one (weights, split) pair in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    /// Mean cross-entropy.
    pub loss: f64,
    /// ACC1 in percent.
    pub acc1: f64,
    /// ACC5 in percent.
    pub acc5: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
    /// Images evaluated.
    pub images: u64,
    /// The epoch the weights are from.
    pub epoch: u32,
}

/// `metrics.json`: weights ⇒ split ⇒ scores.
pub type EvalMetrics = BTreeMap<String, BTreeMap<String, EvalScores>>;

/// Softmax of a logit row and the cross-entropy of `label`, in f64 for stability.
pub fn softmax_with_loss(row: &[f32], label: usize) -> (Vec<f32>, f64) {
    let (exponentials, log_sum) = shifted_exponentials(row);
    let sum: f64 = exponentials.iter().sum();
    let probabilities = exponentials.iter().map(|&e| (e / sum) as f32).collect();
    (probabilities, log_sum - f64::from(row[label]))
}

/// `−log softmax(row)[label]` in f64: [`softmax_with_loss`] without the probabilities.
pub fn cross_entropy(row: &[f32], label: usize) -> f64 {
    shifted_exponentials(row).1 - f64::from(row[label])
}

/// `exp(row − max)` in f64 and `log Σ exp(row)` (log-sum-exp with the maximum subtracted
/// first, so large logits do not overflow).
fn shifted_exponentials(row: &[f32]) -> (Vec<f64>, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exponentials: Vec<f64> = row
        .iter()
        .map(|&value| (f64::from(value) - f64::from(max)).exp())
        .collect();
    let log_sum = exponentials.iter().sum::<f64>().ln() + f64::from(max);
    (exponentials, log_sum)
}

/// `hits` out of `total` in percent (0 for an empty total).
pub fn percent(hits: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * hits as f64 / total as f64
    }
}

/// The highest-probability class of each row (lower index on ties).
pub fn argmax_rows(probabilities: &[f32], classes: usize) -> Vec<usize> {
    probabilities
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (index, &value) in row.iter().enumerate() {
                if value > row[best] {
                    best = index;
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_the_definition_and_the_softmax() {
        let row = [2.0_f32, 0.0, -1.0];
        let log_sum = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
        assert!((cross_entropy(&row, 1) - log_sum).abs() < 1e-12);
        assert_eq!(cross_entropy(&row, 2), softmax_with_loss(&row, 2).1);
        // Large logits do not overflow: the maximum is subtracted first.
        assert!((cross_entropy(&[1000.0, 1000.0], 0) - 2.0_f64.ln()).abs() < 1e-9);
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(0, 0), 0.0);
    }

    #[test]
    fn softmax_and_loss_match_hand_values() {
        let (probabilities, loss) = softmax_with_loss(&[0.0, 0.0, (2.0f32).ln()], 2);
        assert!((probabilities[2] - 0.5).abs() < 1e-6);
        assert!((probabilities[0] - 0.25).abs() < 1e-6);
        assert!((loss - 2.0f64.ln()).abs() < 1e-6);
        assert_eq!(argmax_rows(&[0.1, 0.7, 0.2, 0.5, 0.5, 0.0], 3), vec![1, 0]);
    }
}
