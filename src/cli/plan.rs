//! `vilab plan FILE` and `vilab status FILE`: every stage's key and state, computing nothing.
//!
//! On a spec with a `sweep` section both speak per trial: `status` counts done, failed,
//! running and pending trials and gives each unfinished trial's first stale stage with its
//! reason; `plan` lists every trial's stages. For a sweep submitted to Slurm, `status` adds
//! each trial's array task with Slurm's state for it, and the task's log when it ended without
//! finishing the trial.

use std::collections::BTreeMap;
use std::path::Path;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_OK, ExperimentArgs, shown_path};
use crate::launcher::queue::TaskStatus;
use crate::launcher::slurm::TaskView;
use crate::pipeline::layout::{RunDir, RunState, experiment_dir};
use crate::pipeline::plan::{Plan, StageStatus, plan_with_statuses};
use crate::runner::sweep::{Requeue, Sweep, TrialState, TrialView, describe_requeues};
use crate::spec::LoadedSpec;
use crate::train::live::LiveStatus;

/// Output formats of the verbs that print lines for people or one JSON document for scripts
/// (`plan`, `status`, `validate`, `gc`, `verify`, `model info`, `bench`; the shapes are in the
/// README's "Machine-readable output").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Prints `document` as one pretty-printed JSON document on stdout. A reader that went away
/// early (`| head`) is not an error: like ripgrep, vilab then stops quietly.
pub(crate) fn print_json(document: &impl Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(document)?;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// Arguments of `vilab plan` and `vilab status`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// One stage in `--format json`.
#[derive(Debug, Serialize)]
struct StageJson<'a> {
    /// `split`, `stats`, ...
    stage: &'static str,
    /// The full stage key.
    key: &'a str,
    /// `cached`, `missing`, `stale` or `corrupt`.
    state: &'static str,
    /// Why it is stale or corrupt; null otherwise.
    reason: Option<&'a str>,
}

/// The stages of a plan with their states, in execution order.
fn stages_json<'a>(plan: &'a Plan, statuses: &'a [StageStatus]) -> Vec<StageJson<'a>> {
    plan.stages
        .iter()
        .zip(statuses)
        .map(|(stage, status)| {
            let (state, reason) = match status {
                StageStatus::Cached => ("cached", None),
                StageStatus::Missing => ("missing", None),
                StageStatus::Stale(reason) => ("stale", Some(reason.as_str())),
                StageStatus::Corrupt(reason) => ("corrupt", Some(reason.as_str())),
            };
            StageJson {
                stage: stage.kind.name(),
                key: stage.key(),
                state,
                reason,
            }
        })
        .collect()
}

/// `plan` and `status` of an experiment without a sweep, in `--format json`.
#[derive(Debug, Serialize)]
struct RunPlanJson<'a> {
    experiment: &'a str,
    run_id: &'a str,
    all_cached: bool,
    stages: Vec<StageJson<'a>>,
    /// The run folder's state, when it exists.
    run: Option<RunFolderJson>,
}

/// The run folder of a plan in `--format json`: how its latest invocation stands.
#[derive(Debug, Serialize)]
struct RunFolderJson {
    /// `done`, `running`, `failed` or `interrupted`.
    state: RunState,
    /// The training's `live/status.json` while the run is not done.
    live: Option<LiveStatus>,
    /// Why it stopped (`stage: error`), for a failed or interrupted run.
    error: Option<String>,
}

impl RunFolderJson {
    fn read(folder: &RunDir) -> Option<Self> {
        let state = folder.state()?;
        let error = folder
            .read_pending()
            .and_then(|pending| pending.failure)
            .filter(|_| !matches!(state, RunState::Done | RunState::Running))
            .map(|failure| format!("{}: {}", failure.stage.name(), failure.error));
        Some(Self {
            state,
            live: folder
                .read_live_status()
                .filter(|_| state != RunState::Done),
            error,
        })
    }
}

/// `plan` and `status` of a sweep, in `--format json`.
#[derive(Debug, Serialize)]
struct SweepPlanJson<'a> {
    experiment: &'a str,
    sweep: String,
    sweep_id: &'a str,
    counts: BTreeMap<TrialState, usize>,
    all_done: bool,
    trials: Vec<TrialJson<'a>>,
}

/// One trial of a sweep in `--format json`.
#[derive(Debug, Serialize)]
struct TrialJson<'a> {
    id: &'a str,
    state: TrialState,
    overrides: &'a BTreeMap<String, Value>,
    run_id: &'a str,
    stages: Vec<StageJson<'a>>,
    error: Option<&'a str>,
    slurm: Option<SlurmTaskJson>,
    /// Each time its Slurm task went back to the queue, oldest first.
    requeues: &'a [Requeue],
    /// The trial's `live/status.json` while it runs.
    live: Option<LiveStatus>,
}

/// A trial's Slurm array task in `status --format json`.
#[derive(Debug, Serialize)]
struct SlurmTaskJson {
    /// `<job>_<index>`.
    task: String,
    /// Slurm's state name; null once Slurm no longer lists the task.
    state: Option<String>,
    /// Why it waits or how it ended, when Slurm says.
    reason: Option<String>,
    /// Queued or running.
    active: bool,
    /// The task's log file.
    log: String,
}

impl SlurmTaskJson {
    fn new(view: &TaskView) -> Self {
        Self {
            task: view.task.clone(),
            state: view.status.as_ref().map(|status| status.state.clone()),
            reason: view
                .status
                .as_ref()
                .and_then(|status| status.reason.clone()),
            active: view.status.as_ref().is_some_and(TaskStatus::is_active),
            log: shown_path(&view.log),
        }
    }
}

/// The `--format json` document of a sweep; `tasks` are the Slurm tasks (status only).
fn sweep_json<'a>(
    sweep: &'a Sweep,
    rows: &'a [TrialView],
    tasks: &BTreeMap<String, TaskView>,
) -> SweepPlanJson<'a> {
    let mut counts: BTreeMap<TrialState, usize> = [
        TrialState::Done,
        TrialState::Failed,
        TrialState::Running,
        TrialState::Pending,
    ]
    .into_iter()
    .map(|state| (state, 0))
    .collect();
    for row in rows {
        *counts.entry(row.state).or_default() += 1;
    }
    SweepPlanJson {
        experiment: &sweep.base.spec.name,
        sweep: shown_path(&sweep.dir),
        sweep_id: &sweep.id,
        all_done: rows.iter().all(|row| row.state == TrialState::Done),
        counts,
        trials: rows
            .iter()
            .map(|row| TrialJson {
                id: &row.trial.id,
                state: row.state,
                overrides: &row.trial.overrides,
                run_id: &row.planned.plan.run_id,
                stages: stages_json(&row.planned.plan, &row.planned.statuses),
                error: row.error.as_deref(),
                slurm: tasks.get(&row.trial.id).map(SlurmTaskJson::new),
                requeues: &row.requeues,
                live: (row.state == TrialState::Running)
                    .then(|| {
                        let experiment = sweep.dir.parent().unwrap_or(&sweep.dir);
                        RunDir::new(&experiment.join(&row.planned.plan.run_id)).read_live_status()
                    })
                    .flatten(),
            })
            .collect(),
    }
}

/// The `--format json` document of an experiment without a sweep.
fn run_json<'a>(
    spec: &'a LoadedSpec,
    plan: &'a Plan,
    statuses: &'a [StageStatus],
    out: &Path,
) -> RunPlanJson<'a> {
    RunPlanJson {
        experiment: &spec.spec.name,
        run_id: &plan.run_id,
        all_cached: statuses.iter().all(|status| *status == StageStatus::Cached),
        stages: stages_json(plan, statuses),
        run: RunFolderJson::read(&RunDir::new(&experiment_dir(out, spec).join(&plan.run_id))),
    }
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
        if args.format == Format::Json {
            print_json(&sweep_json(&sweep, &rows, &BTreeMap::new()))?;
            return Ok(EXIT_OK);
        }
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
    if args.format == Format::Json {
        print_json(&run_json(&spec, &plan, &statuses, &args.experiment.out))?;
        return Ok(EXIT_OK);
    }
    print_stage_table(&plan, &statuses);
    println!("run id   {}", plan.run_id);
    Ok(EXIT_OK)
}

fn print_stage_table(plan: &Plan, statuses: &[StageStatus]) {
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
    let all_cached = statuses.iter().all(|status| *status == StageStatus::Cached);
    if args.format == Format::Json {
        print_json(&run_json(&spec, &plan, &statuses, &args.experiment.out))?;
    } else {
        for (stage, status) in plan.stages.iter().zip(&statuses) {
            println!("{}: {status}", stage.kind.name());
        }
        let folder = RunDir::new(&experiment_dir(&args.experiment.out, &spec).join(&plan.run_id));
        if let Some(line) = run_progress_line(&folder) {
            println!("{line}");
        }
    }
    Ok(if all_cached { EXIT_OK } else { EXIT_FAILURE })
}

/// `run 1a2b3c4d5e6f: running: epoch 3/10, step 12/40, val ACC1 …, eta 1m 20s` for a run
/// folder that is running or stopped early; `None` for one that is done or not there.
fn run_progress_line(folder: &RunDir) -> Option<String> {
    let state = folder.state()?;
    if state == RunState::Done {
        return None;
    }
    let id = folder
        .path()
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut line = format!("run {id}: {}", state.as_str());
    if let Some(live) = folder.read_live_status() {
        line.push_str(&format!(": {}", live.describe()));
    }
    if state != RunState::Running
        && let Some(failure) = folder.read_pending().and_then(|pending| pending.failure)
    {
        line.push_str(&format!(" — {}: {}", failure.stage.name(), failure.error));
    }
    Some(line)
}

fn sweep_status(args: &PlanArgs, spec: LoadedSpec) -> anyhow::Result<u8> {
    let (sweep, rows) = trial_views(args, spec)?;
    let count = |wanted: TrialState| rows.iter().filter(|row| row.state == wanted).count();
    let exit_code = if count(TrialState::Done) == rows.len() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    };
    let tasks = match crate::launcher::slurm::trial_tasks(&sweep) {
        Ok(tasks) => tasks.unwrap_or_default(),
        Err(error) => {
            eprintln!("warning: Slurm tasks not shown: {error}");
            BTreeMap::new()
        }
    };
    if args.format == Format::Json {
        print_json(&sweep_json(&sweep, &rows, &tasks))?;
        return Ok(exit_code);
    }
    println!(
        "sweep {}: {} trials — {} done, {} failed, {} running, {} pending",
        shown_path(&sweep.dir),
        rows.len(),
        count(TrialState::Done),
        count(TrialState::Failed),
        count(TrialState::Running),
        count(TrialState::Pending)
    );
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
        requeues,
    } in &rows
    {
        let mut line = format!("{}  {:<8} {}", trial.id, state.as_str(), trial.describe());
        if *state == TrialState::Running {
            let folder = RunDir::new(
                &experiment_dir(&args.experiment.out, &planned.spec).join(&planned.plan.run_id),
            );
            if let Some(live) = folder.read_live_status() {
                line.push_str(&format!(" — {}", live.describe()));
            }
        }
        if *state != TrialState::Done {
            if let Some(stale) = planned.first_stale() {
                line.push_str(&format!(" — {stale}"));
            }
            if let Some(error) = error {
                line.push_str(&format!("; last attempt: {error}"));
            }
        }
        if let Some(requeued) = describe_requeues(requeues) {
            line.push_str(&format!(" — {requeued}"));
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
    Ok(exit_code)
}
