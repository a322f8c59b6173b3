//! The mutable state of a training run and its life cycle: a fresh start (seeded, materialised
//! initial weights, optional pretrained weights) or a restore from the newest checkpoint, one
//! optimiser step at a time, the end of an epoch (best weights), checkpoints, and the stage's
//! final outputs (`history.csv`, `metrics.json`, `best/`, `last/`).

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    CheckpointConfig, CheckpointError, NamedTensors, ValScores, device_tensor, exact_f64,
    export_checkpoint, host_values, read_json, read_tensors, usable_checkpoint, write_checkpoint,
    write_json, write_tensors,
};
use super::ema::update_average;
use super::optimizer::Optimizer;
use super::parallel::{BatchGradients, BatchView, Replicas, backend_rng_lock};
use super::params::{ParamLayout, flatten_params, materialize, with_params};
use super::precision::{LossScaler, Precision, cast_params};
use super::spec::SelectMetric;
use super::trainer::{TrainError, TrainJob, derive_seed, prepare_gradients};
use crate::metrics::{
    HISTORY_FILE, HistoryRow, METRICS_FILE, WithoutTimings, read_history, write_history,
};
use crate::model::{VisionLstm, load_pretrained};
use crate::progress::Reporter;

/// Version of the checkpoint layout; a checkpoint of another version is not resumed.
const CHECKPOINT_FORMAT: u32 = 1;

/// Progress through the current epoch, saved in mid-epoch checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct EpochProgress {
    /// Batches finished in this epoch.
    pub(super) batches_done: u64,
    #[serde(with = "exact_f64")]
    pub(super) loss_sum: f64,
    pub(super) samples: u64,
    /// Top-1 hits against the un-mixed labels.
    pub(super) correct: u64,
    #[serde(with = "exact_f64")]
    pub(super) train_seconds: f64,
    #[serde(with = "exact_f64")]
    pub(super) last_lr: f64,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointState {
    format: u32,
    identity: String,
    /// Epochs finished.
    epochs_done: u32,
    /// Progress in the epoch after them.
    progress: EpochProgress,
    optimizer_steps: u64,
    ema_updates: u64,
    loss_scaler: Option<LossScaler>,
    /// 1-based epoch of the best weights so far (0: none yet).
    best_epoch: u32,
}

/// `metrics.json`: the final and the best epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsFile {
    /// The selection metric.
    pub select: String,
    /// `raw` or `ema`: the weights `best/` and `last/` hold.
    pub weights: String,
    /// Epochs trained.
    pub epochs: u32,
    /// 1-based epoch of `best/`.
    pub best_epoch: u32,
    /// Metrics of the best epoch (absent after 0 epochs).
    pub best: Option<WithoutTimings>,
    /// Metrics of the last epoch (absent after 0 epochs).
    #[serde(rename = "final")]
    pub last: Option<WithoutTimings>,
    /// Optimiser updates applied.
    pub optimizer_steps: u64,
    /// Steps skipped for f16 overflow.
    pub skipped_steps: u64,
    /// How `train_acc1` is measured.
    pub train_acc1_note: String,
}

/// The mutable state of a training run.
pub(super) struct Session<B: AutodiffBackend> {
    pub(super) master: VisionLstm<B::InnerBackend>,
    pub(super) ema: Option<Vec<Tensor<B::InnerBackend, 1>>>,
    pub(super) best: Option<Vec<Tensor<B::InnerBackend, 1>>>,
    pub(super) optimizer: Optimizer<B::InnerBackend>,
    /// The data-parallel replicas (the master alone on one device).
    replicas: Replicas<B::InnerBackend>,
    pub(super) scaler: Option<LossScaler>,
    pub(super) layout: ParamLayout,
    pub(super) history: Vec<HistoryRow>,
    pub(super) epochs_done: u32,
    pub(super) progress: EpochProgress,
    pub(super) ema_updates: u64,
    pub(super) best_epoch: u32,
}

pub(super) fn selected_value(select: SelectMetric, row: &HistoryRow) -> f64 {
    match select {
        SelectMetric::ValAcc1 => row.val_acc1,
        SelectMetric::EmaValAcc1 => row.ema_val_acc1.unwrap_or(f64::NEG_INFINITY),
    }
}

fn weights_kind(select: SelectMetric) -> &'static str {
    match select {
        SelectMetric::ValAcc1 => "raw",
        SelectMetric::EmaValAcc1 => "ema",
    }
}

impl<B: AutodiffBackend> Session<B> {
    /// A fresh session, or the one saved in the newest matching checkpoint, training on
    /// `devices` (the first holds the master weights; `devices` is not empty).
    pub(super) fn start(
        job: &TrainJob,
        devices: &[B::Device],
        reporter: &Reporter,
    ) -> Result<Session<B>, TrainError> {
        let mut session = Self::restore_or_fresh(job, &devices[0], reporter)?;
        // Made from the master as it is now, so a resumed run's replicas are the checkpoint's.
        session.replicas = Replicas::new(&session.master, &session.optimizer, devices);
        Ok(session)
    }

    fn restore_or_fresh(
        job: &TrainJob,
        device: &B::Device,
        reporter: &Reporter,
    ) -> Result<Session<B>, TrainError> {
        let mut master = {
            let _rng = backend_rng_lock();
            <B::InnerBackend as Backend>::seed(device, derive_seed(job.seed, "init", &[]));
            let master = job.model.init::<B::InnerBackend>(device);
            materialize(&master);
            master
        };
        if job.spec.precision != Precision::F32 {
            // Created in the device's (half) default type; the master copy is f32.
            master = cast_params(master, FloatDType::F32);
        }
        if let Some(path) = &job.pretrained {
            let (loaded, report) = load_pretrained(master, path, device)?;
            master = loaded;
            reporter.note(&format!("pretrained {}: {report}", path.display()));
        }
        let layout = ParamLayout::of(&master);
        let optimizer = Optimizer::new(&job.spec.optimizer, &layout);
        let fresh = Session {
            ema: job.spec.ema.enabled.then(|| flatten_params(&master)),
            best: None,
            replicas: Replicas::new(&master, &optimizer, std::slice::from_ref(device)),
            optimizer,
            scaler: (job.spec.precision == Precision::F16)
                .then(|| LossScaler::new(job.spec.loss_scale)),
            layout,
            master,
            history: Vec::new(),
            epochs_done: 0,
            progress: EpochProgress::default(),
            ema_updates: 0,
            best_epoch: 0,
        };
        let Some(checkpoint) = usable_checkpoint(&job.work_dir)? else {
            return Ok(fresh);
        };
        let state: CheckpointState = read_json(&checkpoint.join("state.json"))?;
        if state.format != CHECKPOINT_FORMAT || state.identity != job.identity {
            reporter.note(&format!(
                "ignoring checkpoint {} (written for another training)",
                checkpoint.display()
            ));
            return Ok(fresh);
        }
        fresh.restore(&checkpoint, state, device)
    }

    fn restore(
        mut self,
        checkpoint: &Path,
        state: CheckpointState,
        device: &B::Device,
    ) -> Result<Session<B>, TrainError> {
        let tensors_path = checkpoint.join("state.safetensors");
        let mut groups: std::collections::BTreeMap<String, Vec<(String, Vec<f32>)>> =
            std::collections::BTreeMap::new();
        for (name, _, values) in read_tensors(&tensors_path)? {
            let (group, rest) = name.split_once('.').unwrap_or((name.as_str(), ""));
            groups
                .entry(group.to_owned())
                .or_default()
                .push((rest.to_owned(), values));
        }
        let mismatch = |what: &str| CheckpointError::Format {
            path: tensors_path.clone(),
            message: format!("{what} does not match the model"),
        };
        let by_layout =
            |group: Option<Vec<(String, Vec<f32>)>>| -> Option<Vec<Tensor<B::InnerBackend, 1>>> {
                let group = group?;
                if group.len() != self.layout.len() {
                    return None;
                }
                group
                    .into_iter()
                    .zip(&self.layout.entries)
                    .map(|((name, values), entry)| {
                        (name == entry.path && values.len() == entry.numel())
                            .then(|| device_tensor::<B::InnerBackend>(values, device))
                    })
                    .collect()
            };
        let model = by_layout(groups.remove("model")).ok_or_else(|| mismatch("model"))?;
        self.master = with_params(self.master, model);
        if self.ema.is_some() {
            self.ema = Some(by_layout(groups.remove("ema")).ok_or_else(|| mismatch("ema"))?);
        }
        self.best = match groups.remove("best") {
            Some(best) => Some(by_layout(Some(best)).ok_or_else(|| mismatch("best"))?),
            None => None,
        };
        let optimizer_tensors = groups
            .remove("optimizer")
            .unwrap_or_default()
            .into_iter()
            .map(|(name, values)| (name, device_tensor::<B::InnerBackend>(values, device)))
            .collect();
        self.optimizer
            .load_state(state.optimizer_steps, optimizer_tensors)
            .map_err(|message| CheckpointError::Format {
                path: tensors_path.clone(),
                message,
            })?;
        self.history = read_history(&checkpoint.join(HISTORY_FILE))?;
        if self.history.len() != state.epochs_done as usize {
            return Err(mismatch("history").into());
        }
        self.epochs_done = state.epochs_done;
        self.progress = state.progress;
        self.ema_updates = state.ema_updates;
        self.scaler = state.loss_scaler.or(self.scaler);
        self.best_epoch = state.best_epoch;
        Ok(self)
    }

    /// Forward and backward passes of `batch` over the replicas.
    pub(super) fn gradients(
        &self,
        batch: BatchView<'_>,
        compute: Option<FloatDType>,
        loss_scale: f64,
        step_seed: u64,
    ) -> BatchGradients<B::InnerBackend> {
        self.replicas
            .gradients::<B>(&self.master, batch, compute, loss_scale, step_seed)
    }

    /// Applies one step's gradients to the master weights, every replica and the EMA.
    pub(super) fn apply(
        &mut self,
        job: &TrainJob,
        lr: f64,
        gradients: Vec<Option<Tensor<B::InnerBackend, 1>>>,
        loss_finite: bool,
    ) {
        let Some(gradients) = prepare_gradients(
            self.scaler.as_mut(),
            job.spec.clip_grad,
            gradients,
            loss_finite,
        ) else {
            return;
        };
        let params = self
            .replicas
            .step(&mut self.optimizer, lr, &self.master, gradients);
        if let Some(ema) = self.ema.take() {
            let decay = job.spec.ema.decay_at(self.ema_updates);
            self.ema = Some(update_average(ema, &params, decay));
            self.ema_updates += 1;
        }
        self.master = with_params(self.master.clone(), params);
    }

    /// Records a finished epoch and keeps the selected weights when they are the best so far.
    pub(super) fn finish_epoch(&mut self, job: &TrainJob, row: HistoryRow) {
        let value = selected_value(job.spec.select, &row);
        let best_value = self
            .history
            .iter()
            .find(|previous| previous.epoch == self.best_epoch)
            .map(|previous| selected_value(job.spec.select, previous));
        if best_value.is_none_or(|best| value > best) {
            self.best = Some(self.selected_weights(job));
            self.best_epoch = row.epoch;
        }
        self.history.push(row);
        self.epochs_done += 1;
    }

    fn selected_weights(&self, job: &TrainJob) -> Vec<Tensor<B::InnerBackend, 1>> {
        match (job.spec.select, &self.ema) {
            (SelectMetric::EmaValAcc1, Some(ema)) => ema.clone(),
            _ => flatten_params(&self.master),
        }
    }

    /// Writes a checkpoint of the current state for `global_step`.
    pub(super) fn save(&self, job: &TrainJob, global_step: u64) -> Result<PathBuf, TrainError> {
        let named = |group: &str, values: &[Tensor<B::InnerBackend, 1>]| -> NamedTensors {
            values
                .iter()
                .zip(&self.layout.entries)
                .map(|(value, entry)| {
                    (
                        format!("{group}.{}", entry.path),
                        vec![entry.numel()],
                        host_values(value.clone()),
                    )
                })
                .collect()
        };
        let mut tensors = named("model", &flatten_params(&self.master));
        if let Some(ema) = &self.ema {
            tensors.extend(named("ema", ema));
        }
        if let Some(best) = &self.best {
            tensors.extend(named("best", best));
        }
        let (optimizer_steps, optimizer_state) = self.optimizer.state();
        for (name, value) in optimizer_state {
            let values = host_values(value);
            tensors.push((format!("optimizer.{name}"), vec![values.len()], values));
        }
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT,
            identity: job.identity.clone(),
            epochs_done: self.epochs_done,
            progress: self.progress.clone(),
            optimizer_steps,
            ema_updates: self.ema_updates,
            loss_scaler: self.scaler,
            best_epoch: self.best_epoch,
        };
        let path = write_checkpoint(&job.work_dir, global_step, |folder| {
            write_tensors(&folder.join("state.safetensors"), &tensors)?;
            write_history(&folder.join(HISTORY_FILE), &self.history).map_err(|error| {
                CheckpointError::Format {
                    path: folder.join(HISTORY_FILE),
                    message: error.to_string(),
                }
            })?;
            write_json(&folder.join("state.json"), &state)
        })?;
        Ok(path)
    }

    /// `history.csv`, `metrics.json`, `best/` and `last/` in `job.out_dir`.
    pub(super) fn write_outputs(&self, job: &TrainJob) -> Result<(), TrainError> {
        let out = &job.out_dir;
        fs_err::create_dir_all(out).map_err(CheckpointError::from)?;
        write_history(&out.join(HISTORY_FILE), &self.history)?;
        let last_row = self.history.last();
        let best_row = self
            .history
            .iter()
            .find(|row| row.epoch == self.best_epoch)
            .or(last_row);
        let weights = weights_kind(job.spec.select);
        let metrics = MetricsFile {
            select: job.spec.select.as_str().to_owned(),
            weights: weights.to_owned(),
            epochs: job.spec.epochs,
            best_epoch: best_row.map_or(0, |row| row.epoch),
            best: best_row.cloned().map(WithoutTimings),
            last: last_row.cloned().map(WithoutTimings),
            optimizer_steps: self.optimizer.steps(),
            skipped_steps: self.scaler.map_or(0, |scaler| scaler.skipped_steps),
            train_acc1_note: "train_acc1 compares outputs on augmented (mixed) inputs with the \
                              un-mixed labels"
                .to_owned(),
        };
        write_json(&out.join(METRICS_FILE), &metrics)?;
        let config = |row: Option<&HistoryRow>| {
            let scores = row.map(|row| match job.spec.select {
                SelectMetric::EmaValAcc1 => ValScores {
                    loss: row.ema_val_loss.unwrap_or(f64::NAN),
                    acc1: row.ema_val_acc1.unwrap_or(f64::NAN),
                    acc5: row.ema_val_acc5.unwrap_or(f64::NAN),
                },
                SelectMetric::ValAcc1 => ValScores {
                    loss: row.val_loss,
                    acc1: row.val_acc1,
                    acc5: row.val_acc5,
                },
            });
            CheckpointConfig {
                vilab: env!("CARGO_PKG_VERSION").to_owned(),
                model: job.model.clone(),
                classes: job.classes.clone(),
                image_size: job.image_size,
                storage_size: job.storage_size,
                mean: job.mean,
                std: job.std,
                val_transforms: job.val_transforms.clone(),
                weights: weights.to_owned(),
                epoch: row.map_or(0, |row| row.epoch),
                val: scores,
            }
        };
        let last = with_params(self.master.clone(), self.selected_weights(job));
        export_checkpoint(&out.join("last"), &last, &config(last_row))?;
        let best_weights = self
            .best
            .clone()
            .unwrap_or_else(|| self.selected_weights(job));
        let best = with_params(self.master.clone(), best_weights);
        export_checkpoint(&out.join("best"), &best, &config(best_row))?;
        // The final EMA weights on their own, so evaluation can score them next to `best`.
        if let Some(ema) = &self.ema {
            let ema_model = with_params(self.master.clone(), ema.clone());
            let mut ema_config = config(last_row);
            ema_config.weights = "ema".to_owned();
            ema_config.val = last_row.and_then(|row| {
                Some(ValScores {
                    loss: row.ema_val_loss?,
                    acc1: row.ema_val_acc1?,
                    acc5: row.ema_val_acc5?,
                })
            });
            export_checkpoint(&out.join("ema"), &ema_model, &ema_config)?;
        }
        Ok(())
    }
}
