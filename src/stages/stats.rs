//! The `stats` stage: per-channel mean and standard deviation of the training images, exactly
//! as the model sees them (after resizing to `data.image_size`), or the fixed values of the spec.
//!
//! Output: `stats.json` with `mean`, `std` (RGB, pixel values in [0, 1]), `source`
//! (`computed` or `fixed`), and for computed values the image and pixel counts.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::split::{SPLIT_FILE, SplitSummary};
use super::{StageContext, StageError, read_json, write_json};
use crate::data::manifest::read_manifest;
use crate::data::stats::channel_stats;
use crate::pipeline::StageKind;

/// The stats stage's output: the normalisation statistics.
pub const STATS_FILE: &str = "stats.json";

/// `stats.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsFile {
    /// Per-channel mean.
    pub mean: [f64; 3],
    /// Per-channel population standard deviation.
    pub std: [f64; 3],
    /// `computed` over the train split, or `fixed` in the spec.
    pub source: String,
    /// Images measured (computed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Pixels per channel measured (computed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixels: Option<u64>,
    /// Side the images were resized to.
    pub image_size: u32,
}

/// Runs the stage.
pub fn run(context: &StageContext<'_>, out: &Path) -> Result<String, StageError> {
    let spec = &context.spec.spec;
    let size = spec.data.image_size;
    let file = if let (Some(mean), Some(std)) = (spec.stats.mean, spec.stats.std) {
        StatsFile {
            mean,
            std,
            source: "fixed".into(),
            images: None,
            pixels: None,
            image_size: size,
        }
    } else {
        let split_dir = context.upstream(StageKind::Split)?;
        let summary: SplitSummary = read_json(&split_dir.join(SPLIT_FILE))?;
        let root_field = summary.roots.get("train").cloned().unwrap_or_default();
        let root = context
            .plan
            .input(&root_field)
            .ok_or_else(|| StageError::Invalid(format!("{root_field} was not scanned")))?;
        let rows = read_manifest(&split_dir.join("train.csv"))?;
        let paths: Vec<String> = rows.into_iter().map(|row| row.path).collect();
        let spinner = context.reporter.spinner("stats", "measuring");
        let stats = channel_stats(&root.path, &paths, size)?;
        spinner.finish_and_clear();
        StatsFile {
            mean: stats.mean,
            std: stats.std,
            source: "computed".into(),
            images: Some(paths.len()),
            pixels: Some(stats.pixels),
            image_size: size,
        }
    };
    write_json(&out.join(STATS_FILE), &file)?;
    let show = |values: [f64; 3]| {
        values
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(format!(
        "mean [{}], std [{}] ({})",
        show(file.mean),
        show(file.std),
        file.source
    ))
}
