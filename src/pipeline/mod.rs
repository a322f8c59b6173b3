//! The experiment graph: stages, their keys, the cache, and the run folders' layout.
//!
//! - [`stage`]: the stage kinds and their format versions.
//! - [`fingerprint`]: what a stage key is made of (design note there) and why-stale reasons.
//! - [`plan`]: compiling a spec into ordered stages with keys; stage statuses.
//! - [`cache`]: the content-addressed store, atomic commits and per-entry locks.
//! - [`layout`]: the run folder's files and records (`run.json`, `pending.json`).
//! - [`gc`]: which cache entries no run folder needs, and deleting them under their locks.
//! - [`verify`]: hashing every entry and checkpoint again.

pub mod cache;
pub mod fingerprint;
pub mod gc;
pub mod layout;
pub mod plan;
pub mod stage;
pub mod verify;

pub use stage::StageKind;
