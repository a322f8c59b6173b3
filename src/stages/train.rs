//! The `train` stage: reads the packed splits (`augment`), the normalisation statistics
//! (`stats`) and the class names (`split`), builds the model from the spec, and runs the
//! training loop of [`crate::train`] on the spec's backend.
//!
//! Output: `history.csv`, `metrics.json`, `best/`, `last/` and, with EMA on, `ema/` (each
//! `model.safetensors` + `config.json`). Resumable checkpoints are written to the context's
//! work folder, which lives outside the cache's `tmp/` and so survives a crash; a later run
//! with the same key resumes from it.
//!
//! While training runs, [`LiveFolder`] keeps the run folder's `live/` current — `status.json`
//! (at most once a second, and after every epoch) and `history.csv` (after every epoch), each
//! replaced atomically — and refreshes its `report.html` after every epoch, so a person can
//! follow the run from another terminal (`vilab status`, `vilab runs`) or a browser. None of it
//! is read back by training, so it cannot change a stage key or a resumed result.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::split::{SPLIT_FILE, SplitSummary};
use super::stats::{STATS_FILE, StatsFile};
use super::{StageContext, StageError, read_json};
use crate::data::pack::PackedSplit;
use crate::metrics::{HistoryRow, write_history};
use crate::pipeline::StageKind;
use crate::pipeline::layout::RunDir;
use crate::spec::types::BackendKind;
use crate::train::live::{LiveStatus, TrainObserver};
use crate::train::{TrainJob, TrainSummary, run_training};

/// Runs the stage.
pub fn run(context: &StageContext<'_>, out: &Path) -> Result<String, StageError> {
    let spec = &context.spec.spec;
    let summary: SplitSummary = read_json(&context.upstream(StageKind::Split)?.join(SPLIT_FILE))?;
    let stats: StatsFile = read_json(&context.upstream(StageKind::Stats)?.join(STATS_FILE))?;
    let packs = context.upstream(StageKind::Augment)?;
    let train = Arc::new(PackedSplit::open(packs, "train")?);
    let val = Arc::new(PackedSplit::open(packs, "val")?);
    let model = spec
        .model
        .vil_config(summary.classes.len(), spec.data.image_size)
        .map_err(|error| StageError::Invalid(error.within("model").to_string()))?;
    let identity = context
        .plan
        .stage(StageKind::Train)
        .map(|stage| stage.key().to_owned())
        .unwrap_or_default();
    let job = TrainJob {
        model,
        pretrained: spec
            .model
            .pretrained
            .as_ref()
            .map(|path| context.spec.resolve_path(path)),
        spec: spec.train.clone(),
        seed: spec.seed,
        train,
        val,
        classes: summary.classes,
        image_size: spec.data.image_size,
        storage_size: spec.data.storage_size,
        mean: stats.mean,
        std: stats.std,
        train_transforms: spec.augment.train.clone(),
        val_transforms: spec.augment.val.clone(),
        work_dir: context.work_dir.clone(),
        out_dir: out.to_path_buf(),
        identity,
        observer: Some(Arc::new(LiveFolder::new(&context.run_dir))),
    };
    let _graceful = crate::interrupt::graceful();
    let result = match spec.backend {
        BackendKind::Cpu => {
            let devices = vec![crate::backend::cpu_device(); spec.train.devices.len()];
            run_training::<crate::backend::CpuTrain>(&job, &devices, context.reporter)
        }
        BackendKind::Cuda => train_on_cuda(&job, context),
        BackendKind::Wgpu => train_on_wgpu(&job, context),
    };
    Ok(describe(&result?, &job))
}

#[cfg(feature = "cuda")]
fn train_on_cuda(
    job: &TrainJob,
    context: &StageContext<'_>,
) -> Result<TrainSummary, crate::train::TrainError> {
    let devices: Vec<_> = job
        .spec
        .devices
        .iter()
        .map(|&ordinal| crate::backend::cuda_device(ordinal as usize))
        .collect();
    run_training::<crate::backend::CudaTrain>(job, &devices, context.reporter)
}

#[cfg(not(feature = "cuda"))]
fn train_on_cuda(
    _job: &TrainJob,
    _context: &StageContext<'_>,
) -> Result<TrainSummary, crate::train::TrainError> {
    Err(crate::train::TrainError::Invalid(
        crate::backend::BackendUnavailable {
            kind: BackendKind::Cuda,
        }
        .to_string(),
    ))
}

#[cfg(feature = "wgpu")]
fn train_on_wgpu(
    job: &TrainJob,
    context: &StageContext<'_>,
) -> Result<TrainSummary, crate::train::TrainError> {
    let adapters = crate::backend::wgpu_devices(&job.spec.devices)
        .map_err(|error| crate::train::TrainError::Invalid(error.to_string()))?;
    for (ordinal, adapter) in job.spec.devices.iter().zip(&adapters) {
        context.reporter.note(&format!(
            "wgpu device {ordinal}: {} ({}, {})",
            adapter.name, adapter.kind, adapter.api
        ));
    }
    let devices: Vec<_> = adapters.into_iter().map(|adapter| adapter.device).collect();
    run_training::<crate::backend::WgpuTrain>(job, &devices, context.reporter)
}

#[cfg(not(feature = "wgpu"))]
fn train_on_wgpu(
    _job: &TrainJob,
    _context: &StageContext<'_>,
) -> Result<TrainSummary, crate::train::TrainError> {
    Err(crate::train::TrainError::Invalid(
        crate::backend::BackendUnavailable {
            kind: BackendKind::Wgpu,
        }
        .to_string(),
    ))
}

fn describe(summary: &TrainSummary, job: &TrainJob) -> String {
    let last = summary.history.last();
    let final_part = last.map_or(String::new(), |row| {
        let ema = row
            .ema_val_acc1
            .map_or(String::new(), |acc1| format!(", ema {acc1:.2}%"));
        format!("; final val acc1 {:.2}%{ema}", row.val_acc1)
    });
    let resumed = summary.resumed_from.map_or(String::new(), |(epoch, step)| {
        format!(" (resumed at epoch {epoch}, step {step})")
    });
    format!(
        "{} epochs, best {} {:.2}% at epoch {}{final_part}{resumed}",
        summary.history.len(),
        job.spec.select.as_str(),
        summary.best_value,
        summary.best_epoch
    )
}

/// The train stage's observer: the run folder's `live/` status and history, and its page.
#[derive(Debug)]
struct LiveFolder {
    run: RunDir,
    last_write: Mutex<Option<Instant>>,
}

/// The least time between two step-time writes of `live/status.json`.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

impl LiveFolder {
    fn new(run_dir: &Path) -> Self {
        Self {
            run: RunDir::new(run_dir),
            last_write: Mutex::new(None),
        }
    }

    fn write_status(&self, status: &LiveStatus) -> std::io::Result<()> {
        fs_err::create_dir_all(self.run.live())?;
        crate::files::write_json_atomic(&self.run.live_status(), status)
    }

    fn write_history(&self, history: &[HistoryRow]) -> Result<(), crate::metrics::HistoryError> {
        let path = self.run.live_history();
        let temporary = crate::files::temp_path(&path, "tmp");
        write_history(&temporary, history)?;
        fs_err::rename(&temporary, &path)?;
        Ok(())
    }
}

impl TrainObserver for LiveFolder {
    fn wants_step(&self) -> bool {
        self.last_write
            .lock()
            .map(|last| last.is_none_or(|at| at.elapsed() >= STATUS_INTERVAL))
            .unwrap_or(false)
    }

    fn step(&self, status: &LiveStatus) {
        let Ok(mut last) = self.last_write.lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < STATUS_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.write_status(status) {
            tracing::warn!("live status not written: {error}");
        }
    }

    fn epoch(&self, status: &LiveStatus, history: &[HistoryRow]) {
        if let Err(error) = self.write_status(status) {
            tracing::warn!("live status not written: {error}");
        }
        if let Err(error) = self.write_history(history) {
            tracing::warn!("live history not written: {error}");
        }
        if let Err(error) = crate::report::run_page::write_run_page(&self.run) {
            tracing::warn!("report.html not refreshed: {error}");
        }
        if let Ok(mut last) = self.last_write.lock() {
            *last = Some(Instant::now());
        }
    }
}
