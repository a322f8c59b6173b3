//! `vilab plan FILE` and `vilab status FILE`: every stage's key and state, computing nothing.

use clap::Args;

use super::{EXIT_FAILURE, EXIT_OK, ExperimentArgs};
use crate::pipeline::cache::Cache;
use crate::pipeline::plan::{StageStatus, build_plan, stage_statuses};
use crate::pipeline::run::previous_keys;

/// Arguments of `vilab plan` and `vilab status`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

fn statuses(args: &PlanArgs) -> anyhow::Result<(crate::pipeline::plan::Plan, Vec<StageStatus>)> {
    let spec = args.experiment.load()?;
    let plan = build_plan(&spec, args.experiment.plan_options())?;
    let cache = Cache::new(&args.experiment.out);
    let previous = previous_keys(&args.experiment.out, &spec);
    let statuses = stage_statuses(&plan, &cache, &previous);
    Ok((plan, statuses))
}

/// `vilab plan`: a table of stages, keys and states, in execution order.
pub fn plan(args: &PlanArgs) -> anyhow::Result<u8> {
    let (plan, statuses) = statuses(args)?;
    println!("{:<9}{:<14}state", "stage", "key");
    for (stage, status) in plan.stages.iter().zip(&statuses) {
        println!("{:<9}{:<14}{status}", stage.kind.name(), &stage.key()[..12]);
    }
    println!("run id   {}", plan.run_id);
    Ok(EXIT_OK)
}

/// `vilab status`: one line per stage; exit 0 when everything is cached, 1 otherwise.
pub fn status(args: &PlanArgs) -> anyhow::Result<u8> {
    let (plan, statuses) = statuses(args)?;
    for (stage, status) in plan.stages.iter().zip(&statuses) {
        println!("{}: {status}", stage.kind.name());
    }
    let all_cached = statuses.iter().all(|status| *status == StageStatus::Cached);
    Ok(if all_cached { EXIT_OK } else { EXIT_FAILURE })
}
