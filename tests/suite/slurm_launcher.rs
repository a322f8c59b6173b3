//! `vilab run --launcher slurm` through the real binary on a copy of `data1/`, with the tiny
//! trials of tests/suite/cli_sweep.rs.
//!
//! Without Slurm: a submission where `sbatch` is missing fails with one line, having written
//! the batch script and its trial list, and that script, run by bash as Slurm would run array
//! task 1, runs the second trial with the submitting command's settings.
//!
//! With a Slurm cluster (`scripts/slurm-localhost.sh` starts one on this machine; when `sinfo`
//! shows no node up these tests say why and return, or fail when `VILAB_REQUIRE_SLURM=1`, as
//! `.ci/run` sets it): a 2×2 grid runs as one array of four
//! tasks whose data stages are computed once and whose summary equals the local launcher's;
//! a held array is left alone by a second submission and cancelled by `vilab cancel`; a
//! trial that fails shows its task's state and log in `vilab status`, and submitting again
//! retries only that trial.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    self, BIN, DATA_STAGES, Output, Workspace, entry_names, read_run_json, stage_runs,
};

/// How long an array of tiny trials may take on a loaded two-core machine before the test
/// calls it stuck.
const ARRAY_TIMEOUT: Duration = Duration::from_secs(300);

/// A tiny-model experiment on `data/` with a sweep section appended.
pub(crate) fn sweep_spec(name: &str, batch_size: u32, sweep: &str) -> String {
    format!(
        "name: {name}\n\
         seed: 42\n\
         data:\n  root: data\n  image_size: 16\n\
         model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n\
         train:\n  epochs: 1\n  batch_size: {batch_size}\n  workers: 0\n\
         plot:\n  formats: [png]\n\
         sweep:\n{sweep}"
    )
}

const GRID: &str = "  grid:\n    train.optimizer.lr: [1.0e-3, 3.0e-3]\n    \
                    train.optimizer.weight_decay: [0.0, 0.1]\n";

/// The first trial diverges (its loss turns NaN), the second trains.
const FAILING_LIST: &str = "  list:\n    - {train.optimizer.lr: 1.0e4}\n    \
                            - {train.optimizer.lr: 1.0e-3}\n";

/// Runs `vilab ARGS` in the workspace and checks the exit code.
pub(crate) fn vilab(workspace: &Workspace, args: &[&str], code: i32) -> Output {
    let output = workspace.vilab(args);
    output.assert_code(code).assert_no_panic();
    output
}

/// Cancels what a test left queued in `out/` of its workspace, should it stop half-way, so
/// that no held array outlives it.
pub(crate) struct CancelOnDrop<'a>(pub(crate) &'a Workspace);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.vilab(&["cancel", "sweep.yaml", "--out", "out"]);
    }
}

/// Why the tests that need a Slurm cluster cannot run here; `None` when a node is up.
fn cluster_unavailable() -> Option<String> {
    let output = match Command::new("sinfo")
        .args(["--noheader", "--format=%t"])
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            return Some(format!(
                "`sinfo` cannot run ({error}); scripts/slurm-localhost.sh starts a one-node cluster"
            ));
        }
    };
    let states = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Some(format!(
            "`sinfo` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    // Node states may carry a flag character (`idle*` for a node not responding is not up).
    let up = states
        .lines()
        .map(str::trim)
        .any(|state| matches!(state, "idle" | "mix" | "alloc" | "comp"));
    (!up).then(|| format!("no Slurm node is up (sinfo states: {:?})", states.trim()))
}

/// Prints why a test that needs Slurm does not run; true when it can run. With
/// `VILAB_REQUIRE_SLURM=1` (CI) a missing cluster fails the test instead.
pub(crate) fn cluster_ready(test: &str) -> bool {
    match cluster_unavailable() {
        None => true,
        Some(reason) if std::env::var("VILAB_REQUIRE_SLURM").as_deref() == Ok("1") => {
            panic!("{test}: VILAB_REQUIRE_SLURM=1 but {reason}")
        }
        Some(reason) => {
            eprintln!("{test}: not run: {reason}");
            false
        }
    }
}

pub(crate) fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The trials of a sweep.json as id ⇒ trial, and their ids in sweep order.
pub(crate) fn trials(sweep_dir: &Path) -> (BTreeMap<String, Value>, Vec<String>) {
    let listed = read_json(&sweep_dir.join("sweep.json"))["trials"]
        .as_array()
        .expect("trials")
        .clone();
    let order = listed
        .iter()
        .map(|trial| trial["id"].as_str().expect("id").to_owned())
        .collect();
    let by_id = listed
        .into_iter()
        .map(|trial| (trial["id"].as_str().expect("id").to_owned(), trial))
        .collect();
    (by_id, order)
}

/// The only sweep folder of experiment `name` below `out`.
pub(crate) fn sweep_dir(out: &Path, name: &str) -> PathBuf {
    let folders: Vec<String> = entry_names(&out.join(name))
        .into_iter()
        .filter(|entry| entry.starts_with("sweep-"))
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    out.join(name).join(&folders[0])
}

/// The Slurm tasks of a job that `squeue` still lists, as `<job>_<index>` ⇒ state.
pub(crate) fn queued_tasks(job: &str) -> BTreeMap<String, String> {
    let output = Command::new("squeue")
        .args([
            "--noheader",
            "--array",
            &format!("--jobs={job}"),
            "--format=%i|%T",
        ])
        .output()
        .expect("squeue runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // Slurm forgets ended jobs; squeue then calls the id invalid.
        assert!(stderr.contains("Invalid job id"), "squeue: {stderr}");
        return BTreeMap::new();
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().split_once('|'))
        .map(|(task, state)| (task.to_owned(), state.to_owned()))
        .collect()
}

/// Waits until Slurm lists no task of `job` any more (each has ended).
fn wait_for_array(job: &str) {
    wait_for_array_within(job, ARRAY_TIMEOUT);
}

/// Waits until Slurm lists no task of `job` any more, at most `timeout`.
pub(crate) fn wait_for_array_within(job: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let queued = queued_tasks(job);
        if queued.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job array {job} still has tasks after {timeout:?}: {queued:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The submissions recorded in `slurm.json`: job id and trial ids in task order.
pub(crate) fn submissions(sweep_dir: &Path) -> Vec<(String, Vec<String>)> {
    read_json(&sweep_dir.join("slurm.json"))["submissions"]
        .as_array()
        .expect("submissions")
        .iter()
        .map(|submission| {
            (
                submission["job_id"].as_str().expect("job id").to_owned(),
                submission["trials"]
                    .as_array()
                    .expect("trials")
                    .iter()
                    .map(|trial| trial.as_str().expect("trial id").to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// `vilab status` lines of a sweep as trial id ⇒ line.
fn status_lines(stdout: &str, ids: &[String]) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| {
            let id = line.split_whitespace().next()?;
            ids.contains(&id.to_owned())
                .then(|| (id.to_owned(), line.to_owned()))
        })
        .collect()
}

/// summary.csv without its wall-time column, as rows of cells.
fn summary_without_times(sweep_dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(sweep_dir.join("summary.csv")).expect("summary.csv");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(|row| row.expect("row")).collect();
    let seconds = rows[0]
        .iter()
        .position(|cell| cell == "seconds")
        .expect("a seconds column");
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|(index, _)| *index != seconds)
                .map(|(_, cell)| cell.to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn without_sbatch_the_launcher_fails_in_one_line_after_writing_a_runnable_batch_script() {
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec("sw", 16, GRID));

    let misplaced = vilab(
        &workspace,
        &["run", "sweep.yaml", "--out", "out", "--partition", "short"],
        2,
    );
    assert_eq!(
        misplaced.stderr.trim(),
        "error: --partition needs --launcher slurm"
    );

    let local_only = vilab(
        &workspace,
        &[
            "run",
            "sweep.yaml",
            "--out",
            "out",
            "--launcher",
            "slurm",
            "--jobs",
            "2",
        ],
        2,
    );
    assert_eq!(
        local_only.stderr.trim(),
        "error: --jobs does not go with --launcher slurm (use --array-parallelism)"
    );

    let empty_bin = workspace.path().join("empty-bin");
    std::fs::create_dir(&empty_bin).expect("an empty PATH folder");
    let mut command = workspace.command(&[
        "run",
        "sweep.yaml",
        "--set",
        "train.batch_size=50",
        "--out",
        "out",
        "--launcher",
        "slurm",
        "--partition",
        "short",
        "--time",
        "00:10:00",
        "--gpus-per-trial",
        "1",
        "--array-parallelism",
        "2",
        "--sbatch-arg=--mem=1G",
    ]);
    command.env("PATH", &empty_bin);
    let failed = common::wait(common::spawn(command), common::PROCESS_TIMEOUT);
    failed.assert_code(1).assert_no_panic();
    let lines: Vec<&str> = failed
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(
        lines,
        [
            "error: `sbatch` not found on PATH: --launcher slurm needs Slurm's commands (run \
             vilab on a login node of the cluster)"
        ],
        "{}",
        failed.stderr
    );

    let sweep_dir = sweep_dir(&workspace.path().join("out"), "sw");
    assert!(
        !sweep_dir.join("slurm.json").exists(),
        "nothing was submitted"
    );
    let (_, order) = trials(&sweep_dir);
    let listed = std::fs::read_to_string(sweep_dir.join("slurm-1.trials")).expect("trial list");
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        order,
        "array task i runs trial i"
    );

    let script = std::fs::read_to_string(sweep_dir.join("slurm-1.sh")).expect("batch script");
    let workspace_dir = workspace.path().canonicalize().expect("workspace");
    let absolute_sweep_dir = workspace_dir.join(sweep_dir.strip_prefix(workspace.path()).unwrap());
    let binary = Path::new(BIN).canonicalize().expect("the vilab binary");
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    for expected in [
        "#SBATCH --job-name=vilab-sw".to_owned(),
        format!(
            "#SBATCH --output={}/slurm-%A_%a.out",
            absolute_sweep_dir.display()
        ),
        "#SBATCH --partition=short".to_owned(),
        "#SBATCH --time=00:10:00".to_owned(),
        "#SBATCH --gres=gpu:1".to_owned(),
        "#SBATCH --signal=B:USR1@120".to_owned(),
        "#SBATCH --requeue".to_owned(),
        "#SBATCH --open-mode=append".to_owned(),
        format!("cd {}", workspace_dir.display()),
        format!(
            "exec {} run sweep.yaml --set train.batch_size=50 --out out --max-requeues 3 \
             --signal-before 120 --trial \"$trial\"",
            binary.display()
        ),
    ] {
        assert!(
            script.lines().any(|line| line == expected),
            "no line `{expected}` in\n{script}"
        );
    }
    let script_lines: Vec<&str> = script.lines().collect();
    let last_directive = script_lines
        .iter()
        .rposition(|line| line.starts_with("#SBATCH"))
        .expect("directives");
    let first_command = script_lines
        .iter()
        .position(|line| !line.starts_with('#'))
        .expect("commands");
    assert!(
        last_directive < first_command,
        "sbatch reads #SBATCH lines only before the first command:\n{script}"
    );

    // What a node does for array task 1, without Slurm: it runs the second trial, with the
    // submission's --set, from whatever folder the task starts in.
    let mut bash = Command::new("bash");
    bash.arg(sweep_dir.join("slurm-1.sh"))
        .current_dir(&empty_bin)
        .env("SLURM_ARRAY_TASK_ID", "1");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("VILAB_") {
            bash.env_remove(&name);
        }
    }
    let task = bash.output().expect("bash runs the script");
    assert!(
        task.status.success(),
        "the batch script failed:\n{}",
        String::from_utf8_lossy(&task.stderr)
    );
    let (after, _) = trials(&sweep_dir);
    for (position, id) in order.iter().enumerate() {
        let expected = if position == 1 { "done" } else { "pending" };
        assert_eq!(after[id]["state"], expected, "trial {id}: {}", after[id]);
    }
    let run_dir = sweep_dir.join(after[&order[1]]["run"].as_str().expect("run folder"));
    let spec: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(run_dir.join("spec.yaml")).expect("the trial's spec.yaml"),
    )
    .expect("spec.yaml parses");
    assert_eq!(
        spec["train"]["batch_size"], 50,
        "--set did not reach the trial"
    );
}

#[test]
fn a_grid_runs_as_one_job_array_and_summarises_like_the_local_launcher() {
    if !cluster_ready("a_grid_runs_as_one_job_array_and_summarises_like_the_local_launcher") {
        return;
    }
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec("grid", 50, GRID));
    let _cancel = CancelOnDrop(&workspace);
    let submitted = vilab(
        &workspace,
        &["run", "sweep.yaml", "--out", "out", "--launcher", "slurm"],
        0,
    );
    let sweep_dir = workspace.path().join(submitted.last_stdout_line());
    let (_, order) = trials(&sweep_dir);
    let recorded = submissions(&sweep_dir);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (job, submitted_trials) = &recorded[0];
    assert_eq!(submitted_trials, &order, "every trial, in sweep order");
    wait_for_array(job);

    // Four array tasks ran, each its own trial.
    let logs: Vec<String> = entry_names(&sweep_dir)
        .into_iter()
        .filter(|name| name.starts_with(&format!("slurm-{job}_")) && name.ends_with(".out"))
        .collect();
    assert_eq!(
        logs,
        (0..4)
            .map(|index| format!("slurm-{job}_{index}.out"))
            .collect::<Vec<_>>()
    );
    for (index, id) in order.iter().enumerate() {
        let log = std::fs::read_to_string(sweep_dir.join(format!("slurm-{job}_{index}.out")))
            .expect("task log");
        assert!(log.contains(&format!("trial {id}:")), "task {index}: {log}");
    }

    let (listed, _) = trials(&sweep_dir);
    for (id, trial) in &listed {
        assert_eq!(trial["state"], "done", "trial {id}: {trial}");
    }
    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "out"], 0);
    assert!(
        status
            .stdout
            .contains("4 trials — 4 done, 0 failed, 0 running, 0 pending"),
        "{}",
        status.stdout
    );
    let lines = status_lines(&status.stdout, &order);
    for (index, id) in order.iter().enumerate() {
        assert!(
            lines[id].ends_with(&format!("| slurm {job}_{index} COMPLETED")),
            "{}",
            lines[id]
        );
    }

    // The tasks ran side by side on the shared output root: each data stage once.
    let mut stage_records: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for trial in listed.values() {
        let run_dir = sweep_dir.join(trial["run"].as_str().expect("run folder"));
        for stage in stage_runs(&read_run_json(&run_dir)) {
            stage_records
                .entry(stage.stage)
                .or_default()
                .push((stage.key, stage.state));
        }
    }
    for stage in DATA_STAGES {
        let runs = &stage_records[stage];
        let keys: BTreeSet<&String> = runs.iter().map(|(key, _)| key).collect();
        assert_eq!(keys.len(), 1, "{stage}: {runs:?}");
        let computed = runs.iter().filter(|(_, state)| state == "computed").count();
        assert_eq!(computed, 1, "{stage} computed {computed} times: {runs:?}");
    }

    // The same sweep run by the local launcher into another output root sums up the same.
    let local = vilab(&workspace, &["run", "sweep.yaml", "--out", "local"], 0);
    let local_dir = workspace.path().join(local.last_stdout_line());
    assert_eq!(
        local_dir.file_name(),
        sweep_dir.file_name(),
        "the same sweep id"
    );
    let slurm_summary = summary_without_times(&sweep_dir);
    assert_eq!(slurm_summary.len(), 5, "a header and four trials");
    assert_eq!(slurm_summary, summary_without_times(&local_dir));

    // Submitting again finds everything done and submits nothing.
    let again = vilab(
        &workspace,
        &["run", "sweep.yaml", "--out", "out", "--launcher", "slurm"],
        0,
    );
    assert!(
        again.stderr.contains("nothing to submit")
            && again.stderr.contains("4 done already, 0 queued or running"),
        "{}",
        again.stderr
    );
    assert_eq!(submissions(&sweep_dir).len(), 1);
}

#[test]
fn a_held_array_is_cancelled_and_a_failed_task_is_shown_and_retried() {
    if !cluster_ready("a_held_array_is_cancelled_and_a_failed_task_is_shown_and_retried") {
        return;
    }
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec("held", 50, FAILING_LIST));
    let _cancel = CancelOnDrop(&workspace);
    let slurm_run = |extra: &[&str]| {
        let mut args = vec!["run", "sweep.yaml", "--out", "out", "--launcher", "slurm"];
        args.extend(extra);
        vilab(&workspace, &args, 0)
    };

    // Held: the tasks stay queued.
    let submitted = slurm_run(&["--sbatch-arg=--hold"]);
    let sweep_dir = workspace.path().join(submitted.last_stdout_line());
    let (_, order) = trials(&sweep_dir);
    let (bad, good) = (&order[0], &order[1]);
    let held_job = submissions(&sweep_dir)[0].0.clone();
    let held_tasks: Vec<String> = (0..2).map(|index| format!("{held_job}_{index}")).collect();
    assert_eq!(
        queued_tasks(&held_job),
        held_tasks
            .iter()
            .map(|task| (task.clone(), "PENDING".to_owned()))
            .collect::<BTreeMap<_, _>>()
    );
    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "out"], 1);
    let lines = status_lines(&status.stdout, &order);
    for (id, task) in order.iter().zip(&held_tasks) {
        assert!(
            lines[id].contains(" pending ")
                && lines[id].ends_with(&format!("| slurm {task} PENDING (JobHeldUser)")),
            "{}",
            lines[id]
        );
    }

    // Queued trials are not submitted twice.
    let again = slurm_run(&[]);
    assert!(
        again.stderr.contains("nothing to submit")
            && again.stderr.contains("0 done already, 2 queued or running"),
        "{}",
        again.stderr
    );
    assert_eq!(submissions(&sweep_dir).len(), 1);

    let cancelled = vilab(&workspace, &["cancel", "sweep.yaml", "--out", "out"], 0);
    assert!(
        cancelled
            .stdout
            .trim_end()
            .ends_with(&format!("cancelled 2 task(s): {}", held_tasks.join(" "))),
        "{}",
        cancelled.stdout
    );
    wait_for_array(&held_job);
    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "out"], 1);
    for line in status_lines(&status.stdout, &order).values() {
        assert!(line.contains(" CANCELLED"), "{line}");
    }
    let nothing = vilab(&workspace, &["cancel", "sweep.yaml", "--out", "out"], 0);
    assert!(
        nothing.stdout.contains("no queued or running Slurm task"),
        "{}",
        nothing.stdout
    );

    // Submitted again, both run: one trains, one diverges.
    slurm_run(&[]);
    let recorded = submissions(&sweep_dir);
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    let (job, resubmitted) = &recorded[1];
    assert_eq!(resubmitted, &order);
    wait_for_array(job);
    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "out"], 1);
    let lines = status_lines(&status.stdout, &order);
    let bad_log = sweep_dir.join(format!("slurm-{job}_0.out"));
    assert!(
        lines[bad].contains(" failed ")
            && lines[bad].contains(&format!("| slurm {job}_0 FAILED"))
            && lines[bad].ends_with(&format!(
                ", log {}",
                bad_log.strip_prefix(workspace.path()).unwrap().display()
            )),
        "{}",
        lines[bad]
    );
    assert!(
        lines[good].contains(" done ")
            && lines[good].ends_with(&format!("| slurm {job}_1 COMPLETED")),
        "{}",
        lines[good]
    );
    let log = std::fs::read_to_string(&bad_log).expect("the failed task's log");
    assert!(log.contains("NaN"), "{log}");
    // A real error is not retried by a requeue: the task failed, and that was the end of it.
    assert!(!log.contains("requeue"), "{log}");
    assert!(!lines[bad].contains("requeued"), "{}", lines[bad]);
    let record = read_json(&sweep_dir.join("trials").join(format!("{bad}.json")));
    assert!(record.get("requeues").is_none(), "{record}");

    // Submitting again retries the failed trial alone.
    slurm_run(&[]);
    let recorded = submissions(&sweep_dir);
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    let (retry_job, retried) = &recorded[2];
    assert_eq!(retried, &vec![bad.clone()]);
    wait_for_array(retry_job);
    let (listed, _) = trials(&sweep_dir);
    assert_eq!(listed[bad]["state"], "failed");
    assert_eq!(listed[bad]["attempts"], 2, "{}", listed[bad]);
    assert_eq!(listed[good]["state"], "done");
    assert_eq!(listed[good]["attempts"], 1, "{}", listed[good]);
}
