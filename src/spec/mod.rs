//! The experiment spec: YAML types, layered loading, validation with positions, the JSON Schema.
//!
//! - [`types`]: what a person writes (serde + schemars, unknown fields denied).
//! - [`load`]: defaults < file < `VILAB_*` environment < `--set`, validated all at once.
//! - [`positions`]: `FILE:LINE:COL` of every field, for error messages.
//! - [`problems`]: one problem per line, with its origin and a suggestion where one fits.
//! - [`schema`]: the draft-07 JSON Schema editors read.
//! - [`sweep`]: sweep sections (grid, list, random) expanded into trials with stable ids.

pub mod load;
pub mod positions;
pub mod problems;
pub mod schema;
pub mod sweep;
pub mod types;

pub use load::{LoadError, LoadedSpec, load};
pub use problems::{Origin, Problem, Problems};
pub use types::*;
