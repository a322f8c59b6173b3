//! Running a trained model forward: the exported weights (`model.safetensors` with the official
//! names plus `config.json` saying how to rebuild and feed the model), and one batched pass over
//! a packed split that gives the loss, top-1/top-5 counts and, when asked, the probabilities.
//!
//! The validation pass of every epoch and the evaluate stage share [`predict_split`], so the
//! numbers in `history.csv` and in `metrics.json` are computed the same way; `vilab predict`
//! feeds image files through a [`Predictor`] with the same preprocessing.

mod predictor;

pub use predictor::{ExportedOrigin, PredictedFiles, Predictor, Unlisted, image_files};

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::DataError;
use crate::data::loader::{LoaderConfig, batches};
use crate::data::pack::PackedSplit;
use crate::data::transforms::Transform;
use crate::metrics::{AverageMeter, cross_entropy, softmax_with_loss, topk_correct};
use crate::model::{PretrainedError, VilConfig, VisionLstm, load_pretrained};

/// The weights file of an exported model.
pub const EXPORTED_WEIGHTS: &str = "model.safetensors";
/// The description of an exported model ([`CheckpointConfig`]).
pub const EXPORTED_CONFIG: &str = "config.json";

/// Why a model could not be loaded or run; names the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The loader failed (a packed split could not be read).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file system failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `config.json` is not an exported model's description.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights do not load into the model the config describes.
    #[error(transparent)]
    Weights(#[from] PretrainedError),
    /// The model's output could not be read back to the host.
    #[error("reading logits: {0}")]
    Logits(String),
    /// The model's input side does not fit the image types.
    #[error("image size {0} is too large")]
    ImageSize(usize),
}

/// How to rebuild and feed an exported model (`best/config.json`, `last/config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// vilab's version.
    pub vilab: String,
    /// The model's hyper-parameters (class count and image size included).
    pub model: VilConfig,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Side of the square input images.
    pub image_size: u32,
    /// `data.storage_size`: images are first resized to this shorter side with their aspect
    /// kept, as the packs the model was trained and evaluated on; absent, squashed to
    /// `image_size`².
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<u32>,
    /// Per-channel mean the inputs are normalised with.
    pub mean: [f64; 3],
    /// Per-channel standard deviation the inputs are normalised with.
    pub std: [f64; 3],
    /// The deterministic preparation of evaluation images (`augment.val`).
    pub val_transforms: Vec<Transform>,
    /// `raw` or `ema`: which weights the file holds (`train.select` decides).
    pub weights: String,
    /// The epoch (1-based) the weights are from; 0 for untrained weights.
    pub epoch: u32,
    /// Validation scores of these weights at that epoch (absent for untrained weights).
    pub val: Option<ValScores>,
}

/// Validation scores of one set of weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValScores {
    /// Mean cross-entropy.
    pub loss: f64,
    /// ACC1 in percent.
    pub acc1: f64,
    /// ACC5 in percent.
    pub acc5: f64,
}

/// Loads exported weights (`<dir>/model.safetensors` + `config.json`) on a backend.
pub fn load_exported<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(VisionLstm<B>, CheckpointConfig), InferenceError> {
    let path = dir.join(EXPORTED_CONFIG);
    let text = fs_err::read(&path)?;
    let config: CheckpointConfig =
        serde_json::from_slice(&text).map_err(|error| InferenceError::Config {
            message: error.to_string(),
            path: path.clone(),
        })?;
    let model = config.model.init::<B>(device);
    let (model, _) = load_pretrained(model, &dir.join(EXPORTED_WEIGHTS), device)?;
    Ok((model, config))
}

/// What one pass over a split gives.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPredictions {
    /// Softmax probabilities, `[images, classes]` row-major, in pack order (when asked for).
    pub probabilities: Option<Vec<f32>>,
    /// The label of every image, in pack order.
    pub labels: Vec<usize>,
    /// Mean cross-entropy (computed on the host in f64).
    pub loss: f64,
    /// Images whose label is the top class.
    pub top1: u64,
    /// Images whose label is among the top five classes.
    pub top5: u64,
    /// Images seen.
    pub images: u64,
}

/// Runs `model` over a whole packed split in batches (the loader's deterministic evaluation
/// order for `epoch`); `compute` casts the inputs to a half type and the logits back to f32,
/// for a model whose parameters are in that type. With `keep_probabilities` the softmax of
/// every image is kept.
#[allow(clippy::too_many_arguments)]
pub fn predict_split<B: Backend>(
    model: &VisionLstm<B>,
    pack: Arc<PackedSplit>,
    config: &LoaderConfig,
    epoch: u64,
    classes: usize,
    device: &B::Device,
    compute: Option<FloatDType>,
    keep_probabilities: bool,
) -> Result<SplitPredictions, InferenceError> {
    let count = pack.len();
    let mut probabilities = keep_probabilities.then(|| vec![0.0f32; count * classes]);
    let mut labels = vec![0usize; count];
    let mut loss = AverageMeter::new();
    let (mut top1, mut top5, mut images) = (0u64, 0u64, 0u64);
    for batch in batches(pack, config, epoch, classes)? {
        let inputs = Tensor::<B, 4>::from_data(
            TensorData::new(batch.images, [batch.n, 3, batch.height, batch.width]),
            (device, DType::F32),
        );
        let logits = match compute {
            Some(half) => model.forward(inputs.cast(half)).cast(FloatDType::F32),
            None => model.forward(inputs),
        };
        let logits: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|error| InferenceError::Logits(format!("{error:?}")))?;
        top1 += topk_correct(&logits, &batch.labels, classes, 1) as u64;
        top5 += topk_correct(&logits, &batch.labels, classes, 5) as u64;
        images += batch.n as u64;
        for ((row, &label), &index) in logits
            .chunks_exact(classes)
            .zip(&batch.labels)
            .zip(&batch.indices)
        {
            labels[index] = label;
            match probabilities.as_mut() {
                Some(probabilities) => {
                    let (row_probabilities, row_loss) = softmax_with_loss(row, label);
                    loss.update(row_loss, 1);
                    probabilities[index * classes..(index + 1) * classes]
                        .copy_from_slice(&row_probabilities);
                }
                None => loss.update(cross_entropy(row, label), 1),
            }
        }
    }
    Ok(SplitPredictions {
        probabilities,
        labels,
        loss: loss.average(),
        top1,
        top5,
        images,
    })
}
