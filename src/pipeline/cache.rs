//! The on-disk, content-addressed stage cache.
//!
//! # Layout
//!
//! ```text
//! <out>/cache/
//!   <stage>-v<format>/<key[..2]>/<key>/   one complete entry: the stage's outputs plus
//!       fingerprint.json                  everything the key was computed from (readable)
//!       manifest.json                     size and blake3 of every other file in the entry
//!   locks/<stage>-v<format>-<key>.lock    advisory lock: exclusive while the entry is computed
//!                                         (or deleted by gc), shared while runs use it
//!   tmp/<stage>-<key>.<pid>.<nanos>/      entries being written
//!   resume/<stage>-v<format>-<key>/       resumable state of an entry being computed
//!                                         (training checkpoints); removed once it is committed
//!   corrupt/                              entries that failed their integrity check, kept
//!   verified/<stage>-v<format>-<key>.json files of an entry hashed again since its commit
//!                                         (touched, copied, linked), by inode state
//! ```
//!
//! # Guarantees
//!
//! An entry is written into `tmp/`, its files are synced, and the folder is renamed into place
//! in one step, so an entry under its key is always complete: a killed process leaves at most a
//! folder under `tmp/`, which nothing reads (the next computation of that key removes it).
//!
//! Two processes that need the same missing entry serialise on its lock file (`flock`, released
//! by the kernel when a process dies, so a crashed holder never blocks anyone): the first
//! computes, the second waits, finds the entry complete and reuses it.
//!
//! # Integrity
//!
//! On use ([`Cache::state`]), an entry's files are checked against its manifest: every file
//! must be there with its size, and every file changed since the entry was committed must still
//! have its blake3. "Changed since" is read from the inode change time (ctime), which every
//! write, truncation or `touch` moves forward and which no ordinary tool can set back: at
//! commit all files are written before `manifest.json`, so a file whose ctime is later than the
//! manifest's has been modified afterwards and is hashed again. A file that still matches
//! (touched, copied with its entry, given another hard link) has its inode state (inode, change
//! time, size) recorded under `verified/`, and is not hashed again until that state changes.
//! The check therefore costs one `stat` per file for an untouched entry, however large, and a
//! full hash only of files changed since they were last checked (an edit that restores the
//! exact bytes passes). Damage that leaves no trace in the metadata (bit rot under the file
//! system) is what [`Cache::verify_contents`] is for: it hashes every file. An entry that fails
//! is moved to `corrupt/` (never deleted: it may be someone's evidence) and recomputed; the
//! warning names the damaged file.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::fingerprint::StoredFingerprint;
use super::stage::StageKind;
use crate::files::{
    now_nanos, remove_dir_via, remove_file_if_present, write_json, write_json_atomic,
};
use crate::integrity::{
    FileStamp, IntegrityError, Thoroughness, check_files, check_manifest, write_manifest,
};

/// File names every entry has besides the stage's outputs.
pub const FINGERPRINT_FILE: &str = "fingerprint.json";
/// The folder of the cache holding resumable state (see [`Cache::resume_dir`]).
pub const RESUME_FOLDER: &str = "resume";

/// A cache failure, always naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file system operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The state of an entry on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    /// Present and consistent with its manifest.
    Complete,
    /// Not there.
    Missing,
    /// There, but a file is missing, has the wrong size, or was modified since the entry was
    /// committed and no longer has its hash; the reason names the file.
    Corrupt(IntegrityError),
}

/// The cache below one output root.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache of `<out>`.
    pub fn new(out: &Path) -> Self {
        Self {
            root: out.join("cache"),
        }
    }

    /// The cache folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry for `key` lives (whether or not it exists).
    pub fn entry_path(&self, stage: StageKind, key: &str) -> PathBuf {
        self.root
            .join(stage.cache_folder())
            .join(&key[..2.min(key.len())])
            .join(key)
    }

    /// Whether the entry exists and matches its manifest: presence and sizes of every file, and
    /// the hash of every file modified since the entry was committed (see the module notes).
    pub fn state(&self, stage: StageKind, key: &str) -> EntryState {
        let entry = self.entry_path(stage, key);
        if !entry.is_dir() {
            return EntryState::Missing;
        }
        let stamps_path = self.stamps_path(stage, key);
        let vouched: BTreeMap<String, FileStamp> = std::fs::read(&stamps_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        match check_files(&entry, Thoroughness::ChangedFiles, &vouched) {
            Ok(hashed) => {
                if !hashed.is_empty() {
                    let mut stamps = vouched;
                    stamps.extend(hashed);
                    // Best effort (a read-only cache): without the record the next check
                    // hashes these files again, nothing worse.
                    let _ = write_stamps(&stamps_path, &stamps);
                }
                EntryState::Complete
            }
            Err(reason) => EntryState::Corrupt(reason),
        }
    }

    /// Where the inode states of an entry's re-hashed files are recorded.
    pub fn stamps_path(&self, stage: StageKind, key: &str) -> PathBuf {
        self.stamps_path_named(&lock_name(stage, key))
    }

    /// [`Cache::stamps_path`] of the entry whose lock is named `name`.
    pub fn stamps_path_named(&self, name: &str) -> PathBuf {
        self.root.join("verified").join(format!("{name}.json"))
    }

    /// Re-hashes every file of an entry; the first mismatch is returned.
    pub fn verify_contents(&self, stage: StageKind, key: &str) -> Result<(), IntegrityError> {
        check_manifest(&self.entry_path(stage, key), Thoroughness::EveryFile)
    }

    /// The stored fingerprint of an entry, if it is there and readable.
    pub fn fingerprint(&self, stage: StageKind, key: &str) -> Option<StoredFingerprint> {
        let path = self.entry_path(stage, key).join(FINGERPRINT_FILE);
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Where a stage keeps state that must survive a crash while its entry is computed, so the
    /// next attempt resumes from it (training checkpoints):
    /// `<out>/cache/resume/<stage>-v<N>-<key>/`.
    pub fn resume_dir(&self, stage: StageKind, key: &str) -> PathBuf {
        self.root
            .join(RESUME_FOLDER)
            .join(format!("{}-{key}", stage.cache_folder()))
    }

    /// Removes the resume folder of an entry, if there is one (see [`Cache::discard`]), so a
    /// deletion cut short never leaves a checkpoint that looks complete but lacks files.
    pub fn remove_resume_dir(&self, stage: StageKind, key: &str) -> Result<(), CacheError> {
        self.discard(&self.resume_dir(stage, key), &lock_name(stage, key))
    }

    /// Deletes `folder` (an entry, a resume folder, a leftover) by renaming it into `tmp/`
    /// first, under a name that starts with its `lock` name, and deleting it there: a deletion
    /// cut short leaves only a folder `vilab gc` collects, never a half-emptied one where
    /// readers look. Nothing happens when `folder` is not there.
    pub fn discard(&self, folder: &Path, lock: &str) -> Result<(), CacheError> {
        if !folder.exists() {
            return Ok(());
        }
        let tmp_root = self.root.join("tmp");
        fs_err::create_dir_all(&tmp_root)?;
        let trash = tmp_root.join(format!("{lock}.{}.{}", std::process::id(), now_nanos()));
        remove_dir_via(folder, &trash)?;
        Ok(())
    }

    /// Takes the lock of an entry, waiting while another process holds it.
    pub fn lock(&self, stage: StageKind, key: &str) -> Result<EntryLock, CacheError> {
        let (file, path) = self.open_lock(&lock_name(stage, key))?;
        file.lock().map_err(|error| lock_error(&path, error))?;
        Ok(EntryLock { _file: file })
    }

    /// Marks an entry as in use until the guard is dropped: a shared lock, which any number of
    /// runs reading the entry hold at once, and which keeps out whoever needs the exclusive lock
    /// (`vilab gc` deleting, or a run replacing a damaged entry) until they are done.
    pub fn lock_shared(&self, stage: StageKind, key: &str) -> Result<EntryLock, CacheError> {
        let (file, path) = self.open_lock(&lock_name(stage, key))?;
        file.lock_shared()
            .map_err(|error| lock_error(&path, error))?;
        Ok(EntryLock { _file: file })
    }

    /// Takes the exclusive lock named `<stage>-v<format>-<key>` without waiting; `None` when a
    /// process holds it (computing the entry, or reading it). The name also covers the entry's
    /// `tmp/` and `resume/` folders, which the computing process holds it for.
    pub fn try_lock_named(&self, name: &str) -> Result<Option<EntryLock>, CacheError> {
        let (file, path) = self.open_lock(name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(EntryLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(lock_error(&path, error).into()),
        }
    }

    /// The lock file named `<stage>-v<format>-<key>` (see [`lock_name`]).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    fn open_lock(&self, name: &str) -> Result<(File, PathBuf), CacheError> {
        let path = self.lock_path(name);
        if let Some(folder) = path.parent() {
            fs_err::create_dir_all(folder)?;
        }
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        Ok((file.into_file(), path))
    }

    /// Starts writing the entry for `key`: an empty folder under `tmp/`. Call with the entry's
    /// lock held; leftovers of killed writers of the same key are removed first.
    pub fn begin(&self, stage: StageKind, key: &str) -> Result<PendingEntry, CacheError> {
        let tmp_root = self.root.join("tmp");
        fs_err::create_dir_all(&tmp_root)?;
        let prefix = format!("{}-{key}.", stage.cache_folder());
        for leftover in fs_err::read_dir(&tmp_root)? {
            let leftover = leftover?;
            if leftover.file_name().to_string_lossy().starts_with(&prefix) {
                fs_err::remove_dir_all(leftover.path())?;
            }
        }
        let nanos = now_nanos();
        let dir = tmp_root.join(format!("{prefix}{}.{nanos}", std::process::id()));
        fs_err::create_dir_all(&dir)?;
        Ok(PendingEntry {
            dir,
            target: self.entry_path(stage, key),
            committed: false,
        })
    }

    /// Moves an entry that failed its check to `corrupt/`, keeping it for inspection.
    pub fn quarantine(&self, stage: StageKind, key: &str) -> Result<PathBuf, CacheError> {
        self.quarantine_stored(&StoredEntry {
            stage_folder: stage.cache_folder(),
            key: key.to_owned(),
            path: self.entry_path(stage, key),
        })
    }

    /// [`Cache::quarantine`] for an entry found by [`Cache::stored_entries`] (of any format
    /// version). Call with the entry's exclusive lock held.
    pub fn quarantine_stored(&self, entry: &StoredEntry) -> Result<PathBuf, CacheError> {
        let folder = self.root.join("corrupt");
        fs_err::create_dir_all(&folder)?;
        let nanos = now_nanos();
        let target = folder.join(format!("{}.{nanos}", entry.lock_name()));
        fs_err::rename(&entry.path, &target)?;
        remove_stamps(&self.stamps_path_named(&entry.lock_name()))?;
        Ok(target)
    }

    /// Every entry folder under the stage folders (`<stage>-v<N>/<kk>/<key>`, any format
    /// version), in path order; an empty list when there is no cache.
    pub fn stored_entries(&self) -> Result<Vec<StoredEntry>, std::io::Error> {
        let mut found = Vec::new();
        let stages = match fs_err::read_dir(&self.root) {
            Ok(stages) => stages,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(error) => return Err(error),
        };
        for stage in stages {
            let stage = stage?;
            let stage_folder = stage.file_name().to_string_lossy().into_owned();
            if !is_stage_folder(&stage_folder) || !stage.file_type()?.is_dir() {
                continue;
            }
            for prefix in fs_err::read_dir(stage.path())? {
                let prefix = prefix?;
                if !prefix.file_type()?.is_dir() {
                    continue;
                }
                for entry in fs_err::read_dir(prefix.path())? {
                    let entry = entry?;
                    found.push(StoredEntry {
                        stage_folder: stage_folder.clone(),
                        key: entry.file_name().to_string_lossy().into_owned(),
                        path: entry.path(),
                    });
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }
}

/// An entry folder as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its stage folder (`train-v1`).
    pub stage_folder: String,
    /// Its key (the folder's name).
    pub key: String,
    /// The folder.
    pub path: PathBuf,
}

impl StoredEntry {
    /// The name of its lock (see [`lock_name`]).
    pub fn lock_name(&self) -> String {
        format!("{}-{}", self.stage_folder, self.key)
    }
}

/// Whether `name` looks like a stage folder of the cache (`train-v1`).
pub fn is_stage_folder(name: &str) -> bool {
    name.rsplit_once("-v").is_some_and(|(stage, version)| {
        !stage.is_empty()
            && stage.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !version.is_empty()
            && version.chars().all(|c| c.is_ascii_digit())
    })
}

/// The name of an entry's lock file, without `.lock`.
pub fn lock_name(stage: StageKind, key: &str) -> String {
    format!("{}-{key}", stage.cache_folder())
}

fn lock_error(path: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        error.kind(),
        format!("{}: cannot lock: {error}", path.display()),
    )
}

/// An entry's lock; released when dropped or when the process dies.
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
}

/// An entry being written. Dropping it without [`PendingEntry::commit`] removes the folder.
#[derive(Debug)]
pub struct PendingEntry {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PendingEntry {
    /// The folder to write outputs into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the fingerprint and manifest, syncs, and renames the entry into place.
    pub fn commit(mut self, fingerprint: &StoredFingerprint) -> Result<PathBuf, CacheError> {
        write_json(&self.dir.join(FINGERPRINT_FILE), fingerprint)?;
        write_manifest(&self.dir)?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| {
                std::io::Error::new(error.kind(), format!("{}: {error}", self.dir.display()))
            })?;
        if let Some(parent) = self.target.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::rename(&self.dir, &self.target)?;
        if let Some(parent) = self.target.parent() {
            // Make the rename itself durable.
            let _ = File::open(parent).and_then(|dir| dir.sync_all());
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_stamps(path: &Path, stamps: &BTreeMap<String, FileStamp>) -> Result<(), CacheError> {
    if let Some(folder) = path.parent() {
        fs_err::create_dir_all(folder)?;
    }
    write_json_atomic(path, stamps)?;
    Ok(())
}

/// Removes an entry's stamps (with the entry: a stale record must not outlive it).
pub fn remove_stamps(path: &Path) -> Result<(), CacheError> {
    Ok(remove_file_if_present(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fingerprint::Fingerprint;
    use std::collections::BTreeMap;

    fn fingerprint() -> StoredFingerprint {
        let fingerprint = Fingerprint {
            stage: StageKind::Stats,
            format: 1,
            vilab: "test".into(),
            spec: BTreeMap::new(),
            inputs: BTreeMap::new(),
            upstream: BTreeMap::new(),
        };
        StoredFingerprint {
            key: fingerprint.key(),
            fingerprint,
            input_files: BTreeMap::new(),
        }
    }

    #[test]
    fn entries_appear_only_when_committed_and_detect_damage() {
        let out = tempfile::tempdir().unwrap();
        let cache = Cache::new(out.path());
        let stored = fingerprint();
        let key = stored.key.clone();
        assert_eq!(cache.state(StageKind::Stats, &key), EntryState::Missing);
        let _lock = cache.lock(StageKind::Stats, &key).unwrap();
        let pending = cache.begin(StageKind::Stats, &key).unwrap();
        std::fs::write(pending.dir().join("stats.json"), b"{\"mean\": 1}").unwrap();
        assert_eq!(cache.state(StageKind::Stats, &key), EntryState::Missing);
        let entry = pending.commit(&stored).unwrap();
        assert_eq!(cache.state(StageKind::Stats, &key), EntryState::Complete);
        assert!(cache.verify_contents(StageKind::Stats, &key).is_ok());
        assert_eq!(cache.fingerprint(StageKind::Stats, &key).unwrap(), stored);

        // The inode change time has the kernel clock's tick as resolution: let one pass, so
        // the edit below is later than the commit, as any real edit is.
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(entry.join("stats.json"), b"{\"mean\": 2}").unwrap();
        assert!(cache.verify_contents(StageKind::Stats, &key).is_err());
        assert!(matches!(
            cache.state(StageKind::Stats, &key),
            EntryState::Corrupt(reason) if reason.to_string().contains("stats.json") && reason.to_string().contains("blake3")
        ));
        std::fs::write(entry.join("stats.json"), b"{\"mean\": 1}").unwrap();
        assert_eq!(
            cache.state(StageKind::Stats, &key),
            EntryState::Complete,
            "an edit that restores the exact bytes is no damage"
        );
        let stamps = cache.stamps_path(StageKind::Stats, &key);
        let recorded = std::fs::read_to_string(&stamps).unwrap();
        assert!(recorded.contains("stats.json"), "{recorded}");
        assert_eq!(cache.state(StageKind::Stats, &key), EntryState::Complete);
        std::fs::write(entry.join("stats.json"), b"{}").unwrap();
        assert!(matches!(
            cache.state(StageKind::Stats, &key),
            EntryState::Corrupt(reason) if reason.to_string().contains("stats.json")
        ));
        let kept = cache.quarantine(StageKind::Stats, &key).unwrap();
        assert!(kept.join("stats.json").is_file());
        assert!(!stamps.exists(), "the record goes with the entry");
        assert_eq!(cache.state(StageKind::Stats, &key), EntryState::Missing);
    }

    #[test]
    fn entries_in_use_keep_the_exclusive_lock_away() {
        let out = tempfile::tempdir().unwrap();
        let cache = Cache::new(out.path());
        let name = lock_name(StageKind::Split, "abcdef");
        let reader = cache.lock_shared(StageKind::Split, "abcdef").unwrap();
        let other_reader = cache.lock_shared(StageKind::Split, "abcdef").unwrap();
        assert!(cache.try_lock_named(&name).unwrap().is_none());
        drop(reader);
        assert!(cache.try_lock_named(&name).unwrap().is_none());
        drop(other_reader);
        let exclusive = cache.try_lock_named(&name).unwrap();
        assert!(exclusive.is_some());
        assert!(cache.try_lock_named(&name).unwrap().is_none());
    }

    #[test]
    fn abandoned_entries_leave_nothing_behind() {
        let out = tempfile::tempdir().unwrap();
        let cache = Cache::new(out.path());
        let pending = cache.begin(StageKind::Split, "abcdef").unwrap();
        let dir = pending.dir().to_path_buf();
        std::fs::write(dir.join("half.csv"), b"x").unwrap();
        drop(pending);
        assert!(!dir.exists());
        assert_eq!(cache.state(StageKind::Split, "abcdef"), EntryState::Missing);
    }
}
