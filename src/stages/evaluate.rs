//! The `evaluate` stage: the trained weights (`best`, and the EMA weights when training kept
//! them) on the validation split and, with `data.test_root`, the test split.
//!
//! For each (weights, split) pair: loss, ACC1, ACC5; a per-class report with scikit-learn's
//! numbers (`classification_report.csv`); the confusion matrix as CSV and as a labelled heat-map
//! PNG; `misclassified.csv`. The pair (`best`, `val`) is written at the top of the folder, the
//! others under `<weights>_<split>/`. `metrics.json` holds every pair's scores and `report.md`
//! reads on its own, linking the images.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use super::split::{SPLIT_FILE, SplitSummary};
use super::{StageContext, StageError, read_json, write_json};
use crate::data::loader::LoaderConfig;
use crate::data::manifest::read_manifest;
use crate::data::pack::PackedSplit;
use crate::inference::{EXPORTED_CONFIG, SplitPredictions, load_exported, predict_split};
use crate::metrics::report::{ClassificationReport, ConfusionMatrix};
use crate::metrics::{EvalMetrics, EvalScores, METRICS_FILE, REPORT_FILE, argmax_rows, percent};
use crate::pipeline::StageKind;
use crate::report::{ImageFormat, write_confusion_heatmap};

/// Which exported weights are evaluated, in report order.
const WEIGHTS: [&str; 2] = ["best", "ema"];

/// Runs the stage.
pub fn run(context: &StageContext<'_>, out: &Path) -> Result<String, StageError> {
    let split_dir = context.upstream(StageKind::Split)?;
    let summary: SplitSummary = read_json(&split_dir.join(SPLIT_FILE))?;
    let packs = context.upstream(StageKind::Augment)?;
    let trained = context.upstream(StageKind::Train)?;
    let classes = summary.classes.len();
    let splits: Vec<&str> = ["val", "test"]
        .into_iter()
        .filter(|split| summary.roots.contains_key(*split))
        .collect();
    let device = crate::backend::cpu_device();
    let mut metrics: EvalMetrics = BTreeMap::new();
    let mut markdown = String::from("# Evaluation\n\n");
    let mut headline = String::new();
    for weights in WEIGHTS {
        let dir = trained.join(weights);
        if !dir.join(EXPORTED_CONFIG).is_file() {
            continue;
        }
        let (model, config) = load_exported::<crate::backend::Cpu>(&dir, &device)?;
        for split in &splits {
            let pack = Arc::new(PackedSplit::open(packs, split)?);
            let rows = read_manifest(&split_dir.join(format!("{split}.csv")))?;
            let loader = LoaderConfig {
                batch_size: 64,
                shuffle: false,
                drop_last: false,
                seed: 0,
                workers: 1,
                prefetch: 2,
                image_size: config.image_size,
                mean: config.mean.map(|v| v as f32),
                std: config.std.map(|v| v as f32),
                transforms: config.val_transforms.clone(),
                mixup: None,
            };
            let spinner = context
                .reporter
                .spinner("evaluate", &format!("{weights} on {split}"));
            let predictions =
                predict_split(&model, pack, &loader, 0, classes, &device, None, true)?;
            let probabilities = predictions.probabilities.as_deref().unwrap_or_default();
            spinner.finish_and_clear();
            let predicted = argmax_rows(probabilities, classes);
            let report = ClassificationReport::from_labels(
                &predictions.labels,
                &predicted,
                &summary.classes,
            )
            .map_err(|error| StageError::Invalid(error.to_string()))?;
            let confusion = ConfusionMatrix::from_labels(&predictions.labels, &predicted, classes)
                .map_err(|error| StageError::Invalid(error.to_string()))?;
            let folder_name = if (weights, *split) == ("best", "val") {
                String::new()
            } else {
                format!("{weights}_{split}")
            };
            let folder = out.join(&folder_name);
            fs_err::create_dir_all(&folder)?;
            report
                .to_csv(&folder.join(REPORT_FILE))
                .map_err(|error| StageError::Invalid(error.to_string()))?;
            confusion
                .to_csv(&folder.join("confusion_matrix.csv"), &summary.classes)
                .map_err(|error| StageError::Invalid(error.to_string()))?;
            let title = format!("Confusion matrix — {weights} weights on {split}");
            write_confusion_heatmap(
                &confusion,
                &summary.classes,
                &title,
                &folder.join("confusion_matrix.png"),
                ImageFormat::Png,
            )
            .map_err(|error| StageError::Invalid(error.to_string()))?;
            write_misclassified(
                &folder.join("misclassified.csv"),
                &rows,
                &predictions,
                &predicted,
                &summary.classes,
            )?;
            let images = predictions.labels.len() as u64;
            let scores = EvalScores {
                loss: predictions.loss,
                acc1: percent(predictions.top1, images),
                acc5: percent(predictions.top5, images),
                macro_f1: report.macro_avg.f1,
                images,
                epoch: config.epoch,
            };
            let prefix = if folder_name.is_empty() {
                String::new()
            } else {
                format!("{folder_name}/")
            };
            let _ = write!(
                markdown,
                "## {weights} weights (epoch {}, {}) on {split}\n\n\
                 | images | loss | ACC1 | ACC5 | macro F1 |\n|---|---|---|---|---|\n\
                 | {images} | {:.4} | {:.2}% | {:.2}% | {:.4} |\n\n{}\n\
                 ![confusion matrix]({prefix}confusion_matrix.png)\n\n\
                 Files: [{prefix}classification_report.csv]({prefix}classification_report.csv), \
                 [{prefix}confusion_matrix.csv]({prefix}confusion_matrix.csv), \
                 [{prefix}misclassified.csv]({prefix}misclassified.csv)\n\n",
                config.epoch,
                config.weights,
                scores.loss,
                scores.acc1,
                scores.acc5,
                scores.macro_f1,
                report.to_markdown(),
            );
            if headline.is_empty() || weights == "ema" {
                let _ = write!(
                    headline,
                    "{}{weights} {split} ACC1 {:.2}% ACC5 {:.2}%",
                    if headline.is_empty() { "" } else { ", " },
                    scores.acc1,
                    scores.acc5
                );
            }
            metrics
                .entry(weights.to_owned())
                .or_default()
                .insert((*split).to_owned(), scores);
        }
    }
    if metrics.is_empty() {
        return Err(StageError::Invalid(format!(
            "{}: no trained weights to evaluate (expected best/config.json)",
            trained.display()
        )));
    }
    write_json(&out.join(METRICS_FILE), &metrics)?;
    fs_err::write(out.join("report.md"), markdown)?;
    Ok(headline)
}

/// `misclassified.csv`: file, true class, predicted class, its probability, the true class's.
fn write_misclassified(
    path: &Path,
    rows: &[crate::data::manifest::ManifestRow],
    predictions: &SplitPredictions,
    predicted: &[usize],
    classes: &[String],
) -> Result<(), StageError> {
    let count = classes.len();
    let mut writer = csv::Writer::from_path(path)
        .map_err(|error| StageError::Invalid(format!("{}: {error}", path.display())))?;
    let io = |error: csv::Error| StageError::Invalid(format!("{}: {error}", path.display()));
    writer
        .write_record([
            "file",
            "true_class",
            "predicted_class",
            "probability",
            "true_class_probability",
        ])
        .map_err(io)?;
    for (index, (row, &guess)) in rows.iter().zip(predicted).enumerate() {
        let label = predictions.labels[index];
        if guess == label {
            continue;
        }
        let probabilities = &predictions.probabilities.as_deref().unwrap_or_default()
            [index * count..(index + 1) * count];
        writer
            .write_record([
                row.path.as_str(),
                classes[label].as_str(),
                classes[guess].as_str(),
                &format!("{:.6}", probabilities[guess]),
                &format!("{:.6}", probabilities[label]),
            ])
            .map_err(io)?;
    }
    writer
        .flush()
        .map_err(|error| StageError::Invalid(format!("{}: {error}", path.display())))?;
    Ok(())
}
