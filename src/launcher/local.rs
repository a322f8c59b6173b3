//! The local sweep runner: `vilab run FILE` on a spec with a sweep.
//!
//! Trials that are already complete are skipped after planning them (every stage cached and
//! the run folder written). The others run as child processes of the same binary, `vilab run
//! FILE --trial ID` — the same unit a cluster scheduler runs — at most `--jobs` at a time:
//!
//! - on the CPU the cores are divided between the running trials (`RAYON_NUM_THREADS`, unless
//!   already set);
//! - on CUDA with more than one job, the devices of `train.devices` are dealt out in turn:
//!   each job gets an equal share, exposed to its process as `CUDA_VISIBLE_DEVICES`, and the
//!   trial's `train.devices` becomes `0..share` (part of the trial's stage keys, like any change
//!   of devices). With more jobs than devices, jobs share devices.
//!
//! Each child's output goes to `trials/<id>.log` in the sweep folder rather than through a pipe,
//! so a child never depends on its parent staying alive. On a terminal each running trial has
//! one progress line showing the last line of its log; elsewhere the log lines are echoed with
//! the trial id in front. The children share the parent's process group, so Ctrl-C reaches
//! them too: they save a checkpoint and stop, and the runner waits for them.
//!
//! A failed trial does not stop the others unless `fail_fast` is set, in which case no new
//! trial starts and the running ones are stopped (their checkpoints resume them next time).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::Value;

use crate::files::now_rfc3339;
use crate::pipeline::plan::ScanMemo;
use crate::progress::Reporter;
use crate::runner::run::RunOptions;
use crate::runner::sweep::{Sweep, SweepError, TrialRecord, TrialState};
use crate::spec::sweep::Trial;
use crate::spec::types::BackendKind;

/// How often running trials are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Output root and planning options.
    pub run: RunOptions,
    /// Trials at a time.
    pub jobs: usize,
    /// Stop at the first failed trial.
    pub fail_fast: bool,
    /// The program and arguments that run one trial, without `--trial ID` (the runner adds it,
    /// and `--trial-devices N` on CUDA).
    pub trial_command: Vec<OsString>,
}

/// What a sweep run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepOutcome {
    /// Trials that were already complete and were skipped.
    pub skipped: Vec<String>,
    /// Trials run to completion now.
    pub finished: Vec<String>,
    /// Trials that failed, with their error.
    pub failed: Vec<(String, String)>,
    /// Trials not run (after `--fail-fast` or an interrupt).
    pub not_run: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

/// One trial process.
struct RunningTrial<'a> {
    trial: &'a Trial,
    child: Child,
    log: std::fs::File,
    /// Bytes of a partial last line of the log.
    partial: String,
    spinner: ProgressBar,
}

/// The devices each job slot gets on CUDA: equal shares of `devices`, dealt out in order.
pub fn device_groups(devices: &[u32], jobs: usize) -> Vec<Vec<u32>> {
    let jobs = jobs.max(1);
    if devices.is_empty() {
        return vec![Vec::new(); jobs];
    }
    let share = (devices.len() / jobs).max(1);
    (0..jobs)
        .map(|slot| {
            let start = (slot * share) % devices.len();
            devices[start..start + share.min(devices.len() - start)].to_vec()
        })
        .collect()
}

/// The extra override narrowing `train.devices` for a job with `count` devices.
pub fn narrowed_devices(count: usize) -> Vec<(String, Value)> {
    vec![(
        "train.devices".to_owned(),
        Value::Array(
            (0..count)
                .map(|ordinal| Value::from(ordinal as u64))
                .collect(),
        ),
    )]
}

/// Runs every trial that is not complete; see the module documentation.
pub fn run_sweep(
    sweep: &Sweep,
    options: &SweepOptions,
    reporter: &Reporter,
) -> Result<SweepOutcome, SweepError> {
    let clock = Instant::now();
    let jobs = options.jobs.max(1);
    let cuda_groups = (sweep.base.spec.backend == BackendKind::Cuda && jobs > 1)
        .then(|| device_groups(&sweep.base.spec.train.devices, jobs));
    let extra_for = |slot: usize| match &cuda_groups {
        Some(groups) => narrowed_devices(groups[slot % groups.len()].len()),
        None => Vec::new(),
    };
    sweep.refresh()?;
    reporter.line(&format!(
        "sweep {}: {} trial(s) in {}",
        sweep.id,
        sweep.trials.len(),
        sweep.dir.display()
    ));
    let mut outcome = SweepOutcome::default();
    let mut queue: VecDeque<&Trial> = VecDeque::new();
    let scans = ScanMemo::default();
    for trial in &sweep.trials {
        let planned = sweep.plan_trial(trial, &extra_for(0), options.run.plan, &scans)?;
        if planned.complete {
            sweep.adopt(trial, &planned.plan.run_id)?;
            reporter.line(&format!(
                "{}  done already — {}",
                trial.id,
                trial.describe()
            ));
            outcome.skipped.push(trial.id.clone());
        } else {
            queue.push_back(trial);
        }
    }
    let threads_per_job = std::thread::available_parallelism()
        .map_or(1, |cores| cores.get())
        .div_euclid(jobs.min(queue.len().max(1)))
        .max(1);
    let _graceful = crate::interrupt::graceful();
    let mut running: Vec<(usize, RunningTrial<'_>)> = Vec::new();
    let mut stopping = false;
    while !queue.is_empty() || !running.is_empty() {
        if crate::interrupt::requested() && !stopping {
            stopping = true;
            reporter.line("interrupted: waiting for the running trials to save a checkpoint");
        }
        while !stopping && running.len() < jobs {
            let Some(trial) = queue.pop_front() else {
                break;
            };
            let slot = (0..jobs)
                .find(|slot| running.iter().all(|(used, _)| used != slot))
                .unwrap_or(0);
            let devices = cuda_groups
                .as_ref()
                .map(|groups| &groups[slot % groups.len()]);
            let process = start_trial(sweep, trial, options, threads_per_job, devices, reporter)?;
            running.push((slot, process));
        }
        std::thread::sleep(POLL_INTERVAL);
        let mut index = 0;
        while index < running.len() {
            let process = &mut running[index].1;
            follow_log(process, reporter);
            let Some(status) = process.child.try_wait()? else {
                index += 1;
                continue;
            };
            let (_, mut process) = running.remove(index);
            follow_log(&mut process, reporter);
            process.spinner.finish_and_clear();
            let trial = process.trial;
            let (state, record) = sweep.recorded_state(trial);
            match state {
                TrialState::Done => {
                    reporter.line(&format!("{}  done — {}", trial.id, trial.describe()));
                    outcome.finished.push(trial.id.clone());
                }
                TrialState::Pending if stopping => outcome.not_run.push(trial.id.clone()),
                _ => {
                    let error = match record.and_then(|record| record.status.error) {
                        Some(error) if state == TrialState::Failed => error,
                        _ => {
                            let error = describe_exit(status);
                            record_crash(sweep, trial, &error)?;
                            error
                        }
                    };
                    reporter.line(&format!(
                        "{}  FAILED — {}: {error}",
                        trial.id,
                        trial.describe()
                    ));
                    outcome.failed.push((trial.id.clone(), error));
                    if options.fail_fast && !stopping {
                        stopping = true;
                        for (_, other) in &mut running {
                            // Killed, not failed: the checkpoints resume them next time.
                            let _ = other.child.kill();
                        }
                    }
                }
            }
            sweep.refresh()?;
        }
        if stopping {
            outcome
                .not_run
                .extend(queue.drain(..).map(|trial| trial.id.clone()));
        }
    }
    sweep.refresh()?;
    outcome.seconds = clock.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Starts `vilab run FILE --trial ID` with its output appended to the trial's log.
fn start_trial<'a>(
    sweep: &Sweep,
    trial: &'a Trial,
    options: &SweepOptions,
    threads: usize,
    devices: Option<&Vec<u32>>,
    reporter: &Reporter,
) -> Result<RunningTrial<'a>, SweepError> {
    let Some((program, arguments)) = options.trial_command.split_first() else {
        return Err(SweepError::Spawn {
            command: String::new(),
            error: std::io::Error::other("no command to run trials with"),
        });
    };
    let mut command = Command::new(program);
    command
        .args(arguments)
        .arg("--trial")
        .arg(&trial.id)
        .stdin(Stdio::null());
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    if let Some(devices) = devices {
        // Ordinals in train.devices count within an existing CUDA_VISIBLE_DEVICES.
        let visible: Option<Vec<String>> = std::env::var("CUDA_VISIBLE_DEVICES")
            .ok()
            .map(|list| list.split(',').map(str::to_owned).collect());
        let physical: Vec<String> = devices
            .iter()
            .map(|&ordinal| {
                visible
                    .as_ref()
                    .and_then(|list| list.get(ordinal as usize).cloned())
                    .unwrap_or_else(|| ordinal.to_string())
            })
            .collect();
        command
            .env("CUDA_VISIBLE_DEVICES", physical.join(","))
            .arg("--trial-devices")
            .arg(devices.len().to_string());
    }
    let log_path = sweep.log_path(trial);
    if let Some(parent) = log_path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let mut log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let shown: Vec<String> = std::iter::once(program)
        .chain(arguments)
        .map(|part| part.to_string_lossy().into_owned())
        .chain(["--trial".to_owned(), trial.id.clone()])
        .collect();
    writeln!(log, "── {} {}", now_rfc3339(), shown.join(" "))?;
    let output = log.file().try_clone()?;
    let errors = log.file().try_clone()?;
    command.stdout(output).stderr(errors);
    let child = command.spawn().map_err(|error| SweepError::Spawn {
        command: shown.join(" "),
        error,
    })?;
    let mut reader = fs_err::File::open(&log_path)?.into_file();
    reader.seek(SeekFrom::End(0))?;
    let spinner = reporter.spinner(&trial.id, &format!("{} — starting", trial.describe()));
    if spinner.is_hidden() {
        reporter.line(&format!("{}  started — {}", trial.id, trial.describe()));
    }
    Ok(RunningTrial {
        trial,
        child,
        log: reader,
        partial: String::new(),
        spinner,
    })
}

/// Shows what a trial wrote since the last look: its last line on the progress line, or every
/// line with the trial id in front when there are no progress lines.
fn follow_log(process: &mut RunningTrial<'_>, reporter: &Reporter) {
    let mut bytes = Vec::new();
    if process.log.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
        return;
    }
    process.partial.push_str(&String::from_utf8_lossy(&bytes));
    let Some(cut) = process.partial.rfind('\n') else {
        return;
    };
    let complete: String = process.partial.drain(..=cut).collect();
    let lines: Vec<&str> = complete
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if process.spinner.is_hidden() {
        for line in lines {
            reporter.line(&format!("{}  {line}", process.trial.id));
        }
    } else if let Some(last) = lines.last() {
        process
            .spinner
            .set_message(format!("{} — {}", process.trial.describe(), last.trim()));
    }
}

/// How a trial process ended, for one that left no error of its own.
fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("the trial's process was killed by signal {signal}");
    }
    match status.code() {
        Some(code) => format!("the trial's process exited with code {code}"),
        None => "the trial's process ended abnormally".to_owned(),
    }
}

/// Records a trial whose process died without recording its failure.
fn record_crash(sweep: &Sweep, trial: &Trial, error: &str) -> Result<(), SweepError> {
    let mut record = sweep.read_record(trial).unwrap_or_else(|| TrialRecord {
        pid: 0,
        ..TrialRecord::attempt(trial, TrialState::Failed, 1)
    });
    record.status.state = TrialState::Failed;
    record.status.error = Some(format!("{error}; see {}", sweep.log_path(trial).display()));
    record.finished_at = Some(now_rfc3339());
    sweep.write_record(&record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_dealt_out_in_equal_shares() {
        assert_eq!(device_groups(&[0, 1, 2, 3], 2), [vec![0, 1], vec![2, 3]]);
        assert_eq!(device_groups(&[0, 1, 2, 3], 4), [[0], [1], [2], [3]]);
        assert_eq!(device_groups(&[0, 1, 2], 2), [[0], [1]]);
        assert_eq!(device_groups(&[5, 7], 3), [[5], [7], [5]]);
        assert_eq!(narrowed_devices(2)[0].1, serde_json::json!([0, 1]));
    }
}
