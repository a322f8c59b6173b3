//! The integration tests, built as one test binary (`cargo test --test suite`): burn is linked
//! once instead of once per test file, which is what the build time of the tests was spent on.
//! Each module below was a test binary of its own (`tests/<module>.rs`); its tests are now named
//! `<module>::<test>`, so `cargo test --release --test suite crash_injection::` runs one of them.
//!
//! The modules run as threads of one process. Most tests spawn the real `vilab` binary in their
//! own temporary folder and share nothing; the ones that use burn's process-wide RNG in this
//! process hold [`common::backend_rng_lock`] while they seed and draw. Test fixtures stay in
//! `tests/fixtures/` and `tests/golden/`, found through `CARGO_MANIFEST_DIR`; insta keeps this
//! binary's snapshots in `tests/suite/snapshots/`.

// Tests stop at the first broken expectation; the no-unwrap rule is for the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared helpers.
mod common;
mod faults;

// The layering of src/ (ARCHITECTURE.md).
mod architecture;

// One module per former test binary.
mod bad_input;
mod cli_bench;
mod cli_compare;
mod cli_completions;
mod cli_data;
mod cli_gc;
mod cli_help;
mod cli_pipeline;
mod cli_predict;
mod cli_runs;
mod cli_schema;
mod cli_sweep;
mod cli_validate;
mod color;
mod concurrency;
mod crash_injection;
mod data_idx;
mod data_images;
mod data_loader;
mod data_pack;
mod data_scan;
mod data_storage;
mod disk_full;
mod fuzz_spec;
mod html_pages;
mod json_output;
mod metrics_report;
mod model_blocks;
mod model_cell;
mod model_chunkwise;
mod model_fused;
mod model_fused_ops;
mod model_golden;
mod model_init;
mod model_params;
mod report_plots;
mod slurm_launcher;
mod slurm_requeue;
mod slurm_scale;
mod train_quickstart;
mod train_resume;
mod train_spec;
mod train_steps;
mod write_failures;
