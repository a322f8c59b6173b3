//! `vilab export`: a run's trained weights as a file a PyTorch user can load into the official
//! ViL model, with the class names and the input normalisation beside it.
//!
//! The train stage already writes `train/<weights>/model.safetensors` with the official parameter
//! names and PyTorch layouts. Export loads it into the model its `config.json` describes, which
//! fails unless every official name and shape is there, and then copies the file byte for byte,
//! so the exported weights are exactly the ones evaluation measured. Next to it go
//! `classes.json` (the names in label order) and `normalization.json` (mean, std, image size).
//! Each file is written beside its destination and renamed into place; existing files are
//! replaced only with `--force`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{EXIT_OK, usage};
use crate::backend::{Cpu, cpu_device};
use crate::files::{PublishError, ensure_free, json_bytes, publish, temp_path, write_synced};
use crate::inference::{EXPORTED_WEIGHTS, load_exported};
use crate::pipeline::layout::{RunDir, WeightsChoice};

/// Arguments of `vilab export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder (`<out>/<name>/<run-id>` or `<out>/<name>/latest`).
    pub run_dir: PathBuf,
    /// Which of the run's weights to export.
    #[arg(long, value_enum, default_value_t = WeightsChoice::Best)]
    pub weights: WeightsChoice,
    /// The weights file to write (`.safetensors`); `classes.json` and `normalization.json` go
    /// into the same folder.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// `normalization.json`: how inputs are prepared for the exported model.
#[derive(Debug, Serialize)]
struct Normalization {
    /// Per-channel mean subtracted from pixels scaled to 0–1 (R, G, B).
    mean: [f64; 3],
    /// Per-channel standard deviation the centred pixels are divided by (R, G, B).
    std: [f64; 3],
    /// Side of the square images the model takes.
    image_size: u32,
}

/// Runs `vilab export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<u8> {
    let is_safetensors = args
        .out
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("safetensors"));
    if !is_safetensors {
        return Err(usage(format!(
            "--out {}: the weights file must end in .safetensors",
            args.out.display()
        )));
    }
    let run = RunDir::resolve(&args.run_dir)?;
    let source = run.exported(args.weights)?;
    let (_, config) = load_exported::<Cpu>(&source, &cpu_device())?;

    let folder = args
        .out
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let classes_path = folder.join("classes.json");
    let normalization_path = folder.join("normalization.json");
    let targets = [&args.out, &classes_path, &normalization_path];
    for target in targets {
        ensure_free(target, args.force)?;
    }
    fs_err::create_dir_all(folder)?;

    let weights = fs_err::read(source.join(EXPORTED_WEIGHTS))?;
    let normalization = Normalization {
        mean: config.mean,
        std: config.std,
        image_size: config.image_size,
    };
    let contents = [
        weights,
        json_bytes(&classes_path, &config.classes)?,
        json_bytes(&normalization_path, &normalization)?,
    ];
    let mut written = Vec::new();
    for (target, bytes) in targets.into_iter().zip(&contents) {
        let tmp = temp_path(target, "tmp");
        let result = write_synced(&tmp, bytes)
            .map_err(PublishError::from)
            .and_then(|()| publish(&tmp, target, args.force));
        if let Err(error) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(error.into());
        }
        written.push(target.display().to_string());
    }
    println!(
        "exported the {} weights ({}, epoch {}, {} classes, {:.1} MiB) of {}: {}",
        args.weights.as_str(),
        config.weights,
        config.epoch,
        config.classes.len(),
        contents[0].len() as f64 / (1024.0 * 1024.0),
        run.path().display(),
        written.join(", ")
    );
    Ok(EXIT_OK)
}
