//! `vilab gc --out DIR [--dry-run]`: delete the cache entries no run folder references (the
//! rules and the lock protocol are in `pipeline::gc`).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use super::{EXIT_OK, human_bytes};
use crate::pipeline::cache::Cache;
use crate::pipeline::gc::{GcEvent, collect};

/// Arguments of `vilab gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The output root whose cache to collect (required; no default, no environment).
    #[arg(long, value_name = "DIR", required = true)]
    pub out: PathBuf,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the verb.
pub fn run(args: &GcArgs) -> anyhow::Result<u8> {
    let cache_root = Cache::new(&args.out).root().to_path_buf();
    if !args.out.is_dir() {
        bail!("{}: no such folder", args.out.display());
    }
    if !cache_root.is_dir() {
        println!("{}: no cache; nothing to collect", cache_root.display());
        return Ok(EXIT_OK);
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let relative = |path: &Path| {
        path.strip_prefix(&cache_root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let summary = collect(&args.out, args.dry_run, |event| match event {
        GcEvent::InUse(candidate) => println!("in use, kept: {}", relative(&candidate.path)),
        GcEvent::Deleted(candidate, size) => println!(
            "{verb} {} {} ({})",
            candidate.kind,
            relative(&candidate.path),
            human_bytes(size)
        ),
    })?;
    let busy_note = if summary.in_use > 0 {
        format!("; {} in use kept", summary.in_use)
    } else {
        String::new()
    };
    let (count, bytes) = (summary.deleted, human_bytes(summary.bytes));
    if args.dry_run {
        println!("would free {count} folder(s), {bytes}{busy_note}");
    } else {
        println!("freed {count} folder(s), {bytes}{busy_note}");
    }
    Ok(EXIT_OK)
}
