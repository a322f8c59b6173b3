//! `vilab gc --out DIR [--dry-run]`: delete the cache entries no run folder references (the
//! rules and the lock protocol are in `pipeline::gc`).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use super::plan::{Format, print_json};
use super::{EXIT_OK, human_bytes};
use crate::pipeline::cache::Cache;
use crate::pipeline::gc::{Garbage, GcEvent, GcSummary, collect};

/// Arguments of `vilab gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The output root whose cache to collect (required; no default, no environment).
    #[arg(long, value_name = "DIR", required = true)]
    pub out: PathBuf,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `vilab gc --format json`.
#[derive(Debug, Default, Serialize)]
struct GcJson {
    dry_run: bool,
    /// The folders deleted (with `--dry-run`: that would be), in the order of deletion.
    deleted: Vec<FolderJson>,
    /// Candidates kept because a process holds them or a run started since needs them.
    in_use: Vec<FolderJson>,
    /// Folders deleted, their bytes, candidates kept in use.
    deleted_count: usize,
    deleted_bytes: u64,
    in_use_count: usize,
}

/// One folder gc deleted or kept.
#[derive(Debug, Serialize)]
struct FolderJson {
    /// `entry` (a cache entry), `tmp` (a leftover under cache/tmp/) or `resume` (training
    /// checkpoints).
    kind: String,
    /// Relative to `--out` (`cache/<stage>-v<N>/<kk>/<key>`, `cache/tmp/...`, ...).
    path: String,
    /// The stage folder (`train-v1`) and key it belongs to.
    stage_folder: String,
    key: String,
    /// Its size; null for folders kept in use.
    bytes: Option<u64>,
}

/// Runs the verb.
pub fn run(args: &GcArgs) -> anyhow::Result<u8> {
    let cache_root = Cache::new(&args.out).root().to_path_buf();
    if !args.out.is_dir() {
        bail!("{}: no such folder", args.out.display());
    }
    if args.format == Format::Json {
        return run_json(args);
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

/// `--format json`: collects (or with `--dry-run` lists), then prints one document.
fn run_json(args: &GcArgs) -> anyhow::Result<u8> {
    let mut document = GcJson {
        dry_run: args.dry_run,
        ..GcJson::default()
    };
    if !Cache::new(&args.out).root().is_dir() {
        print_json(&document)?;
        return Ok(EXIT_OK);
    }
    let folder = |garbage: &Garbage, bytes: Option<u64>| FolderJson {
        kind: garbage.kind.to_string(),
        path: garbage
            .path
            .strip_prefix(&args.out)
            .unwrap_or(&garbage.path)
            .display()
            .to_string(),
        stage_folder: garbage.stage_folder.clone(),
        key: garbage.key.clone(),
        bytes,
    };
    let GcSummary {
        deleted,
        bytes,
        in_use,
    } = collect(&args.out, args.dry_run, |event| match event {
        GcEvent::InUse(garbage) => document.in_use.push(folder(garbage, None)),
        GcEvent::Deleted(garbage, size) => document.deleted.push(folder(garbage, Some(size))),
    })?;
    document.deleted_count = deleted;
    document.deleted_bytes = bytes;
    document.in_use_count = in_use;
    print_json(&document)?;
    Ok(EXIT_OK)
}
