//! `vilab plan FILE` and `vilab status FILE`: every stage's key and state, computing nothing.
//!
//! On a spec with a `sweep` section both speak per trial: `status` counts done, failed,
//! running and pending trials and gives each unfinished trial's first stale stage with its
//! reason; `plan` lists every trial's stages. For a sweep submitted to Slurm, `status` adds
//! each trial's array task with Slurm's state for it, and the task's log when it ended without
//! finishing the trial.

use std::collections::BTreeMap;

use clap::Args;

use super::{EXIT_FAILURE, EXIT_OK, ExperimentArgs, shown_path};
use crate::launcher::queue::TaskStatus;
use crate::pipeline::plan::{StageStatus, plan_with_statuses};
use crate::runner::sweep::{Sweep, TrialState, TrialView};
use crate::spec::LoadedSpec;

/// Arguments of `vilab plan` and `vilab status`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
}

/// The sweep of `spec` and its trials' views.
fn trial_views(args: &PlanArgs, spec: LoadedSpec) -> anyhow::Result<(Sweep, Vec<TrialView>)> {
    let sweep = Sweep::new(spec, &args.experiment.sets, &args.experiment.out)?;
    let views = sweep.trial_views(args.experiment.plan_options())?;
    Ok((sweep, views))
}

/// `vilab plan`: a table of stages, keys and states, in execution order.
pub fn plan(args: &PlanArgs) -> anyhow::Result<u8> {
    let spec = args.experiment.load()?;
    if spec.spec.sweep.is_some() {
        let (sweep, rows) = trial_views(args, spec)?;
        println!(
            "sweep {} ({} trials)",
            shown_path(&sweep.dir),
            sweep.trials.len()
        );
        for TrialView {
            trial,
            planned,
            state,
            ..
        } in &rows
        {
            println!(
                "\ntrial {}  {}  run id {}  {}",
                trial.id,
                state.as_str(),
                planned.plan.run_id,
                trial.describe()
            );
            print_stage_table(&planned.plan, &planned.statuses);
        }
        return Ok(EXIT_OK);
    }
    let (plan, statuses) =
        plan_with_statuses(&spec, &args.experiment.out, args.experiment.plan_options())?;
    print_stage_table(&plan, &statuses);
    println!("run id   {}", plan.run_id);
    Ok(EXIT_OK)
}

fn print_stage_table(plan: &crate::pipeline::plan::Plan, statuses: &[StageStatus]) {
    println!("{:<9}{:<14}state", "stage", "key");
    for (stage, status) in plan.stages.iter().zip(statuses) {
        println!("{:<9}{:<14}{status}", stage.kind.name(), &stage.key()[..12]);
    }
}

/// `vilab status`: one line per stage; exit 0 when everything is cached, 1 otherwise. For a
/// sweep: the counts, then one line per trial; exit 0 when every trial is done.
pub fn status(args: &PlanArgs) -> anyhow::Result<u8> {
    let spec = args.experiment.load()?;
    if spec.spec.sweep.is_some() {
        return sweep_status(args, spec);
    }
    let (plan, statuses) =
        plan_with_statuses(&spec, &args.experiment.out, args.experiment.plan_options())?;
    for (stage, status) in plan.stages.iter().zip(&statuses) {
        println!("{}: {status}", stage.kind.name());
    }
    let all_cached = statuses.iter().all(|status| *status == StageStatus::Cached);
    Ok(if all_cached { EXIT_OK } else { EXIT_FAILURE })
}

fn sweep_status(args: &PlanArgs, spec: LoadedSpec) -> anyhow::Result<u8> {
    let (sweep, rows) = trial_views(args, spec)?;
    let count = |wanted: TrialState| rows.iter().filter(|row| row.state == wanted).count();
    println!(
        "sweep {}: {} trials — {} done, {} failed, {} running, {} pending",
        shown_path(&sweep.dir),
        rows.len(),
        count(TrialState::Done),
        count(TrialState::Failed),
        count(TrialState::Running),
        count(TrialState::Pending)
    );
    let tasks = match crate::launcher::slurm::trial_tasks(&sweep) {
        Ok(tasks) => tasks.unwrap_or_default(),
        Err(error) => {
            eprintln!("warning: Slurm tasks not shown: {error}");
            BTreeMap::new()
        }
    };
    if !tasks.is_empty() {
        let active = tasks
            .values()
            .filter(|view| view.status.as_ref().is_some_and(TaskStatus::is_active))
            .count();
        println!(
            "slurm: {} trial(s) submitted — {active} task(s) queued or running",
            tasks.len()
        );
    }
    for TrialView {
        trial,
        planned,
        state,
        error,
    } in &rows
    {
        let mut line = format!("{}  {:<8} {}", trial.id, state.as_str(), trial.describe());
        if *state != TrialState::Done {
            if let Some(stale) = planned.first_stale() {
                line.push_str(&format!(" — {stale}"));
            }
            if let Some(error) = error {
                line.push_str(&format!("; last attempt: {error}"));
            }
        }
        if let Some(view) = tasks.get(&trial.id) {
            let slurm_state = view
                .status
                .as_ref()
                .map_or_else(|| "no longer listed".to_owned(), TaskStatus::describe);
            line.push_str(&format!(" | slurm {} {slurm_state}", view.task));
            let ended = view
                .status
                .as_ref()
                .is_none_or(|status| !status.is_active());
            // A task cancelled before it started has no log.
            if *state != TrialState::Done && ended && view.log.exists() {
                line.push_str(&format!(", log {}", shown_path(&view.log)));
            }
        }
        println!("{line}");
    }
    Ok(if count(TrialState::Done) == rows.len() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}
