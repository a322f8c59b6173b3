//! Garbage collection of the cache: the entries, leftovers and resume folders no run folder
//! references, deleted under their locks (`vilab gc`).
//!
//! A cache entry is kept when any run folder `<out>/<name>/<run-id>/` links to it or lists its
//! key in `run.json`, or in `pending.json` — the stage keys of a run that has not finished:
//! running, failed, or killed (sweep folders only link run folders, and a trial is an ordinary
//! run, so pending and failed trials count through their run folders too). Everything else
//! under `<out>/cache/<stage>-v<N>/` is garbage, as are leftovers under `tmp/` (entries whose
//! writer died). A folder under `resume/` (the checkpoints an interrupted training resumes
//! from) is kept while its key is referenced the same way, so collecting never throws away the
//! progress of a run that will be resumed; only orphaned ones go. Deleting a run folder
//! releases everything only it referenced.
//!
//! What is deleted is chosen under the entry's lock: an entry, tmp or resume folder whose lock a
//! process holds (computing it, or a run using it — runs hold a shared lock on every entry they
//! read until their run folder links it) is skipped and reported. After taking the locks, the run
//! folders are read again: a run writes `pending.json` before it looks at any entry, so one that
//! started while gc was choosing is seen then and keeps what it needs. Entries are moved into
//! `tmp/` first, so a half-deleted entry never looks like a damaged one. Nothing outside
//! `<out>/cache` is touched, and neither are `corrupt/` (quarantined entries, kept on purpose) nor
//! the lock files; an entry's record under `verified/` goes with it. `--out` must be given
//! explicitly: collecting the wrong folder's cache only costs recomputation, but it should never
//! happen by default.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use super::cache::{Cache, CacheError, RESUME_FOLDER, is_stage_folder, remove_stamps};
use super::layout::{PendingRun, RunDir, read_record};
use crate::files::folder_bytes;

/// What kind of folder a piece of garbage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GarbageKind {
    /// A committed cache entry.
    Entry,
    /// A leftover under `tmp/` (an entry whose writer died, or a deletion cut short).
    Tmp,
    /// A resume folder (training checkpoints) of an entry nobody will compute.
    Resume,
}

impl std::fmt::Display for GarbageKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Entry => "entry",
            Self::Tmp => "tmp",
            Self::Resume => "resume",
        })
    }
}

/// Something gc may delete.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Garbage {
    /// The folder.
    pub path: PathBuf,
    /// The lock guarding it (`<stage>-v<N>-<key>`).
    pub lock: String,
    /// What it is.
    pub kind: GarbageKind,
    /// The stage folder (`train-v1`) and key it belongs to.
    pub stage_folder: String,
    /// See `stage_folder`.
    pub key: String,
}

/// What [`collect`] did with one candidate, as it happens.
#[derive(Debug, Clone, Copy)]
pub enum GcEvent<'a> {
    /// A process holds its lock, or a run started since needs it: kept.
    InUse(&'a Garbage),
    /// Deleted (or, in a dry run, would be), with its size.
    Deleted(&'a Garbage, u64),
}

/// The totals of a collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcSummary {
    /// Folders deleted (or that would be).
    pub deleted: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Candidates kept because they were in use.
    pub in_use: usize,
}

/// How many candidates are locked at once before the run folders are read again.
const LOCK_BATCH: usize = 256;

/// `path` with `.` and `..` resolved without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What the run folders under an output root reference.
#[derive(Debug, Default)]
struct References {
    /// Entries linked from a run folder, as `(stage folder, key)`.
    linked: BTreeSet<(String, String)>,
    /// Keys listed in a `run.json` or `pending.json` (matched under any format version).
    keys: BTreeSet<String>,
}

impl References {
    /// Whether `candidate` is still needed. Leftovers under `tmp/` never are: they are
    /// partial outputs nobody reads.
    fn keep(&self, candidate: &Garbage) -> bool {
        candidate.kind != GarbageKind::Tmp
            && (self.keys.contains(&candidate.key)
                || self
                    .linked
                    .contains(&(candidate.stage_folder.clone(), candidate.key.clone())))
    }
}

/// Every cache entry a run folder references.
fn referenced(out: &Path, cache_root: &Path) -> std::io::Result<References> {
    let mut references = References::default();
    let cache_root = normalize(&std::path::absolute(cache_root)?);
    for experiment in fs_err::read_dir(out)? {
        let experiment = experiment?;
        let path = experiment.path();
        if experiment.file_name() == "cache" || !experiment.file_type()?.is_dir() {
            continue;
        }
        for run in fs_err::read_dir(&path)? {
            let run = run?;
            // `latest` and trial links point at run folders listed here anyway.
            if !run.file_type()?.is_dir() {
                continue;
            }
            let run_dir = std::path::absolute(run.path())?;
            // Gone since listed (its owner removed it): it references nothing any more.
            let Ok(items) = fs_err::read_dir(&run_dir) else {
                continue;
            };
            for item in items {
                let item = item?;
                let Ok(target) = std::fs::read_link(item.path()) else {
                    continue;
                };
                let target = normalize(&run_dir.join(target));
                let Ok(inside) = target.strip_prefix(&cache_root) else {
                    continue;
                };
                let parts: Vec<String> = inside
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if let [stage, _, key] = parts.as_slice() {
                    references.linked.insert((stage.clone(), key.clone()));
                }
            }
            if let Some(record) = read_record(&run_dir) {
                references
                    .keys
                    .extend(record.stages.into_iter().map(|stage| stage.key));
            }
            if let Ok(bytes) = std::fs::read(RunDir::new(&run_dir).pending())
                && let Ok(pending) = serde_json::from_slice::<PendingRun>(&bytes)
            {
                references
                    .keys
                    .extend(pending.stages.into_iter().map(|stage| stage.key));
            }
        }
    }
    Ok(references)
}

/// Everything under the cache that nobody references.
fn garbage(
    references: &References,
    out: &Path,
    cache_root: &Path,
) -> std::io::Result<Vec<Garbage>> {
    let mut found: Vec<Garbage> = Cache::new(out)
        .stored_entries()?
        .into_iter()
        .map(|entry| Garbage {
            lock: entry.lock_name(),
            path: entry.path,
            kind: GarbageKind::Entry,
            stage_folder: entry.stage_folder,
            key: entry.key,
        })
        .collect();
    for (folder, kind) in [
        ("tmp", GarbageKind::Tmp),
        (RESUME_FOLDER, GarbageKind::Resume),
    ] {
        let Ok(items) = fs_err::read_dir(cache_root.join(folder)) else {
            continue;
        };
        for item in items {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            // tmp/<stage>-v<N>-<key>.<pid>.<nanos> (being written, or being deleted by gc or a run),
            // resume/<stage>-v<N>-<key>; anything else is not ours to judge.
            let lock = name.split('.').next().unwrap_or_default().to_owned();
            let Some((stage, key)) = lock.rsplit_once('-') else {
                continue;
            };
            if !is_stage_folder(stage) {
                continue;
            }
            found.push(Garbage {
                path: item.path(),
                stage_folder: stage.to_owned(),
                key: key.to_owned(),
                lock,
                kind,
            });
        }
    }
    found.retain(|candidate| !references.keep(candidate));
    found.sort();
    Ok(found)
}

/// Deletes (or with `dry_run` lists) what no run folder under `out` references, telling
/// `report` about each candidate as it is decided. The caller checks that `out` and its cache
/// exist.
pub fn collect(
    out: &Path,
    dry_run: bool,
    mut report: impl FnMut(GcEvent<'_>),
) -> Result<GcSummary, CacheError> {
    let cache = Cache::new(out);
    let cache_root = cache.root().to_path_buf();
    let candidates = garbage(&referenced(out, &cache_root)?, out, &cache_root)?;
    let mut summary = GcSummary::default();
    for batch in candidates.chunks(LOCK_BATCH) {
        let mut held = Vec::new();
        for candidate in batch {
            // A dry run creates nothing: with no lock file, nobody can hold the lock.
            if dry_run && !cache.lock_path(&candidate.lock).exists() {
                held.push((candidate, None));
                continue;
            }
            match cache.try_lock_named(&candidate.lock)? {
                Some(lock) => held.push((candidate, Some(lock))),
                None => {
                    report(GcEvent::InUse(candidate));
                    summary.in_use += 1;
                }
            }
        }
        // Runs that started since the first reading have written `pending.json` by now.
        let references = referenced(out, &cache_root)?;
        for (candidate, _lock) in held {
            if references.keep(candidate) {
                report(GcEvent::InUse(candidate));
                summary.in_use += 1;
                continue;
            }
            if !candidate.path.exists() {
                continue;
            }
            let size = folder_bytes(&candidate.path);
            if !dry_run {
                // Into tmp/ under the lock's name, so a trash folder left by a crash is
                // collected next time.
                cache.discard(&candidate.path, &candidate.lock)?;
                if candidate.kind == GarbageKind::Entry {
                    remove_stamps(&cache.stamps_path_named(&candidate.lock))?;
                }
            }
            report(GcEvent::Deleted(candidate, size));
            summary.deleted += 1;
            summary.bytes += size;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(
            normalize(Path::new("/o/tiny/abc/../../cache/split-v1/ab/abcd")),
            PathBuf::from("/o/cache/split-v1/ab/abcd")
        );
    }

    #[test]
    fn stage_folders_are_recognised() {
        assert!(is_stage_folder("train-v1"));
        assert!(is_stage_folder("split-v12"));
        assert!(!is_stage_folder("locks"));
        assert!(!is_stage_folder("tmp"));
        assert!(!is_stage_folder("-v1"));
        assert!(!is_stage_folder("train-v"));
    }
}
