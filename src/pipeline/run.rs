//! Executing a plan: compute what is not cached, reuse the rest, and lay out the run folder.
//!
//! # Run folders
//!
//! ```text
//! <out>/<name>/<run-id>/     run-id: 12 hex digits of blake3(resolved spec + stage keys)
//!     spec.yaml              the resolved spec (every layer merged, defaults filled in)
//!     run.json               version, backend, seed, host, git commit, and per stage: key,
//!                            computed or reused, seconds, and when, how fast and with what
//!                            result this folder first computed it (kept across re-runs)
//!     pending.json           while a run of this folder has not finished (or after it died):
//!                            its stage keys, so `vilab gc` keeps what it needs to go on
//!     <stage> -> ../../cache/<stage>-v<N>/<kk>/<key>    one link per stage output
//! <out>/<name>/latest -> <run-id>
//! ```
//!
//! The same resolved spec over the same data always maps to the same folder, so re-running is
//! a no-op; anything that changes a stage key gives a new folder and leaves the old one intact.
//! Every file of the folder is replaced atomically (written beside, then renamed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::StageKind;
use super::cache::{Cache, CacheError, EntryState};
use super::plan::{Plan, PlanError, PlanOptions, build_plan};
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

/// What happened to one stage in one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage.
    pub stage: StageKind,
    /// Its key.
    pub key: String,
    /// `computed` or `reused`.
    pub state: String,
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

/// `pending.json` of a run folder: written before the first stage is looked at, removed once
/// `run.json` is written, so an unfinished run (running, failed or killed) still tells
/// `vilab gc` which entries and resume folders it needs.
pub const PENDING_FILE: &str = "pending.json";

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

/// The folder of an experiment's runs.
pub fn experiment_dir(out: &Path, spec: &LoadedSpec) -> PathBuf {
    out.join(&spec.spec.name)
}

/// The `run.json` of a run folder, if it is there and readable.
pub fn read_record(run_dir: &Path) -> Option<RunRecord> {
    let text = std::fs::read(run_dir.join("run.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The stage keys of the latest run of this experiment under `out`, if there was one.
pub fn previous_keys(out: &Path, spec: &LoadedSpec) -> BTreeMap<StageKind, String> {
    read_record(&experiment_dir(out, spec).join("latest"))
        .map(|record| record.keys())
        .unwrap_or_default()
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
    let pending = PendingRun {
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        stages: plan
            .stages
            .iter()
            .map(|stage| PendingStage {
                stage: stage.kind,
                key: stage.key().to_owned(),
            })
            .collect(),
    };
    let mut pending_json = serde_json::to_vec_pretty(&pending)
        .map_err(|error| std::io::Error::other(format!("{PENDING_FILE}: {error}")))?;
    pending_json.push(b'\n');
    write_atomic(&run_dir.join(PENDING_FILE), &pending_json)?;
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
            let result = ensure_entry(spec, &plan, &cache, stage.kind, &outputs, reporter)?;
            let guard = cache.lock_shared(stage.kind, stage.key())?;
            // Collected between the check and the lock: compute it again.
            if cache.state(stage.kind, stage.key()) == EntryState::Complete {
                in_use.push(guard);
                break result;
            }
        };
        let seconds = stage_clock.elapsed().as_secs_f64();
        if state == "computed" {
            reporter.stage(
                stage.kind.name(),
                &format!("computed in {seconds:.1} s — {summary}"),
            );
        } else {
            reporter.stage(stage.kind.name(), "cached");
        }
        outputs.insert(stage.kind, cache.entry_path(stage.kind, stage.key()));
        let computed = if state == "computed" {
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
            state: state.to_owned(),
            seconds,
            summary,
            computed,
        });
    }
    let mut spec_text = format!(
        "# Resolved by vilab {} from {}: every layer merged, every default filled in.\n",
        env!("CARGO_PKG_VERSION"),
        spec.file.display()
    );
    spec_text.push_str(
        &serde_yaml::to_string(&spec.resolved)
            .map_err(|error| std::io::Error::other(format!("spec.yaml: {error}")))?,
    );
    write_atomic(&run_dir.join("spec.yaml"), spec_text.as_bytes())?;
    for stage in &plan.stages {
        let target = Path::new("../..")
            .join("cache")
            .join(stage.kind.cache_folder())
            .join(&stage.key()[..2])
            .join(stage.key());
        link_atomic(&target, &run_dir.join(stage.kind.name()))?;
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
    let mut json = serde_json::to_vec_pretty(&record)
        .map_err(|error| std::io::Error::other(format!("run.json: {error}")))?;
    json.push(b'\n');
    write_atomic(&run_dir.join("run.json"), &json)?;
    // A concurrent run of the same folder may have removed it already.
    if let Err(error) = std::fs::remove_file(run_dir.join(PENDING_FILE))
        && error.kind() != std::io::ErrorKind::NotFound
    {
        return Err(std::io::Error::new(
            error.kind(),
            format!("{}: {error}", run_dir.join(PENDING_FILE).display()),
        )
        .into());
    }
    link_atomic(
        Path::new(&plan.run_id),
        &experiment_dir(&options.out, spec).join("latest"),
    )?;
    drop(in_use);
    Ok(RunOutcome { run_dir, record })
}

/// Makes sure the entry of `kind` exists: reuse it, or compute it under its lock.
fn ensure_entry(
    spec: &LoadedSpec,
    plan: &Plan,
    cache: &Cache,
    kind: StageKind,
    outputs: &BTreeMap<StageKind, PathBuf>,
    reporter: &Reporter,
) -> Result<(&'static str, String), RunError> {
    let stage = plan
        .stage(kind)
        .unwrap_or_else(|| unreachable!("the runner iterates planned stages"));
    let key = stage.key();
    if cache.state(kind, key) == EntryState::Complete {
        remove_finished_resume_dir(cache, kind, key);
        return Ok(("reused", String::new()));
    }
    let _lock = cache.lock(kind, key)?;
    match cache.state(kind, key) {
        EntryState::Complete => {
            remove_finished_resume_dir(cache, kind, key);
            return Ok(("reused", String::new()));
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
    };
    let summary = run_stage(kind, &context, pending.dir())
        .map_err(|error| RunError::Stage { stage: kind, error })?;
    pending.commit(&stage.stored)?;
    cache.remove_resume_dir(kind, key)?;
    Ok(("computed", summary))
}

/// Writes `bytes` beside `path` and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = fs_err::File::create(&tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    fs_err::rename(&tmp, path)
}

/// Points the symbolic link `link` at `target`, replacing an existing link atomically.
pub fn link_atomic(target: &Path, link: &Path) -> Result<(), std::io::Error> {
    if std::fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    let file_name = link
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = link.with_file_name(format!(".{file_name}.{}.link", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &tmp).map_err(|error| {
        std::io::Error::new(error.kind(), format!("{}: {error}", tmp.display()))
    })?;
    #[cfg(not(unix))]
    return Err(std::io::Error::other(
        "run folders need symbolic links (Unix)",
    ));
    fs_err::rename(&tmp, link)
}

/// Removes the resume folder of an entry that is complete: a process killed between
/// committing the entry and removing its checkpoints leaves one behind, and nothing will read
/// it again. Best effort (another process may be removing it too).
fn remove_finished_resume_dir(cache: &Cache, kind: StageKind, key: &str) {
    if let Err(error) = cache.remove_resume_dir(kind, key) {
        tracing::warn!("{}: {error}", kind.name());
    }
}

/// Removes what writers killed mid-way left in `dir`: the `.<name>.<pid>.tmp` files of
/// [`write_atomic`] and `.<name>.<pid>.link` links of [`link_atomic`] whose process is gone.
/// Those of live processes (a concurrent run of the same folder) are left alone. Best effort:
/// a leftover that cannot be removed is harmless, since nothing reads it.
pub(crate) fn remove_stale_temporaries(dir: &Path) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let name = item.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_prefix('.').and_then(|rest| {
            rest.strip_suffix(".tmp")
                .or_else(|| rest.strip_suffix(".link"))
        }) else {
            continue;
        };
        let Some(pid) = stem
            .rsplit_once('.')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(item.path());
        }
    }
}

/// Whether a process with this id exists (one we may not signal counts).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_dead_writers_are_removed_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("reaped");
        let alive = std::process::id();
        let names = [
            format!(".plot.{dead}.link"),
            format!(".spec.yaml.{dead}.tmp"),
            format!(".run.json.{alive}.tmp"),
            ".notes.tmp".to_owned(),
            "results.1.tmp".to_owned(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        remove_stale_temporaries(dir.path());
        let left: Vec<bool> = names
            .iter()
            .map(|name| dir.path().join(name).exists())
            .collect();
        assert_eq!(left, [false, false, true, true, true], "{names:?}");
    }
}
