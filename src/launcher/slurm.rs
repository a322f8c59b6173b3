//! The Slurm launcher: `vilab run FILE --launcher slurm` submits the trials of a sweep that are
//! neither done nor already queued as one job array, each task running `vilab run FILE --trial
//! ID` against the same output root (which must be on a filesystem every node shares).
//!
//! # Files in the sweep folder
//!
//! ```text
//! slurm.json                 every submission (job id, sbatch command, trials in task order)
//!                            and each trial's latest array task with its log
//! slurm-<n>.sh               the batch script of submission n
//! slurm-<n>.trials           its trial ids, one a line: array task i runs line i + 1
//! slurm-<job>_<task>.out     output of one array task
//! .slurm.lock                held while submitting or cancelling
//! ```
//!
//! Each task asks Slurm for a warning before its time limit and may requeue itself, up to
//! `--max-requeues` times, resuming from a checkpoint (see [`super::requeue`]).
//!
//! The script names the running vilab binary by its absolute path and changes to the folder
//! `vilab run` was started in, so relative spec, data and output paths mean the same on the
//! nodes; the nodes need the binary and the data at the same paths. The submitting process's
//! environment (`VILAB_*` layers included) travels with the job, as sbatch does by default.
//!
//! Trials record their own outcome (`trials/<id>.json`), exactly as under the local launcher,
//! so `sweep.json` and the summary are the same whoever ran them. What Slurm adds is the task's
//! own state, which tells a trial that is still queued from one whose task died before vilab
//! could record anything (out of time, out of memory, a node lost): `vilab status` shows both,
//! with the task's log for those that ended badly.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SlurmError;
use super::queue::{TaskStatus, slurm_command, task_statuses};
use crate::files::write_atomic;
use crate::pipeline::plan::{PlanOptions, ScanMemo};
use crate::progress::Reporter;
use crate::runner::sweep::{Sweep, TrialState};
use crate::spec::types::BackendKind;

/// Slurm settings of `vilab run --launcher slurm`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// GPUs each trial gets (`--gres=gpu:N`); on CUDA the trial's `train.devices` becomes
    /// `0..N`, numbered within the GPUs Slurm gives the task.
    pub gpus_per_trial: Option<u32>,
    /// `--time`, the wall-time limit of each task.
    pub time: Option<String>,
    /// At most this many tasks at once (`--array=...%K`).
    pub array_parallelism: Option<u32>,
    /// Further sbatch arguments, passed as given.
    pub sbatch_args: Vec<String>,
    /// Times a task may requeue itself (see [`super::requeue`]).
    pub max_requeues: u32,
    /// Seconds before the time limit that Slurm warns a task (`--signal=B:USR1@N`).
    pub signal_before: u32,
}

/// One `sbatch` of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The job id of the array.
    pub job_id: String,
    /// When it was submitted, RFC 3339.
    pub submitted_at: String,
    /// The batch script, relative to the sweep folder.
    pub script: String,
    /// The trial list, relative to the sweep folder.
    pub trials_file: String,
    /// The sbatch command line.
    pub command: Vec<String>,
    /// Trial ids; task i runs trial i.
    pub trials: Vec<String>,
}

/// A trial's latest array task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialTask {
    /// `<job>_<index>`.
    pub task: String,
    /// Its output, relative to the sweep folder.
    pub log: String,
}

/// `slurm.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmRecord {
    /// Every submission, oldest first.
    pub submissions: Vec<Submission>,
    /// Trial id ⇒ its latest task.
    pub trials: BTreeMap<String, TrialTask>,
    /// Tasks `vilab cancel` cancelled: they must not requeue themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<String>,
}

impl SlurmRecord {
    /// `<sweep>/slurm.json`.
    pub fn path(sweep: &Sweep) -> PathBuf {
        sweep.dir.join("slurm.json")
    }

    /// The record of a sweep; `None` when nothing was ever submitted.
    pub fn read(sweep: &Sweep) -> Result<Option<Self>, SlurmError> {
        let path = Self::path(sweep);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = fs_err::read(&path)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| SlurmError::Record { path, error })
    }

    fn write(&self, sweep: &Sweep) -> Result<(), SlurmError> {
        let path = Self::path(sweep);
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|error| SlurmError::Record {
            path: path.clone(),
            error,
        })?;
        bytes.push(b'\n');
        write_atomic(&path, &bytes)?;
        Ok(())
    }

    /// Every trial's latest task id.
    pub fn tasks(&self) -> Vec<String> {
        self.trials.values().map(|task| task.task.clone()).collect()
    }
}

/// A trial's task as `vilab status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// `<job>_<index>`.
    pub task: String,
    /// What Slurm says, `None` once it has forgotten the task.
    pub status: Option<TaskStatus>,
    /// The task's output.
    pub log: PathBuf,
}

/// Each submitted trial's latest task with its status; `None` when the sweep was never
/// submitted to Slurm.
pub fn trial_tasks(sweep: &Sweep) -> Result<Option<BTreeMap<String, TaskView>>, SlurmError> {
    let Some(record) = SlurmRecord::read(sweep)? else {
        return Ok(None);
    };
    let mut statuses = task_statuses(&record.tasks())?;
    Ok(Some(
        record
            .trials
            .into_iter()
            .map(|(trial, task)| {
                let view = TaskView {
                    status: statuses.remove(&task.task),
                    log: sweep.dir.join(&task.log),
                    task: task.task,
                };
                (trial, view)
            })
            .collect(),
    ))
}

/// What a submission did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitOutcome {
    /// The array's job id, when something was submitted.
    pub job_id: Option<String>,
    /// Trials submitted, in task order.
    pub submitted: Vec<String>,
    /// Trials found done.
    pub done: Vec<String>,
    /// Trials left alone because a task (or a local process) is running or queued for them.
    pub active: Vec<(String, String)>,
    /// The batch script, when one was written.
    pub script: Option<PathBuf>,
}

/// Holds `.slurm.lock` so two submissions (or a submission and a cancel) of one sweep do not
/// interleave.
fn lock_sweep(sweep: &Sweep) -> Result<std::fs::File, SlurmError> {
    fs_err::create_dir_all(&sweep.dir)?;
    let path = sweep.dir.join(".slurm.lock");
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?
        .into_file();
    file.lock().map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("{}: cannot lock: {error}", path.display()),
        )
    })?;
    Ok(file)
}

/// Submits every trial that is neither done nor queued or running as one job array; see the
/// module documentation. `trial_command` is the program and arguments that run one trial,
/// without `--trial ID`.
pub fn submit(
    sweep: &Sweep,
    options: &SlurmOptions,
    plan_options: PlanOptions,
    trial_command: &[OsString],
    reporter: &Reporter,
) -> Result<SubmitOutcome, SlurmError> {
    sweep.refresh()?;
    let _lock = lock_sweep(sweep)?;
    let mut record = SlurmRecord::read(sweep)?.unwrap_or_default();
    let statuses = task_statuses(&record.tasks())?;
    let extra = trial_devices(sweep, options)
        .map(crate::launcher::local::narrowed_devices)
        .unwrap_or_default();
    let mut outcome = SubmitOutcome::default();
    let scans = ScanMemo::default();
    for trial in &sweep.trials {
        let planned = sweep.plan_trial(trial, &extra, plan_options, &scans)?;
        if planned.complete {
            sweep.adopt(trial, &planned.plan.run_id)?;
            outcome.done.push(trial.id.clone());
            continue;
        }
        let queued = record
            .trials
            .get(&trial.id)
            .and_then(|task| Some((task, statuses.get(&task.task)?)))
            .filter(|(_, status)| status.is_active());
        if let Some((task, status)) = queued {
            outcome.active.push((
                trial.id.clone(),
                format!("task {} {}", task.task, status.describe()),
            ));
        } else if sweep.recorded_state(trial).0 == TrialState::Running {
            outcome
                .active
                .push((trial.id.clone(), "running outside Slurm".to_owned()));
        } else {
            outcome.submitted.push(trial.id.clone());
        }
    }
    for (id, what) in &outcome.active {
        reporter.line(&format!("{id}  not submitted: {what}"));
    }
    if outcome.submitted.is_empty() {
        return Ok(outcome);
    }

    let number = record.submissions.len() + 1;
    let script_name = format!("slurm-{number}.sh");
    let trials_name = format!("slurm-{number}.trials");
    // The script names files by absolute paths: it may start in another folder.
    let working_dir = std::env::current_dir()?;
    let sweep_dir = working_dir.join(&sweep.dir);
    let script_path = sweep_dir.join(&script_name);
    let trials_path = sweep_dir.join(&trials_name);
    let mut trial_list = outcome.submitted.join("\n");
    trial_list.push('\n');
    write_atomic(&trials_path, trial_list.as_bytes())?;
    let mut command = trial_command.to_vec();
    if let Some(devices) = trial_devices(sweep, options) {
        command.push("--trial-devices".into());
        command.push(devices.to_string().into());
    }
    let script = batch_script(&ScriptInputs {
        sweep,
        number,
        trial_count: outcome.submitted.len(),
        sweep_dir: &sweep_dir,
        trials_file: &trials_path,
        working_dir: &working_dir,
        trial_command: &command,
        options,
    })?;
    write_atomic(&script_path, script.as_bytes())?;
    outcome.script = Some(script_path.clone());

    let last_index = outcome.submitted.len() - 1;
    let mut array = format!("--array=0-{last_index}");
    if let Some(parallelism) = options.array_parallelism {
        array.push_str(&format!("%{parallelism}"));
    }
    let mut arguments = vec!["--parsable".to_owned(), array];
    arguments.extend(options.sbatch_args.iter().cloned());
    arguments.push(utf8(&script_path)?.to_owned());
    let printed = slurm_command("sbatch", &arguments)?;
    let job_id = printed
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| SlurmError::NoJobId {
            command: format!("sbatch {}", arguments.join(" ")),
            output: printed.trim().to_owned(),
        })?
        .to_owned();
    for (index, trial) in outcome.submitted.iter().enumerate() {
        let task = format!("{job_id}_{index}");
        record.trials.insert(
            trial.clone(),
            TrialTask {
                log: format!("slurm-{task}.out"),
                task,
            },
        );
    }
    record.submissions.push(Submission {
        job_id: job_id.clone(),
        submitted_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        script: script_name,
        trials_file: trials_name,
        command: std::iter::once("sbatch".to_owned())
            .chain(arguments)
            .collect(),
        trials: outcome.submitted.clone(),
    });
    record.write(sweep)?;
    outcome.job_id = Some(job_id);
    Ok(outcome)
}

/// Cancels the sweep's queued and running tasks; returns their ids (empty when there were
/// none). Running trials get SIGTERM, save a checkpoint and stop; submitting again resumes
/// them.
pub fn cancel(sweep: &Sweep) -> Result<Vec<String>, SlurmError> {
    let _lock = lock_sweep(sweep)?;
    let Some(mut record) = SlurmRecord::read(sweep)? else {
        return Ok(Vec::new());
    };
    let statuses = task_statuses(&record.tasks())?;
    let mut active: Vec<String> = record
        .tasks()
        .into_iter()
        .filter(|task| statuses.get(task).is_some_and(TaskStatus::is_active))
        .collect();
    active.sort_by_key(|task| {
        let (job, index) = task.split_once('_').unwrap_or((task, ""));
        (job.parse::<u64>().ok(), index.parse::<u64>().ok())
    });
    if !active.is_empty() {
        // Recorded before the cancel: a running task that gets SIGTERM reads it and does not
        // requeue itself.
        for task in &active {
            if !record.cancelled.contains(task) {
                record.cancelled.push(task.clone());
            }
        }
        record.write(sweep)?;
        slurm_command("scancel", &active)?;
    }
    Ok(active)
}

/// The devices each trial trains on when `--gpus-per-trial` narrows them (CUDA only).
fn trial_devices(sweep: &Sweep, options: &SlurmOptions) -> Option<usize> {
    options
        .gpus_per_trial
        .filter(|_| sweep.base.spec.backend == BackendKind::Cuda)
        .map(|gpus| gpus as usize)
}

/// What a batch script is made of.
struct ScriptInputs<'a> {
    sweep: &'a Sweep,
    number: usize,
    trial_count: usize,
    sweep_dir: &'a Path,
    trials_file: &'a Path,
    working_dir: &'a Path,
    trial_command: &'a [OsString],
    options: &'a SlurmOptions,
}

fn utf8(path: &Path) -> Result<&str, SlurmError> {
    path.to_str().ok_or_else(|| SlurmError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// A word for the shell, in single quotes unless it needs none.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A value for an `#SBATCH` line: sbatch reads these itself, honouring double quotes.
fn directive_value(value: &str) -> String {
    if value.chars().any(char::is_whitespace) {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    }
}

/// The batch script of one submission.
fn batch_script(inputs: &ScriptInputs<'_>) -> Result<String, SlurmError> {
    let sweep = inputs.sweep;
    let options = inputs.options;
    let trials_file = utf8(inputs.trials_file)?;
    let log_pattern = inputs.sweep_dir.join("slurm-%A_%a.out");
    let mut lines = vec![
        "#!/bin/bash".to_owned(),
        format!(
            "# vilab {}: sweep {} of {}, submission {} ({} trial(s)).",
            env!("CARGO_PKG_VERSION"),
            sweep.id,
            sweep.base.file.display(),
            inputs.number,
            inputs.trial_count
        ),
        format!(
            "# Array task I runs the trial on line I+1 of {}.",
            inputs
                .trials_file
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        "# `vilab status FILE` shows each task's state, `vilab cancel FILE` cancels them."
            .to_owned(),
        format!(
            "#SBATCH --job-name={}",
            directive_value(&format!("vilab-{}", sweep.base.spec.name))
        ),
        format!("#SBATCH --output={}", directive_value(utf8(&log_pattern)?)),
    ];
    if let Some(partition) = &options.partition {
        lines.push(format!(
            "#SBATCH --partition={}",
            directive_value(partition)
        ));
    }
    if let Some(time) = &options.time {
        lines.push(format!("#SBATCH --time={}", directive_value(time)));
    }
    if let Some(gpus) = options.gpus_per_trial {
        lines.push(format!("#SBATCH --gres=gpu:{gpus}"));
    }
    lines.push(
        "# Before the time limit Slurm sends SIGUSR1 to vilab (the batch shell, once exec'd): it \
         saves a checkpoint and requeues this task, which resumes from it; the log is appended."
            .to_owned(),
    );
    lines.push(format!("#SBATCH --signal=B:USR1@{}", options.signal_before));
    lines.push("#SBATCH --requeue".to_owned());
    lines.push("#SBATCH --open-mode=append".to_owned());
    lines.push("set -euo pipefail".to_owned());
    lines.push(format!(
        "trial=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {})",
        shell_word(trials_file)
    ));
    lines.push(format!(
        "[[ -n \"$trial\" ]] || {{ echo \"no trial for array task $SLURM_ARRAY_TASK_ID in \
         {}\" >&2; exit 2; }}",
        trials_file.replace(['"', '$', '`', '\\'], "_")
    ));
    lines.push(
        "# Without cgroups a task sees every core of its node: use the ones Slurm gave it."
            .to_owned(),
    );
    lines.push(
        "if [[ -z \"${RAYON_NUM_THREADS:-}\" && -n \"${SLURM_CPUS_ON_NODE:-}\" ]]; then \
         export RAYON_NUM_THREADS=\"$SLURM_CPUS_ON_NODE\"; fi"
            .to_owned(),
    );
    lines.push(format!("cd {}", shell_word(utf8(inputs.working_dir)?)));
    let mut command = vec!["exec".to_owned()];
    for part in inputs.trial_command {
        let text = part.to_str().ok_or_else(|| SlurmError::NotUtf8 {
            path: PathBuf::from(part),
        })?;
        command.push(shell_word(text));
    }
    command.push("--max-requeues".to_owned());
    command.push(options.max_requeues.to_string());
    command.push("--signal-before".to_owned());
    command.push(options.signal_before.to_string());
    command.push("--trial".to_owned());
    command.push("\"$trial\"".to_owned());
    lines.push(command.join(" "));
    let mut script = lines.join("\n");
    script.push('\n');
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("--out"), "--out");
        assert_eq!(shell_word("train.epochs=1"), "train.epochs=1");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
    }
}
