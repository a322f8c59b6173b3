//! Training and evaluation metrics that need no model: running averages and top-k accuracy.
//!
//! The train loop feeds these from plain slices (logits copied off the device, labels from the
//! loader's batch), so they stay independent of the backend and easy to test by hand.
//!
//! - [`meters`]: [`AverageMeter`], a sample-weighted running mean (loss, accuracy per epoch).
//! - [`accuracy`]: top-k correctness with deterministic tie-breaking, as counts and percentages.
//! - [`report`]: per-class precision/recall/F1 and the confusion matrix, as scikit-learn reports.

pub mod accuracy;
pub mod meters;
pub mod report;

pub use accuracy::{accuracy_percent, label_ranks, topk_correct};
pub use meters::AverageMeter;
