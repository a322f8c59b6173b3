//! `vilab predict`: a trained model on image files and folders, written as a CSV of the top-k
//! classes of each image or of every class's probability.
//!
//! The weights come from a run folder (`train/best`, `train/last` or `train/ema`, where the class
//! names, the normalisation and the evaluation transforms are recorded next to them) or from a
//! weights file made elsewhere, such as an official checkpoint, with the preset, class names and
//! normalisation given on the command line. The model and its preprocessing (the evaluate
//! stage's, step for step) are `inference::Predictor`; this file parses, batches and writes.
//!
//! Files that do not decode are skipped and listed on stderr; the command fails only when no
//! image at all could be predicted. The CSV is written beside its destination and renamed into
//! place, and an existing file is replaced only with `--force`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{EXIT_FAILURE, EXIT_OK, usage};
use crate::files::Output;
use crate::inference::{PredictedFiles, Predictor, image_files};
use crate::model::{PRESET_NAMES, preset};
use crate::pipeline::layout::{RunDir, WeightsChoice};
use crate::progress::Reporter;

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

/// The exported weights of a run, and how to name them in the closing summary.
fn from_run(run: &Path, weights: Option<&str>) -> anyhow::Result<(Predictor, String)> {
    let choice = match weights {
        None => WeightsChoice::Best,
        Some(text) => WeightsChoice::parse(text).ok_or_else(|| {
            usage(format!(
                "--weights {text}: with a run folder, expected best, last or ema (a weights \
                 file goes with --model NAME)"
            ))
        })?,
    };
    let run = RunDir::resolve(run)?;
    let (predictor, origin) = Predictor::from_exported(&run.exported(choice)?)?;
    let description = format!(
        "{} weights ({}, epoch {}) of {}",
        choice.as_str(),
        origin.weights,
        origin.epoch,
        run.path().display()
    );
    Ok((predictor, description))
}

/// A preset loaded from a weights file, fed as described on the command line.
fn from_checkpoint(
    args: &PredictArgs,
    name: &str,
    reporter: &Reporter,
) -> anyhow::Result<(Predictor, String)> {
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
    if u32::try_from(config.image_size).is_err() {
        return Err(usage(format!(
            "--image-size {}: too large",
            config.image_size
        )));
    }
    let (predictor, report) = Predictor::from_weights(&config, &weights, classes, mean, std)?;
    reporter.line(&format!("{}: {report}", weights.display()));
    if let Some((found, wanted)) = report.head_reinitialized {
        eprintln!(
            "warning: {} has a head for {found} classes, not {wanted}: the head is random \
             and so are these predictions",
            weights.display()
        );
    }
    Ok((predictor, format!("{name} with {}", weights.display())))
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
        result => result,
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
    let ((predictor, description), paths) = match &args.model {
        Some(name) => (from_checkpoint(args, name, reporter)?, &args.inputs[..]),
        None => {
            let (run, paths) = args
                .inputs
                .split_first()
                .ok_or_else(|| usage("expected RUN_DIR PATH..."))?;
            let loaded = from_run(run, args.weights.as_deref())?;
            if paths.is_empty() {
                return Err(usage(
                    "no images given: vilab predict RUN_DIR PATH... (files or folders)",
                ));
            }
            (loaded, paths)
        }
    };
    let (files, mut skipped) = image_files(paths)
        .map_err(|path| usage(format!("{}: no such file or folder", path.display())))?;
    let classes = &predictor.classes;
    let topk = (args.topk as usize).min(classes.len());
    if topk < args.topk as usize && args.probs == ProbColumns::Topk {
        reporter.line(&format!(
            "note: --topk {} lists all {} classes",
            args.topk,
            classes.len()
        ));
    }
    let mut output = Output::open(args.out.as_deref(), args.force)?;
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
        "predicted {} image(s) with the {description}{destination}",
        predicted.count
    ));
    Ok(EXIT_OK)
}

/// Writes the CSV of `files` to `output`.
fn write_predictions(
    predictor: &Predictor,
    files: &[PathBuf],
    args: &PredictArgs,
    topk: usize,
    output: &mut Output,
    reporter: &Reporter,
) -> anyhow::Result<PredictedFiles> {
    let destination = output.destination();
    let classes = &predictor.classes;
    let mut writer = csv::Writer::from_writer(output);
    let mut write = |record: Vec<String>| {
        writer
            .write_record(record)
            .with_context(|| format!("writing {destination}"))
    };
    let bar = reporter.bar(files.len() as u64, "predict", "images");
    let predicted = write(header(args.probs, classes, topk)).and_then(|()| {
        predictor.predict_files(
            files,
            args.batch as usize,
            |file, probabilities| write(row(file, probabilities, args.probs, classes, topk)),
            |read| bar.inc(read),
        )
    })?;
    bar.finish_and_clear();
    writer
        .flush()
        .with_context(|| format!("writing {destination}"))?;
    Ok(predicted)
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
