//! The `augment` stage, first half: every split decoded and resized once into a packed uint8
//! file plus labels (`<split>.u8`, `<split>.labels`, `<split>.json`; squashed to
//! `data.image_size`², or to the shorter side `data.storage_size` with the aspect kept, which
//! adds `<split>.sizes`), so training epochs read
//! memory-mapped bytes and never decode an image again. The random augmentations are applied on
//! the fly by the training loader; `preview.png` shows 16 training samples as the loader makes
//! them (train transforms, then MixUp/CutMix), so people can see what they configured.

use std::path::Path;
use std::sync::Arc;

use super::split::{SPLIT_FILE, SplitSummary};
use super::{StageContext, StageError, read_json};
use crate::data::loader::{LoaderConfig, batches};
use crate::data::manifest::read_manifest;
use crate::data::pack::{PackedSplit, Storage, write_pack_with};
use crate::data::preview::write_preview;
use crate::pipeline::StageKind;

/// Runs the stage.
pub fn run(context: &StageContext<'_>, out: &Path) -> Result<String, StageError> {
    let size = context.spec.spec.data.image_size;
    let storage = match context.spec.spec.data.storage_size {
        None => Storage::Square(size),
        Some(side) => Storage::ShorterSide(side),
    };
    let split_dir = context.upstream(StageKind::Split)?;
    let summary: SplitSummary = read_json(&split_dir.join(SPLIT_FILE))?;
    let mut parts = Vec::new();
    let mut bytes = 0u64;
    for (split, field) in &summary.roots {
        let root = context
            .plan
            .input(field)
            .ok_or_else(|| StageError::Invalid(format!("{field} was not scanned")))?;
        let rows = read_manifest(&split_dir.join(format!("{split}.csv")))?;
        let entries: Vec<(String, usize)> =
            rows.into_iter().map(|row| (row.path, row.label)).collect();
        let spinner = context
            .reporter
            .spinner("augment", &format!("packing {split}"));
        let info = write_pack_with(out, split, &root.path, &entries, storage)?;
        spinner.finish_and_clear();
        bytes += PackedSplit::open(out, split)?.pixels().len() as u64;
        parts.push(format!("{} {split}", info.count));
    }
    // Mean 0 / std 1 keeps the picture independent of the stats stage: mixing is linear, so
    // de-normalising inverts it exactly.
    let spec = &context.spec.spec;
    let pack = Arc::new(PackedSplit::open(out, "train")?);
    let config = LoaderConfig {
        batch_size: 16,
        shuffle: true,
        drop_last: false,
        seed: spec.seed,
        workers: 0,
        prefetch: 0,
        image_size: size,
        mean: [0.0; 3],
        std: [1.0; 3],
        transforms: spec.augment.train.clone(),
        mixup: spec.train.mixup.clone(),
    };
    if let Some(batch) = batches(pack, &config, 0, summary.classes.len())?.next() {
        write_preview(&out.join("preview.png"), &batch, config.mean, config.std, 4)?;
    }
    let sizing = match storage {
        Storage::Square(side) => format!("at {side}×{side}"),
        Storage::ShorterSide(side) => format!("with shorter side {side}"),
    };
    Ok(format!(
        "{} images packed {sizing} ({:.1} MiB)",
        parts.join(" + "),
        bytes as f64 / (1024.0 * 1024.0)
    ))
}
