//! Executing a plan: compute what is not cached, reuse the rest, and lay out the run folder.
//!
//! The run folder's layout is in [`crate::pipeline::layout`]. The same resolved spec over the same data always maps to the same folder, so re-running is
//! a no-op; anything that changes a stage key gives a new folder and leaves the old one intact.
//! Every file of the folder is replaced atomically (written beside, then renamed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::files::{
    host_name, json_bytes, link_atomic, remove_file_if_present, remove_stale_temporaries,
    write_atomic,
};
use crate::pipeline::StageKind;
use crate::pipeline::cache::{Cache, CacheError, EntryState};
use crate::pipeline::layout::{
    Computation, LATEST, PendingRun, PendingStage, RunDir, RunFailure, RunRecord, StageOutcome,
    StageRecord, experiment_dir, read_record,
};
use crate::pipeline::plan::{Plan, PlanError, PlanOptions, build_plan};
use crate::progress::Reporter;
use crate::spec::LoadedSpec;
use crate::stages::{StageContext, StageError, run_stage};

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output root (`outputs/` by default): holds the cache and the run folders.
    pub out: PathBuf,
    /// How input folders are fingerprinted.
    pub plan: PlanOptions,
}

/// The result of `vilab run`.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// What was recorded in its `run.json`.
    pub record: RunRecord,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The plan could not be built (an input folder could not be scanned).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The cache could not be read or written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A stage failed; nothing of it was committed.
    #[error("{stage}: {error}")]
    Stage {
        /// The stage.
        stage: StageKind,
        /// Why (printed in this message, so deliberately not the error's `source`).
        error: StageError,
    },
    /// The run folder could not be written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Plans and runs an experiment.
pub fn run_experiment(
    spec: &LoadedSpec,
    options: &RunOptions,
    reporter: &Reporter,
) -> Result<RunOutcome, RunError> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let plan = build_plan(spec, options.plan)?;
    let cache = Cache::new(&options.out);
    let run_dir = experiment_dir(&options.out, spec).join(&plan.run_id);
    fs_err::create_dir_all(&run_dir)?;
    remove_stale_temporaries(&run_dir);
    remove_stale_temporaries(&experiment_dir(&options.out, spec));
    let mut pending = PendingRun {
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        stages: plan
            .stages
            .iter()
            .map(|stage| PendingStage {
                stage: stage.kind,
                key: stage.key().to_owned(),
            })
            .collect(),
        pid: Some(std::process::id()),
        host: Some(host_name()),
        failure: None,
    };
    let folder = RunDir::new(&run_dir);
    // Held shared until this function returns: `vilab runs` and `vilab status` tell a running
    // folder from one whose process died by trying to take it exclusively.
    let run_lock = fs_err::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(folder.lock())?;
    run_lock.file().lock_shared().map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("{}: cannot lock: {error}", folder.lock().display()),
        )
    })?;
    write_atomic(&folder.pending(), &json_bytes(&folder.pending(), &pending)?)?;
    write_atomic(&folder.spec(), resolved_spec_text(spec)?.as_bytes())?;
    // What this folder's previous invocations computed, by stage key.
    let earlier: BTreeMap<String, Computation> = read_record(&run_dir)
        .map(|record| {
            record
                .stages
                .into_iter()
                .filter_map(|stage| Some((stage.key, stage.computed?)))
                .collect()
        })
        .unwrap_or_default();
    let mut records = Vec::new();
    let mut outputs: BTreeMap<StageKind, PathBuf> = BTreeMap::new();
    // Shared locks on every entry this run reads, held until its run folder links them, so
    // `vilab gc` (which deletes only under an entry's exclusive lock) cannot remove one meanwhile.
    let mut in_use = Vec::new();
    for stage in &plan.stages {
        let _span = tracing::info_span!("stage", name = stage.kind.name()).entered();
        let stage_clock = Instant::now();
        let (state, summary) = loop {
            let result = ensure_entry(spec, &plan, &cache, stage.kind, &outputs, reporter, &folder)
                .inspect_err(|error| record_failure(&folder, &mut pending, stage.kind, error))?;
            let guard = cache.lock_shared(stage.kind, stage.key())?;
            // Collected between the check and the lock: compute it again.
            if cache.state(stage.kind, stage.key()) == EntryState::Complete {
                in_use.push(guard);
                break result;
            }
        };
        let seconds = stage_clock.elapsed().as_secs_f64();
        if state == StageOutcome::Computed {
            reporter.stage(
                stage.kind.name(),
                &format!("computed in {seconds:.1} s — {summary}"),
            );
        } else {
            reporter.stage(stage.kind.name(), "cached");
        }
        outputs.insert(stage.kind, cache.entry_path(stage.kind, stage.key()));
        let computed = if state == StageOutcome::Computed {
            Some(Computation {
                finished_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                seconds,
                summary: summary.clone(),
            })
        } else {
            earlier.get(stage.key()).cloned()
        };
        records.push(StageRecord {
            stage: stage.kind,
            key: stage.key().to_owned(),
            state,
            seconds,
            summary,
            computed,
        });
    }
    for stage in &plan.stages {
        let target = Path::new("../..")
            .join("cache")
            .join(stage.kind.cache_folder())
            .join(&stage.key()[..2])
            .join(stage.key());
        link_atomic(&target, &folder.stage(stage.kind))?;
    }
    let record = RunRecord {
        vilab: env!("CARGO_PKG_VERSION").to_owned(),
        name: spec.spec.name.clone(),
        run_id: plan.run_id.clone(),
        spec_file: spec.file.display().to_string(),
        backend: format!("{:?}", spec.spec.backend).to_lowercase(),
        seed: spec.spec.seed,
        host: host_name(),
        git_commit: git_commit(&spec.file),
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        finished_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        seconds: clock.elapsed().as_secs_f64(),
        stages: records,
    };
    write_atomic(&folder.record(), &json_bytes(&folder.record(), &record)?)?;
    // A concurrent run of the same folder may have removed it already.
    remove_file_if_present(&folder.pending())?;
    // The live status served while training ran; `train/` has the final history now.
    if folder.live().is_dir()
        && let Err(error) = fs_err::remove_dir_all(folder.live())
    {
        tracing::warn!("{error}");
    }
    write_page(&folder);
    link_atomic(
        Path::new(&plan.run_id),
        &experiment_dir(&options.out, spec).join(LATEST),
    )?;
    drop(in_use);
    Ok(RunOutcome { run_dir, record })
}

/// The resolved spec as `spec.yaml` holds it.
fn resolved_spec_text(spec: &LoadedSpec) -> std::io::Result<String> {
    let mut text = format!(
        "# Resolved by vilab {} from {}: every layer merged, every default filled in.\n",
        env!("CARGO_PKG_VERSION"),
        spec.file.display()
    );
    text.push_str(
        &serde_yaml::to_string(&spec.resolved)
            .map_err(|error| std::io::Error::other(format!("spec.yaml: {error}")))?,
    );
    Ok(text)
}

/// Notes in `pending.json` why the run stopped at `stage` and refreshes the run's page, so
/// `vilab runs` can tell a failure from an interruption. Best effort: the error itself is
/// what the caller reports.
fn record_failure(folder: &RunDir, pending: &mut PendingRun, stage: StageKind, error: &RunError) {
    let interrupted = matches!(
        error,
        RunError::Stage {
            error: StageError::Train(crate::train::TrainError::Interrupted { .. }),
            ..
        }
    );
    pending.failure = Some(RunFailure {
        stage,
        error: error.to_string(),
        interrupted,
        at: crate::files::now_rfc3339(),
    });
    let written = json_bytes(&folder.pending(), &*pending)
        .and_then(|bytes| write_atomic(&folder.pending(), &bytes));
    // Debug, not a warning: these writes fail for the reason the run failed (a full disk, a
    // read-only folder), and the run's own error is the one line a person needs.
    if let Err(error) = written {
        tracing::debug!("{error}");
    }
    if let Err(error) = crate::report::run_page::write_run_page(folder) {
        tracing::debug!("report.html not written: {error}");
    }
}

/// Writes the run's `report.html`; a failure is a warning, never the run's failure.
fn write_page(folder: &RunDir) {
    if let Err(error) = crate::report::run_page::write_run_page(folder) {
        tracing::warn!("report.html not written: {error}");
    }
}

/// Makes sure the entry of `kind` exists: reuse it, or compute it under its lock.
fn ensure_entry(
    spec: &LoadedSpec,
    plan: &Plan,
    cache: &Cache,
    kind: StageKind,
    outputs: &BTreeMap<StageKind, PathBuf>,
    reporter: &Reporter,
    folder: &RunDir,
) -> Result<(StageOutcome, String), RunError> {
    let stage = plan
        .stage(kind)
        .unwrap_or_else(|| unreachable!("the runner iterates planned stages"));
    let key = stage.key();
    if cache.state(kind, key) == EntryState::Complete {
        remove_finished_resume_dir(cache, kind, key);
        return Ok((StageOutcome::Reused, String::new()));
    }
    let _lock = cache.lock(kind, key)?;
    match cache.state(kind, key) {
        EntryState::Complete => {
            remove_finished_resume_dir(cache, kind, key);
            return Ok((StageOutcome::Reused, String::new()));
        }
        EntryState::Corrupt(reason) => {
            let kept = cache.quarantine(kind, key)?;
            tracing::warn!(
                "{}: cache entry damaged ({reason}); moved to {} and recomputing",
                kind.name(),
                kept.display()
            );
        }
        EntryState::Missing => {}
    }
    reporter.stage(kind.name(), "computing…");
    let pending = cache.begin(kind, key)?;
    let work_dir = cache.resume_dir(kind, key);
    let context = StageContext {
        spec,
        plan,
        upstream: outputs.clone(),
        reporter,
        work_dir: work_dir.clone(),
        run_dir: folder.path().to_path_buf(),
    };
    let summary = run_stage(kind, &context, pending.dir())
        .map_err(|error| RunError::Stage { stage: kind, error })?;
    pending.commit(&stage.stored)?;
    cache.remove_resume_dir(kind, key)?;
    Ok((StageOutcome::Computed, summary))
}

/// Removes the resume folder of an entry that is complete: a process killed between
/// committing the entry and removing its checkpoints leaves one behind, and nothing will read
/// it again. Best effort (another process may be removing it too).
fn remove_finished_resume_dir(cache: &Cache, kind: StageKind, key: &str) {
    if let Err(error) = cache.remove_resume_dir(kind, key) {
        tracing::warn!("{}: {error}", kind.name());
    }
}

/// The commit of the repository holding `file`, with `+dirty` when the file has changes.
fn git_commit(file: &Path) -> Option<String> {
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(folder)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let name = file.file_name()?;
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(folder)
        .args(["status", "--porcelain", "--"])
        .arg(name)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .is_some_and(|status| !status.stdout.is_empty());
    Some(if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    })
}
