//! A Slurm array task that saves a checkpoint and requeues itself when its time is up or it is
//! preempted, so a trial longer than the partition's time limit finishes without anyone
//! submitting it again.
//!
//! The batch script ([`super::slurm`]) asks for `--requeue`, `--open-mode=append` and
//! `--signal=B:USR1@N`: N seconds before the time limit Slurm sends SIGUSR1 to the batch shell,
//! which is vilab itself (the script `exec`s it). The trial's process then behaves as on
//! SIGTERM ([`crate::interrupt`]): the train loop finishes its step and writes a checkpoint,
//! or, outside training, the process stops at once (stage outputs are committed atomically).
//! Before exiting it runs `scontrol requeue <job>_<index>`: Slurm puts the task back in the
//! queue, and when it starts again `vilab run FILE --trial ID` resumes from the checkpoint,
//! bit-identically on the CPU backend.
//!
//! SIGTERM is treated the same way, because that is what a preempted job gets before it is
//! killed. Preemption with `PreemptMode=REQUEUE` and `scontrol requeue` by an administrator
//! requeue the task themselves; vilab only needs to leave a checkpoint. The task does not
//! requeue itself when
//! - the signal is Ctrl-C or SIGHUP (a person, not the scheduler);
//! - `vilab cancel` cancelled the task: it lists the task in `slurm.json` before it calls
//!   `scancel`, because Slurm would otherwise honour a requeue that arrives after the cancel;
//! - it has requeued itself `--max-requeues` times already (requeues by Slurm do not count);
//! - training has not moved since its last requeue (the warning comes before any step can
//!   run: `--signal-before` is too close to `--time`), which would only loop;
//! - or the trial failed: a real error is not retried.
//!
//! Slurm checks time limits about every 30 seconds and may send the warning that much early.
//! A warning that arrives while `squeue` still gives the task more than `--signal-before` plus
//! a minute is stale (seen on a task restarted after a requeue) and is ignored.
//!
//! Each requeue, and each restart Slurm made on its own (`SLURM_RESTART_COUNT`), is kept in
//! the trial's record (`trials/<id>.json`), which `vilab status` shows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::queue::slurm_command;
use super::slurm::SlurmRecord;
use crate::files::now_rfc3339;
use crate::interrupt::Signal;
use crate::runner::sweep::{Requeue, Sweep, SweepError, TrialRecord, TrialState};
use crate::spec::sweep::Trial;

/// Slack on Slurm's 30-second time-limit checks when deciding whether a warning is stale.
const WARNING_SLACK: Duration = Duration::from_secs(60);

/// The requeue policy of one trial's Slurm task.
#[derive(Debug)]
pub struct TaskRequeue {
    /// `<job>_<index>`, or the job id of a task that is not part of an array.
    task: String,
    /// Self-requeues allowed for this task.
    max_requeues: u32,
    /// How long before the time limit the warning was asked for.
    signal_before: Duration,
    sweep: Sweep,
    trial: Trial,
    /// Set once a requeue was attempted, so a second signal does not try again.
    attempted: AtomicBool,
}

impl TaskRequeue {
    /// The policy of `trial` when this process is a Slurm batch task (`SLURM_JOB_ID` is
    /// set); `None` elsewhere.
    pub fn from_env(
        sweep: &Sweep,
        trial: &Trial,
        max_requeues: u32,
        signal_before: Duration,
    ) -> Option<Arc<Self>> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let task = match (
            variable("SLURM_ARRAY_JOB_ID"),
            variable("SLURM_ARRAY_TASK_ID"),
        ) {
            (Some(job), Some(index)) => format!("{job}_{index}"),
            _ => variable("SLURM_JOB_ID")?,
        };
        Some(Arc::new(Self {
            task,
            max_requeues,
            signal_before,
            sweep: sweep.clone(),
            trial: trial.clone(),
            attempted: AtomicBool::new(false),
        }))
    }

    /// Lets [`crate::interrupt`] ask this policy about warnings and run it before the process
    /// stops at once.
    pub fn install(self: &Arc<Self>) {
        let policy = Arc::clone(self);
        crate::interrupt::set_warning_filter(move || policy.warning_is_due());
        let policy = Arc::clone(self);
        crate::interrupt::set_stop_hook(move |signal| policy.requeue(signal, None));
    }

    /// Adds to the trial's record the restarts Slurm made without vilab asking
    /// (`SLURM_RESTART_COUNT` beyond the requeues recorded for this task).
    pub fn note_restarts(&self) -> Result<(), SweepError> {
        let restarts: usize = std::env::var("SLURM_RESTART_COUNT")
            .ok()
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0);
        let mut record = self.record();
        let known = record
            .requeues
            .iter()
            .filter(|requeue| requeue.task == self.task)
            .count();
        if restarts <= known {
            return Ok(());
        }
        for _ in known..restarts {
            record.requeues.push(Requeue {
                at: now_rfc3339(),
                task: self.task.clone(),
                reason: "requeued by Slurm".to_owned(),
                by_vilab: false,
                checkpoint: None,
            });
        }
        self.sweep.write_record(&record)
    }

    /// Whether a SIGUSR1 now is the time-limit warning: Slurm gives the task at most
    /// `--signal-before` plus a minute, or cannot say.
    fn warning_is_due(&self) -> bool {
        let Some(left) = time_left(&self.task) else {
            return true;
        };
        let due = left <= self.signal_before + WARNING_SLACK;
        if !due {
            eprintln!(
                "SIGUSR1 ignored: Slurm gives task {} another {}, more than --signal-before {}s",
                self.task,
                humantime::format_duration(left),
                self.signal_before.as_secs()
            );
        }
        due
    }

    /// After the task stopped on `signal`, leaving a checkpoint at `checkpoint` (epoch, step)
    /// when it was training: requeues it unless the module's rules say not to, and says on
    /// standard error what it did, in one line. Only the first call acts (the SIGTERM that
    /// Slurm sends a task it requeues comes here too).
    ///
    /// The line is printed before `scontrol requeue` runs, since Slurm's SIGTERM may end the
    /// process right after it; should the command fail, a second line says so.
    pub fn requeue(&self, signal: Signal, checkpoint: Option<(u32, u64)>) {
        if self.attempted.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(why) = self.try_requeue(signal, checkpoint) {
            eprintln!("task {} not requeued: {why}", self.task);
        }
    }

    fn try_requeue(&self, signal: Signal, checkpoint: Option<(u32, u64)>) -> Result<(), String> {
        if !matches!(signal, Signal::Terminate | Signal::TimeLimitWarning) {
            return Err(format!(
                "{} comes from a person, not from Slurm",
                signal.name()
            ));
        }
        let cancelled = SlurmRecord::read(&self.sweep)
            .ok()
            .flatten()
            .is_some_and(|record| record.cancelled.contains(&self.task));
        if cancelled {
            return Err("cancelled by `vilab cancel`".to_owned());
        }
        let mut record = self.record();
        let own: Vec<&Requeue> = record
            .requeues
            .iter()
            .filter(|requeue| requeue.by_vilab && requeue.task == self.task)
            .collect();
        if own.len() >= self.max_requeues as usize {
            return Err(format!(
                "it requeued itself {} time(s) already (--max-requeues {}); `vilab run FILE \
                 --launcher slurm` submits it again",
                own.len(),
                self.max_requeues
            ));
        }
        if checkpoint.is_some() && own.last().and_then(|last| last.checkpoint) == checkpoint {
            return Err(
                "training has not moved since its last requeue (is --signal-before close to \
                 --time?)"
                    .to_owned(),
            );
        }
        let count = own.len() + 1;
        record.requeues.push(Requeue {
            at: now_rfc3339(),
            task: self.task.clone(),
            reason: signal.meaning().to_owned(),
            by_vilab: true,
            checkpoint,
        });
        // Recorded and said first: once Slurm requeues the task it kills this process.
        self.sweep
            .write_record(&record)
            .map_err(|error| format!("cannot record the requeue: {error}"))?;
        let from = checkpoint.map_or_else(
            || "it starts again from the cached stages".to_owned(),
            |(epoch, step)| format!("it resumes from the checkpoint at epoch {epoch}, step {step}"),
        );
        eprintln!(
            "task {} requeues itself ({count} of at most {}): {from}",
            self.task, self.max_requeues
        );
        if let Err(error) = slurm_command("scontrol", &["requeue".to_owned(), self.task.clone()]) {
            record.requeues.pop();
            let _ = self.sweep.write_record(&record);
            return Err(error.to_string());
        }
        Ok(())
    }

    /// The trial's record; a fresh one when it has none (it is written when a trial starts,
    /// so only a broken file gets here).
    fn record(&self) -> TrialRecord {
        self.sweep
            .read_record(&self.trial)
            .unwrap_or_else(|| TrialRecord::attempt(&self.trial, TrialState::Running, 1))
    }
}

/// The time Slurm gives a task before its limit, `None` when it cannot say (no limit, or
/// `squeue` fails).
fn time_left(task: &str) -> Option<Duration> {
    let printed = slurm_command(
        "squeue",
        &[
            "--noheader".to_owned(),
            format!("--jobs={task}"),
            "--format=%L".to_owned(),
        ],
    )
    .ok()?;
    parse_slurm_duration(printed.lines().next()?.trim())
}

/// Slurm's `[days-][hours:]minutes:seconds` (`%L` of squeue); `None` for `UNLIMITED`,
/// `NOT_SET` and anything else.
fn parse_slurm_duration(text: &str) -> Option<Duration> {
    let (days, clock) = match text.split_once('-') {
        Some((days, clock)) => (days.parse::<u64>().ok()?, clock),
        None => (0, text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|part| part.parse().ok())
        .collect::<Option<_>>()?;
    let (hours, minutes, seconds) = match parts.as_slice() {
        [minutes, seconds] => (0, *minutes, *seconds),
        [hours, minutes, seconds] => (*hours, *minutes, *seconds),
        _ => return None,
    };
    Some(Duration::from_secs(
        ((days * 24 + hours) * 60 + minutes) * 60 + seconds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_durations_parse() {
        assert_eq!(parse_slurm_duration("0:45"), Some(Duration::from_secs(45)));
        assert_eq!(
            parse_slurm_duration("12:03"),
            Some(Duration::from_secs(723))
        );
        assert_eq!(
            parse_slurm_duration("1:00:00"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_slurm_duration("2-03:04:05"),
            Some(Duration::from_secs(2 * 86400 + 3 * 3600 + 4 * 60 + 5))
        );
        assert_eq!(parse_slurm_duration("UNLIMITED"), None);
        assert_eq!(parse_slurm_duration("NOT_SET"), None);
        assert_eq!(parse_slurm_duration("1:2:3:4"), None);
    }
}
