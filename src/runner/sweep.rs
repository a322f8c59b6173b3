//! Sweeps on disk: the sweep folder, each trial's state, and running one trial.
//!
//! # Layout
//!
//! ```text
//! <out>/<name>/sweep-<id>/         id: 12 hex digits of blake3(resolved base spec + trial list)
//!     sweep.json                   every trial: id, overrides, state, error, run folder
//!     summary.csv summary.md       one row per trial, best first by `evaluate.metric`
//!     summary.png                  the metric against each varied parameter
//!     trial-<trial-id> -> ../<run-id>      the trial's run folder, once it has finished
//!     trials/<trial-id>.json       the trial's own record, written by whoever runs it
//!     trials/<trial-id>.lock       held while a process runs the trial
//!     trials/<trial-id>.log        output of the trial's process (sweep runner only)
//!     .sweep.lock                  held while sweep.json and the summary are rebuilt
//! <out>/<name>/<run-id>/           ordinary run folders, one per finished trial
//! ```
//!
//! A trial is an ordinary run of the base spec with the trial's overrides as the highest layer,
//! so its run folder is the one `vilab run` would make for the same settings: trials share
//! cache entries with each other (split, stats and augment are computed once when only `train.*`
//! varies), with plain runs and with other sweeps, and the sweep folder only links to them.
//!
//! The unit of work is one trial, `vilab run FILE --trial ID`, which needs nothing from the
//! process that started it: it writes its own record under `trials/` (holding the trial's lock
//! while it runs) and refreshes `sweep.json` and the summary. The local launcher
//! (`launcher::local`) starts such processes, and a cluster scheduler can start them the same
//! way. Each record is replaced atomically and `sweep.json` is rebuilt from the records under a
//! sweep-wide lock, so concurrent trials never lose each other's updates.
//!
//! A trial's state is read from disk: `done` when its record says so and its run folder is
//! there, `failed` with the error of its last attempt, `running` while a process holds its
//! lock, `pending` otherwise — including a trial whose process died (its record still says
//! running, but nobody holds the lock): running it again resumes from the train stage's
//! checkpoints.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::run::{RunError, RunOptions, RunOutcome, run_experiment};
use crate::files::{host_name, link_atomic, now_rfc3339, remove_stale_temporaries, write_atomic};
use crate::integrity::short_id;
use crate::pipeline::cache::Cache;
use crate::pipeline::layout::{RunDir, SWEEP_FILE, experiment_dir, previous_keys};
use crate::pipeline::plan::{
    Plan, PlanError, PlanOptions, ScanMemo, StageStatus, build_plan_with, stage_statuses,
};
use crate::progress::Reporter;
use crate::spec::sweep::Trial;
use crate::spec::{LoadError, LoadedSpec};

/// Why a sweep could not be run or read.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The spec has no `sweep` section.
    #[error("{file}: has no `sweep` section; --trial and sweep commands need one", file = file.display())]
    NotASweep {
        /// The experiment file.
        file: PathBuf,
    },
    /// No trial matches the id given.
    #[error("--trial {0}")]
    UnknownTrial(String),
    /// A trial's spec could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A trial's stages could not be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A trial failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A file of the sweep folder could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A trial's process could not be started.
    #[error("cannot start `{command}`: {error}")]
    Spawn {
        /// The command line.
        command: String,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// `summary.png` could not be drawn.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
}

/// Where a trial stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Finished; its run folder is complete.
    Done,
    /// Its last attempt failed.
    Failed,
    /// A process is running it now.
    Running,
    /// Not run yet, or interrupted.
    Pending,
}

impl TrialState {
    /// The state as written in `sweep.json` and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Running => "running",
            Self::Pending => "pending",
        }
    }
}

/// What a trial is and how it stands: the fields a trial's record and its row in
/// `sweep.json` share, first in both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialStatus {
    /// The trial id.
    pub id: String,
    /// Its overrides.
    pub overrides: BTreeMap<String, Value>,
    /// In a record: running, done or failed, as the attempt left it (`running` after a
    /// crash); in `sweep.json`: done, failed, running or pending, as read from disk.
    pub state: TrialState,
    /// Why the (last) attempt failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TrialStatus {
    /// `trial` in `state`, without an error.
    pub fn of(trial: &Trial, state: TrialState) -> Self {
        Self {
            id: trial.id.clone(),
            overrides: trial.overrides.clone(),
            state,
            error: None,
        }
    }
}

/// `trials/<id>.json`: the record of a trial's latest attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial and how the attempt left it.
    #[serde(flatten)]
    pub status: TrialStatus,
    /// The run folder's name (under `<out>/<name>/`), once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// The host and process of the attempt.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start of the attempt, RFC 3339.
    pub started_at: String,
    /// End of the attempt, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Wall time of the attempt.
    #[serde(default)]
    pub seconds: f64,
    /// Every time a Slurm task of the trial went back to the queue, oldest first (kept from
    /// attempt to attempt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requeues: Vec<Requeue>,
}

/// One time a trial's Slurm array task went back to the queue to carry on later (see
/// [`crate::launcher::requeue`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requeue {
    /// When, RFC 3339.
    pub at: String,
    /// The array task, `<job>_<index>`.
    pub task: String,
    /// Why: the signal's meaning (`time limit near (SIGUSR1)`, `terminated (SIGTERM)`) when
    /// the task requeued itself, `requeued by Slurm` when Slurm did (preemption, a lost node,
    /// `scontrol requeue`).
    pub reason: String,
    /// Whether the task requeued itself (these count against `--max-requeues`).
    pub by_vilab: bool,
    /// The epoch and step of the checkpoint it left, when it stopped while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<(u32, u64)>,
}

/// `requeued 2× (last: time limit near (SIGUSR1) at epoch 3, step 5)`, or nothing.
pub fn describe_requeues(requeues: &[Requeue]) -> Option<String> {
    let last = requeues.last()?;
    let at = last
        .checkpoint
        .map(|(epoch, step)| format!(" at epoch {epoch}, step {step}"))
        .unwrap_or_default();
    Some(format!(
        "requeued {}× (last: {}{at})",
        requeues.len(),
        last.reason
    ))
}

impl TrialRecord {
    /// An attempt of `trial` by this process starting now, in `state`.
    pub fn attempt(trial: &Trial, state: TrialState, attempts: u32) -> Self {
        Self {
            status: TrialStatus::of(trial, state),
            run_id: None,
            attempts,
            host: host_name(),
            pid: std::process::id(),
            started_at: now_rfc3339(),
            finished_at: None,
            seconds: 0.0,
            requeues: Vec::new(),
        }
    }
}

/// One trial in `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepTrial {
    /// The trial and its state.
    #[serde(flatten)]
    pub status: TrialStatus,
    /// The run folder, relative to the sweep folder (`../<run-id>`), once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Wall time of the attempt that finished it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepFile {
    /// vilab's version.
    pub vilab: String,
    /// Experiment name.
    pub name: String,
    /// The sweep id.
    pub sweep_id: String,
    /// The experiment file as given.
    pub spec_file: String,
    /// The `--set` arguments every trial got.
    pub sets: Vec<String>,
    /// The paths the sweep varies.
    pub varied: Vec<String>,
    /// `evaluate.metric`, which orders the summary.
    pub metric: String,
    /// When this file was written, RFC 3339.
    pub updated_at: String,
    /// Trials per state.
    pub counts: BTreeMap<String, usize>,
    /// Every trial, in sweep order.
    pub trials: Vec<SweepTrial>,
}

impl SweepFile {
    /// The finished trials' run folders (relative to the sweep folder `dir`), with their ids.
    pub fn finished_runs(&self, dir: &Path) -> Vec<(PathBuf, String)> {
        self.trials
            .iter()
            .filter(|trial| trial.status.state == TrialState::Done)
            .filter_map(|trial| {
                let run = trial.run.as_ref()?;
                Some((dir.join(run), trial.status.id.clone()))
            })
            .collect()
    }
}

/// A sweep: the base spec, its trials, and its folder under an output root.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The base spec (with the `sweep` section).
    pub base: LoadedSpec,
    /// The `--set` arguments, applied to every trial.
    pub sets: Vec<String>,
    /// The trials, in sweep order.
    pub trials: Vec<Trial>,
    /// The sweep id.
    pub id: String,
    /// The output root.
    pub out: PathBuf,
    /// `<out>/<name>/sweep-<id>/`.
    pub dir: PathBuf,
}

impl Sweep {
    /// The sweep of a loaded spec; fails when it has no `sweep` section.
    pub fn new(base: LoadedSpec, sets: &[String], out: &Path) -> Result<Self, SweepError> {
        let Some(section) = &base.spec.sweep else {
            return Err(SweepError::NotASweep {
                file: base.file.clone(),
            });
        };
        let trials = section.trials();
        let mut spec = base.resolved.clone();
        if let Value::Object(map) = &mut spec {
            map.remove("sweep");
        }
        let identity = serde_json::json!({
            "spec": spec,
            "trials": trials
                .iter()
                .map(|trial| serde_json::json!({"id": trial.id, "overrides": trial.overrides}))
                .collect::<Vec<_>>(),
        });
        let id = short_id(&identity, 12);
        let dir = experiment_dir(out, &base).join(format!("sweep-{id}"));
        Ok(Self {
            base,
            sets: sets.to_vec(),
            trials,
            id,
            out: out.to_path_buf(),
            dir,
        })
    }

    /// The trial with this id or unique id prefix.
    pub fn trial(&self, query: &str) -> Result<&Trial, SweepError> {
        crate::spec::sweep::find_trial(&self.trials, query).map_err(SweepError::UnknownTrial)
    }

    /// The spec of one trial; `extra` overrides go on top (the runner narrows `train.devices`
    /// that way), without changing the trial's id.
    pub fn trial_spec(
        &self,
        trial: &Trial,
        extra: &[(String, Value)],
    ) -> Result<LoadedSpec, LoadError> {
        let mut layered = trial.clone();
        layered.overrides.extend(extra.iter().cloned());
        crate::spec::load::load_trial(&self.base.file, &self.sets, &layered)
    }

    fn trials_dir(&self) -> PathBuf {
        self.dir.join("trials")
    }

    /// `trials/<id>.json`.
    pub fn record_path(&self, trial: &Trial) -> PathBuf {
        self.trials_dir().join(format!("{}.json", trial.id))
    }

    /// `trials/<id>.log`, where the runner sends a trial process's output.
    pub fn log_path(&self, trial: &Trial) -> PathBuf {
        self.trials_dir().join(format!("{}.log", trial.id))
    }

    /// `trial-<id>`: the link to the trial's run folder.
    pub fn link_path(&self, trial: &Trial) -> PathBuf {
        self.dir.join(format!("trial-{}", trial.id))
    }

    /// The run folder of a run id.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        experiment_dir(&self.out, &self.base).join(run_id)
    }

    /// The trial's record, if one was written and is readable.
    pub fn read_record(&self, trial: &Trial) -> Option<TrialRecord> {
        let bytes = std::fs::read(self.record_path(trial)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replaces the trial's record atomically.
    pub fn write_record(&self, record: &TrialRecord) -> Result<(), SweepError> {
        fs_err::create_dir_all(self.trials_dir())?;
        let mut bytes = serde_json::to_vec_pretty(record)
            .map_err(|error| std::io::Error::other(format!("trial record: {error}")))?;
        bytes.push(b'\n');
        write_atomic(
            &self.trials_dir().join(format!("{}.json", record.status.id)),
            &bytes,
        )?;
        Ok(())
    }

    fn open_lock(&self, path: &Path) -> Result<File, SweepError> {
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        Ok(fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?
            .into_file())
    }

    /// Whether a process holds the trial's lock right now.
    pub fn is_running(&self, trial: &Trial) -> bool {
        let path = self.trials_dir().join(format!("{}.lock", trial.id));
        if !path.exists() {
            return false;
        }
        match self.open_lock(&path).map(|file| file.try_lock()) {
            Ok(Ok(())) => false,
            Ok(Err(std::fs::TryLockError::WouldBlock)) => true,
            _ => false,
        }
    }

    /// The trial's state as its record and lock tell it (without planning anything).
    pub fn recorded_state(&self, trial: &Trial) -> (TrialState, Option<TrialRecord>) {
        let record = self.read_record(trial);
        if self.is_running(trial) {
            return (TrialState::Running, record);
        }
        let state = match &record {
            Some(record) => match record.status.state {
                TrialState::Done
                    if record
                        .run_id
                        .as_ref()
                        .is_some_and(|run| RunDir::new(&self.run_dir(run)).record().is_file()) =>
                {
                    TrialState::Done
                }
                TrialState::Failed => TrialState::Failed,
                _ => TrialState::Pending,
            },
            None => TrialState::Pending,
        };
        (state, record)
    }

    /// Every trial with its plan and its state: done when its run is complete on disk,
    /// otherwise what its record says (failed, running) or pending.
    pub fn trial_views(&self, options: PlanOptions) -> Result<Vec<TrialView>, SweepError> {
        let mut views = Vec::new();
        let scans = ScanMemo::default();
        for trial in &self.trials {
            let planned = self.plan_trial(trial, &[], options, &scans)?;
            let (recorded, record) = self.recorded_state(trial);
            let state = match recorded {
                _ if planned.complete => TrialState::Done,
                TrialState::Done => TrialState::Pending,
                other => other,
            };
            let (error, requeues) = record
                .map(|record| (record.status.error, record.requeues))
                .unwrap_or_default();
            views.push(TrialView {
                trial: trial.clone(),
                planned,
                state,
                error: error.filter(|_| state == TrialState::Failed),
                requeues,
            });
        }
        Ok(views)
    }

    /// Plans a trial and tells whether all of it is cached with its run folder written; the
    /// statuses say what is not (the reasons compare with the experiment's latest run). A pass
    /// over many trials shares one `scans`, so each data folder is scanned once.
    pub fn plan_trial(
        &self,
        trial: &Trial,
        extra: &[(String, Value)],
        options: PlanOptions,
        scans: &ScanMemo,
    ) -> Result<TrialPlan, SweepError> {
        let spec = self.trial_spec(trial, extra)?;
        let plan = build_plan_with(&spec, options, scans)?;
        let cache = Cache::new(&self.out);
        let statuses = stage_statuses(&plan, &cache, &previous_keys(&self.out, &spec));
        let complete = statuses.iter().all(|status| *status == StageStatus::Cached)
            && RunDir::new(&self.run_dir(&plan.run_id)).record().is_file();
        Ok(TrialPlan {
            spec,
            plan,
            statuses,
            complete,
        })
    }

    /// Records a trial found complete without running it (computed by an earlier process, an
    /// identical plain run or another sweep) as done, linking its run folder.
    pub fn adopt(&self, trial: &Trial, run_id: &str) -> Result<(), SweepError> {
        fs_err::create_dir_all(&self.dir)?;
        link_atomic(&Path::new("..").join(run_id), &self.link_path(trial))?;
        let previous = self.read_record(trial);
        if previous.as_ref().is_some_and(|record| {
            record.status.state == TrialState::Done && record.run_id.as_deref() == Some(run_id)
        }) {
            return Ok(());
        }
        let attempts = previous.as_ref().map_or(0, |record| record.attempts);
        let mut record = TrialRecord::attempt(trial, TrialState::Done, attempts);
        record.run_id = Some(run_id.to_owned());
        record.finished_at = Some(record.started_at.clone());
        record.seconds = previous.map_or(0.0, |record| record.seconds);
        self.write_record(&record)
    }

    /// Rebuilds `sweep.json` and the summary from the trial records, under the sweep's lock.
    pub fn refresh(&self) -> Result<SweepFile, SweepError> {
        fs_err::create_dir_all(&self.dir)?;
        let lock = self.open_lock(&self.dir.join(".sweep.lock"))?;
        lock.lock().map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!(
                    "{}: cannot lock: {error}",
                    self.dir.join(".sweep.lock").display()
                ),
            )
        })?;
        remove_stale_temporaries(&self.dir);
        remove_stale_temporaries(&self.trials_dir());
        let mut counts: BTreeMap<String, usize> = ["done", "failed", "running", "pending"]
            .iter()
            .map(|state| ((*state).to_owned(), 0))
            .collect();
        let trials: Vec<SweepTrial> = self
            .trials
            .iter()
            .map(|trial| {
                let (state, record) = self.recorded_state(trial);
                *counts.entry(state.as_str().to_owned()).or_default() += 1;
                SweepTrial {
                    status: TrialStatus {
                        error: record
                            .as_ref()
                            .filter(|_| state == TrialState::Failed)
                            .and_then(|record| record.status.error.clone()),
                        ..TrialStatus::of(trial, state)
                    },
                    run: record
                        .as_ref()
                        .filter(|_| state == TrialState::Done)
                        .and_then(|record| record.run_id.as_ref())
                        .map(|run| format!("../{run}")),
                    attempts: record.as_ref().map_or(0, |record| record.attempts),
                    // Trials adopted from runs made elsewhere have no wall time of their own.
                    seconds: record
                        .as_ref()
                        .filter(|record| state == TrialState::Done && record.seconds > 0.0)
                        .map(|record| record.seconds),
                }
            })
            .collect();
        let file = SweepFile {
            vilab: env!("CARGO_PKG_VERSION").to_owned(),
            name: self.base.spec.name.clone(),
            sweep_id: self.id.clone(),
            spec_file: self.base.file.display().to_string(),
            sets: self.sets.clone(),
            varied: self
                .base
                .spec
                .sweep
                .as_ref()
                .map(|sweep| sweep.varied_paths())
                .unwrap_or_default(),
            metric: self.base.spec.evaluate.metric.clone(),
            updated_at: now_rfc3339(),
            counts,
            trials,
        };
        let mut bytes = serde_json::to_vec_pretty(&file)
            .map_err(|error| std::io::Error::other(format!("sweep.json: {error}")))?;
        bytes.push(b'\n');
        write_atomic(&self.dir.join(SWEEP_FILE), &bytes)?;
        super::summary::write_summary(self, &file)?;
        drop(lock);
        Ok(file)
    }
}

/// One trial of a sweep as `vilab plan` and `vilab status` show it.
#[derive(Debug, Clone)]
pub struct TrialView {
    /// The trial.
    pub trial: Trial,
    /// Its plan and stage statuses.
    pub planned: TrialPlan,
    /// Its state (see [`Sweep::trial_views`]).
    pub state: TrialState,
    /// The error of its last attempt, when it failed.
    pub error: Option<String>,
    /// Its Slurm requeues, oldest first.
    pub requeues: Vec<Requeue>,
}

/// A trial's plan and the state of each of its stages.
#[derive(Debug, Clone)]
pub struct TrialPlan {
    /// The trial's spec.
    pub spec: LoadedSpec,
    /// Its stages and run id.
    pub plan: Plan,
    /// Each stage's status, in plan order.
    pub statuses: Vec<StageStatus>,
    /// Every stage cached and the run folder written.
    pub complete: bool,
}

impl TrialPlan {
    /// The first stage that is not cached, with its status (`train: stale — ...`).
    pub fn first_stale(&self) -> Option<String> {
        self.plan
            .stages
            .iter()
            .zip(&self.statuses)
            .find(|(_, status)| **status != StageStatus::Cached)
            .map(|(stage, status)| format!("{}: {status}", stage.kind.name()))
    }
}

/// The error of a failed attempt as one line: the message and its causes.
pub fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Runs one trial in this process: `vilab run FILE --trial ID`. Holds the trial's lock while
/// running (a second process for the same trial waits, then finds it done), records the
/// outcome and refreshes `sweep.json` and the summary.
pub fn run_trial(
    sweep: &Sweep,
    trial: &Trial,
    options: &RunOptions,
    extra: &[(String, Value)],
    reporter: &Reporter,
) -> Result<RunOutcome, SweepError> {
    let lock_path = sweep.trials_dir().join(format!("{}.lock", trial.id));
    let lock = sweep.open_lock(&lock_path)?;
    if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
        reporter.line(&format!(
            "trial {} is being run by another process; waiting for it",
            trial.id
        ));
        lock.lock().map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("{}: cannot lock: {error}", lock_path.display()),
            )
        })?;
    }
    let clock = Instant::now();
    let previous = sweep.read_record(trial);
    let attempts = previous.as_ref().map_or(0, |record| record.attempts) + 1;
    let mut record = TrialRecord::attempt(trial, TrialState::Running, attempts);
    record.requeues = previous
        .map(|previous| previous.requeues)
        .unwrap_or_default();
    sweep.write_record(&record)?;
    reporter.line(&format!("trial {}: {}", trial.id, trial.describe()));
    let result = sweep
        .trial_spec(trial, extra)
        .map_err(SweepError::from)
        .and_then(|spec| run_experiment(&spec, options, reporter).map_err(SweepError::from));
    record.finished_at = Some(now_rfc3339());
    record.seconds = clock.elapsed().as_secs_f64();
    match &result {
        Ok(outcome) => {
            link_atomic(
                &Path::new("..").join(&outcome.record.run_id),
                &sweep.link_path(trial),
            )?;
            record.status.state = TrialState::Done;
            record.run_id = Some(outcome.record.run_id.clone());
        }
        Err(error) if is_interrupt(error) => {
            // Left as running: with the lock released that reads as pending, and the next run
            // resumes from the checkpoint.
            record.status.error = Some(error_text(error));
        }
        Err(error) => {
            record.status.state = TrialState::Failed;
            record.status.error = Some(error_text(error));
        }
    }
    sweep.write_record(&record)?;
    drop(lock);
    sweep.refresh()?;
    result
}

/// Whether a trial stopped because of a signal rather than failed.
pub fn is_interrupt(error: &SweepError) -> bool {
    interrupted_at(error).is_some()
}

/// The epoch and step of the checkpoint a trial stopped by a signal left.
pub fn interrupted_at(error: &SweepError) -> Option<(u32, u64)> {
    match error {
        SweepError::Run(RunError::Stage {
            error:
                crate::stages::StageError::Train(crate::train::TrainError::Interrupted {
                    epoch,
                    step,
                    ..
                }),
            ..
        }) => Some((*epoch, *step)),
        _ => None,
    }
}
