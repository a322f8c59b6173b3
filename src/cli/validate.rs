//! `vilab validate FILE`: report every problem of an experiment at once.

use clap::Args;

use super::{EXIT_OK, ExperimentArgs};

/// Arguments of `vilab validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

/// Runs the verb.
pub fn run(args: &ValidateArgs) -> anyhow::Result<u8> {
    let spec = args.experiment.load()?;
    spec.spec.backend.ensure_available()?;
    println!(
        "{}: ok (experiment `{}`, model {}, {} epochs)",
        args.experiment.file.display(),
        spec.spec.name,
        spec.spec.model.name.as_str(),
        spec.spec.train.epochs
    );
    Ok(EXIT_OK)
}
