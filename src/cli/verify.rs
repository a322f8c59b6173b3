//! `vilab verify --out DIR [--quarantine]`: hash every file of every cache entry and training
//! checkpoint again and compare it with its manifest (`pipeline::verify`). Each damaged entry
//! or checkpoint is one line naming the file; the exit code is 1 when there is any.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use super::plan::{Format, print_json};
use super::{EXIT_FAILURE, EXIT_OK, human_bytes};
use crate::pipeline::verify::{Damage, Finding, verify};

/// Arguments of `vilab verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The output root whose cache to check (required; no default, no environment).
    #[arg(long, value_name = "DIR", required = true)]
    pub out: PathBuf,
    /// Move damaged entries to `cache/corrupt/`, so that they are computed again.
    #[arg(long)]
    pub quarantine: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `vilab verify --format json`.
#[derive(Debug, Serialize)]
struct VerifyJson {
    /// Entries and checkpoints checked.
    checked: usize,
    /// Bytes of those found whole.
    whole_bytes: u64,
    /// Entries and checkpoints found damaged.
    damaged: usize,
    seconds: f64,
    /// One per damaged entry or checkpoint.
    findings: Vec<FindingJson>,
}

/// One damaged entry or checkpoint.
#[derive(Debug, Serialize)]
struct FindingJson {
    /// `entry` or `checkpoint`.
    kind: &'static str,
    /// The damaged file, relative to `--out`.
    path: String,
    /// `missing`, `size`, `changed`, `unreadable` or `invalid` (the manifest).
    problem: &'static str,
    /// The problem as the text output says it.
    message: String,
    /// `reported`, `quarantined`, `gone` (collected or replaced meanwhile) or `in_use` (left
    /// in place); always `reported` for checkpoints.
    action: &'static str,
    /// Where a quarantined entry was moved, relative to `--out`; null otherwise.
    moved_to: Option<String>,
}

/// Runs `vilab verify`.
pub fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    if !args.out.is_dir() {
        bail!("{}: no such folder", args.out.display());
    }
    let clock = Instant::now();
    let relative = |path: &Path| {
        path.strip_prefix(&args.out)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    if args.format == Format::Json {
        let mut findings = Vec::new();
        let verified = verify(&args.out, args.quarantine, |finding| {
            let (kind, reason, action, moved_to) = match finding {
                Finding::Entry(reason, damage) => {
                    let (action, moved_to) = match damage {
                        Damage::Reported => ("reported", None),
                        Damage::Quarantined(kept) => ("quarantined", Some(relative(&kept))),
                        Damage::Gone => ("gone", None),
                        Damage::InUse => ("in_use", None),
                    };
                    ("entry", reason, action, moved_to)
                }
                Finding::Checkpoint(reason) => ("checkpoint", reason, "reported", None),
            };
            findings.push(FindingJson {
                kind,
                path: relative(reason.path()),
                problem: reason.kind(),
                message: reason.to_string(),
                action,
                moved_to,
            });
        })?;
        print_json(&VerifyJson {
            checked: verified.checked,
            whole_bytes: verified.whole_bytes,
            damaged: verified.damaged,
            seconds: clock.elapsed().as_secs_f64(),
            findings,
        })?;
        return Ok(if verified.damaged == 0 {
            EXIT_OK
        } else {
            EXIT_FAILURE
        });
    }
    let verified = verify(&args.out, args.quarantine, |finding| match finding {
        Finding::Entry(reason, Damage::Reported) => println!("damaged entry: {reason}"),
        Finding::Entry(reason, Damage::Quarantined(kept)) => {
            println!("damaged entry: {reason}; moved to {}", relative(&kept));
        }
        Finding::Entry(reason, Damage::Gone) => println!("damaged entry: {reason}; gone meanwhile"),
        Finding::Entry(reason, Damage::InUse) => {
            println!("damaged entry: {reason}; in use, left in place");
        }
        Finding::Checkpoint(reason) => println!("damaged checkpoint: {reason}"),
    })?;
    let seconds = clock.elapsed().as_secs_f64();
    let (checked, damaged) = (verified.checked, verified.damaged);
    let whole = human_bytes(verified.whole_bytes);
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
