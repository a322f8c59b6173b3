//! The batch loader: packed uint8 images to normalised, augmented, mixed float batches.
//!
//! Training reads a [`PackedSplit`] (memory-mapped NHWC bytes written by the `augment` stage)
//! through [`batches`], which yields one epoch of [`Batch`]es in order. Worker threads build
//! batches ahead of the training step, each worker owning every `workers`-th batch and handing
//! it over through its own bounded channel, so at most about `prefetch` finished batches wait in
//! memory and the consumer reads them back in order without a reordering buffer.
//!
//! Determinism does not depend on threads: the sample order comes from [`epoch_order`] (seed,
//! epoch), each sample's augmentation RNG from `sample_rng(seed, epoch, index)` and each batch's
//! MixUp/CutMix RNG from (seed, epoch, batch index), so one worker, four workers and the inline
//! mode (`workers: 0`) give bit-identical batches, and a run resumed at an epoch boundary sees
//! the same pixels. Without transforms and at the pack's own size the bytes are normalised
//! straight from the mapping into the batch buffer; otherwise each sample is copied into a
//! per-worker image, run through the transform list, and normalised.
//!
//! Dropping a [`Loader`] before the end of the epoch stops its workers: they check a flag
//! between samples, see their channel closed, and are joined, so nothing keeps running. A worker
//! that panics (a bug in a transform) re-raises its panic in the consumer instead of silently
//! ending the epoch early.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::error::DataError;
use crate::data::mixup::{MixMode, MixupConfig, smooth_targets};
use crate::data::pack::{CHANNELS, PackedSplit};
use crate::data::transforms::{Scratch, Transform, apply_pipeline_with, sample_rng};

/// How one epoch of one split is turned into batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (the last batch may be shorter unless `drop_last`).
    pub batch_size: usize,
    /// Draw a fresh permutation every epoch (training) or keep pack order (validation).
    pub shuffle: bool,
    /// Leave out a last batch shorter than `batch_size`.
    pub drop_last: bool,
    /// The experiment seed; order, augmentation and mixing all derive from it.
    pub seed: u64,
    /// Threads building batches; 0 builds each batch on the calling thread when asked for.
    pub workers: usize,
    /// Finished batches allowed to wait for the consumer, across all workers.
    pub prefetch: usize,
    /// Side of the square images handed to the model.
    pub image_size: u32,
    /// Per-channel mean of pixel values in [0, 1] (from the `stats` stage).
    pub mean: [f32; 3],
    /// Per-channel standard deviation, each > 0.
    pub std: [f32; 3],
    /// Augmentations applied in order to every sample (`augment.train` or `augment.val`).
    pub transforms: Vec<Transform>,
    /// MixUp/CutMix and label smoothing; `None` gives one-hot targets.
    pub mixup: Option<MixupConfig>,
}

/// One batch, ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[n, 3, height, width]` normalised floats, after augmentation and mixing.
    pub images: Vec<f32>,
    /// The un-mixed labels, for accuracy and plain cross-entropy.
    pub labels: Vec<usize>,
    /// `[n, classes]` soft targets: mixed and smoothed with `mixup`, one-hot without it.
    pub targets: Vec<f32>,
    /// Position of each sample in the pack.
    pub indices: Vec<usize>,
    /// Samples in this batch.
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

/// Number of batches one epoch of `len` samples gives.
pub fn batches_per_epoch(len: usize, batch_size: usize, drop_last: bool) -> usize {
    if batch_size == 0 {
        0
    } else if drop_last {
        len / batch_size
    } else {
        len.div_ceil(batch_size)
    }
}

/// The order in which epoch `epoch` visits the `len` samples: a permutation drawn from ChaCha8
/// keyed by (seed, epoch) when `shuffle`, otherwise `0..len`.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        order.shuffle(&mut keyed_rng(seed, epoch, 0, b"order\0\0\0"));
    }
    order
}

/// The MixUp/CutMix RNG of batch `batch_index` of `epoch`.
pub fn mix_rng(seed: u64, epoch: u64, batch_index: u64) -> ChaCha8Rng {
    keyed_rng(seed, epoch, batch_index, b"mixup\0\0\0")
}

/// A ChaCha8 stream keyed by three numbers and a tag; the tags keep the order, mixing and
/// augmentation streams apart even when their numbers coincide (like [`sample_rng`]'s).
fn keyed_rng(seed: u64, epoch: u64, index: u64, tag: &[u8; 8]) -> ChaCha8Rng {
    let mut key = [0_u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(tag);
    ChaCha8Rng::from_seed(key)
}

/// Starts loading epoch `epoch` of `pack` and returns the batches as an iterator.
///
/// # Errors
/// As [`batches_from`].
pub fn batches(
    pack: Arc<PackedSplit>,
    config: &LoaderConfig,
    epoch: u64,
    classes: usize,
) -> Result<Loader, DataError> {
    batches_from(pack, config, epoch, classes, 0)
}

/// Like [`batches`], but starts at batch `first_batch` of the epoch without building the
/// earlier ones, for a run resumed mid-epoch; the batches are the same as those [`batches`]
/// yields from that position on.
///
/// # Errors
/// [`DataError::Invalid`] naming the pack's `.u8` file for a zero batch or image size, a
/// non-positive standard deviation, a label outside `classes`, or an odd `batch_size` with a
/// MixUp mode that pairs samples (`pair`, `elem`); [`DataError::Io`] when a worker thread cannot
/// be started.
pub fn batches_from(
    pack: Arc<PackedSplit>,
    config: &LoaderConfig,
    epoch: u64,
    classes: usize,
    first_batch: usize,
) -> Result<Loader, DataError> {
    check_config(&pack, config, classes)?;
    let side = config.image_size as usize;
    let batch_count = batches_per_epoch(pack.len(), config.batch_size, config.drop_last);
    let plan = Arc::new(EpochPlan {
        order: epoch_order(pack.len(), config.seed, epoch, config.shuffle),
        batch_count,
        first_batch: first_batch.min(batch_count),
        fast_path: config.transforms.is_empty()
            && pack.info().shorter_side.is_none()
            && pack.height() == side
            && pack.width() == side,
        table: NormalizeTable::new(config.mean, config.std),
        pack,
        config: config.clone(),
        epoch,
        classes,
    });
    let threads = config.workers.min(plan.batch_count - plan.first_batch);
    let source = if threads == 0 {
        Source::Inline(Box::new(BatchBuilder::new(Arc::clone(&plan))))
    } else {
        Source::Threads(Workers::start(&plan, threads)?)
    };
    Ok(Loader {
        next_batch: plan.first_batch,
        plan,
        source,
    })
}

fn check_config(
    pack: &PackedSplit,
    config: &LoaderConfig,
    classes: usize,
) -> Result<(), DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: pack.pixels_path().to_path_buf(),
        message,
    };
    if config.batch_size == 0 {
        return Err(invalid("loader batch size must be at least 1".to_owned()));
    }
    if config.image_size == 0 {
        return Err(invalid("loader image size must be at least 1".to_owned()));
    }
    if let Some(channel) = (0..3).find(|&channel| {
        let std = config.std[channel];
        !std.is_finite() || std <= 0.0
    }) {
        return Err(invalid(format!(
            "normalisation std[{channel}] must be > 0 and finite (got {})",
            config.std[channel]
        )));
    }
    if let Some(index) = (0..pack.len()).find(|&index| pack.label(index) >= classes) {
        return Err(invalid(format!(
            "image {index} has label {}, outside the {classes} classes",
            pack.label(index)
        )));
    }
    if let Some(mixup) = &config.mixup
        && mixup.enabled()
        && mixup.mode != MixMode::Batch
        && !config.batch_size.is_multiple_of(2)
    {
        return Err(invalid(format!(
            "mixup mode {:?} pairs samples and needs an even batch size (got {})",
            mixup.mode, config.batch_size
        )));
    }
    Ok(())
}

/// One epoch of batches, in order; see the module documentation.
pub struct Loader {
    plan: Arc<EpochPlan>,
    next_batch: usize,
    source: Source,
}

impl Loader {
    /// Batches in the whole epoch, including those already taken.
    pub fn batch_count(&self) -> usize {
        self.plan.batch_count
    }

    /// The epoch's sample order.
    pub fn order(&self) -> &[usize] {
        &self.plan.order
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let batch_index = self.next_batch;
        if batch_index >= self.plan.batch_count {
            return None;
        }
        self.next_batch += 1;
        match &mut self.source {
            // Without a stop flag a builder always finishes its batch.
            Source::Inline(builder) => builder.build(batch_index, None),
            Source::Threads(workers) => Some(workers.receive(batch_index)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // `next_batch` never passes `batch_count`: both `first_batch` and `next` stop there.
        let left = self.plan.batch_count - self.next_batch;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Loader {}

/// Everything fixed for one epoch, shared read-only by the workers.
struct EpochPlan {
    pack: Arc<PackedSplit>,
    config: LoaderConfig,
    epoch: u64,
    classes: usize,
    order: Vec<usize>,
    batch_count: usize,
    /// The batch the loader starts at (0 unless resuming mid-epoch).
    first_batch: usize,
    /// No transforms and the pack already at `image_size`: normalise bytes directly.
    fast_path: bool,
    table: NormalizeTable,
}

enum Source {
    Inline(Box<BatchBuilder>),
    Threads(Workers),
}

/// Running worker threads; worker `w` builds batches `first + w, first + w + threads, …`.
struct Workers {
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<Option<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
    first_batch: usize,
}

impl Workers {
    fn start(plan: &Arc<EpochPlan>, threads: usize) -> Result<Workers, DataError> {
        // A capacity of 0 is a rendezvous: each worker still builds one batch ahead.
        let capacity = plan.config.prefetch.div_ceil(threads);
        let mut workers = Workers {
            receivers: Vec::with_capacity(threads),
            handles: Vec::with_capacity(threads),
            stop: Arc::new(AtomicBool::new(false)),
            first_batch: plan.first_batch,
        };
        for worker in 0..threads {
            let (sender, receiver) = sync_channel(capacity);
            let worker_plan = Arc::clone(plan);
            let stop = Arc::clone(&workers.stop);
            // On failure `workers` is dropped here, which stops the threads already started.
            let handle = std::thread::Builder::new()
                .name(format!("vilab-loader-{worker}"))
                .spawn(move || run_worker(&worker_plan, worker, threads, &sender, &stop))
                .map_err(|error| DataError::Io {
                    path: plan.pack.pixels_path().to_path_buf(),
                    message: format!("cannot start a loader thread: {error}"),
                })?;
            workers.receivers.push(receiver);
            workers.handles.push(Some(handle));
        }
        Ok(workers)
    }

    fn receive(&mut self, batch_index: usize) -> Batch {
        let worker = (batch_index - self.first_batch) % self.receivers.len();
        if let Ok(batch) = self.receivers[worker].recv() {
            return batch;
        }
        // The channel closed before this batch arrived: the worker panicked. Raise its panic
        // here so the epoch fails loudly instead of ending short.
        if let Some(handle) = self.handles[worker].take()
            && let Err(payload) = handle.join()
        {
            std::panic::resume_unwind(payload);
        }
        panic!("loader worker {worker} stopped before delivering batch {batch_index}");
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the channels wakes workers blocked on a full one.
        self.receivers.clear();
        for handle in self.handles.iter_mut().filter_map(Option::take) {
            // A worker's panic was either already raised by `receive` or concerns a batch
            // nobody will read; the loader is going away either way.
            let _ = handle.join();
        }
    }
}

fn run_worker(
    plan: &Arc<EpochPlan>,
    worker: usize,
    threads: usize,
    sender: &SyncSender<Batch>,
    stop: &AtomicBool,
) {
    let mut builder = BatchBuilder::new(Arc::clone(plan));
    for batch_index in (plan.first_batch + worker..plan.batch_count).step_by(threads) {
        let Some(batch) = builder.build(batch_index, Some(stop)) else {
            return;
        };
        if sender.send(batch).is_err() {
            return;
        }
    }
}

/// Builds batches for one thread, reusing its image buffers between samples.
struct BatchBuilder {
    plan: Arc<EpochPlan>,
    /// The last sample's output, whose buffer takes the next sample's pixels.
    input: Vec<u8>,
    scratch: Scratch,
}

impl BatchBuilder {
    fn new(plan: Arc<EpochPlan>) -> BatchBuilder {
        BatchBuilder {
            plan,
            input: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// Batch `batch_index` of the epoch, or `None` when `stop` was raised meanwhile.
    fn build(&mut self, batch_index: usize, stop: Option<&AtomicBool>) -> Option<Batch> {
        let plan = Arc::clone(&self.plan);
        let config = &plan.config;
        let start = batch_index * config.batch_size;
        let end = (start + config.batch_size).min(plan.order.len());
        let indices = plan.order[start..end].to_vec();
        let n = indices.len();
        let side = config.image_size as usize;
        let sample_len = CHANNELS * side * side;
        let mut images = vec![0.0_f32; n * sample_len];
        for (&index, out) in indices.iter().zip(images.chunks_exact_mut(sample_len)) {
            if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                return None;
            }
            self.write_sample(&plan, index, out);
        }
        let labels: Vec<usize> = indices
            .iter()
            .map(|&index| plan.pack.label(index))
            .collect();
        let targets = match &config.mixup {
            None => smooth_targets(&labels, plan.classes, 0.0),
            Some(mixup)
                if mixup.enabled() && (mixup.mode == MixMode::Batch || n.is_multiple_of(2)) =>
            {
                let mut rng = mix_rng(config.seed, plan.epoch, batch_index as u64);
                match mixup.mix_batch(
                    &mut images,
                    &labels,
                    plan.classes,
                    CHANNELS,
                    side,
                    side,
                    &mut rng,
                ) {
                    Ok(outcome) => outcome.targets,
                    // Shapes, labels and parity were all checked before the epoch started.
                    Err(error) => unreachable!("mixing a checked batch failed: {error}"),
                }
            }
            // Mixing off, or a short last batch of odd size that a pairing mode cannot mix.
            Some(mixup) => smooth_targets(&labels, plan.classes, mixup.label_smoothing),
        };
        Some(Batch {
            images,
            labels,
            targets,
            indices,
            n,
            height: side,
            width: side,
            classes: plan.classes,
        })
    }

    fn write_sample(&mut self, plan: &EpochPlan, index: usize, out: &mut [f32]) {
        let bytes = plan.pack.image(index);
        if plan.fast_path {
            plan.table.write_chw(bytes, out);
            return;
        }
        let config = &plan.config;
        let mut buffer = std::mem::take(&mut self.input);
        buffer.clear();
        buffer.extend_from_slice(bytes);
        let (height, width) = plan.pack.image_size(index);
        let (width, height) = (width as u32, height as u32);
        let Some(input) = RgbImage::from_raw(width, height, buffer) else {
            unreachable!("a pack image is height × width × 3 bytes");
        };
        let mut rng = sample_rng(config.seed, plan.epoch, index as u64);
        let image = apply_pipeline_with(
            &config.transforms,
            input,
            config.image_size,
            &mut rng,
            &mut self.scratch,
        );
        plan.table.write_chw(image.as_raw(), out);
        self.input = image.into_raw();
    }
}

/// `(level/255 − mean)/std` for every channel and level, the exact formula of
/// `transforms::to_normalized_chw`, computed once per epoch instead of once per image.
struct NormalizeTable {
    levels: [[f32; 256]; 3],
}

impl NormalizeTable {
    fn new(mean: [f32; 3], std: [f32; 3]) -> NormalizeTable {
        let mut levels = [[0.0_f32; 256]; 3];
        for (channel, values) in levels.iter_mut().enumerate() {
            for (level, value) in values.iter_mut().enumerate() {
                *value = (level as f32 / 255.0 - mean[channel]) / std[channel];
            }
        }
        NormalizeTable { levels }
    }

    /// Writes HWC RGB bytes as `[3, height, width]` floats.
    fn write_chw(&self, pixels: &[u8], out: &mut [f32]) {
        let plane = out.len() / CHANNELS;
        debug_assert_eq!(pixels.len(), out.len());
        let (red, rest) = out.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        for (((pixel, red), green), blue) in
            pixels.chunks_exact(CHANNELS).zip(red).zip(green).zip(blue)
        {
            *red = self.levels[0][usize::from(pixel[0])];
            *green = self.levels[1][usize::from(pixel[1])];
            *blue = self.levels[2][usize::from(pixel[2])];
        }
    }
}
