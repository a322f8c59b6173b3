//! Compiling a resolved spec into the ordered stage graph, with every stage's key.
//!
//! Keys are known before anything runs: a stage's key depends on its spec slice, the digests of
//! the folders it reads, and its upstream stages' keys, never on their outputs. So `plan` and
//! `status` can say what is cached and why something is stale without computing anything.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::cache::{Cache, EntryState};
use super::fingerprint::{
    FileRecord, Fingerprint, InputDigest, StoredFingerprint, digest_files, dirty_reason, spec_slice,
};
use super::layout::previous_keys;
use super::stage::StageKind;
use crate::data::DataError;
use crate::data::scan::{FolderScan, scan_image_folder};
use crate::integrity::short_id;
use crate::spec::LoadedSpec;

/// How input folders are fingerprinted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Hash file contents instead of trusting size and modification time.
    pub verify_data: bool,
}

/// A scanned input folder.
#[derive(Debug, Clone)]
pub struct ScannedInput {
    /// The spec field naming it (`data.root`).
    pub field: &'static str,
    /// As written in the spec (for messages).
    pub written: String,
    /// Absolute location.
    pub path: PathBuf,
    /// Its classes and files.
    pub scan: FolderScan,
}

/// One stage with its fingerprint and key.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// What it is.
    pub kind: StageKind,
    /// Its fingerprint, key and input listings.
    pub stored: StoredFingerprint,
}

impl PlannedStage {
    /// The stage key.
    pub fn key(&self) -> &str {
        &self.stored.key
    }
}

/// The compiled experiment.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Stages in execution order.
    pub stages: Vec<PlannedStage>,
    /// The scanned input folders.
    pub inputs: Vec<ScannedInput>,
    /// The run folder name: derived from the resolved spec and every stage key.
    pub run_id: String,
}

impl Plan {
    /// The planned stage of a kind.
    pub fn stage(&self, kind: StageKind) -> Option<&PlannedStage> {
        self.stages.iter().find(|stage| stage.kind == kind)
    }

    /// The scanned input named by a spec field.
    pub fn input(&self, field: &str) -> Option<&ScannedInput> {
        self.inputs.iter().find(|input| input.field == field)
    }

    /// How the user wrote each input folder, for reasons.
    pub fn input_names(&self) -> BTreeMap<String, String> {
        self.inputs
            .iter()
            .map(|input| (input.field.to_owned(), input.written.clone()))
            .collect()
    }
}

/// Why planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An input folder could not be scanned.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// The stages of an experiment, each with the spec fields it reads, its input folders and its
/// upstream stages.
fn stage_definitions() -> Vec<(StageKind, Vec<&'static str>, Vec<StageKind>)> {
    vec![
        (
            StageKind::Split,
            vec!["data.on_bad_image", "split"],
            Vec::new(),
        ),
        (
            StageKind::Stats,
            vec!["data.image_size", "stats"],
            vec![StageKind::Split],
        ),
        (
            StageKind::Augment,
            // The packs need only the sizes (`data.storage_size` is absent from the resolved
            // spec unless set, so square packs keep their keys); the preview shows the train
            // transforms and mixing.
            vec![
                "data.image_size",
                "data.storage_size",
                "augment.train",
                "train.mixup",
                "seed",
            ],
            vec![StageKind::Split],
        ),
        (
            StageKind::Train,
            vec![
                "seed",
                "backend",
                "data.image_size",
                "augment.train",
                "augment.val",
                "model",
                "train",
                // Loader threads change speed, and the checkpoint interval what a kill loses,
                // never results (`train::KEY_FIELDS`).
                "-train.workers",
                "-train.checkpoint_every",
            ],
            vec![StageKind::Split, StageKind::Stats, StageKind::Augment],
        ),
        (
            StageKind::Evaluate,
            vec!["evaluate"],
            vec![StageKind::Split, StageKind::Augment, StageKind::Train],
        ),
        (StageKind::Plot, vec!["plot"], vec![StageKind::Train]),
    ]
}

/// The scans of one pass that plans many specs over the same folders (every trial of a
/// sweep, for `vilab status` or a submission): each folder is listed, and with
/// `--verify-data` hashed, once per pass instead of once per trial. A pass sees each folder
/// as it was when first scanned, as a single plan does; the process that runs a trial plans it
/// again from a fresh scan.
#[derive(Debug, Default)]
pub struct ScanMemo {
    folders: Mutex<HashMap<(PathBuf, bool), Arc<ScannedFolder>>>,
}

/// A folder's scan with its file records and their digest.
#[derive(Debug)]
struct ScannedFolder {
    scan: FolderScan,
    records: Vec<FileRecord>,
    digest: InputDigest,
}

impl ScanMemo {
    fn folder(&self, path: &Path, exact: bool) -> Result<Arc<ScannedFolder>, DataError> {
        let key = (path.to_path_buf(), exact);
        if let Some(found) = self.lock().get(&key) {
            return Ok(Arc::clone(found));
        }
        let scan = scan_image_folder(path)?;
        let records = file_records(path, &scan, exact)?;
        let digest = digest_files(if exact { "exact" } else { "fast" }, &records);
        let folder = Arc::new(ScannedFolder {
            scan,
            records,
            digest,
        });
        self.lock().insert(key, Arc::clone(&folder));
        Ok(folder)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, bool), Arc<ScannedFolder>>> {
        self.folders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Scans the input folders and computes every stage's key.
pub fn build_plan(spec: &LoadedSpec, options: PlanOptions) -> Result<Plan, PlanError> {
    build_plan_with(spec, options, &ScanMemo::default())
}

/// [`build_plan`] with the folder scans of `memo`.
pub fn build_plan_with(
    spec: &LoadedSpec,
    options: PlanOptions,
    memo: &ScanMemo,
) -> Result<Plan, PlanError> {
    let mut inputs = Vec::new();
    let mut listings: BTreeMap<String, Vec<FileRecord>> = BTreeMap::new();
    let mut digests: BTreeMap<String, InputDigest> = BTreeMap::new();
    let data = &spec.spec.data;
    let folders = [
        ("data.root", Some(&data.root)),
        ("data.val_root", data.val_root.as_ref()),
        ("data.test_root", data.test_root.as_ref()),
    ];
    for (field, written) in folders {
        let Some(written) = written else { continue };
        let path = spec.resolve_path(written);
        let folder = memo.folder(&path, options.verify_data)?;
        listings.insert(field.to_owned(), folder.records.clone());
        digests.insert(field.to_owned(), folder.digest.clone());
        inputs.push(ScannedInput {
            field,
            written: written.clone(),
            path,
            scan: folder.scan.clone(),
        });
    }

    let mut stages: Vec<PlannedStage> = Vec::new();
    for (kind, fields, upstream) in stage_definitions() {
        let upstream_keys: BTreeMap<String, String> = upstream
            .iter()
            .filter_map(|kind| {
                stages
                    .iter()
                    .find(|stage| stage.kind == *kind)
                    .map(|stage| (kind.name().to_owned(), stage.stored.key.clone()))
            })
            .collect();
        // Only the split stage reads the folders' listings; the others see them through it.
        let (digests, input_files) = if kind == StageKind::Split {
            (digests.clone(), listings.clone())
        } else {
            (BTreeMap::new(), BTreeMap::new())
        };
        let fingerprint = Fingerprint {
            stage: kind,
            format: kind.format_version(),
            vilab: env!("CARGO_PKG_VERSION").to_owned(),
            spec: spec_slice(&spec.resolved, &fields),
            inputs: digests,
            upstream: upstream_keys,
        };
        stages.push(PlannedStage {
            kind,
            stored: StoredFingerprint {
                key: fingerprint.key(),
                fingerprint,
                input_files,
            },
        });
    }
    let keys: Vec<&str> = stages.iter().map(PlannedStage::key).collect();
    let identity = serde_json::json!({ "spec": spec.resolved, "stages": keys });
    let run_id = short_id(&identity, 12);
    Ok(Plan {
        stages,
        inputs,
        run_id,
    })
}

/// Per-file records of a scanned folder: size and mtime, or size and content hash.
fn file_records(root: &Path, scan: &FolderScan, exact: bool) -> Result<Vec<FileRecord>, DataError> {
    if !exact {
        return Ok(scan
            .files
            .iter()
            .map(|file| FileRecord {
                path: file.rel_path.clone(),
                len: file.len,
                stamp: file.mtime_ns.to_string(),
            })
            .collect());
    }
    scan.files
        .par_iter()
        .map(|file| {
            let path = root.join(&file.rel_path);
            let mut hasher = blake3::Hasher::new();
            let io = |error: std::io::Error| DataError::Io {
                path: path.clone(),
                message: error.to_string(),
            };
            let reader = std::fs::File::open(&path).map_err(io)?;
            hasher.update_reader(reader).map_err(io)?;
            Ok(FileRecord {
                path: file.rel_path.clone(),
                len: file.len,
                stamp: hasher.finalize().to_hex().to_string(),
            })
        })
        .collect()
}

/// What `plan` and `status` say about a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageStatus {
    /// The entry is in the cache.
    Cached,
    /// Never computed for this experiment.
    Missing,
    /// Computed before with a different fingerprint; the reason is the first difference.
    Stale(String),
    /// The entry exists but failed its integrity check; it will be recomputed.
    Corrupt(String),
}

impl std::fmt::Display for StageStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cached => formatter.write_str("cached"),
            Self::Missing => formatter.write_str("missing"),
            Self::Stale(reason) => write!(formatter, "stale — {reason}"),
            Self::Corrupt(reason) => write!(formatter, "corrupt — {reason}"),
        }
    }
}

/// The status of every planned stage, comparing against the previous run's keys when there
/// The plan of `spec` and each stage's state in the cache under `out`, with why-stale reasons
/// against the keys of the experiment's latest run there.
pub fn plan_with_statuses(
    spec: &LoadedSpec,
    out: &Path,
    options: PlanOptions,
) -> Result<(Plan, Vec<StageStatus>), PlanError> {
    let plan = build_plan(spec, options)?;
    let statuses = stage_statuses(&plan, &Cache::new(out), &previous_keys(out, spec));
    Ok((plan, statuses))
}

/// was one (`previous`: stage ⇒ key).
pub fn stage_statuses(
    plan: &Plan,
    cache: &Cache,
    previous: &BTreeMap<StageKind, String>,
) -> Vec<StageStatus> {
    let names = plan.input_names();
    plan.stages
        .iter()
        .map(|stage| match cache.state(stage.kind, stage.key()) {
            EntryState::Complete => StageStatus::Cached,
            EntryState::Corrupt(reason) => StageStatus::Corrupt(reason.to_string()),
            EntryState::Missing => {
                let old = previous
                    .get(&stage.kind)
                    .and_then(|key| cache.fingerprint(stage.kind, key));
                match old {
                    Some(old) => StageStatus::Stale(dirty_reason(&old, &stage.stored, &names)),
                    None => StageStatus::Missing,
                }
            }
        })
        .collect()
}
