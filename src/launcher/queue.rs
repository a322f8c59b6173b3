//! How the tasks of a sweep's job arrays stand, as Slurm tells it.
//!
//! `squeue --array` lists every task that is still queued or running, one line each (pending
//! tasks of an array included). Tasks that ended are gone from it; `scontrol show job` still
//! knows them for a while (`MinJobAge`, five minutes by default) with their final state
//! (`COMPLETED`, `FAILED`, `TIMEOUT`, ...). After that Slurm has forgotten them, and vilab's own
//! record of the trial is all there is. `sacct` would remember longer, but needs the accounting
//! database that many small clusters do without.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use super::SlurmError;

/// The state of one array task (`<job>_<index>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// Slurm's state name: `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, ...
    pub state: String,
    /// Why a queued task waits, or why it ended (`None` when there is nothing to say).
    pub reason: Option<String>,
    /// Listed by `squeue`: queued, running or finishing.
    pub queued: bool,
}

impl TaskStatus {
    /// Whether the task may still run its trial (queued or running), so it must neither be
    /// submitted again nor left out of a cancel.
    pub fn is_active(&self) -> bool {
        self.queued && !ENDED_STATES.contains(&self.state.as_str())
    }

    /// Whether it ended without completing (failed, timed out, cancelled, ...).
    pub fn ended_badly(&self) -> bool {
        !self.is_active() && self.state != "COMPLETED"
    }

    /// `RUNNING`, or `PENDING (Priority)` with the reason.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(reason) => format!("{} ({reason})", self.state),
            None => self.state.clone(),
        }
    }
}

/// States a task does not leave.
const ENDED_STATES: [&str; 10] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
];

/// Runs a Slurm command and returns its standard output; a missing command is
/// [`SlurmError::Missing`].
pub fn slurm_command(program: &str, arguments: &[String]) -> Result<String, SlurmError> {
    let output = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => SlurmError::Missing {
                program: program.to_owned(),
            },
            _ => SlurmError::Spawn {
                program: program.to_owned(),
                error,
            },
        })?;
    if !output.status.success() {
        return Err(SlurmError::Command {
            command: std::iter::once(program)
                .chain(arguments.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether a failed query only means that Slurm knows none of the jobs asked about.
fn is_unknown_job(error: &SlurmError) -> bool {
    matches!(error, SlurmError::Command { stderr, .. } if stderr.contains("Invalid job id"))
}

/// The status of each task (`<job>_<index>`) Slurm still knows; tasks it has forgotten are
/// missing from the map.
pub fn task_statuses(tasks: &[String]) -> Result<BTreeMap<String, TaskStatus>, SlurmError> {
    let jobs: BTreeSet<&str> = tasks
        .iter()
        .map(|task| task.split_once('_').map_or(task.as_str(), |(job, _)| job))
        .collect();
    if jobs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let job_list = jobs.iter().copied().collect::<Vec<_>>().join(",");
    let listed = match slurm_command(
        "squeue",
        &[
            "--noheader".into(),
            "--array".into(),
            format!("--jobs={job_list}"),
            "--format=%i|%T|%r".into(),
        ],
    ) {
        Ok(text) => text,
        Err(error) if is_unknown_job(&error) => String::new(),
        Err(error) => return Err(error),
    };
    let mut statuses: BTreeMap<String, TaskStatus> = parse_squeue(&listed).into_iter().collect();
    let missing_jobs: BTreeSet<&str> = tasks
        .iter()
        .filter(|task| !statuses.contains_key(*task))
        .filter_map(|task| task.split_once('_').map(|(job, _)| job))
        .collect();
    for job in missing_jobs {
        let shown = match slurm_command(
            "scontrol",
            &["--oneliner".into(), "show".into(), "job".into(), job.into()],
        ) {
            Ok(text) => text,
            Err(error) if is_unknown_job(&error) => continue,
            Err(error) => return Err(error),
        };
        for (task, status) in parse_scontrol(&shown) {
            statuses.entry(task).or_insert(status);
        }
    }
    for task in tasks {
        if let Some((job, _)) = task.split_once('_')
            && !statuses.contains_key(task)
            && let Some(status) = statuses.get(&format!("{job}_{WHOLE_ARRAY}")).cloned()
        {
            statuses.insert(task.clone(), status);
        }
    }
    Ok(statuses)
}

/// Lines of `squeue --array --format=%i|%T|%r`.
pub fn parse_squeue(text: &str) -> Vec<(String, TaskStatus)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().splitn(3, '|');
            let task = fields.next()?.trim();
            let state = fields.next()?.trim();
            let reason = fields.next().map(str::trim).unwrap_or_default();
            (!task.is_empty() && !state.is_empty()).then(|| {
                (
                    task.to_owned(),
                    TaskStatus {
                        state: state.to_owned(),
                        reason: meaningful_reason(reason),
                        queued: true,
                    },
                )
            })
        })
        .collect()
}

/// The task index standing for every task of an array that has no record of its own.
pub const WHOLE_ARRAY: &str = "*";

/// Records of `scontrol --oneliner show job`, one per line: each array task it names (a
/// pending remainder of an array is one record naming a range of tasks; one without task ids
/// is given as `<job>_*`).
pub fn parse_scontrol(text: &str) -> Vec<(String, TaskStatus)> {
    let mut statuses = Vec::new();
    for line in text.lines() {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for token in line.split_whitespace() {
            if let Some((key, value)) = token.split_once('=') {
                fields.entry(key).or_insert(value);
            }
        }
        let (Some(job), Some(tasks), Some(state)) = (
            fields.get("ArrayJobId"),
            fields.get("ArrayTaskId"),
            fields.get("JobState"),
        ) else {
            continue;
        };
        let reason = fields
            .get("Reason")
            .and_then(|reason| meaningful_reason(reason));
        let status = TaskStatus {
            state: (*state).to_owned(),
            reason,
            queued: !ENDED_STATES.contains(state),
        };
        let indices = expand_task_ids(tasks);
        if indices.is_empty() {
            // The rest of an array that ended before its tasks were split off (a queued array
            // cancelled whole) has no task ids left.
            statuses.push((format!("{job}_{WHOLE_ARRAY}"), status));
        } else {
            for index in indices {
                statuses.push((format!("{job}_{index}"), status.clone()));
            }
        }
    }
    statuses
}

fn meaningful_reason(reason: &str) -> Option<String> {
    (!reason.is_empty() && reason != "None" && reason != "(null)").then(|| reason.to_owned())
}

/// The task indices of an `ArrayTaskId` value: `3`, `0-3`, `1,4-6`, with an optional `%K`
/// throttle and `:S` step; none for Slurm's "no value" (4294967294) or anything unreadable.
pub fn expand_task_ids(text: &str) -> Vec<u64> {
    const NO_VALUE: u64 = 0xffff_fffe;
    let ranges = text.split('%').next().unwrap_or_default();
    let mut indices = Vec::new();
    for part in ranges.split(',') {
        let (span, step) = part.split_once(':').unwrap_or((part, "1"));
        let step: u64 = step.parse().unwrap_or(1).max(1);
        let (first, last) = span.split_once('-').unwrap_or((span, span));
        if let (Ok(first), Ok(last)) = (first.parse::<u64>(), last.parse::<u64>())
            && last < NO_VALUE
        {
            indices.extend((first..=last).step_by(step as usize));
        }
    }
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_give_each_task_with_its_reason() {
        let listed = parse_squeue("12_1|PENDING|JobArrayTaskLimit\n12_0|RUNNING|None\n\n");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].0, "12_1");
        assert_eq!(listed[0].1.describe(), "PENDING (JobArrayTaskLimit)");
        assert!(listed[0].1.is_active());
        assert_eq!(listed[1].1.describe(), "RUNNING");
    }

    #[test]
    fn scontrol_records_expand_pending_ranges_and_keep_final_states() {
        let shown = "JobId=4 ArrayJobId=4 ArrayTaskId=1-3%1 JobName=x JobState=CANCELLED \
                     Reason=None Command=/a b/c\n\
                     JobId=5 ArrayJobId=4 ArrayTaskId=0 JobState=FAILED Reason=NonZeroExitCode\n";
        let statuses: BTreeMap<String, TaskStatus> = parse_scontrol(shown).into_iter().collect();
        assert_eq!(
            statuses.keys().collect::<Vec<_>>(),
            ["4_0", "4_1", "4_2", "4_3"]
        );
        assert_eq!(statuses["4_0"].describe(), "FAILED (NonZeroExitCode)");
        assert!(!statuses["4_0"].is_active() && statuses["4_0"].ended_badly());
        assert_eq!(statuses["4_2"].state, "CANCELLED");
        assert!(!statuses["4_2"].queued);

        let cancelled_whole = parse_scontrol(
            "JobId=10 ArrayJobId=10 ArrayTaskId=4294967294 JobState=CANCELLED Reason=JobHeldUser",
        );
        assert_eq!(cancelled_whole.len(), 1);
        assert_eq!(cancelled_whole[0].0, "10_*");
        assert_eq!(cancelled_whole[0].1.describe(), "CANCELLED (JobHeldUser)");
    }

    #[test]
    fn task_id_lists_expand() {
        assert_eq!(expand_task_ids("3"), [3]);
        assert_eq!(expand_task_ids("0-2"), [0, 1, 2]);
        assert_eq!(expand_task_ids("1,4-5%2"), [1, 4, 5]);
        assert_eq!(expand_task_ids("0-6:3"), [0, 3, 6]);
        assert!(expand_task_ids("(null)").is_empty());
        assert!(expand_task_ids("4294967294").is_empty());
    }
}
