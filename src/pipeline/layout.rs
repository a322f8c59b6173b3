//! The run folder's layout: the one place that names its files, and the records written there.
//!
//! ```text
//! <out>/<name>/<run-id>/     run-id: 12 hex digits of blake3(resolved spec + stage keys)
//!     spec.yaml              the resolved spec (every layer merged, defaults filled in)
//!     run.json               version, backend, seed, host, git commit, and per stage: key,
//!                            computed or reused, seconds, and when, how fast and with what
//!                            result this folder first computed it (kept across re-runs)
//!     pending.json           while a run of this folder has not finished (or after it died):
//!                            its stage keys, so `vilab gc` keeps what it needs to go on, the
//!                            process running it and, once it stopped, why (failed/interrupted)
//!     .run.lock              held (shared) by every process running this folder
//!     live/                  while training runs: status.json (epoch, step, latest val ACC1,
//!                            ETA), history.csv so far; kept after a failure, removed once done
//!     report.html            one self-contained page of everything above (refreshed while
//!                            training runs)
//!     <stage> -> ../../cache/<stage>-v<N>/<kk>/<key>    one link per stage output
//! <out>/<name>/latest -> <run-id>
//! ```
//!
//! The files inside a stage's output are named by the module that writes them
//! ([`HISTORY_FILE`], [`METRICS_FILE`], [`REPORT_FILE`], [`EXPORTED_WEIGHTS`]); [`RunDir`]
//! joins them to a run folder for readers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StageKind;
use crate::spec::LoadedSpec;
use crate::train::live::LiveStatus;

pub use crate::inference::{EXPORTED_CONFIG, EXPORTED_WEIGHTS};
pub use crate::metrics::{HISTORY_FILE, METRICS_FILE, REPORT_FILE};

/// `pending.json` of a run folder: written before the first stage is looked at, removed once
/// `run.json` is written, so an unfinished run (running, failed or killed) still tells
/// `vilab gc` which entries and resume folders it needs.
pub const PENDING_FILE: &str = "pending.json";
/// `run.json`: the record of the latest invocation of a run folder.
pub const RECORD_FILE: &str = "run.json";
/// `spec.yaml`: the resolved spec of a run folder.
pub const SPEC_FILE: &str = "spec.yaml";
/// `report.html`: the run's page, or a sweep's or an output root's.
pub const REPORT_HTML: &str = "report.html";
/// A sweep folder's page.
pub const SUMMARY_HTML: &str = "summary.html";
/// The output root's page of every run (`vilab runs --html`).
pub const INDEX_HTML: &str = "index.html";
/// The lock every process running a folder holds shared; a reader that gets it exclusively
/// knows nobody is running the folder.
pub const RUN_LOCK: &str = ".run.lock";
/// The folder of a running training's progress.
pub const LIVE_DIR: &str = "live";
/// The live status in [`LIVE_DIR`].
pub const LIVE_STATUS: &str = "status.json";
/// The link in an experiment's folder to its latest run folder.
pub const LATEST: &str = "latest";
/// A sweep folder's list of trials and their states.
pub const SWEEP_FILE: &str = "sweep.json";
/// A sweep folder's summary table, one row per trial.
pub const SUMMARY_CSV: &str = "summary.csv";
/// The same summary for people.
pub const SUMMARY_MD: &str = "summary.md";
/// The ranking metric against each varied parameter.
pub const SUMMARY_PLOT: &str = "summary.png";

/// A run folder, and where each of its files is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run folder at `path` (`<out>/<name>/<run-id>` or `<out>/<name>/latest`).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `spec.yaml`.
    pub fn spec(&self) -> PathBuf {
        self.path.join(SPEC_FILE)
    }

    /// `run.json`.
    pub fn record(&self) -> PathBuf {
        self.path.join(RECORD_FILE)
    }

    /// `pending.json`.
    pub fn pending(&self) -> PathBuf {
        self.path.join(PENDING_FILE)
    }

    /// `report.html`.
    pub fn report_html(&self) -> PathBuf {
        self.path.join(REPORT_HTML)
    }

    /// `.run.lock`.
    pub fn lock(&self) -> PathBuf {
        self.path.join(RUN_LOCK)
    }

    /// `live/`.
    pub fn live(&self) -> PathBuf {
        self.path.join(LIVE_DIR)
    }

    /// `live/status.json`.
    pub fn live_status(&self) -> PathBuf {
        self.live().join(LIVE_STATUS)
    }

    /// `live/history.csv`.
    pub fn live_history(&self) -> PathBuf {
        self.live().join(HISTORY_FILE)
    }

    /// The live status of the folder's training, if it has one and it is readable.
    pub fn read_live_status(&self) -> Option<LiveStatus> {
        let bytes = std::fs::read(self.live_status()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// `pending.json`, if it is there and readable.
    pub fn read_pending(&self) -> Option<PendingRun> {
        let bytes = std::fs::read(self.pending()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether a process is running this folder now (it holds `.run.lock`).
    pub fn is_running(&self) -> bool {
        let Ok(file) = std::fs::File::open(self.lock()) else {
            return false;
        };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    /// What the folder's latest invocation is doing or did, read from its files and lock.
    pub fn state(&self) -> Option<RunState> {
        match self.read_pending() {
            Some(_) if self.is_running() => Some(RunState::Running),
            Some(PendingRun {
                failure: Some(failure),
                ..
            }) if !failure.interrupted => Some(RunState::Failed),
            Some(_) => Some(RunState::Interrupted),
            None if self.pending().exists() && self.is_running() => Some(RunState::Running),
            None => self.record().is_file().then_some(RunState::Done),
        }
    }

    /// The link to a stage's output.
    pub fn stage(&self, kind: StageKind) -> PathBuf {
        self.path.join(kind.name())
    }

    /// The training history (`train/history.csv`).
    pub fn history(&self) -> PathBuf {
        self.stage(StageKind::Train).join(HISTORY_FILE)
    }

    /// The evaluation scores (`evaluate/metrics.json`).
    pub fn metrics(&self) -> PathBuf {
        self.stage(StageKind::Evaluate).join(METRICS_FILE)
    }

    /// The per-class report of the best weights on the validation split.
    pub fn class_report(&self) -> PathBuf {
        self.stage(StageKind::Evaluate).join(REPORT_FILE)
    }

    /// The folder of a set of exported weights of the train stage (`best`, `ema`, `last`).
    pub fn weights(&self, name: &str) -> PathBuf {
        self.stage(StageKind::Train).join(name)
    }
}

/// Which exported weights of a run's train stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsChoice {
    /// The checkpoint with the best validation score.
    Best,
    /// The weights after the last epoch.
    Last,
    /// The exponential moving average of the weights (when training kept one).
    Ema,
}

impl WeightsChoice {
    /// Every choice, in the order messages list them.
    pub const ALL: [WeightsChoice; 3] =
        [WeightsChoice::Best, WeightsChoice::Last, WeightsChoice::Ema];

    /// The folder name under `<run>/train/`.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsChoice::Best => "best",
            WeightsChoice::Last => "last",
            WeightsChoice::Ema => "ema",
        }
    }

    /// The choice named `name` (`best`, `last`, `ema`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|choice| choice.as_str() == name)
    }
}

/// A path that is not the run folder, or the exported weights, a reader asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The path is no run folder (nor an experiment folder with a `latest` run).
    #[error("{}: {what}; expected a run folder such as outputs/<name>/latest", path.display())]
    NotARunFolder {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// The run has none of the asked weights.
    #[error("{}: {message}", run.display())]
    NoWeights {
        /// The run folder.
        run: PathBuf,
        /// What is missing and what is there.
        message: String,
    },
}

impl RunDir {
    /// The run folder `path` names: itself, or its `latest` link when given an experiment
    /// folder.
    pub fn resolve(path: &Path) -> Result<Self, LayoutError> {
        if RunDir::new(path).record().is_file() {
            return Ok(RunDir::new(path));
        }
        let latest = RunDir::new(&path.join(LATEST));
        if latest.record().is_file() {
            return Ok(latest);
        }
        let what = if path.is_dir() {
            "not a vilab run folder (no run.json)"
        } else if path.exists() {
            "not a folder"
        } else {
            "no such folder"
        };
        Err(LayoutError::NotARunFolder {
            path: path.to_path_buf(),
            what,
        })
    }

    /// The folder of the `choice` weights, checked to hold an exported model.
    pub fn exported(&self, choice: WeightsChoice) -> Result<PathBuf, LayoutError> {
        let exported = |choice: WeightsChoice| {
            let dir = self.weights(choice.as_str());
            let complete =
                dir.join(EXPORTED_CONFIG).is_file() && dir.join(EXPORTED_WEIGHTS).is_file();
            complete.then_some(dir)
        };
        if let Some(dir) = exported(choice) {
            return Ok(dir);
        }
        let available: Vec<&str> = WeightsChoice::ALL
            .into_iter()
            .filter(|&other| exported(other).is_some())
            .map(WeightsChoice::as_str)
            .collect();
        let message = match (choice, available.is_empty()) {
            (_, true) => "no trained weights in this run (train/ has no best/ or last/)".to_owned(),
            (WeightsChoice::Ema, false) => format!(
                "no EMA weights in this run (train/ema/ does not exist); available: {}",
                available.join(", ")
            ),
            (_, false) => format!(
                "no {} weights in this run (train/{}/ is missing or incomplete); available: {}",
                choice.as_str(),
                choice.as_str(),
                available.join(", ")
            ),
        };
        Err(LayoutError::NoWeights {
            run: self.path.clone(),
            message,
        })
    }
}

/// What an invocation did about one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageOutcome {
    /// Computed by this invocation.
    Computed,
    /// Found complete in the cache.
    Reused,
}

/// What happened to one stage in one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage.
    pub stage: StageKind,
    /// Its key.
    pub key: String,
    /// Computed by this invocation, or reused from the cache.
    pub state: StageOutcome,
    /// Wall time of the stage in this invocation.
    pub seconds: f64,
    /// The one-line summary the stage gave when it was computed (empty when reused).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// The computation of this key for this run folder: from this invocation when `state` is
    /// `computed`, else carried over from the folder's previous `run.json`, so re-running keeps
    /// the original timing and summary. Absent for an entry some other run folder computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed: Option<Computation>,
}

/// When, how fast and with what result a stage's entry was computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Computation {
    /// End of the computation, RFC 3339.
    pub finished_at: String,
    /// Wall time of the stage.
    pub seconds: f64,
    /// The stage's one-line summary.
    pub summary: String,
}

/// `run.json`: the record of the latest invocation of a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// vilab's version.
    pub vilab: String,
    /// Experiment name.
    pub name: String,
    /// The run folder's name.
    pub run_id: String,
    /// The experiment file as given.
    pub spec_file: String,
    /// Backend of the spec.
    pub backend: String,
    /// Global seed.
    pub seed: u64,
    /// Host name.
    pub host: String,
    /// Commit of the git repository holding the experiment file, if any (`+dirty` when the
    /// file has uncommitted changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Start of the invocation, RFC 3339.
    pub started_at: String,
    /// End of the invocation, RFC 3339.
    pub finished_at: String,
    /// Wall time of the invocation.
    pub seconds: f64,
    /// Stages in execution order.
    pub stages: Vec<StageRecord>,
}

impl RunRecord {
    /// Stage ⇒ key, for comparisons with a later plan.
    pub fn keys(&self) -> BTreeMap<StageKind, String> {
        self.stages
            .iter()
            .map(|stage| (stage.stage, stage.key.clone()))
            .collect()
    }
}

/// Where a run folder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Every stage finished (`run.json`, no `pending.json`).
    Done,
    /// A process holds the folder's lock.
    Running,
    /// A stage failed; `pending.json` says which and why.
    Failed,
    /// Stopped by Ctrl-C, SIGTERM or a kill before finishing; running it again resumes.
    Interrupted,
}

impl RunState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Done => "done",
            RunState::Running => "running",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// Why an invocation stopped early, kept in `pending.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFailure {
    /// The stage that stopped.
    pub stage: StageKind,
    /// The error, as printed.
    pub error: String,
    /// Stopped on request (Ctrl-C, SIGTERM) rather than by an error.
    pub interrupted: bool,
    /// When, RFC 3339.
    pub at: String,
}

/// A stage and its key, as `pending.json` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingStage {
    /// The stage.
    pub stage: StageKind,
    /// Its key.
    pub key: String,
}

/// The contents of `pending.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRun {
    /// Start of the invocation, RFC 3339.
    pub started_at: String,
    /// Every stage of the plan, in execution order.
    pub stages: Vec<PendingStage>,
    /// The process running the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Why the invocation stopped, once it has (absent while it runs, and after a kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RunFailure>,
}

/// The folder of an experiment's runs.
pub fn experiment_dir(out: &Path, spec: &LoadedSpec) -> PathBuf {
    out.join(&spec.spec.name)
}

/// The `run.json` of a run folder, if it is there and readable.
pub fn read_record(run_dir: &Path) -> Option<RunRecord> {
    let text = std::fs::read(RunDir::new(run_dir).record()).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The stage keys of the latest run of this experiment under `out`, if there was one.
pub fn previous_keys(out: &Path, spec: &LoadedSpec) -> BTreeMap<StageKind, String> {
    read_record(&experiment_dir(out, spec).join(LATEST))
        .map(|record| record.keys())
        .unwrap_or_default()
}
