//! A trained model with everything needed to feed it image files: the class names, the input
//! size, the normalisation and the evaluation transforms.
//!
//! Preprocessing is the evaluate stage's, step for step, so that predicting on the validation
//! images reproduces the evaluation: decode to 8-bit RGB; resize to the model's square size,
//! which is what the augment stage stores (an image already at that size is left alone); run
//! the evaluation transforms with the RNG the evaluation loader gives sample `i` (seed 0, epoch
//! 0, `i` counting the images that decoded); normalise with the mean and std. Callers fill
//! batches with readable images only, so on the same list of files they are the evaluation's
//! batches too.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use rayon::prelude::*;

use super::{InferenceError, load_exported};
use crate::backend::{Cpu, cpu_device};
use crate::data::image::{BadImage, decode_rgb8, resize_shorter_side, resize_square};
use crate::data::scan::walk_visible;
use crate::data::transforms::{Transform, apply_pipeline, sample_rng, to_normalized_chw};
use crate::metrics::softmax_with_loss;
use crate::model::{LoadReport, VilConfig, VisionLstm, load_pretrained};

/// A model on the CPU backend and how to feed it.
pub struct Predictor {
    model: VisionLstm<Cpu>,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Side of the square input images.
    pub image_size: u32,
    /// The shorter side images are stored at before the transforms (see
    /// [`super::CheckpointConfig::storage_size`]).
    storage_size: Option<u32>,
    mean: [f32; 3],
    std: [f32; 3],
    transforms: Vec<Transform>,
}

/// What an exported model records besides its weights, for a summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedOrigin {
    /// `raw` or `ema`.
    pub weights: String,
    /// The epoch the weights are from.
    pub epoch: u32,
}

impl Predictor {
    /// The exported weights in `dir` (`model.safetensors` + `config.json`), fed as recorded.
    pub fn from_exported(dir: &Path) -> Result<(Self, ExportedOrigin), InferenceError> {
        let (model, config) = load_exported::<Cpu>(dir, &cpu_device())?;
        let origin = ExportedOrigin {
            weights: config.weights,
            epoch: config.epoch,
        };
        let predictor = Self {
            model,
            classes: config.classes,
            image_size: config.image_size,
            storage_size: config.storage_size,
            mean: config.mean.map(|value| value as f32),
            std: config.std.map(|value| value as f32),
            transforms: config.val_transforms,
        };
        Ok((predictor, origin))
    }

    /// The model `config` describes with the weights of a file made elsewhere (an official
    /// checkpoint), fed with `mean` and `std` and no transforms; `config` is validated and its
    /// class count is that of `classes`.
    pub fn from_weights(
        config: &VilConfig,
        weights: &Path,
        classes: Vec<String>,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Result<(Self, LoadReport), InferenceError> {
        let image_size = u32::try_from(config.image_size)
            .map_err(|_| InferenceError::ImageSize(config.image_size))?;
        let device = cpu_device();
        let (model, report) = load_pretrained(config.init::<Cpu>(&device), weights, &device)?;
        let predictor = Self {
            model,
            classes,
            image_size,
            storage_size: None,
            mean,
            std,
            transforms: Vec::new(),
        };
        Ok((predictor, report))
    }

    /// Decoded image ⇒ the image as the augment stage stores it: at the storage size's shorter
    /// side with its aspect kept, or squashed to the model's input square.
    pub fn load(&self, path: &Path) -> Result<RgbImage, BadImage> {
        decode_rgb8(path).map(|image| match self.storage_size {
            Some(side) => resize_shorter_side(image, side),
            None => resize_square(&image, self.image_size),
        })
    }

    /// Softmax probabilities, `[images, classes]` row-major, of images `first..` of the
    /// sequence of readable images (the evaluation RNG of image `i` is drawn from `i`).
    pub fn probabilities(
        &self,
        images: &[RgbImage],
        first: u64,
    ) -> Result<Vec<f32>, InferenceError> {
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
            .map_err(|error| InferenceError::Logits(format!("{error:?}")))?;
        Ok(logits
            .chunks_exact(self.classes.len())
            .flat_map(|row| softmax_with_loss(row, 0).0)
            .collect())
    }
}

/// What [`Predictor::predict_files`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictedFiles {
    /// Images predicted.
    pub count: u64,
    /// Files that did not decode, and why.
    pub skipped: Vec<Unlisted>,
}

impl Predictor {
    /// Decodes `files` a batch at a time (in parallel), predicts the readable ones in batches
    /// of `batch` images, and hands each image's probabilities to `row`, in file order;
    /// `progress` is told how many more files were read.
    pub fn predict_files<E: From<InferenceError>>(
        &self,
        files: &[PathBuf],
        batch: usize,
        mut row: impl FnMut(&Path, &[f32]) -> Result<(), E>,
        mut progress: impl FnMut(u64),
    ) -> Result<PredictedFiles, E> {
        let batch = batch.max(1);
        let classes = self.classes.len();
        let mut pending: Vec<(&Path, RgbImage)> = Vec::with_capacity(2 * batch);
        let mut result = PredictedFiles {
            count: 0,
            skipped: Vec::new(),
        };
        let mut flush = |pending: Vec<(&Path, RgbImage)>, result: &mut PredictedFiles| {
            let (names, images): (Vec<&Path>, Vec<RgbImage>) = pending.into_iter().unzip();
            let probabilities = self.probabilities(&images, result.count)?;
            for (file, row_probabilities) in names.iter().zip(probabilities.chunks_exact(classes)) {
                row(file, row_probabilities)?;
            }
            result.count += names.len() as u64;
            Ok::<(), E>(())
        };
        for chunk in files.chunks(batch) {
            let loaded: Vec<_> = chunk.par_iter().map(|file| self.load(file)).collect();
            for (file, image) in chunk.iter().zip(loaded) {
                match image {
                    Ok(image) => pending.push((file, image)),
                    Err(reason) => result.skipped.push(Unlisted {
                        file: file.display().to_string(),
                        reason: reason.to_string(),
                    }),
                }
            }
            while pending.len() >= batch {
                let rest = pending.split_off(batch);
                flush(std::mem::replace(&mut pending, rest), &mut result)?;
            }
            progress(chunk.len() as u64);
        }
        if !pending.is_empty() {
            flush(pending, &mut result)?;
        }
        Ok(result)
    }
}

/// A path that could not be listed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlisted {
    /// The path.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// Every file named by `paths`: files as given, folders walked recursively in name order,
/// hidden entries left out; entries that cannot be listed come back separately. A path that
/// does not exist is an error naming it.
pub fn image_files(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<Unlisted>), PathBuf> {
    let mut files = Vec::new();
    let mut unlisted = Vec::new();
    for path in paths {
        let Ok(metadata) = fs_err::metadata(path) else {
            return Err(path.clone());
        };
        if !metadata.is_dir() {
            files.push(path.clone());
            continue;
        }
        for entry in walk_visible(path) {
            match entry {
                Ok(entry) if entry.file_type().is_file() => files.push(entry.into_path()),
                Ok(_) => {}
                Err(error) => unlisted.push(Unlisted {
                    file: error.path().unwrap_or(path).display().to_string(),
                    reason: error
                        .io_error()
                        .map_or_else(|| error.to_string(), ToString::to_string),
                }),
            }
        }
    }
    Ok((files, unlisted))
}
