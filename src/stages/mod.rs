//! The stages: thin functions that read their inputs, call into `data`, `train`, `inference`,
//! `metrics` and `report`, and write their outputs into a fresh cache entry folder.
//!
//! A stage never decides whether it runs: the runner (`runner::run`) does, from the keys.
//! A stage writes only into the folder it is given, which becomes a cache entry only if the
//! stage returns `Ok`.

pub mod augment;
pub mod evaluate;
pub mod plot;
pub mod split;
pub mod stats;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::DataError;
use crate::pipeline::StageKind;
use crate::pipeline::plan::Plan;
use crate::progress::Reporter;
use crate::spec::LoadedSpec;

/// Everything a stage may read.
pub struct StageContext<'a> {
    /// The resolved experiment.
    pub spec: &'a LoadedSpec,
    /// The plan, with the scanned input folders.
    pub plan: &'a Plan,
    /// Output folders of the upstream stages.
    pub upstream: BTreeMap<StageKind, PathBuf>,
    /// Progress display.
    pub reporter: &'a Reporter,
    /// A folder outside the cache entry that survives a crash, for resumable state
    /// (training checkpoints); removed once the entry is committed.
    pub work_dir: PathBuf,
    /// The run folder this stage is computed for. Stages may show progress there (the train
    /// stage's `live/`), never anything a stage key or a cache entry depends on.
    pub run_dir: PathBuf,
}

impl StageContext<'_> {
    /// The output folder of an upstream stage.
    pub fn upstream(&self, kind: StageKind) -> Result<&Path, StageError> {
        self.upstream
            .get(&kind)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::Invalid(format!("upstream stage {kind} has no output")))
    }
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Reading or writing data failed; the message names the file.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file system error; the message names the path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The inputs cannot give a result (e.g. a class without readable images).
    #[error("{0}")]
    Invalid(String),
    /// Training failed or was interrupted.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// The trained model could not be loaded or run.
    #[error(transparent)]
    Inference(#[from] crate::inference::InferenceError),
}

/// Runs one stage into `out`; returns a one-line summary for the progress display.
pub fn run_stage(
    kind: StageKind,
    context: &StageContext<'_>,
    out: &Path,
) -> Result<String, StageError> {
    match kind {
        StageKind::Split => split::run(context, out),
        StageKind::Stats => stats::run(context, out),
        StageKind::Augment => augment::run(context, out),
        StageKind::Train => train::run(context, out),
        StageKind::Evaluate => evaluate::run(context, out),
        StageKind::Plot => plot::run(context, out),
    }
}

/// Writes pretty JSON with a trailing newline.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StageError> {
    Ok(crate::files::write_json(path, value)?)
}

/// Reads JSON written by an upstream stage.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let text = fs_err::read(path)?;
    serde_json::from_slice(&text)
        .map_err(|error| StageError::Invalid(format!("{}: {error}", path.display())))
}
