//! The full integrity check (`vilab verify`): every file of every cache entry and training
//! checkpoint hashed again and compared with its manifest.
//!
//! Runs check an entry cheaply on use (sizes, and the hash of files whose inode changed since
//! the entry was written; see [`super::cache`]), which catches every edit made through the file
//! system but not damage that leaves the metadata alone: bit rot, a bad disk, a copy tool that
//! restores timestamps. This is the full check for those, like `git fsck`. With `quarantine`,
//! damaged entries are moved to `cache/corrupt/` (never deleted) under their lock, so the next
//! run computes them again; an entry a process is using is left in place. Damaged checkpoints
//! are only reported: training already falls back to the older one it keeps.

use std::path::{Path, PathBuf};

use super::cache::{Cache, CacheError, RESUME_FOLDER};
use crate::files::folder_bytes;
use crate::integrity::{IntegrityError, Thoroughness, check_manifest};
use crate::train::checkpoint::checkpoints;

/// What became of a damaged entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Reported only.
    Reported,
    /// Moved into `cache/corrupt/` at this path.
    Quarantined(PathBuf),
    /// Gone (collected or replaced) between the check and the lock.
    Gone,
    /// A process holds its lock; left in place.
    InUse,
}

/// One damaged folder, as [`verify`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding<'a> {
    /// A cache entry, and what was done about it.
    Entry(&'a IntegrityError, Damage),
    /// A training checkpoint.
    Checkpoint(&'a IntegrityError),
}

/// The totals of a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Entries and checkpoints checked.
    pub checked: usize,
    /// Bytes of those found whole.
    pub whole_bytes: u64,
    /// Entries and checkpoints found damaged.
    pub damaged: usize,
}

/// Hashes every entry and checkpoint under `out` again, telling `report` of each damaged one.
pub fn verify(
    out: &Path,
    quarantine: bool,
    mut report: impl FnMut(Finding<'_>),
) -> Result<Verified, CacheError> {
    let cache = Cache::new(out);
    let mut verified = Verified::default();
    for entry in cache.stored_entries()? {
        let result = check_manifest(&entry.path, Thoroughness::EveryFile);
        if result.is_err() && !entry.path.exists() {
            // Collected by `vilab gc` (or replaced by a run) while we were reading it.
            continue;
        }
        verified.checked += 1;
        let Err(reason) = result else {
            verified.whole_bytes += folder_bytes(&entry.path);
            continue;
        };
        verified.damaged += 1;
        if !quarantine {
            report(Finding::Entry(&reason, Damage::Reported));
            continue;
        }
        let damage = match cache.try_lock_named(&entry.lock_name())? {
            Some(_lock) if entry.path.exists() => {
                Damage::Quarantined(cache.quarantine_stored(&entry)?)
            }
            Some(_lock) => Damage::Gone,
            None => Damage::InUse,
        };
        report(Finding::Entry(&reason, damage));
    }
    if let Ok(folders) = fs_err::read_dir(cache.root().join(RESUME_FOLDER)) {
        for folder in folders {
            for checkpoint in checkpoints(&folder?.path()) {
                let result = check_manifest(&checkpoint, Thoroughness::EveryFile);
                if result.is_err() && !checkpoint.exists() {
                    // Replaced by a newer one while we were reading it.
                    continue;
                }
                verified.checked += 1;
                match result {
                    Ok(()) => verified.whole_bytes += folder_bytes(&checkpoint),
                    Err(reason) => {
                        verified.damaged += 1;
                        report(Finding::Checkpoint(&reason));
                    }
                }
            }
        }
    }
    Ok(verified)
}
