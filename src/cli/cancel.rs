//! `vilab cancel FILE`: cancel the queued and running Slurm tasks of a sweep submitted with
//! `vilab run FILE --launcher slurm`.
//!
//! Running trials get SIGTERM from Slurm, save a checkpoint and stop; `vilab run FILE
//! --launcher slurm` submits them again and they resume.

use clap::Args;

use super::{EXIT_OK, ExperimentArgs, shown_path, usage};
use crate::launcher::slurm::cancel;
use crate::runner::sweep::Sweep;

/// Arguments of `vilab cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

/// Runs the verb.
pub fn run(args: &CancelArgs) -> anyhow::Result<u8> {
    let spec = args.experiment.load()?;
    if spec.spec.sweep.is_none() {
        return Err(usage(format!(
            "{}: has no `sweep` section; cancel works on sweeps submitted with \
             --launcher slurm",
            args.experiment.file.display()
        )));
    }
    let sweep = Sweep::new(spec, &args.experiment.sets, &args.experiment.out)?;
    let cancelled = cancel(&sweep)?;
    if cancelled.is_empty() {
        println!(
            "sweep {}: no queued or running Slurm task",
            shown_path(&sweep.dir)
        );
    } else {
        println!(
            "sweep {}: cancelled {} task(s): {}",
            shown_path(&sweep.dir),
            cancelled.len(),
            cancelled.join(" ")
        );
    }
    Ok(EXIT_OK)
}
