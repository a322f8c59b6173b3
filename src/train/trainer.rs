//! The training loop: epochs of batches from the loader, one optimiser step per batch, both the
//! raw and the EMA weights validated after every epoch, a resumable checkpoint after every
//! epoch, on Ctrl-C and, with `train.checkpoint_every`, every N steps or M minutes inside an
//! epoch, and at the end the stage outputs.
//!
//! # One step
//!
//! 1. learning rate of the global step from the schedule (per step, never per epoch);
//! 2. forward/backward on one or more devices ([`super::parallel`]), the loss scaled for f16;
//! 3. a non-finite loss stops training with an error naming the epoch and step (under f16 it
//!    counts as an overflow instead); with loss scaling the gradients are unscaled and a step
//!    with an inf/NaN gradient is skipped while the scale backs off;
//! 4. clipping (after unscaling), the optimiser update of the f32 master weights, the EMA update;
//! 5. meters: the mean soft-target loss and ACC1 of the outputs against the *un-mixed* labels
//!    (on mixed inputs this is a rough signal, labelled as such; the blog reported it as
//!    training accuracy).
//!
//! # Determinism and resume
//!
//! Every random stream is a function of (seed, epoch, step): the loader's order, augmentation
//! and mixing, and the backend RNG (stochastic depth), which is re-seeded before each forward
//! pass. So the resumable state is only tensors and counters ([`super::checkpoint`]), and a run
//! resumed from a checkpoint — at an epoch boundary, or mid-epoch after Ctrl-C or from a
//! `train.checkpoint_every` checkpoint — computes bit for bit what the uninterrupted run
//! computes on the CPU backend. A mid-epoch checkpoint is the interrupt's save without the
//! stop; none is written after an epoch's last step, whose epoch checkpoint follows at once.
//!
//! # Outputs (`out_dir`)
//!
//! `history.csv` (one row per epoch), `metrics.json` (final and best epoch, no timings, so
//! identical runs give identical files), `best/` and `last/` (weights and `config.json`); the
//! state between steps and these files are [`super::session`]'s, validation is
//! [`super::validation`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::checkpoint::{CheckpointCadence, CheckpointError, latest_checkpoint};
use super::clipping::{GradientClip, clip_by_global_norm, scalar, squared_norm};
use super::live::{Pace, TrainObserver};
use super::optimizer::Optimizer;
use super::parallel::BatchView;
use super::params::with_params;
use super::precision::{LossScaler, PrecisionError, configure_device};
use super::session::{Session, selected_value};
use super::spec::TrainSpec;
use super::validation::validate;
use crate::data::DataError;
use crate::data::loader::{LoaderConfig, batches, batches_per_epoch};
use crate::data::pack::PackedSplit;
use crate::data::transforms::Transform;
use crate::inference::InferenceError;
use crate::metrics::percent;
use crate::metrics::topk_correct;
use crate::metrics::{HistoryError, HistoryRow};
use crate::model::{PretrainedError, VilConfig};
use crate::progress::Reporter;

/// Everything the loop needs, prepared by the `train` stage.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The model's hyper-parameters (classes and image size included).
    pub model: VilConfig,
    /// Official weights to start from.
    pub pretrained: Option<PathBuf>,
    /// The recipe.
    pub spec: TrainSpec,
    /// The experiment seed.
    pub seed: u64,
    /// Packed training images.
    pub train: Arc<PackedSplit>,
    /// Packed validation images.
    pub val: Arc<PackedSplit>,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Side of the square model inputs.
    pub image_size: u32,
    /// `data.storage_size`: the shorter side the packs keep (absent: squashed to
    /// `image_size`²), recorded with the exported weights for `vilab predict`.
    pub storage_size: Option<u32>,
    /// Normalisation mean (RGB, [0, 1]).
    pub mean: [f64; 3],
    /// Normalisation standard deviation.
    pub std: [f64; 3],
    /// Training augmentations (`augment.train`).
    pub train_transforms: Vec<Transform>,
    /// Validation preparation (`augment.val`).
    pub val_transforms: Vec<Transform>,
    /// Where resumable checkpoints live (outside the cache's tmp folder).
    pub work_dir: PathBuf,
    /// Where the final outputs go.
    pub out_dir: PathBuf,
    /// What identifies this training (the stage key); a checkpoint of another is not resumed.
    pub identity: String,
    /// Told about progress after every step and epoch (the run folder's live status).
    pub observer: Option<Arc<dyn TrainObserver>>,
}

/// Why training stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Loading batches failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// `history.csv` could not be written or read.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A validation pass failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// The pretrained weights could not be loaded.
    #[error(transparent)]
    Pretrained(#[from] PretrainedError),
    /// The precision cannot be used on this backend.
    #[error(transparent)]
    Precision(#[from] PrecisionError),
    /// The loss became NaN or infinite.
    #[error(
        "the loss is {loss} at epoch {epoch}, step {step} (global step {global_step}); \
         training stopped{kept} — {hint}"
    )]
    NonFinite {
        /// 1-based epoch.
        epoch: u32,
        /// 1-based step within the epoch.
        step: u64,
        /// 0-based step over the run.
        global_step: u64,
        /// The loss value.
        loss: f64,
        /// Which checkpoint is left, as a sentence tail.
        kept: String,
        /// What to change.
        hint: &'static str,
    },
    /// Ctrl-C or SIGTERM: the state after the last step was saved.
    #[error(
        "interrupted at epoch {epoch}, step {step}; saved {checkpoint}, `vilab run` resumes from it",
        checkpoint = checkpoint.display()
    )]
    Interrupted {
        /// 1-based epoch.
        epoch: u32,
        /// Steps done in that epoch.
        step: u64,
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
    /// The inputs cannot be trained on.
    #[error("{0}")]
    Invalid(String),
}

/// What a finished training reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Every epoch.
    pub history: Vec<HistoryRow>,
    /// 1-based epoch of the best checkpoint.
    pub best_epoch: u32,
    /// Its value of the selection metric.
    pub best_value: f64,
    /// `Some((epoch, step))` when this invocation resumed from a checkpoint.
    pub resumed_from: Option<(u32, u64)>,
}

/// A 64-bit seed from the experiment seed and a path of numbers, via blake3 (stable across
/// platforms and versions, unlike `DefaultHasher`).
pub fn derive_seed(seed: u64, tag: &str, parts: &[u64]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(tag.as_bytes());
    for part in parts {
        hasher.update(&part.to_le_bytes());
    }
    let bytes = hasher.finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Trains `job` on `devices` (the first holds the master weights) and writes the outputs.
///
/// # Errors
/// See [`TrainError`]; on [`TrainError::NonFinite`] and [`TrainError::Interrupted`] the
/// checkpoints in `job.work_dir` are kept for the next attempt.
pub fn run_training<B: AutodiffBackend>(
    job: &TrainJob,
    devices: &[B::Device],
    reporter: &Reporter,
) -> Result<TrainSummary, TrainError> {
    let first = devices
        .first()
        .ok_or_else(|| TrainError::Invalid("train.devices: no device".to_owned()))?;
    for device in devices {
        configure_device::<B>(device, job.spec.precision)?;
    }
    let train_config = loader_config(job, true);
    let val_config = loader_config(job, false);
    let steps_per_epoch = batches_per_epoch(
        job.train.len(),
        train_config.batch_size,
        train_config.drop_last,
    ) as u64;
    if steps_per_epoch == 0 && job.spec.epochs > 0 {
        return Err(TrainError::Invalid(format!(
            "train.batch_size: {} is larger than the {} training images (with drop_last)",
            train_config.batch_size,
            job.train.len()
        )));
    }
    if job.val.is_empty() && job.spec.epochs > 0 {
        return Err(TrainError::Invalid(
            "the validation split is empty; nothing to validate on".to_owned(),
        ));
    }
    let mut session = Session::<B>::start(job, devices, reporter)?;
    let resumed_from = (session.epochs_done > 0 || session.progress.batches_done > 0)
        .then_some((session.epochs_done + 1, session.progress.batches_done));
    if let Some((epoch, step)) = resumed_from {
        reporter.note(&format!(
            "resuming at epoch {epoch}/{}, step {step}/{steps_per_epoch}",
            job.spec.epochs
        ));
    }
    let compute = job.spec.precision.half_dtype();
    let classes = job.classes.len();
    let pace = Pace::new(
        u64::from(session.epochs_done) * steps_per_epoch + session.progress.batches_done,
        job.spec.epochs,
        steps_per_epoch,
    );
    let mut cadence = CheckpointCadence::new(job.spec.checkpoint_every, Instant::now());
    while session.epochs_done < job.spec.epochs {
        let epoch_index = u64::from(session.epochs_done);
        let epoch = session.epochs_done + 1;
        let _span = tracing::info_span!("epoch", epoch).entered();
        let epoch_clock = Instant::now();
        let bar = reporter.bar(
            steps_per_epoch,
            "train",
            &format!("epoch {epoch}/{}", job.spec.epochs),
        );
        bar.set_position(session.progress.batches_done);
        let skip = usize::try_from(session.progress.batches_done).unwrap_or(usize::MAX);
        // Training time an interrupted process already spent on this epoch.
        let earlier_seconds = session.progress.train_seconds;
        let loader = batches(Arc::clone(&job.train), &train_config, epoch_index, classes)?;
        let mut step_clock = Instant::now();
        for (batch_index, batch) in loader.enumerate().skip(skip) {
            let batch_index = batch_index as u64;
            let global_step = epoch_index * steps_per_epoch + batch_index;
            let lr = job.spec.schedule.lr_at(
                job.spec.optimizer.lr,
                global_step,
                steps_per_epoch,
                u64::from(job.spec.epochs),
            );
            let view = BatchView {
                images: &batch.images,
                targets: &batch.targets,
                n: batch.n,
                height: batch.height,
                width: batch.width,
                classes,
            };
            let step_seed = derive_seed(job.seed, "step", &[epoch_index, batch_index]);
            let scale = session.scaler.map_or(1.0, |scaler| scaler.scale);
            let result = session.gradients(view, compute, scale, step_seed);
            if !result.loss.is_finite() && session.scaler.is_none() {
                return Err(non_finite(
                    job,
                    epoch,
                    batch_index,
                    global_step,
                    result.loss,
                ));
            }
            session.apply(job, lr, result.gradients, result.loss.is_finite());
            session.progress.batches_done = batch_index + 1;
            session.progress.last_lr = lr;
            if result.loss.is_finite() {
                session.progress.loss_sum += result.loss * batch.n as f64;
            }
            session.progress.samples += batch.n as u64;
            session.progress.correct +=
                topk_correct(&result.logits, &batch.labels, classes, 1) as u64;
            session.progress.train_seconds += step_clock.elapsed().as_secs_f64();
            step_clock = Instant::now();
            bar.set_position(batch_index + 1);
            bar.set_message(format!(
                "epoch {epoch}/{} loss {:.4} acc1 {:.1}% {:.0} img/s",
                job.spec.epochs,
                session.progress.loss_sum / session.progress.samples.max(1) as f64,
                percent(session.progress.correct, session.progress.samples),
                session.progress.samples as f64 / session.progress.train_seconds.max(1e-9),
            ));
            if let Some(observer) = job
                .observer
                .as_ref()
                .filter(|observer| observer.wants_step())
            {
                let meters = (
                    Some(session.progress.loss_sum / session.progress.samples.max(1) as f64),
                    Some(
                        session.progress.samples as f64 / session.progress.train_seconds.max(1e-9),
                    ),
                );
                observer.step(&pace.status(epoch, batch_index + 1, meters, &session.history));
            }
            if crate::interrupt::requested() {
                bar.finish_and_clear();
                let checkpoint = session.save(job, global_step + 1)?;
                return Err(TrainError::Interrupted {
                    epoch,
                    step: batch_index + 1,
                    checkpoint,
                });
            }
            if cadence.step_done(Instant::now()) && batch_index + 1 < steps_per_epoch {
                let save_clock = Instant::now();
                let checkpoint = session.save(job, global_step + 1)?;
                cadence.saved(Instant::now());
                tracing::debug!(
                    "mid-epoch checkpoint at epoch {epoch}, step {}/{steps_per_epoch} in {:.0} ms: {}",
                    batch_index + 1,
                    save_clock.elapsed().as_secs_f64() * 1000.0,
                    checkpoint.display()
                );
                // The save is not training time (it is in the epoch's time).
                step_clock = Instant::now();
            }
        }
        bar.finish_and_clear();
        let raw = validate(
            &session.master,
            &job.val,
            &val_config,
            epoch_index,
            classes,
            first,
            compute,
        )?;
        let ema = match &session.ema {
            Some(ema) => Some(validate(
                &with_params(session.master.clone(), ema.clone()),
                &job.val,
                &val_config,
                epoch_index,
                classes,
                first,
                compute,
            )?),
            None => None,
        };
        let progress = std::mem::take(&mut session.progress);
        let row = HistoryRow {
            epoch,
            lr: progress.last_lr,
            train_loss: progress.loss_sum / progress.samples.max(1) as f64,
            train_acc1: percent(progress.correct, progress.samples),
            val_loss: raw.loss,
            val_acc1: raw.acc1,
            val_acc5: raw.acc5,
            ema_val_loss: ema.map(|metrics| metrics.loss),
            ema_val_acc1: ema.map(|metrics| metrics.acc1),
            ema_val_acc5: ema.map(|metrics| metrics.acc5),
            epoch_seconds: epoch_clock.elapsed().as_secs_f64() + earlier_seconds,
            train_images_per_second: progress.samples as f64 / progress.train_seconds.max(1e-9),
        };
        session.finish_epoch(job, row.clone());
        let checkpoint_step = u64::from(epoch) * steps_per_epoch;
        let checkpoint = session.save(job, checkpoint_step)?;
        cadence.saved(Instant::now());
        // The observer first, so the run folder shows an epoch by the time its line is out.
        if let Some(observer) = &job.observer {
            let meters = (Some(row.train_loss), Some(row.train_images_per_second));
            let status = pace.status(epoch, steps_per_epoch, meters, &session.history);
            observer.epoch(&status, &session.history);
        }
        reporter.stage("train", &epoch_line(job, &row));
        // An interrupt during validation or checkpointing is honoured here, at the epoch
        // boundary, rather than after the next epoch's first step (or never, after the last).
        if crate::interrupt::requested() {
            return Err(TrainError::Interrupted {
                epoch,
                step: steps_per_epoch,
                checkpoint,
            });
        }
    }
    session.write_outputs(job)?;
    let best_value = session
        .history
        .iter()
        .find(|row| row.epoch == session.best_epoch)
        .map_or(0.0, |row| selected_value(job.spec.select, row));
    Ok(TrainSummary {
        history: session.history,
        best_epoch: session.best_epoch,
        best_value,
        resumed_from,
    })
}

fn epoch_line(job: &TrainJob, row: &HistoryRow) -> String {
    let ema = match (row.ema_val_acc1, row.ema_val_loss) {
        (Some(acc1), Some(loss)) => format!(", ema val acc1 {acc1:.2}% loss {loss:.4}"),
        _ => String::new(),
    };
    format!(
        "epoch {}/{}: train loss {:.4}, acc1 {:.2}% (vs un-mixed labels); val loss {:.4}, \
         acc1 {:.2}%, acc5 {:.2}%{ema}; lr {:.3e}; {:.0} img/s, {:.1} s",
        row.epoch,
        job.spec.epochs,
        row.train_loss,
        row.train_acc1,
        row.val_loss,
        row.val_acc1,
        row.val_acc5,
        row.lr,
        row.train_images_per_second,
        row.epoch_seconds
    )
}

fn non_finite(
    job: &TrainJob,
    epoch: u32,
    batch_index: u64,
    global_step: u64,
    loss: f64,
) -> TrainError {
    let kept = match latest_checkpoint(&job.work_dir) {
        Some(path) => format!("; the last good checkpoint {} is kept", path.display()),
        None => String::new(),
    };
    let hint = if job.spec.clip_grad.is_some() {
        "lower train.optimizer.lr"
    } else {
        "lower train.optimizer.lr or set train.clip_grad"
    };
    TrainError::NonFinite {
        epoch,
        step: batch_index + 1,
        global_step,
        loss,
        kept,
        hint,
    }
}

fn loader_config(job: &TrainJob, train: bool) -> LoaderConfig {
    let workers = job.spec.workers as usize;
    let to_f32 = |values: [f64; 3]| values.map(|value| value as f32);
    LoaderConfig {
        batch_size: if train {
            job.spec.batch_size as usize
        } else {
            job.spec.val_batch_size() as usize
        },
        shuffle: train,
        drop_last: train && job.spec.drop_last,
        seed: job.seed,
        workers,
        prefetch: 2 * workers.max(1),
        image_size: job.image_size,
        mean: to_f32(job.mean),
        std: to_f32(job.std),
        transforms: if train {
            job.train_transforms.clone()
        } else {
            job.val_transforms.clone()
        },
        mixup: if train { job.spec.mixup.clone() } else { None },
    }
}

/// One optimiser update from a step's gradients: with a loss scaler, unscale them and skip the
/// update (lowering the scale) when the loss or any gradient is not finite; then clip and step.
/// Returns the new parameters, or `None` for a skipped step.
pub fn update_step<B: Backend>(
    optimizer: &mut Optimizer<B>,
    scaler: Option<&mut LossScaler>,
    clip: Option<GradientClip>,
    lr: f64,
    params: Vec<Tensor<B, 1>>,
    gradients: Vec<Option<Tensor<B, 1>>>,
    loss_finite: bool,
) -> Option<Vec<Tensor<B, 1>>> {
    let gradients = prepare_gradients(scaler, clip, gradients, loss_finite)?;
    Some(optimizer.step(lr, params, gradients))
}

/// What [`update_step`] does before the optimiser: unscale (with a loss scaler, whose scale it
/// updates), skip a step whose loss or gradients are not finite (`None`), clip. The result is
/// what every data-parallel replica's optimiser applies.
pub fn prepare_gradients<B: Backend>(
    scaler: Option<&mut LossScaler>,
    clip: Option<GradientClip>,
    mut gradients: Vec<Option<Tensor<B, 1>>>,
    loss_finite: bool,
) -> Option<Vec<Option<Tensor<B, 1>>>> {
    if let Some(scaler) = scaler {
        let inverse = 1.0 / scaler.scale;
        for gradient in gradients.iter_mut() {
            if let Some(value) = gradient.take() {
                *gradient = Some(value.mul_scalar(inverse));
            }
        }
        // One reduction over all gradients: inf or NaN anywhere makes the sum non-finite.
        let finite = loss_finite
            && squared_norm(&gradients).is_none_or(|squared| scalar(squared).is_finite());
        if !scaler.update(finite) {
            tracing::debug!(scale = scaler.scale, "overflow: step skipped");
            return None;
        }
    }
    match clip {
        Some(GradientClip::Norm(max_norm)) => {
            clip_by_global_norm(&mut gradients, max_norm);
        }
        Some(clip) => clip.apply(&mut gradients),
        None => {}
    }
    Some(gradients)
}
