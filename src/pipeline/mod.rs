//! The experiment graph: stages, their keys, the cache, and the runner.
//!
//! - [`stage`]: the stage kinds and their format versions.
//! - [`fingerprint`]: what a stage key is made of (design note there) and why-stale reasons.
//! - [`plan`]: compiling a spec into ordered stages with keys; stage statuses.
//! - [`cache`]: the content-addressed store, atomic commits and per-entry locks.
//! - [`run`]: executing a plan and laying out run folders.
//! - [`sweep`]: sweep folders, trial states, the local sweep runner, summaries.

pub mod cache;
pub mod fingerprint;
pub mod plan;
pub mod run;
pub mod stage;
pub mod sweep;

pub use stage::StageKind;
