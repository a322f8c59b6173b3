//! Validation of one set of weights on a whole split: mean cross-entropy and top-1/top-5
//! accuracy, the numbers `history.csv` records for the raw and the EMA weights every epoch.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use super::checkpoint::ValScores;
use super::precision::cast_params;
use super::trainer::TrainError;
use crate::data::loader::{LoaderConfig, batches};
use crate::data::pack::PackedSplit;
use crate::metrics::{AverageMeter, topk_correct};
use crate::model::VisionLstm;

/// Validation loss and top-1/top-5 accuracy of `model` on the whole split.
///
/// The loss is computed on the host in f64 from the logits the accuracy needs anyway.
pub fn validate<B: Backend>(
    model: &VisionLstm<B>,
    pack: &Arc<PackedSplit>,
    config: &LoaderConfig,
    epoch: u64,
    classes: usize,
    device: &B::Device,
    compute: Option<FloatDType>,
) -> Result<ValScores, TrainError> {
    let model = match compute {
        Some(half) => cast_params(model.clone(), half),
        None => model.clone(),
    };
    let mut loss = AverageMeter::new();
    let (mut top1, mut top5, mut samples) = (0_u64, 0_u64, 0_u64);
    for batch in batches(Arc::clone(pack), config, epoch, classes)? {
        let images = Tensor::<B, 4>::from_data(
            TensorData::new(batch.images, [batch.n, 3, batch.height, batch.width]),
            (device, DType::F32),
        );
        let logits = match compute {
            Some(half) => model.forward(images.cast(half)).cast(FloatDType::F32),
            None => model.forward(images),
        };
        let logits: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default();
        for (row, &label) in logits.chunks_exact(classes).zip(&batch.labels) {
            loss.update(cross_entropy(row, label), 1);
        }
        top1 += topk_correct(&logits, &batch.labels, classes, 1) as u64;
        top5 += topk_correct(&logits, &batch.labels, classes, 5) as u64;
        samples += batch.n as u64;
    }
    Ok(ValScores {
        loss: loss.average(),
        acc1: percent(top1, samples),
        acc5: percent(top5, samples),
    })
}

/// `−log softmax(row)[label]` in f64.
fn cross_entropy(row: &[f32], label: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = row
        .iter()
        .map(|&value| (f64::from(value) - f64::from(max)).exp())
        .sum::<f64>()
        .ln()
        + f64::from(max);
    log_sum - f64::from(row[label])
}

/// `hits` out of `total` in percent (0 for an empty total).
pub(crate) fn percent(hits: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * hits as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_the_definition() {
        let row = [2.0_f32, 0.0, -1.0];
        let log_sum = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
        assert!((cross_entropy(&row, 1) - log_sum).abs() < 1e-12);
        // Large logits do not overflow: the maximum is subtracted first.
        assert!((cross_entropy(&[1000.0, 1000.0], 0) - 2.0_f64.ln()).abs() < 1e-9);
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(0, 0), 0.0);
    }
}
