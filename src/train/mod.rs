//! Training: the loop, optimiser and learning-rate schedule, EMA, clipping, precision, data
//! parallelism and checkpoints.
//!
//! - [`trainer`]: the epoch loop and one optimiser update.
//! - [`session`]: the state of a run: start or restore, steps, checkpoints, the stage outputs.
//! - [`live`]: the progress a running training reports to an observer (the live status).
//! - [`validation`]: loss and top-k accuracy of a set of weights on a split.
//! - [`params`]: a model's parameters as one flat list, the form everything below works on.
//! - [`optimizer`]: AdamW and SGD with PyTorch's update rules and a no-decay group.
//! - [`schedule`]: per-step learning-rate schedules (cosine with warm-up, constant, step).
//! - [`clipping`]: gradient clipping by global norm or by value.
//! - [`ema`]: the exponential moving average of the weights, with warm-up.
//! - [`precision`]: bf16/f16 compute with f32 master weights, dynamic loss scaling.
//! - [`parallel`]: one batch's gradients on one device or split across several.
//! - [`loss`]: soft-target and hard-label cross-entropy.
//! - [`checkpoint`]: the on-disk formats of resumable state and exported weights, and how often
//!   resumable state is written inside an epoch (`train.checkpoint_every`).

pub mod checkpoint;
pub mod clipping;
pub mod ema;
pub mod live;
pub mod loss;
pub mod optimizer;
pub mod parallel;
pub mod params;
pub mod precision;
pub mod schedule;
pub mod session;
pub mod spec;
pub mod throughput;
pub mod trainer;
pub mod validation;

pub use trainer::{TrainError, TrainJob, TrainSummary, run_training};

/// The spec fields the `train` stage's key is computed from: everything that changes the
/// trained weights or the outputs. Left out, because results do not depend on them:
/// `train.workers` (batches are the same whatever thread prepares them) and
/// `train.checkpoint_every` (a checkpoint holds the state the run continues from, and reading it
/// back gives that state bit for bit). The stage definition in `pipeline::plan` excludes the
/// same two from the `train` section, so changing either reuses a cached result and resumes an
/// interrupted training.
pub const KEY_FIELDS: &[&str] = &[
    "seed",
    "backend",
    "data.image_size",
    "augment",
    "model",
    "train.epochs",
    "train.batch_size",
    "train.val_batch_size",
    "train.drop_last",
    "train.optimizer",
    "train.schedule",
    "train.mixup",
    "train.clip_grad",
    "train.ema",
    "train.select",
    "train.precision",
    "train.loss_scale",
    "train.devices",
];
