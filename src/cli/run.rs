//! `vilab run FILE`: compute what is not cached, reuse the rest, print the run folder.
//!
//! On a spec with a `sweep` section it runs every trial that is not done, `--jobs` at a time,
//! and prints the sweep folder; `--trial ID` runs one trial in this process (what the sweep
//! runner starts for each trial, and what a cluster scheduler runs). With `--launcher slurm`
//! the trials that are neither done nor queued are submitted as one Slurm job array instead
//! (see [`crate::launcher::slurm`]), and the command returns once they are queued.

use std::ffi::OsString;
use std::time::Duration;

use clap::Args;

use super::{EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, ExperimentArgs, shown_path, usage};
use crate::launcher::local::{SweepOptions, narrowed_devices, run_sweep};
use crate::launcher::requeue::TaskRequeue;
use crate::launcher::slurm::{SlurmOptions, submit};
use crate::pipeline::layout::{SUMMARY_MD, StageOutcome};
use crate::progress::Reporter;
use crate::runner::run::{RunOptions, RunOutcome, run_experiment};
use crate::runner::sweep::{Sweep, error_text, interrupted_at, is_interrupt, run_trial};
use crate::spec::sweep::describe_overrides;

/// Arguments of `vilab run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Run only this trial of the sweep (its id or a unique prefix, as `vilab status` lists).
    #[arg(long, value_name = "ID")]
    pub trial: Option<String>,
    /// Trials of a sweep to run at a time; on the CPU they share the cores, on CUDA each job
    /// gets its share of train.devices.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,
    /// Stop a sweep at the first failed trial (default: run the others, then exit 1).
    #[arg(long)]
    pub fail_fast: bool,
    /// Devices of this trial's job, `train.devices` becoming `0..N` (the sweep runner sets it
    /// together with CUDA_VISIBLE_DEVICES).
    #[arg(long, value_name = "N", hide = true, requires = "trial")]
    pub trial_devices: Option<usize>,
    /// Where a sweep's trials run: here, or as one Slurm job array against the same --out on
    /// a shared filesystem.
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    pub launcher: Launcher,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Where the trials of a sweep run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// Child processes on this machine, --jobs at a time.
    Local,
    /// One Slurm job array (sbatch); `vilab status` follows it, `vilab cancel` cancels it.
    Slurm,
}

/// Settings of the Slurm job array.
#[derive(Debug, Args)]
#[command(next_help_heading = "Slurm (with --launcher slurm)")]
pub struct SlurmArgs {
    /// Partition to submit to (default: the cluster's default partition).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// GPUs for each trial (--gres=gpu:N); on CUDA the trial trains on all of them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub gpus_per_trial: Option<u32>,
    /// Wall-time limit of each trial's task.
    #[arg(long, value_name = "HH:MM:SS")]
    pub time: Option<String>,
    /// At most K trials running at once (--array=...%K).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub array_parallelism: Option<u32>,
    /// A further sbatch argument, e.g. --sbatch-arg=--mem=8G (repeatable).
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Times a trial's task may requeue itself after its time-limit warning or a SIGTERM,
    /// resuming from its checkpoint [default: 3]. With --trial inside a Slurm task (as the
    /// batch script runs it): requeue this task on those signals.
    #[arg(long, value_name = "N")]
    pub max_requeues: Option<u32>,
    /// Seconds before the time limit that Slurm warns a task (SIGUSR1), so it can finish its
    /// step and save a checkpoint [default: 120].
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub signal_before: Option<u32>,
}

/// `--max-requeues` when not given.
const DEFAULT_MAX_REQUEUES: u32 = 3;
/// `--signal-before` when not given: room for a slow step and a checkpoint of a large model.
const DEFAULT_SIGNAL_BEFORE: u32 = 120;

impl SlurmArgs {
    /// The first Slurm flag given, for the error when the launcher is local; with `trial`,
    /// the flags a task's command carries are allowed.
    fn first_given(&self, trial: bool) -> Option<&'static str> {
        [
            ("--partition", self.partition.is_some()),
            ("--gpus-per-trial", self.gpus_per_trial.is_some()),
            ("--time", self.time.is_some()),
            ("--array-parallelism", self.array_parallelism.is_some()),
            ("--sbatch-arg", !self.sbatch_args.is_empty()),
            ("--max-requeues", !trial && self.max_requeues.is_some()),
            ("--signal-before", !trial && self.signal_before.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }

    fn options(&self) -> SlurmOptions {
        SlurmOptions {
            partition: self.partition.clone(),
            gpus_per_trial: self.gpus_per_trial,
            time: self.time.clone(),
            array_parallelism: self.array_parallelism,
            sbatch_args: self.sbatch_args.clone(),
            max_requeues: self.max_requeues.unwrap_or(DEFAULT_MAX_REQUEUES),
            signal_before: self.signal_before.unwrap_or(DEFAULT_SIGNAL_BEFORE),
        }
    }
}

/// Runs the verb; `verbosity` is the `-v` count, passed on to trial processes.
pub fn run(args: &RunArgs, reporter: &Reporter, verbosity: u8) -> anyhow::Result<u8> {
    if let Some(message) = launcher_usage_error(args) {
        return Err(usage(message));
    }
    let spec = args.experiment.load()?;
    spec.spec.backend.ensure_available()?;
    let options = RunOptions {
        out: args.experiment.out.clone(),
        plan: args.experiment.plan_options(),
    };
    if spec.spec.sweep.is_none() {
        if args.launcher == Launcher::Slurm {
            return Err(usage(format!(
                "--launcher slurm: {} has no `sweep` section (submit a single run with \
                 sbatch --wrap 'vilab run FILE')",
                args.experiment.file.display()
            )));
        }
        if args.trial.is_some() {
            return Err(usage(format!(
                "--trial: {} has no `sweep` section",
                args.experiment.file.display()
            )));
        }
        let outcome = run_experiment(&spec, &options, reporter)?;
        report_run(&outcome, reporter);
        return Ok(EXIT_OK);
    }
    let sweep = Sweep::new(spec, &args.experiment.sets, &args.experiment.out)?;
    if let Some(query) = &args.trial {
        let trial = sweep.trial(query)?.clone();
        let extra = args.trial_devices.map(narrowed_devices).unwrap_or_default();
        // Inside a Slurm task started by the batch script: requeue on the time-limit warning
        // and on preemption.
        let requeue = args.slurm.max_requeues.and_then(|max| {
            let before = args.slurm.signal_before.unwrap_or(DEFAULT_SIGNAL_BEFORE);
            TaskRequeue::from_env(&sweep, &trial, max, Duration::from_secs(before.into()))
        });
        if let Some(requeue) = &requeue {
            requeue.note_restarts()?;
            requeue.install();
        }
        let result = run_trial(&sweep, &trial, &options, &extra, reporter);
        if let (Err(error), Some(requeue), Some(signal)) =
            (&result, &requeue, crate::interrupt::received())
            && is_interrupt(error)
        {
            // The interrupt's own line comes first, as the error of this process.
            eprintln!("error: {}", error_text(error));
            requeue.requeue(signal, interrupted_at(error));
            return Ok(EXIT_INTERRUPTED);
        }
        report_run(&result?, reporter);
        return Ok(EXIT_OK);
    }
    if args.launcher == Launcher::Slurm {
        return submit_to_slurm(args, &sweep, verbosity, reporter);
    }
    let sweep_options = SweepOptions {
        run: options,
        jobs: args.jobs as usize,
        fail_fast: args.fail_fast,
        trial_command: trial_command(args, verbosity)?,
    };
    let outcome = run_sweep(&sweep, &sweep_options, reporter)?;
    reporter.line(&format!(
        "sweep done in {:.1} s: {} trial(s) — {} run now, {} done already, {} failed{}",
        outcome.seconds,
        sweep.trials.len(),
        outcome.finished.len(),
        outcome.skipped.len(),
        outcome.failed.len(),
        if outcome.not_run.is_empty() {
            String::new()
        } else {
            format!(", {} not run", outcome.not_run.len())
        }
    ));
    if !outcome.failed.is_empty() {
        eprintln!("failed trials:");
        for (id, error) in &outcome.failed {
            let overrides = sweep
                .trial(id)
                .map(|trial| describe_overrides(&trial.overrides))
                .unwrap_or_default();
            eprintln!("  {id}  {overrides}: {error}");
        }
    }
    reporter.line(&format!(
        "summary: {}",
        shown_path(&sweep.dir.join(SUMMARY_MD))
    ));
    println!("{}", shown_path(&sweep.dir));
    Ok(if !outcome.failed.is_empty() {
        EXIT_FAILURE
    } else if !outcome.not_run.is_empty() {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}

/// The usage error of --launcher and the Slurm flags, if there is one.
fn launcher_usage_error(args: &RunArgs) -> Option<String> {
    match args.launcher {
        Launcher::Local => args
            .slurm
            .first_given(args.trial.is_some())
            .map(|flag| format!("{flag} needs --launcher slurm")),
        Launcher::Slurm if args.trial.is_some() => Some(
            "--trial runs one trial in this process; it does not go with --launcher slurm"
                .to_owned(),
        ),
        Launcher::Slurm if args.jobs > 1 => {
            Some("--jobs does not go with --launcher slurm (use --array-parallelism)".to_owned())
        }
        Launcher::Slurm if args.fail_fast => Some(
            "--fail-fast does not go with --launcher slurm (use `vilab cancel FILE`)".to_owned(),
        ),
        Launcher::Slurm => None,
    }
}

/// `--launcher slurm`: submits what is neither done nor queued, prints the sweep folder.
fn submit_to_slurm(
    args: &RunArgs,
    sweep: &Sweep,
    verbosity: u8,
    reporter: &Reporter,
) -> anyhow::Result<u8> {
    let outcome = submit(
        sweep,
        &args.slurm.options(),
        args.experiment.plan_options(),
        &trial_command(args, verbosity)?,
        reporter,
    )?;
    reporter.line(&format!(
        "sweep {}: {} trial(s) in {}",
        sweep.id,
        sweep.trials.len(),
        shown_path(&sweep.dir)
    ));
    match &outcome.job_id {
        Some(job) => {
            reporter.line(&format!(
                "submitted job array {job}: {} task(s), script {}, logs {}",
                outcome.submitted.len(),
                outcome
                    .script
                    .as_deref()
                    .map(shown_path)
                    .unwrap_or_default(),
                shown_path(&sweep.dir.join(format!("slurm-{job}_<task>.out")))
            ));
            for (index, id) in outcome.submitted.iter().enumerate() {
                let overrides = sweep
                    .trial(id)
                    .map(|trial| trial.describe())
                    .unwrap_or_default();
                reporter.line(&format!("  {job}_{index}  {id}  {overrides}"));
            }
        }
        None => reporter.line("nothing to submit"),
    }
    reporter.line(&format!(
        "{} done already, {} queued or running, {} submitted now; follow with `vilab status`",
        outcome.done.len(),
        outcome.active.len(),
        outcome.submitted.len()
    ));
    println!("{}", shown_path(&sweep.dir));
    Ok(EXIT_OK)
}

fn report_run(outcome: &RunOutcome, reporter: &Reporter) {
    let computed = outcome
        .record
        .stages
        .iter()
        .filter(|stage| stage.state == StageOutcome::Computed)
        .count();
    reporter.line(&format!(
        "done in {:.2} s: {computed} stage(s) computed, {} reused",
        outcome.record.seconds,
        outcome.record.stages.len() - computed
    ));
    println!("{}", shown_path(&outcome.run_dir));
}

/// This binary with the arguments that reproduce the spec and output root of this run: the
/// sweep runner adds `--trial ID` for each trial. The environment (`VILAB_*` layers) is
/// inherited.
fn trial_command(args: &RunArgs, verbosity: u8) -> anyhow::Result<Vec<OsString>> {
    let program = std::env::current_exe()
        .map_err(|error| anyhow::anyhow!("cannot find the vilab binary to run trials: {error}"))?;
    let experiment = &args.experiment;
    let mut command: Vec<OsString> = vec![program.into_os_string(), "run".into()];
    command.push(experiment.file.clone().into_os_string());
    for set in &experiment.sets {
        command.push("--set".into());
        command.push(set.into());
    }
    command.push("--out".into());
    command.push(experiment.out.clone().into_os_string());
    if experiment.verify_data {
        command.push("--verify-data".into());
    }
    for _ in 0..verbosity {
        command.push("-v".into());
    }
    Ok(command)
}
