//! `vilab run FILE`: compute what is not cached, reuse the rest, print the run folder.

use clap::Args;

use super::{EXIT_OK, ExperimentArgs, shown_path};
use crate::pipeline::run::{RunOptions, run_experiment};
use crate::progress::Reporter;

/// Arguments of `vilab run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

/// Runs the verb.
pub fn run(args: &RunArgs, reporter: &Reporter) -> anyhow::Result<u8> {
    let spec = args.experiment.load()?;
    let options = RunOptions {
        out: args.experiment.out.clone(),
        plan: args.experiment.plan_options(),
    };
    let outcome = run_experiment(&spec, &options, reporter)?;
    let computed = outcome
        .record
        .stages
        .iter()
        .filter(|stage| stage.state == "computed")
        .count();
    reporter.line(&format!(
        "done in {:.2} s: {computed} stage(s) computed, {} reused",
        outcome.record.seconds,
        outcome.record.stages.len() - computed
    ));
    println!("{}", shown_path(&outcome.run_dir));
    Ok(EXIT_OK)
}
