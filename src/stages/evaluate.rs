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

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::split::SplitSummary;
use super::{StageContext, StageError, read_json, write_json};
use crate::data::loader::{LoaderConfig, batches};
use crate::data::manifest::read_manifest;
use crate::data::pack::PackedSplit;
use crate::metrics::report::{ClassificationReport, ConfusionMatrix};
use crate::metrics::{AverageMeter, topk_correct};
use crate::model::{VisionLstm, load_pretrained};
use crate::pipeline::StageKind;
use crate::report::{ImageFormat, write_confusion_heatmap};
use crate::train::checkpoint::CheckpointConfig;

/// Which exported weights are evaluated, in report order.
const WEIGHTS: [&str; 2] = ["best", "ema"];

/// Scores of one (weights, split) pair in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    /// Mean cross-entropy.
    pub loss: f64,
    /// ACC1 in percent.
    pub acc1: f64,
    /// ACC5 in percent.
    pub acc5: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
    /// Images evaluated.
    pub images: u64,
    /// The epoch the weights are from.
    pub epoch: u32,
}

/// `metrics.json`: weights ⇒ split ⇒ scores.
pub type EvalMetrics = BTreeMap<String, BTreeMap<String, EvalScores>>;

/// Predictions of a model on one split.
struct Predictions {
    /// Softmax probabilities, `[images, classes]` row-major, in pack order.
    probabilities: Vec<f32>,
    labels: Vec<usize>,
    loss: f64,
    top1: u64,
    top5: u64,
}

/// Runs `model` over a whole split in pack order.
fn predict<B: Backend>(
    model: &VisionLstm<B>,
    pack: Arc<PackedSplit>,
    config: &LoaderConfig,
    classes: usize,
    device: &B::Device,
) -> Result<Predictions, StageError> {
    let count = pack.len();
    let mut probabilities = vec![0.0f32; count * classes];
    let mut labels = vec![0usize; count];
    let mut loss = AverageMeter::new();
    let (mut top1, mut top5) = (0u64, 0u64);
    for batch in batches(pack, config, 0, classes)? {
        let images = Tensor::<B, 4>::from_data(
            TensorData::new(batch.images, [batch.n, 3, batch.height, batch.width]),
            device,
        );
        let logits: Vec<f32> = model
            .forward(images)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|error| StageError::Invalid(format!("reading logits: {error:?}")))?;
        top1 += topk_correct(&logits, &batch.labels, classes, 1) as u64;
        top5 += topk_correct(&logits, &batch.labels, classes, 5) as u64;
        for ((row, &label), &index) in logits
            .chunks_exact(classes)
            .zip(&batch.labels)
            .zip(&batch.indices)
        {
            let (row_probabilities, row_loss) = softmax_with_loss(row, label);
            loss.update(row_loss, 1);
            probabilities[index * classes..(index + 1) * classes]
                .copy_from_slice(&row_probabilities);
            labels[index] = label;
        }
    }
    Ok(Predictions {
        probabilities,
        labels,
        loss: loss.average(),
        top1,
        top5,
    })
}

/// Softmax of a logit row and the cross-entropy of `label`, in f64 for stability.
pub fn softmax_with_loss(row: &[f32], label: usize) -> (Vec<f32>, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exponentials: Vec<f64> = row
        .iter()
        .map(|&value| (f64::from(value) - f64::from(max)).exp())
        .collect();
    let sum: f64 = exponentials.iter().sum();
    let probabilities = exponentials.iter().map(|&e| (e / sum) as f32).collect();
    let loss = sum.ln() + f64::from(max) - f64::from(row[label]);
    (probabilities, loss)
}

/// The highest-probability class of each row (lower index on ties).
pub fn argmax_rows(probabilities: &[f32], classes: usize) -> Vec<usize> {
    probabilities
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (index, &value) in row.iter().enumerate() {
                if value > row[best] {
                    best = index;
                }
            }
            best
        })
        .collect()
}

/// Loads exported weights (`<dir>/model.safetensors` + `config.json`) on a backend.
pub fn load_exported<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(VisionLstm<B>, CheckpointConfig), StageError> {
    let config: CheckpointConfig = read_json(&dir.join("config.json"))?;
    let model = config.model.init::<B>(device);
    let (model, _) = load_pretrained(model, &dir.join("model.safetensors"), device)
        .map_err(|error| StageError::Invalid(error.to_string()))?;
    Ok((model, config))
}

fn percent(count: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * count as f64 / total as f64
    }
}

/// Runs the stage.
pub fn run(context: &StageContext<'_>, out: &Path) -> Result<String, StageError> {
    let split_dir = context.upstream(StageKind::Split)?;
    let summary: SplitSummary = read_json(&split_dir.join("split.json"))?;
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
        if !dir.join("config.json").is_file() {
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
            let predictions = predict(&model, pack, &loader, classes, &device)?;
            spinner.finish_and_clear();
            let predicted = argmax_rows(&predictions.probabilities, classes);
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
                .to_csv(&folder.join("classification_report.csv"))
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
    write_json(&out.join("metrics.json"), &metrics)?;
    fs_err::write(out.join("report.md"), markdown)?;
    Ok(headline)
}

/// `misclassified.csv`: file, true class, predicted class, its probability, the true class's.
fn write_misclassified(
    path: &Path,
    rows: &[crate::data::manifest::ManifestRow],
    predictions: &Predictions,
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
        let probabilities = &predictions.probabilities[index * count..(index + 1) * count];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_loss_match_hand_values() {
        let (probabilities, loss) = softmax_with_loss(&[0.0, 0.0, (2.0f32).ln()], 2);
        assert!((probabilities[2] - 0.5).abs() < 1e-6);
        assert!((probabilities[0] - 0.25).abs() < 1e-6);
        assert!((loss - 2.0f64.ln()).abs() < 1e-6);
        assert_eq!(argmax_rows(&[0.1, 0.7, 0.2, 0.5, 0.5, 0.0], 3), vec![1, 0]);
    }
}
