//! vilab: a declarative, cached experiment runner for Vision-LSTM image classification.
//!
//! A YAML experiment is loaded and validated ([`spec`]), compiled into a graph of stages whose
//! keys hash everything each stage depends on ([`pipeline`]), and run: stages already in the
//! content-addressed cache are reused, the others computed by [`stages`] on top of the data
//! layer ([`data`]) and linked into a run folder.
//!
//! Module map:
//! - [`backend`]: the burn backend type aliases (CPU default, CUDA with the `cuda` feature).
//! - [`cli`]: the `vilab` command line, one file per verb.
//! - [`spec`]: experiment types, layered loading, validation with positions, JSON Schema.
//! - [`pipeline`]: stage kinds, fingerprints and keys, plan, cache, runner, run folders.
//! - [`stages`]: one file per stage (split, stats, augment, train, evaluate, plot).
//! - [`model`]: the Vision-LSTM models (all official variants), loading official weights.
//! - [`metrics`]: meters, top-k accuracy, classification report, confusion matrix.
//! - [`report`]: plots (curves, confusion heat-maps) with a bundled font.
//! - [`data`]: image-folder scan, decoding, split, manifests, packing, statistics, IDX import.
//! - [`train`]: the training recipe (schedules so far).
//! - [`launcher`]: who starts a sweep's trials: here, or as a Slurm job array.
//! - [`progress`]: progress bars and lines.
//! - [`interrupt`]: Ctrl-C / SIGTERM: exit 130 at once, or gracefully inside training.

pub mod backend;
pub mod cli;
pub mod data;
pub mod interrupt;
pub mod launcher;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod spec;
pub mod stages;
pub mod train;
