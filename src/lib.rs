//! vilab: a declarative, cached experiment runner for Vision-LSTM image classification.
//!
//! A YAML experiment is loaded and validated ([`spec`]), compiled into a graph of stages whose
//! keys hash everything each stage depends on ([`pipeline`]), and run: stages already in the
//! content-addressed cache are reused, the others computed by [`stages`] on top of the data
//! layer ([`data`]) and linked into a run folder.
//!
//! Module map, from the ground up (imports only go down; `ARCHITECTURE.md` has the floors and
//! a test checks them):
//! - [`files`]: atomic writes and links, temporary names, durable JSON, deletion by rename.
//! - [`interrupt`]: Ctrl-C / SIGTERM: exit 130 at once, or gracefully inside training.
//! - [`backend`]: the burn backend types (CPU default, CUDA with the `cuda` feature).
//! - [`progress`]: progress bars and lines.
//! - [`integrity`]: manifests of file hashes, canonical JSON, stage keys and short ids.
//! - [`data`]: image-folder scan, decoding, split, manifests, packing, statistics, loader,
//!   augmentation, MixUp/CutMix, IDX import.
//! - [`model`]: the Vision-LSTM models (all official variants), loading official weights.
//! - [`metrics`]: meters, top-k accuracy, scores, histories, metric names, per-class report,
//!   confusion matrix.
//! - [`inference`]: exported weights and the batched forward pass over a split.
//! - [`train`]: the training recipe and its spec types: loop, optimiser, schedule, EMA,
//!   clipping, precision, data parallelism, checkpoints.
//! - [`spec`]: experiment types, layered loading, validation with positions, JSON Schema, sweeps.
//! - [`pipeline`]: stage kinds, fingerprints and keys, plan, cache, run-folder layout, gc.
//! - [`report`]: plots (curves, confusion heat-maps) and comparisons of run folders.
//! - [`stages`]: one file per stage (split, stats, augment, train, evaluate, plot).
//! - [`runner`]: running a plan into a run folder, and one trial of a sweep.
//! - [`launcher`]: who starts a sweep's trials: here, or as a Slurm job array.
//! - [`cli`]: the `vilab` command line, one file per verb; errors become exit codes there.

pub mod backend;
pub mod cli;
pub mod data;
pub mod field;
pub mod files;
pub mod inference;
pub mod integrity;
pub mod interrupt;
pub mod launcher;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod runner;
pub mod spec;
pub mod stages;
pub mod train;
