//! Training and evaluation metrics that need no model: running averages, top-k accuracy,
//! scores and histories, and the names runs are ranked by.
//!
//! The train loop feeds these from plain slices (logits copied off the device, labels from the
//! loader's batch), so they stay independent of the backend and easy to test by hand.
//!
//! - [`meters`]: [`AverageMeter`], a sample-weighted running mean (loss, accuracy per epoch).
//! - [`accuracy`]: top-k correctness with deterministic tie-breaking, as counts and percentages.
//! - [`report`]: per-class precision/recall/F1 and the confusion matrix, as scikit-learn reports.
//! - [`scores`]: softmax and cross-entropy of logit rows, percentages, `metrics.json`.
//! - [`history`]: `history.csv`, the per-epoch record of training.
//! - [`names`]: the headline metrics runs are ranked by, with their accepted names.

pub mod accuracy;
pub mod history;
pub mod meters;
pub mod names;
pub mod report;
pub mod scores;

pub use accuracy::{accuracy_percent, label_ranks, topk_correct};
pub use history::{
    HISTORY_FILE, HISTORY_HEADER, HistoryError, HistoryRow, WithoutTimings, read_history,
    write_history,
};
pub use meters::AverageMeter;
pub use names::MetricName;
pub use scores::{
    EvalMetrics, EvalScores, METRICS_FILE, REPORT_FILE, argmax_rows, cross_entropy, percent,
    softmax_with_loss,
};
