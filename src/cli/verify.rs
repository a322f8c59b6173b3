//! `vilab verify --out DIR [--quarantine]`: hash every file of every cache entry and training
//! checkpoint again and compare it with its manifest (`pipeline::verify`). Each damaged entry
//! or checkpoint is one line naming the file; the exit code is 1 when there is any.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::Args;

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
