//! Validation of one set of weights on a whole split: mean cross-entropy and top-1/top-5
//! accuracy, the numbers `history.csv` records for the raw and the EMA weights every epoch.

use std::sync::Arc;

use burn::tensor::FloatDType;
use burn::tensor::backend::Backend;

use super::checkpoint::ValScores;
use super::precision::cast_params;
use super::trainer::TrainError;
use crate::data::loader::LoaderConfig;
use crate::data::pack::PackedSplit;
use crate::inference::predict_split;
use crate::metrics::percent;
use crate::model::VisionLstm;

/// Validation loss and top-1/top-5 accuracy of `model` on the whole split, in `compute`'s
/// precision when given.
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
    let predictions = predict_split(
        &model,
        Arc::clone(pack),
        config,
        epoch,
        classes,
        device,
        compute,
        false,
    )?;
    Ok(ValScores {
        loss: predictions.loss,
        acc1: percent(predictions.top1, predictions.images),
        acc5: percent(predictions.top5, predictions.images),
    })
}
