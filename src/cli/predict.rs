//! `vilab predict`: a trained model on image files and folders, written as a CSV of the top-k
//! classes of each image or of every class's probability.
//!
//! The weights come from a run folder (`train/best`, `train/last` or `train/ema`, where the class
//! names, the normalisation and the evaluation transforms are recorded next to them) or from a
//! weights file made elsewhere, such as an official checkpoint, with the preset, class names and
//! normalisation given on the command line.
//!
//! Preprocessing is the evaluate stage's, step for step, so that predicting on the validation
//! images reproduces the evaluation: decode to 8-bit RGB; resize to the model's square size, which
//! is what the augment stage stores (an image already at that size is left alone); run the
//! evaluation transforms with the RNG the evaluation loader gives sample `i` (seed 0, epoch 0,
//! `i` counting the images that decoded); normalise with the mean and std. Batches are filled with
//! readable images only, so on the same list of files they are the evaluation's batches too.
//!
//! Files that do not decode are skipped and listed on stderr; the command fails only when no
//! image at all could be predicted. The CSV is written beside its destination and renamed into
//! place, and an existing file is replaced only with `--force`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use burn::tensor::{Tensor, TensorData};
use clap::{Args, ValueEnum};
use image::RgbImage;
use rayon::prelude::*;
use walkdir::WalkDir;

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::backend::{Cpu, cpu_device};
use crate::data::image::{decode_rgb8, resize_square};
use crate::data::scan::is_hidden;
use crate::data::transforms::{Transform, apply_pipeline, sample_rng, to_normalized_chw};
use crate::model::{PRESET_NAMES, VisionLstm, load_pretrained, preset};
use crate::progress::Reporter;
use crate::stages::evaluate::{load_exported, softmax_with_loss};

/// Arguments of `vilab predict`.
#[derive(Debug, Args)]
#[command(override_usage = "vilab predict [OPTIONS] RUN_DIR PATH...\n       \
     vilab predict [OPTIONS] --model NAME --weights FILE --classes A,B,... --mean R,G,B \
     --std R,G,B PATH...")]
pub struct PredictArgs {
    /// A run folder (`<out>/<name>/<run-id>` or `<out>/<name>/latest`) followed by image files
    /// or folders (searched recursively, hidden entries skipped); with --model, only the images.
    #[arg(required = true, value_name = "RUN_DIR|PATH")]
    pub inputs: Vec<PathBuf>,
    /// Write the CSV to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long)]
    pub force: bool,
    /// Classes listed per image, most probable first (at most the number of classes).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub topk: u32,
    /// `topk`: the k most probable classes with their probabilities; `all`: one probability
    /// column per class, in label order.
    #[arg(long, value_enum, default_value_t = ProbColumns::Topk)]
    pub probs: ProbColumns,
    /// With a run folder: best, last or ema (default best). With --model: the weights file
    /// (.pth, .pt, .th or .safetensors with the official parameter names).
    #[arg(long, value_name = "best|last|ema|FILE")]
    pub weights: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Build this preset (vil_micro, vil_tiny, vil2_small, ...) instead of reading a run folder.
    #[arg(long, value_name = "NAME", requires_all = ["weights", "classes", "mean", "std"])]
    pub model: Option<String>,
    /// With --model: the class names in label order.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B,...",
        requires = "model"
    )]
    pub classes: Vec<String>,
    /// With --model: the per-channel mean of the normalisation, on the 0–1 scale.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "R,G,B",
        requires = "model",
        allow_negative_numbers = true
    )]
    pub mean: Vec<f64>,
    /// With --model: the per-channel standard deviation of the normalisation, on the 0–1 scale.
    #[arg(long, value_delimiter = ',', value_name = "R,G,B", requires = "model")]
    pub std: Vec<f64>,
    /// With --model: the side of the square input images (default: the preset's).
    #[arg(long, value_name = "PIXELS", requires = "model")]
    pub image_size: Option<u32>,
}

/// The probability columns of the CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbColumns {
    /// `top1_class,top1_prob,...,topk_class,topk_prob`.
    Topk,
    /// One column per class name.
    All,
}

/// Which exported weights of a run to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightsChoice {
    /// The checkpoint with the best validation score.
    Best,
    /// The weights after the last epoch.
    Last,
    /// The exponential moving average of the weights (when training kept one).
    Ema,
}

impl WeightsChoice {
    const ALL: [WeightsChoice; 3] = [WeightsChoice::Best, WeightsChoice::Last, WeightsChoice::Ema];

    /// The folder name under `<run>/train/`.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsChoice::Best => "best",
            WeightsChoice::Last => "last",
            WeightsChoice::Ema => "ema",
        }
    }
}

/// A mistake in the command line or its paths: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct UsageError(String);

pub(super) fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Turns a [`UsageError`] into its line on stderr and exit code 2; other errors pass through.
pub(super) fn exit_code(result: anyhow::Result<u8>) -> anyhow::Result<u8> {
    match result {
        Err(error) if error.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {error}");
            Ok(EXIT_USAGE)
        }
        other => other,
    }
}

/// The run folder `path` names: itself, or its `latest` link when given an experiment folder.
pub(super) fn resolve_run_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if path.join("run.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join("latest");
    if latest.join("run.json").is_file() {
        return Ok(latest);
    }
    let what = if path.is_dir() {
        "not a vilab run folder (no run.json)"
    } else if path.exists() {
        "not a folder"
    } else {
        "no such folder"
    };
    Err(usage(format!(
        "{}: {what}; expected a run folder such as outputs/<name>/latest",
        path.display()
    )))
}

/// `<run>/train/<weights>`, checked to hold exported weights.
pub(super) fn weights_dir(run: &Path, choice: WeightsChoice) -> anyhow::Result<PathBuf> {
    let exported = |choice: WeightsChoice| {
        let dir = run.join("train").join(choice.as_str());
        let complete = dir.join("config.json").is_file() && dir.join("model.safetensors").is_file();
        complete.then_some(dir)
    };
    if let Some(dir) = exported(choice) {
        return Ok(dir);
    }
    let available: Vec<&str> = WeightsChoice::ALL
        .into_iter()
        .filter(|&other| exported(other).is_some())
        .map(WeightsChoice::as_str)
        .collect();
    let run = run.display();
    Err(usage(match (choice, available.is_empty()) {
        (_, true) => {
            format!("{run}: no trained weights in this run (train/ has no best/ or last/)")
        }
        (WeightsChoice::Ema, false) => format!(
            "{run}: no EMA weights in this run (train/ema/ does not exist); available: {}",
            available.join(", ")
        ),
        (_, false) => format!(
            "{run}: no {} weights in this run (train/{}/ is missing or incomplete); available: {}",
            choice.as_str(),
            choice.as_str(),
            available.join(", ")
        ),
    }))
}

/// Writes `tmp` to `path` by renaming; without `force` an existing `path` is left alone and is
/// a usage error (a hard link publishes without ever replacing, where the file system has them).
pub(super) fn publish(tmp: &Path, path: &Path, force: bool) -> anyhow::Result<()> {
    let exists_error = || {
        usage(format!(
            "{}: already exists; pass --force to replace it",
            path.display()
        ))
    };
    if !force {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => {
                fs_err::remove_file(tmp)?;
                return Ok(());
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(tmp);
                return Err(exists_error());
            }
            Err(_) if path.symlink_metadata().is_ok() => {
                let _ = std::fs::remove_file(tmp);
                return Err(exists_error());
            }
            Err(_) => {}
        }
    }
    fs_err::rename(tmp, path)?;
    Ok(())
}

/// Fails with a usage error when `path` exists and `force` is off.
pub(super) fn check_free(path: &Path, force: bool) -> anyhow::Result<()> {
    if !force && path.symlink_metadata().is_ok() {
        return Err(usage(format!(
            "{}: already exists; pass --force to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// The hidden temporary file `path` is written as before it is published.
pub(super) fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// A model with everything needed to feed it.
struct Predictor {
    model: VisionLstm<Cpu>,
    classes: Vec<String>,
    image_size: u32,
    mean: [f32; 3],
    std: [f32; 3],
    transforms: Vec<Transform>,
    /// Which weights these are, for the closing summary.
    description: String,
}

impl Predictor {
    /// The exported weights of a run.
    fn from_run(run: &Path, weights: Option<&str>) -> anyhow::Result<Predictor> {
        let choice = match weights {
            None => WeightsChoice::Best,
            Some(text) => WeightsChoice::from_str(text, false).map_err(|_| {
                usage(format!(
                    "--weights {text}: with a run folder, expected best, last or ema (a weights \
                     file goes with --model NAME)"
                ))
            })?,
        };
        let run = resolve_run_dir(run)?;
        let dir = weights_dir(&run, choice)?;
        let (model, config) = load_exported::<Cpu>(&dir, &cpu_device())?;
        Ok(Predictor {
            model,
            classes: config.classes,
            image_size: config.image_size,
            mean: config.mean.map(|value| value as f32),
            std: config.std.map(|value| value as f32),
            transforms: config.val_transforms,
            description: format!(
                "{} weights ({}, epoch {}) of {}",
                choice.as_str(),
                config.weights,
                config.epoch,
                run.display()
            ),
        })
    }

    /// A preset loaded from a weights file, fed as described on the command line.
    fn from_checkpoint(
        args: &PredictArgs,
        name: &str,
        reporter: &Reporter,
    ) -> anyhow::Result<Predictor> {
        let Some(mut config) = preset(name) else {
            let close = crate::spec::problems::suggest(name, PRESET_NAMES.iter().copied());
            return Err(usage(format!(
                "--model {name}: unknown model{}; known: {}",
                close.map_or(String::new(), |close| format!(" (did you mean `{close}`?)")),
                PRESET_NAMES.join(", ")
            )));
        };
        let weights = PathBuf::from(args.weights.as_deref().unwrap_or_default());
        if !weights.is_file() {
            return Err(usage(format!(
                "--weights {}: no such file",
                weights.display()
            )));
        }
        let classes = checked_classes(&args.classes)?;
        let mean = channel_triple("--mean", &args.mean)?;
        let std = channel_triple("--std", &args.std)?;
        if let Some(value) = std
            .iter()
            .find(|value| !value.is_finite() || **value <= 0.0)
        {
            return Err(usage(format!(
                "--std: every value must be > 0 (got {value})"
            )));
        }
        config.num_classes = classes.len();
        if let Some(size) = args.image_size {
            config.image_size = size as usize;
        }
        config
            .validate()
            .map_err(|message| usage(format!("--model {name}: {message}")))?;
        let image_size = u32::try_from(config.image_size)
            .map_err(|_| usage(format!("--image-size {}: too large", config.image_size)))?;
        let device = cpu_device();
        let (model, report) = load_pretrained(config.init::<Cpu>(&device), &weights, &device)?;
        reporter.line(&format!("{}: {report}", weights.display()));
        if let Some((found, wanted)) = report.head_reinitialized {
            eprintln!(
                "warning: {} has a head for {found} classes, not {wanted}: the head is random \
                 and so are these predictions",
                weights.display()
            );
        }
        Ok(Predictor {
            model,
            classes,
            image_size,
            mean,
            std,
            transforms: Vec::new(),
            description: format!("{name} with {}", weights.display()),
        })
    }

    /// Decoded image ⇒ the model's input square, as stored by the augment stage.
    fn load(&self, path: &Path) -> Result<RgbImage, String> {
        decode_rgb8(path)
            .map(|image| resize_square(&image, self.image_size))
            .map_err(|reason| reason.to_string())
    }

    /// Softmax probabilities, `[images, classes]` row-major, of images `first..` of the run.
    fn probabilities(&self, images: &[RgbImage], first: u64) -> anyhow::Result<Vec<f32>> {
        let side = self.image_size as usize;
        let sample_len = 3 * side * side;
        let mut inputs = vec![0.0_f32; images.len() * sample_len];
        inputs
            .par_chunks_mut(sample_len)
            .zip(images)
            .enumerate()
            .for_each(|(offset, (out, image))| {
                let mut rng = sample_rng(0, 0, first + offset as u64);
                let prepared = apply_pipeline(&self.transforms, image, self.image_size, &mut rng);
                to_normalized_chw(&prepared, self.mean, self.std, out);
            });
        let images = Tensor::<Cpu, 4>::from_data(
            TensorData::new(inputs, [images.len(), 3, side, side]),
            &cpu_device(),
        );
        let logits: Vec<f32> = self
            .model
            .forward(images)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|error| anyhow!("reading logits: {error:?}"))?;
        Ok(logits
            .chunks_exact(self.classes.len())
            .flat_map(|row| softmax_with_loss(row, 0).0)
            .collect())
    }
}

/// The class names, none empty or repeated.
fn checked_classes(classes: &[String]) -> anyhow::Result<Vec<String>> {
    let classes: Vec<String> = classes.iter().map(|name| name.trim().to_owned()).collect();
    if classes.is_empty() || classes.iter().any(String::is_empty) {
        return Err(usage("--classes: expected a comma-separated list of names"));
    }
    for (index, name) in classes.iter().enumerate() {
        if classes[..index].contains(name) {
            return Err(usage(format!("--classes: `{name}` is listed twice")));
        }
    }
    Ok(classes)
}

/// Three per-channel values.
fn channel_triple(flag: &str, values: &[f64]) -> anyhow::Result<[f32; 3]> {
    match values {
        &[red, green, blue] => Ok([red as f32, green as f32, blue as f32]),
        _ => Err(usage(format!(
            "{flag}: expected three comma-separated values R,G,B (got {})",
            values.len()
        ))),
    }
}

/// A file that was not predicted, and why.
struct Skipped {
    file: String,
    reason: String,
}

/// Every file named by `paths`: files as given, folders walked recursively in name order,
/// hidden entries left out. Entries that cannot be listed go to `skipped`.
fn collect_files(paths: &[PathBuf], skipped: &mut Vec<Skipped>) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = fs_err::metadata(path)
            .map_err(|_| usage(format!("{}: no such file or folder", path.display())))?;
        if !metadata.is_dir() {
            files.push(path.clone());
            continue;
        }
        let walker = WalkDir::new(path)
            .follow_links(true)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| !entry.file_name().to_str().is_some_and(is_hidden));
        for entry in walker {
            match entry {
                Ok(entry) if entry.file_type().is_file() => files.push(entry.into_path()),
                Ok(_) => {}
                Err(error) => skipped.push(Skipped {
                    file: error.path().unwrap_or(path).display().to_string(),
                    reason: error
                        .io_error()
                        .map_or_else(|| error.to_string(), ToString::to_string),
                }),
            }
        }
    }
    Ok(files)
}

/// The CSV destination: stdout, or a temporary file published when everything went well.
struct CsvOutput {
    writer: csv::Writer<Box<dyn Write>>,
    /// `(temporary, final)` paths when writing to a file.
    file: Option<(PathBuf, PathBuf)>,
}

impl CsvOutput {
    fn open(out: Option<&Path>, force: bool) -> anyhow::Result<CsvOutput> {
        let Some(path) = out else {
            return Ok(CsvOutput {
                writer: csv::Writer::from_writer(Box::new(std::io::stdout().lock())),
                file: None,
            });
        };
        check_free(path, force)?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fs_err::create_dir_all(parent)?;
        }
        let tmp = temporary_path(path);
        let file = fs_err::File::create(&tmp)?;
        Ok(CsvOutput {
            writer: csv::Writer::from_writer(Box::new(std::io::BufWriter::new(file))),
            file: Some((tmp, path.to_path_buf())),
        })
    }

    fn write<I: IntoIterator<Item = String>>(&mut self, record: I) -> anyhow::Result<()> {
        let destination = self.destination();
        self.writer
            .write_record(record)
            .with_context(|| format!("writing {destination}"))
    }

    fn destination(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| "stdout".to_owned(), |(tmp, _)| tmp.display().to_string())
    }

    /// Flushes and, for a file, renames it into place.
    fn finish(mut self, force: bool) -> anyhow::Result<()> {
        let destination = self.destination();
        self.writer
            .flush()
            .with_context(|| format!("writing {destination}"))?;
        drop(self.writer);
        if let Some((tmp, path)) = &self.file {
            publish(tmp, path, force)?;
        }
        Ok(())
    }

    /// Removes the temporary file of a failed prediction.
    fn abandon(self) {
        drop(self.writer);
        if let Some((tmp, _)) = &self.file {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// The CSV header.
fn header(columns: ProbColumns, classes: &[String], topk: usize) -> Vec<String> {
    let mut header = vec!["file".to_owned()];
    match columns {
        ProbColumns::All => header.extend(classes.iter().cloned()),
        ProbColumns::Topk => {
            for rank in 1..=topk {
                header.push(format!("top{rank}_class"));
                header.push(format!("top{rank}_prob"));
            }
        }
    }
    header
}

/// One CSV row. Probabilities are written as the shortest decimal that reads back as the same
/// `f32`, so two CSVs compare exactly. Ranks break ties towards the lower label, as the
/// evaluation's argmax does.
fn row(
    file: &Path,
    probabilities: &[f32],
    columns: ProbColumns,
    classes: &[String],
    topk: usize,
) -> Vec<String> {
    let mut record = vec![file.display().to_string()];
    match columns {
        ProbColumns::All => record.extend(probabilities.iter().map(f32::to_string)),
        ProbColumns::Topk => {
            let mut ranked: Vec<usize> = (0..classes.len()).collect();
            ranked.sort_by(|&left, &right| probabilities[right].total_cmp(&probabilities[left]));
            for &label in ranked.iter().take(topk) {
                record.push(classes[label].clone());
                record.push(probabilities[label].to_string());
            }
        }
    }
    record
}

/// Runs `vilab predict`.
pub fn run(args: &PredictArgs, reporter: &Reporter) -> anyhow::Result<u8> {
    match predict(args, reporter) {
        // Whoever reads stdout (`| head`) has seen enough: stop quietly, like other Unix tools.
        Err(error) if is_broken_pipe(&error) => Ok(EXIT_OK),
        result => exit_code(result),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    let broken = |error: &std::io::Error| error.kind() == std::io::ErrorKind::BrokenPipe;
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || cause
                .downcast_ref::<csv::Error>()
                .is_some_and(|error| matches!(error.kind(), csv::ErrorKind::Io(io) if broken(io)))
    })
}

fn predict(args: &PredictArgs, reporter: &Reporter) -> anyhow::Result<u8> {
    let (predictor, paths) = match &args.model {
        Some(name) => (
            Predictor::from_checkpoint(args, name, reporter)?,
            &args.inputs[..],
        ),
        None => {
            let (run, paths) = args
                .inputs
                .split_first()
                .ok_or_else(|| usage("expected RUN_DIR PATH..."))?;
            let predictor = Predictor::from_run(run, args.weights.as_deref())?;
            if paths.is_empty() {
                return Err(usage(
                    "no images given: vilab predict RUN_DIR PATH... (files or folders)",
                ));
            }
            (predictor, paths)
        }
    };
    let mut skipped = Vec::new();
    let files = collect_files(paths, &mut skipped)?;
    let classes = &predictor.classes;
    let topk = (args.topk as usize).min(classes.len());
    if topk < args.topk as usize && args.probs == ProbColumns::Topk {
        reporter.line(&format!(
            "note: --topk {} lists all {} classes",
            args.topk,
            classes.len()
        ));
    }
    let mut output = CsvOutput::open(args.out.as_deref(), args.force)?;
    let predicted = match write_predictions(&predictor, &files, args, topk, &mut output, reporter) {
        Ok(predicted) => predicted,
        Err(error) => {
            output.abandon();
            return Err(error);
        }
    };
    let total = files.len() + skipped.len();
    skipped.extend(predicted.skipped);
    if !skipped.is_empty() {
        eprintln!(
            "warning: skipped {} of {total} file(s) that are not readable images:",
            skipped.len()
        );
        for entry in &skipped {
            eprintln!("  {}: {}", entry.file, entry.reason);
        }
    }
    if predicted.count == 0 {
        output.abandon();
        eprintln!(
            "error: no image could be predicted ({total} file(s) found under {})",
            paths
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(EXIT_FAILURE);
    }
    output.finish(args.force)?;
    let destination = args
        .out
        .as_ref()
        .map_or(String::new(), |path| format!(" → {}", path.display()));
    reporter.line(&format!(
        "predicted {} image(s) with the {}{destination}",
        predicted.count, predictor.description
    ));
    Ok(EXIT_OK)
}

/// What [`write_predictions`] did.
struct Predicted {
    count: u64,
    skipped: Vec<Skipped>,
}

/// Decodes `files` a batch at a time, predicts the readable ones and writes their rows.
fn write_predictions(
    predictor: &Predictor,
    files: &[PathBuf],
    args: &PredictArgs,
    topk: usize,
    output: &mut CsvOutput,
    reporter: &Reporter,
) -> anyhow::Result<Predicted> {
    let classes = &predictor.classes;
    output.write(header(args.probs, classes, topk))?;
    let batch = args.batch as usize;
    let bar = reporter.bar(files.len() as u64, "predict", "images");
    let mut pending: Vec<(&Path, RgbImage)> = Vec::with_capacity(2 * batch);
    let mut result = Predicted {
        count: 0,
        skipped: Vec::new(),
    };
    let mut flush = |pending: Vec<(&Path, RgbImage)>, result: &mut Predicted| {
        let (names, images): (Vec<&Path>, Vec<RgbImage>) = pending.into_iter().unzip();
        let probabilities = predictor.probabilities(&images, result.count)?;
        for (file, row_probabilities) in names.iter().zip(probabilities.chunks_exact(classes.len()))
        {
            output.write(row(file, row_probabilities, args.probs, classes, topk))?;
        }
        result.count += names.len() as u64;
        anyhow::Ok(())
    };
    for chunk in files.chunks(batch) {
        let loaded: Vec<Result<RgbImage, String>> =
            chunk.par_iter().map(|file| predictor.load(file)).collect();
        for (file, image) in chunk.iter().zip(loaded) {
            match image {
                Ok(image) => pending.push((file, image)),
                Err(reason) => result.skipped.push(Skipped {
                    file: file.display().to_string(),
                    reason,
                }),
            }
        }
        while pending.len() >= batch {
            let rest = pending.split_off(batch);
            flush(std::mem::replace(&mut pending, rest), &mut result)?;
        }
        bar.inc(chunk.len() as u64);
    }
    if !pending.is_empty() {
        flush(pending, &mut result)?;
    }
    bar.finish_and_clear();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_rows_rank_by_probability_and_break_ties_towards_the_lower_label() {
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let record = row(
            Path::new("x.png"),
            &[0.25, 0.5, 0.25],
            ProbColumns::Topk,
            &classes,
            3,
        );
        assert_eq!(record, ["x.png", "b", "0.5", "a", "0.25", "c", "0.25"]);
        assert_eq!(
            header(ProbColumns::Topk, &classes, 2),
            ["file", "top1_class", "top1_prob", "top2_class", "top2_prob"]
        );
    }

    #[test]
    fn probabilities_round_trip_through_the_csv_text() {
        let value = 0.123_456_79_f32;
        let record = row(
            Path::new("x.png"),
            &[value, 1.0 - value],
            ProbColumns::All,
            &["a".to_owned(), "b".to_owned()],
            2,
        );
        assert_eq!(record[1].parse::<f32>().unwrap().to_bits(), value.to_bits());
    }

    #[test]
    fn class_lists_must_be_non_empty_and_unique() {
        assert!(checked_classes(&["a".into(), "a".into()]).is_err());
        assert!(checked_classes(&[]).is_err());
        assert_eq!(
            checked_classes(&["a".into(), " b".into()]).unwrap(),
            ["a", "b"]
        );
        assert!(channel_triple("--mean", &[0.5, 0.5]).is_err());
    }
}
