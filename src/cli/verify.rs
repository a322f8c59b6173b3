//! `vilab verify --out DIR [--quarantine]`: hash every file of every cache entry and training
//! checkpoint again and compare it with its manifest.
//!
//! Runs check an entry cheaply on use (sizes, and the hash of files whose inode changed since
//! the entry was written; see `pipeline::cache`), which catches every edit made through the file
//! system but not damage that leaves the metadata alone: bit rot, a bad disk, a copy tool that
//! restores timestamps. This is the full check for those, like `git fsck`. Each damaged entry or
//! checkpoint is one line naming the file; the exit code is 1 when there is any. With
//! `--quarantine` damaged entries are moved to `cache/corrupt/` (never deleted) under their
//! lock, so the next `vilab run` computes them again; an entry a process is using is left and
//! said so. Damaged checkpoints are only reported: training already falls back to the older
//! one it keeps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::Args;

use super::{EXIT_FAILURE, EXIT_OK, human_bytes};
use crate::files::folder_bytes;
use crate::integrity::{Thoroughness, check_manifest};
use crate::pipeline::cache::{Cache, RESUME_FOLDER};
use crate::train::checkpoint::checkpoints;

/// Arguments of `vilab verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The output root whose cache to check (required; no default, no environment).
    #[arg(long, value_name = "DIR", required = true)]
    pub out: PathBuf,
    /// Move damaged entries to `cache/corrupt/`, so that they are computed again.
    #[arg(long)]
    pub quarantine: bool,
}

/// Runs `vilab verify`.
pub fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    if !args.out.is_dir() {
        bail!("{}: no such folder", args.out.display());
    }
    let cache = Cache::new(&args.out);
    let clock = Instant::now();
    let relative = |path: &Path| {
        path.strip_prefix(&args.out)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let (mut checked, mut bytes, mut damaged) = (0usize, 0u64, 0usize);
    for entry in cache.stored_entries()? {
        let result = check_manifest(&entry.path, Thoroughness::EveryFile);
        if result.is_err() && !entry.path.exists() {
            // Collected by `vilab gc` (or replaced by a run) while we were reading it.
            continue;
        }
        checked += 1;
        let Err(reason) = result else {
            bytes += folder_bytes(&entry.path);
            continue;
        };
        damaged += 1;
        if !args.quarantine {
            println!("damaged entry: {reason}");
            continue;
        }
        match cache.try_lock_named(&entry.lock_name())? {
            Some(_lock) if entry.path.exists() => {
                let kept = cache.quarantine_stored(&entry)?;
                println!("damaged entry: {reason}; moved to {}", relative(&kept));
            }
            Some(_lock) => println!("damaged entry: {reason}; gone meanwhile"),
            None => println!("damaged entry: {reason}; in use, left in place"),
        }
    }
    if let Ok(folders) = fs_err::read_dir(cache.root().join(RESUME_FOLDER)) {
        for folder in folders {
            for checkpoint in checkpoints(&folder?.path()) {
                let result = check_manifest(&checkpoint, Thoroughness::EveryFile);
                if result.is_err() && !checkpoint.exists() {
                    // Replaced by a newer one while we were reading it.
                    continue;
                }
                checked += 1;
                match result {
                    Ok(()) => bytes += folder_bytes(&checkpoint),
                    Err(reason) => {
                        damaged += 1;
                        println!("damaged checkpoint: {reason}");
                    }
                }
            }
        }
    }
    let seconds = clock.elapsed().as_secs_f64();
    let whole = human_bytes(bytes);
    if damaged == 0 {
        println!(
            "verified {checked} entries and checkpoints ({whole}) in {seconds:.1} s: all whole"
        );
        Ok(EXIT_OK)
    } else {
        println!(
            "verified {checked} entries and checkpoints ({whole} whole) in {seconds:.1} s: {damaged} damaged"
        );
        Ok(EXIT_FAILURE)
    }
}
