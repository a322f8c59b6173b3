//! A sweep of 200 tiny trials through the localhost Slurm cluster as one job array with
//! `--array-parallelism`: every trial runs exactly once, the data stages are computed once for
//! all of them, `summary.csv` lists every trial, and `vilab status` accounts for all 200.
//! (How long `vilab status` takes on such a sweep is measured by `scripts/sweep-scale.sh`,
//! whose figure is in the README; a test asserts no times.)

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Workspace, entry_names};
use crate::slurm_launcher::{
    CancelOnDrop, cluster_ready, read_json, submissions, sweep_spec, trials, vilab,
    wait_for_array_within,
};

/// 200 tiny trials, two at a time on a two-core machine, with Slurm's scheduling between them.
const SCALE_TIMEOUT: Duration = Duration::from_secs(1200);

/// A 20 × 10 grid: 200 trials.
fn grid_of_200() -> String {
    let rates: Vec<String> = (0..20)
        .map(|index| format!("{:.5e}", 1.0e-3 * (1.0 + f64::from(index) * 0.05)))
        .collect();
    let decays: Vec<String> = (0..10)
        .map(|index| format!("{:.2}", 0.01 * f64::from(index)))
        .collect();
    format!(
        "  grid:\n    train.optimizer.lr: [{}]\n    train.optimizer.weight_decay: [{}]\n",
        rates.join(", "),
        decays.join(", ")
    )
}

#[test]
fn a_sweep_of_200_trials_runs_each_trial_exactly_once_through_slurm() {
    if !cluster_ready("a_sweep_of_200_trials_runs_each_trial_exactly_once_through_slurm") {
        return;
    }
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec("scale", 50, &grid_of_200()));
    let _cancel = CancelOnDrop(&workspace);
    let submitted = vilab(
        &workspace,
        &[
            "run",
            "sweep.yaml",
            "--out",
            "out",
            "--launcher",
            "slurm",
            "--array-parallelism",
            "8",
        ],
        0,
    );
    let sweep_dir = workspace.path().join(submitted.last_stdout_line());
    let (_, order) = trials(&sweep_dir);
    assert_eq!(order.len(), 200);
    let recorded = submissions(&sweep_dir);
    assert_eq!(recorded.len(), 1, "one array: {recorded:?}");
    let (job, submitted_trials) = &recorded[0];
    assert_eq!(submitted_trials, &order);
    let command = &read_json(&sweep_dir.join("slurm.json"))["submissions"][0]["command"];
    assert!(
        command
            .as_array()
            .expect("the sbatch command")
            .iter()
            .any(|word| word == "--array=0-199%8"),
        "{command}"
    );
    wait_for_array_within(job, SCALE_TIMEOUT);

    // Every trial done by its first and only attempt, each in a run folder of its own.
    let (by_id, _) = trials(&sweep_dir);
    let mut runs = BTreeSet::new();
    for (id, trial) in &by_id {
        assert_eq!(trial["state"], "done", "{trial}");
        assert_eq!(
            trial["attempts"], 1,
            "trial {id} ran more than once: {trial}"
        );
        runs.insert(trial["run"].as_str().expect("run folder").to_owned());
    }
    assert_eq!(runs.len(), 200, "two trials share a run folder");

    // Each task's log tells of one trial, and only one task computed the data stages.
    let logs: Vec<String> = entry_names(&sweep_dir)
        .into_iter()
        .filter(|name| name.starts_with(&format!("slurm-{job}_")) && name.ends_with(".out"))
        .collect();
    assert_eq!(logs.len(), 200, "{logs:?}");
    let mut split_computed = 0;
    for (index, id) in order.iter().enumerate() {
        let log = std::fs::read_to_string(sweep_dir.join(format!("slurm-{job}_{index}.out")))
            .expect("task log");
        let starts: Vec<&str> = log
            .lines()
            .filter(|line| line.starts_with("trial "))
            .collect();
        assert_eq!(starts.len(), 1, "task {index}:\n{log}");
        assert!(starts[0].starts_with(&format!("trial {id}:")), "{log}");
        split_computed += log
            .lines()
            .filter(|line| line.starts_with("split") && line.contains("computed in"))
            .count();
    }
    assert_eq!(split_computed, 1, "the data stages are computed once");

    // The summary ranks every trial once.
    let summary = std::fs::read_to_string(sweep_dir.join("summary.csv")).expect("summary.csv");
    let mut reader = csv::Reader::from_reader(summary.as_bytes());
    let headers = reader.headers().expect("a header").clone();
    let trial_column = headers
        .iter()
        .position(|name| name == "trial")
        .expect("a trial column");
    let state_column = headers
        .iter()
        .position(|name| name == "state")
        .expect("a state column");
    let mut summarised = BTreeSet::new();
    for row in reader.records() {
        let row = row.expect("a row");
        assert_eq!(&row[state_column], "done", "{row:?}");
        assert!(summarised.insert(row[trial_column].to_owned()), "{row:?}");
    }
    assert_eq!(
        summarised,
        order.iter().cloned().collect::<BTreeSet<_>>(),
        "summary.csv lists every trial once"
    );

    let status = vilab(
        &workspace,
        &["status", "sweep.yaml", "--out", "out", "--format", "json"],
        0,
    );
    let status: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["all_done"], true);
    assert_eq!(status["counts"]["done"], 200, "{}", status["counts"]);
}
