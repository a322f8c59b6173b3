//! Slurm tasks that the cluster stops carry on by themselves (src/launcher/requeue.rs), on the
//! localhost cluster of `scripts/slurm-localhost.sh` (its 10-second credential lifetime lets a
//! requeued task start again within about 30 s instead of Slurm's default two minutes).
//!
//! - With a one-minute time limit, shorter than a trial's training, each task is warned
//!   (SIGUSR1), saves a checkpoint, requeues itself and finishes in later runs of the same task;
//!   the results equal an uninterrupted local run's, byte for byte, and `vilab status` shows the
//!   requeues.
//! - A task preempted by `scontrol requeue` (what `PreemptMode=REQUEUE` does) and one sent
//!   SIGTERM alone (`scancel --batch --signal=TERM`, a preemption notice) both finish without a
//!   second submission, with the same results as an uninterrupted run.
//! - `vilab cancel` of a running task stops it for good: it does not requeue itself.
//!
//! Every task trains on one thread, as does the reference run, so the results are comparable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Workspace;
use crate::faults::assert_same_results;
use crate::slurm_launcher::{
    CancelOnDrop, cluster_ready, queued_tasks, read_json, submissions, trials,
    wait_for_array_within,
};

/// How long a sweep whose tasks requeue a few times may take on a loaded two-core machine.
const REQUEUE_TIMEOUT: Duration = Duration::from_secs(720);

/// A sweep of `trials` learning rates whose training takes `epochs` epochs of about a second
/// each on one core.
fn long_sweep(name: &str, epochs: u32, rates: &[&str]) -> String {
    let mut spec = format!(
        "name: {name}\n\
         seed: 42\n\
         data:\n  root: data\n  image_size: 32\n\
         model:\n  name: vil_micro\n  dim: 32\n  depth: 2\n\
         train:\n  epochs: {epochs}\n  batch_size: 16\n  workers: 0\n\
         plot:\n  formats: [png]\n\
         sweep:\n  list:\n"
    );
    for rate in rates {
        spec.push_str(&format!("    - {{train.optimizer.lr: {rate}}}\n"));
    }
    spec
}

/// `vilab ARGS` in the workspace on one thread, as every Slurm task and reference run here.
fn one_thread(workspace: &Workspace, args: &[&str]) -> Command {
    let mut command = workspace.command(args);
    command.env("RAYON_NUM_THREADS", "1");
    command
}

/// Runs `command` and checks its exit code; returns standard output.
fn finish(command: Command, code: i32) -> String {
    let output = crate::common::wait(crate::common::spawn(command), REQUEUE_TIMEOUT);
    output.assert_code(code).assert_no_panic();
    output.stdout
}

/// Submits the sweep to Slurm with further `flags`; returns the sweep folder and the job id.
fn submit(workspace: &Workspace, flags: &[&str]) -> (PathBuf, String) {
    let mut args = vec!["run", "sweep.yaml", "--out", "out", "--launcher", "slurm"];
    args.extend_from_slice(flags);
    let stdout = finish(one_thread(workspace, &args), 0);
    let sweep_dir = workspace
        .path()
        .join(stdout.lines().last().expect("the sweep folder"));
    let job = submissions(&sweep_dir)[0].0.clone();
    (sweep_dir, job)
}

/// The same sweep run here, uninterrupted, under `ref/`; returns its sweep folder.
fn reference_run(workspace: &Workspace) -> PathBuf {
    let stdout = finish(
        one_thread(workspace, &["run", "sweep.yaml", "--out", "ref"]),
        0,
    );
    workspace
        .path()
        .join(stdout.lines().last().expect("the sweep folder"))
}

/// `vilab status --format json` of the Slurm sweep.
fn status_json(workspace: &Workspace) -> Value {
    let output = workspace.vilab(&["status", "sweep.yaml", "--out", "out", "--format", "json"]);
    output.assert_no_panic();
    serde_json::from_str(&output.stdout).unwrap_or_else(|error| {
        panic!("status JSON: {error}\n{}", output.stdout);
    })
}

/// The run folder of each trial of a sweep, in sweep order.
fn run_folders(sweep_dir: &Path) -> Vec<PathBuf> {
    let (by_id, order) = trials(sweep_dir);
    order
        .iter()
        .map(|id| {
            let run = by_id[id]["run"]
                .as_str()
                .unwrap_or_else(|| panic!("trial {id} has no run folder: {}", by_id[id]));
            sweep_dir.join(run)
        })
        .collect()
}

/// Every trial of the Slurm sweep is done, and its results equal the reference run's.
fn assert_done_like_reference(workspace: &Workspace, sweep_dir: &Path, reference: &Path) {
    let status = workspace.vilab(&["status", "sweep.yaml", "--out", "out"]);
    status.assert_code(0).assert_no_panic();
    for (slurm_run, reference_run) in run_folders(sweep_dir).iter().zip(run_folders(reference)) {
        assert_same_results(
            &reference_run,
            slurm_run,
            &format!("requeued trial {}", slurm_run.display()),
        );
    }
}

/// Each trial's requeues from `status --format json`, in sweep order.
fn requeues(status: &Value) -> Vec<Vec<Value>> {
    status["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .map(|trial| trial["requeues"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The output of array task `task` (`<job>_<index>`).
fn task_log(sweep_dir: &Path, task: &str) -> String {
    let path = sweep_dir.join(format!("slurm-{task}.out"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Waits until every trial of the Slurm sweep is training past `epoch`, as `vilab status`
/// reports it.
fn wait_for_epoch(workspace: &Workspace, epoch: u64) {
    let deadline = Instant::now() + REQUEUE_TIMEOUT;
    loop {
        let status = status_json(workspace);
        let reached = status["trials"]
            .as_array()
            .expect("trials")
            .iter()
            .all(|trial| trial["live"]["epoch"].as_u64().is_some_and(|at| at > epoch));
        if reached {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the trials did not reach epoch {epoch}: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn trials_longer_than_the_time_limit_requeue_themselves_and_match_an_uninterrupted_run() {
    let test =
        "trials_longer_than_the_time_limit_requeue_themselves_and_match_an_uninterrupted_run";
    if !cluster_ready(test) {
        return;
    }
    let workspace = Workspace::with_data1();
    // Over a minute of training on one core (more with three processes on two cores): longer
    // than the one-minute limit, whose warning comes 15 to 45 s into each run of a task.
    workspace.write("sweep.yaml", long_sweep("limit", 40, &["1.0e-3", "2.0e-3"]));
    let _cancel = CancelOnDrop(&workspace);
    let (sweep_dir, job) = submit(
        &workspace,
        &[
            "--time",
            "1",
            "--signal-before",
            "45",
            "--max-requeues",
            "10",
        ],
    );
    let reference = reference_run(&workspace);
    wait_for_array_within(&job, REQUEUE_TIMEOUT);

    assert_done_like_reference(&workspace, &sweep_dir, &reference);
    let status = status_json(&workspace);
    for (index, trial_requeues) in requeues(&status).iter().enumerate() {
        let task = format!("{job}_{index}");
        assert!(
            !trial_requeues.is_empty(),
            "task {task} was never requeued: {status}"
        );
        for requeue in trial_requeues {
            assert_eq!(requeue["task"], task.as_str(), "{requeue}");
            assert_eq!(requeue["by_vilab"], true, "{requeue}");
            assert_eq!(requeue["reason"], "time limit near (SIGUSR1)", "{requeue}");
        }
        let log = task_log(&sweep_dir, &task);
        let requeued = log
            .lines()
            .filter(|line| line.starts_with(&format!("task {task} requeues itself (")))
            .count();
        assert_eq!(
            requeued,
            trial_requeues.len(),
            "the log of {task} (appended over its runs) tells each requeue:\n{log}"
        );
        assert!(
            log.contains("resuming at epoch"),
            "a later run of {task} resumed from a checkpoint:\n{log}"
        );
    }
    // The text status counts them.
    let text = workspace.vilab(&["status", "sweep.yaml", "--out", "out"]);
    for (id, trial_requeues) in trials(&sweep_dir).1.iter().zip(requeues(&status)) {
        let line = text
            .stdout
            .lines()
            .find(|line| line.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("no status line for {id}:\n{}", text.stdout));
        assert!(
            line.contains(&format!(
                "requeued {}× (last: time limit near (SIGUSR1)",
                trial_requeues.len()
            )),
            "{line}"
        );
    }
}

/// Task 0 is preempted as `PreemptMode=REQUEUE` does it (Slurm sends SIGTERM, then requeues
/// it); task 1 only gets the SIGTERM of a preemption notice and must requeue itself.
fn preempt(job: &str, index: usize) {
    let task = format!("{job}_{index}");
    let output = if index == 0 {
        Command::new("scontrol").args(["requeue", &task]).output()
    } else {
        Command::new("scancel")
            .args(["--batch", "--signal=TERM", &task])
            .output()
    }
    .expect("scontrol/scancel runs");
    assert!(
        output.status.success(),
        "stopping {task}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn preempted_tasks_save_a_checkpoint_and_finish_without_a_second_submission() {
    let test = "preempted_tasks_save_a_checkpoint_and_finish_without_a_second_submission";
    if !cluster_ready(test) {
        return;
    }
    let workspace = Workspace::with_data1();
    workspace.write(
        "sweep.yaml",
        long_sweep("preempt", 24, &["1.0e-3", "2.0e-3"]),
    );
    let _cancel = CancelOnDrop(&workspace);
    let (sweep_dir, job) = submit(&workspace, &["--array-parallelism", "2"]);
    // Each task is stopped once its trial trains past epoch 2 (the tasks may start far apart
    // when other tests keep the cluster's cores busy).
    let mut stopped = [false, false];
    let deadline = Instant::now() + REQUEUE_TIMEOUT;
    while stopped.contains(&false) {
        let status = status_json(&workspace);
        for (index, trial) in status["trials"]
            .as_array()
            .expect("trials")
            .iter()
            .enumerate()
        {
            if stopped[index] {
                continue;
            }
            assert_ne!(
                trial["state"], "done",
                "trial {index} finished before it could be stopped: {status}"
            );
            if trial["live"]["epoch"].as_u64().is_some_and(|at| at > 2) {
                preempt(&job, index);
                stopped[index] = true;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the trials did not reach epoch 2: {status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let reference = reference_run(&workspace);
    wait_for_array_within(&job, REQUEUE_TIMEOUT);

    assert_done_like_reference(&workspace, &sweep_dir, &reference);
    let status = status_json(&workspace);
    let all = requeues(&status);
    assert_eq!(
        all[0].len(),
        1,
        "task 0 went back to the queue once: {status}"
    );
    assert_eq!(all[1].len(), 1, "task 1 requeued itself once: {status}");
    assert_eq!(all[1][0]["by_vilab"], true, "{status}");
    assert_eq!(all[1][0]["reason"], "terminated (SIGTERM)", "{status}");
    assert!(
        all[1][0]["checkpoint"].is_array(),
        "it stopped while training, at a checkpoint: {status}"
    );
    for index in 0..2 {
        let log = task_log(&sweep_dir, &format!("{job}_{index}"));
        assert!(log.contains("terminated (SIGTERM)"), "{log}");
        assert!(log.contains("resuming at epoch"), "{log}");
    }
}

#[test]
fn a_cancelled_task_does_not_requeue_itself() {
    if !cluster_ready("a_cancelled_task_does_not_requeue_itself") {
        return;
    }
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", long_sweep("cancel", 400, &["1.0e-3"]));
    let _cancel = CancelOnDrop(&workspace);
    let (sweep_dir, job) = submit(&workspace, &[]);
    wait_for_epoch(&workspace, 1);
    let cancelled = workspace.vilab(&["cancel", "sweep.yaml", "--out", "out"]);
    cancelled.assert_code(0).assert_no_panic();

    let task = format!("{job}_0");
    let deadline = Instant::now() + Duration::from_secs(120);
    let log = loop {
        let log = task_log(&sweep_dir, &task);
        if log.contains(&format!("task {task} not requeued")) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the task never said why it was not requeued:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        log.contains(&format!(
            "task {task} not requeued: cancelled by `vilab cancel`"
        )),
        "{log}"
    );
    // A requeued task would be listed as pending; a cancelled one leaves the queue.
    wait_for_array_within(&job, Duration::from_secs(60));
    assert!(queued_tasks(&job).is_empty());
    let recorded = read_json(&sweep_dir.join("slurm.json"));
    assert_eq!(
        recorded["cancelled"],
        serde_json::json!([task]),
        "{recorded}"
    );
    let status = status_json(&workspace);
    assert_eq!(status["trials"][0]["state"], "pending", "{status}");
    assert!(requeues(&status)[0].is_empty(), "{status}");
}
