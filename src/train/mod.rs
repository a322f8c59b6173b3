//! Training: the loop, optimiser and learning-rate schedule, EMA, clipping, precision, data
//! parallelism and checkpoints.
//!
//! - [`schedule`]: per-step learning-rate schedules (cosine with warm-up, constant, step).

pub mod schedule;
