//! Sweeps through the real binary on a copy of `data1/`, with a tiny model so each trial
//! trains for a second or two: a 2×2 grid over `train.*` runs four trials whose data stages are
//! computed once; a sweep killed (parent and trial processes) in the middle of a trial's
//! training resumes — finished trials untouched, the interrupted one continuing from its
//! checkpoint — and ends bit for bit where an uninterrupted sweep ends; a diverging trial is
//! reported while the others finish, `--fail-fast` stops at it, a re-run retries it; `--trial`
//! runs one trial on its own; bad sweep paths and values are reported at their lines.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    DATA_STAGES, Output, PROCESS_TIMEOUT, Workspace, entry_names, read_run_json, spawn, stage_runs,
    tree_state, wait,
};

/// A tiny-model experiment on `data/` with a sweep section appended.
fn sweep_spec(epochs: u32, batch_size: u32, sweep: &str) -> String {
    format!(
        "name: sw\n\
         seed: 42\n\
         data:\n  root: data\n  image_size: 16\n\
         model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n\
         train:\n  epochs: {epochs}\n  batch_size: {batch_size}\n  workers: 0\n\
         plot:\n  formats: [png]\n\
         sweep:\n{sweep}"
    )
}

const GRID: &str = "  grid:\n    train.optimizer.lr: [1.0e-3, 3.0e-3]\n    \
                    train.optimizer.weight_decay: [0.0, 0.1]\n";

/// Runs `vilab ARGS` in the workspace and checks the exit code.
fn vilab(workspace: &Workspace, args: &[&str], code: i32) -> Output {
    let output = workspace.vilab(args);
    output.assert_code(code).assert_no_panic();
    output
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The trials of a sweep.json as id ⇒ trial.
fn trials(sweep_dir: &Path) -> BTreeMap<String, Value> {
    read_json(&sweep_dir.join("sweep.json"))["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .map(|trial| (trial["id"].as_str().expect("id").to_owned(), trial.clone()))
        .collect()
}

/// The run folder each trial's `trial-<id>` link leads to.
fn trial_run_dirs(sweep_dir: &Path) -> BTreeMap<String, PathBuf> {
    entry_names(sweep_dir)
        .into_iter()
        .filter_map(|name| {
            let id = name.strip_prefix("trial-")?.to_owned();
            let target = std::fs::read_link(sweep_dir.join(&name)).expect("trial link");
            Some((id, sweep_dir.join(target)))
        })
        .collect()
}

#[test]
fn a_grid_runs_every_trial_and_computes_the_data_stages_once() {
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec(1, 50, GRID));
    let output = vilab(
        &workspace,
        &["run", "sweep.yaml", "--out", "out", "--jobs", "2"],
        0,
    );
    let sweep_dir = workspace.path().join(output.last_stdout_line());
    assert!(
        sweep_dir
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("sweep-")),
        "{}",
        sweep_dir.display()
    );

    let trials = trials(&sweep_dir);
    assert_eq!(trials.len(), 4, "{trials:?}");
    for (id, trial) in &trials {
        assert_eq!(trial["state"], "done", "trial {id}: {trial}");
    }
    let run_dirs = trial_run_dirs(&sweep_dir);
    assert_eq!(
        run_dirs.keys().collect::<BTreeSet<_>>(),
        trials.keys().collect::<BTreeSet<_>>(),
        "one trial-<id> link per trial"
    );
    let distinct: BTreeSet<PathBuf> = run_dirs
        .values()
        .map(|dir| dir.canonicalize().expect("trial run folder"))
        .collect();
    assert_eq!(distinct.len(), 4, "four distinct run folders");

    // Only train.* varies: each data stage has one key, computed by exactly one trial.
    let mut records: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for dir in run_dirs.values() {
        for stage in stage_runs(&read_run_json(dir)) {
            records
                .entry(stage.stage)
                .or_default()
                .push((stage.key, stage.state));
        }
    }
    for stage in DATA_STAGES {
        let runs = &records[stage];
        let keys: BTreeSet<&String> = runs.iter().map(|(key, _)| key).collect();
        assert_eq!(
            keys.len(),
            1,
            "{stage} keys differ between trials: {runs:?}"
        );
        let computed = runs.iter().filter(|(_, state)| state == "computed").count();
        assert_eq!(computed, 1, "{stage} computed {computed} times: {runs:?}");
    }
    let train_keys: BTreeSet<&String> = records["train"].iter().map(|(key, _)| key).collect();
    assert_eq!(train_keys.len(), 4, "every trial trains its own model");

    // The summary: one row per trial, best first by evaluate.metric (val_acc1).
    let summary = std::fs::read_to_string(sweep_dir.join("summary.csv")).expect("summary.csv");
    let mut reader = csv::Reader::from_reader(summary.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    for column in [
        "trial",
        "train.optimizer.lr",
        "train.optimizer.weight_decay",
        "best_val_acc1",
        "best_val_acc5",
        "ema_val_acc1",
        "final_train_loss",
        "epochs",
        "seconds",
    ] {
        assert!(
            header.contains(&column.to_owned()),
            "{column} in {header:?}"
        );
    }
    let column = |name: &str| header.iter().position(|h| h == name).expect("column");
    let rows: Vec<csv::StringRecord> = reader.records().map(|row| row.expect("row")).collect();
    assert_eq!(rows.len(), 4);
    let accuracies: Vec<f64> = rows
        .iter()
        .map(|row| row[column("best_val_acc1")].parse().expect("accuracy"))
        .collect();
    assert!(
        accuracies.windows(2).all(|pair| pair[0] >= pair[1]),
        "not sorted by val_acc1: {accuracies:?}"
    );
    for row in &rows {
        assert_eq!(&row[column("epochs")], "1");
        assert!(trials.contains_key(&row[column("trial")]));
    }
    let markdown = std::fs::read_to_string(sweep_dir.join("summary.md")).expect("summary.md");
    assert_eq!(
        markdown
            .lines()
            .filter(|line| line.contains("| done |"))
            .count(),
        4,
        "{markdown}"
    );
    let plot = image::open(sweep_dir.join("summary.png")).expect("summary.png");
    assert!(plot.width() > 400 && plot.height() > 200);

    // Again: every trial is found complete, no trial process starts, no run folder changes.
    let before: Vec<_> = run_dirs.values().map(|dir| tree_state(dir)).collect();
    let again = vilab(&workspace, &["run", "sweep.yaml", "--out", "out"], 0);
    assert_eq!(
        again.stderr.matches("done already —").count(),
        4,
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("started"), "{}", again.stderr);
    let after: Vec<_> = run_dirs.values().map(|dir| tree_state(dir)).collect();
    assert_eq!(before, after, "a re-run touched a finished trial");

    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "out"], 0);
    assert!(
        status
            .stdout
            .contains("4 trials — 4 done, 0 failed, 0 running, 0 pending"),
        "{}",
        status.stdout
    );
}

/// The train stage's resume folders (checkpoints of trainings in progress).
fn resume_folders(out: &Path) -> Vec<String> {
    entry_names(&out.join("cache").join("resume"))
        .into_iter()
        .filter(|name| name.starts_with("train-"))
        .collect()
}

/// Whether a training in progress has written a complete checkpoint (`ckpt-*/state.json`).
fn has_checkpoint(out: &Path) -> bool {
    resume_folders(out).iter().any(|folder| {
        let folder = out.join("cache").join("resume").join(folder);
        entry_names(&folder)
            .iter()
            .any(|name| name.starts_with("ckpt-") && folder.join(name).join("state.json").is_file())
    })
}

/// Whether a trial record in the sweep folder under `out` has `state`.
fn records_in_state(out: &Path, state: &str) -> usize {
    let Some(sweep) = entry_names(&out.join("sw"))
        .into_iter()
        .find(|name| name.starts_with("sweep-"))
    else {
        return 0;
    };
    let folder = out.join("sw").join(sweep).join("trials");
    entry_names(&folder)
        .iter()
        .filter(|name| name.ends_with(".json"))
        .filter_map(|name| std::fs::read(folder.join(name)).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(|record| record["state"] == state)
        .count()
}

/// Results of a finished trial that are bit-for-bit reproducible (no timings).
fn reproducible_files(run_dir: &Path) -> BTreeMap<String, String> {
    [
        "train/metrics.json",
        "train/best/model.safetensors",
        "train/last/model.safetensors",
        "evaluate/metrics.json",
        "evaluate/classification_report.csv",
    ]
    .into_iter()
    .map(|file| {
        let bytes = std::fs::read(run_dir.join(file))
            .unwrap_or_else(|error| panic!("{}/{file}: {error}", run_dir.display()));
        (file.to_owned(), blake3::hash(&bytes).to_hex().to_string())
    })
    .collect()
}

#[test]
fn a_killed_sweep_resumes_and_ends_where_an_uninterrupted_one_ends() {
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec(3, 20, GRID));
    let reference = vilab(&workspace, &["run", "sweep.yaml", "--out", "whole"], 0);
    let reference_dir = workspace.path().join(reference.last_stdout_line());

    // Kill the sweep (parent and trial processes, one process group) once a trial is done and
    // the next one has written a training checkpoint but not finished.
    let out = workspace.path().join("killed");
    let mut command = workspace.command(&["run", "sweep.yaml", "--out", "killed"]);
    command.process_group(0);
    let child = spawn(command);
    let group = child.id();
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        let running_with_checkpoint =
            records_in_state(&out, "running") == 1 && has_checkpoint(&out);
        if records_in_state(&out, "done") >= 1 && running_with_checkpoint {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never reached a resumable point"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .status()
        .expect("kill");
    assert!(killed.success());
    let output = wait(child, PROCESS_TIMEOUT);
    assert_eq!(
        output.code, -1,
        "the sweep was not killed: {}",
        output.stderr
    );

    let sweep_dir = workspace
        .path()
        .join("killed/sw")
        .join(reference_dir.file_name().expect("sweep folder name"));
    let finished: BTreeMap<String, PathBuf> = trial_run_dirs(&sweep_dir);
    assert!(!finished.is_empty() && finished.len() < 4, "{finished:?}");
    let finished_state: BTreeMap<String, _> = finished
        .iter()
        .map(|(id, dir)| (id.clone(), tree_state(dir)))
        .collect();
    let interrupted_resume = resume_folders(&out);

    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "killed"], 1);
    assert!(status.stdout.contains("pending"), "{}", status.stdout);
    assert!(!status.stdout.contains("running "), "{}", status.stdout);

    let resumed = vilab(&workspace, &["run", "sweep.yaml", "--out", "killed"], 0);
    assert_eq!(
        resumed.stderr.matches("done already —").count(),
        finished.len(),
        "{}",
        resumed.stderr
    );
    assert!(
        resumed.stderr.contains("resuming at epoch"),
        "the interrupted trial did not resume from its checkpoint (resume {interrupted_resume:?}):\n{}",
        resumed.stderr
    );
    for (id, state) in &finished_state {
        assert_eq!(
            &tree_state(&finished[id]),
            state,
            "finished trial {id} was touched by the re-run"
        );
    }
    assert!(resume_folders(&out).is_empty(), "checkpoints left behind");

    let reference_runs = trial_run_dirs(&reference_dir);
    let resumed_runs = trial_run_dirs(&sweep_dir);
    assert_eq!(reference_runs.len(), 4);
    assert_eq!(
        reference_runs.keys().collect::<Vec<_>>(),
        resumed_runs.keys().collect::<Vec<_>>()
    );
    for (id, reference_run) in &reference_runs {
        assert_eq!(
            reference_run.file_name(),
            resumed_runs[id].file_name(),
            "trial {id} has another run id"
        );
        assert_eq!(
            reproducible_files(reference_run),
            reproducible_files(&resumed_runs[id]),
            "trial {id} differs from the uninterrupted sweep"
        );
    }
}

const FAILING_LIST: &str = "  list:\n    - {train.optimizer.lr: 1.0e4}\n    \
                            - {train.optimizer.lr: 1.0e-3}\n    \
                            - {train.optimizer.lr: 2.0e-3}\n";

#[test]
fn a_failing_trial_is_reported_fail_fast_stops_and_a_rerun_retries() {
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec(1, 50, FAILING_LIST));

    let stopped = vilab(
        &workspace,
        &["run", "sweep.yaml", "--out", "out", "--fail-fast"],
        1,
    );
    let sweep_dir = workspace.path().join(stopped.last_stdout_line());
    let listed = trials(&sweep_dir);
    let (bad, bad_trial) = listed
        .iter()
        .find(|(_, trial)| trial["overrides"]["train.optimizer.lr"] == 1.0e4)
        .expect("the diverging trial");
    assert_eq!(bad_trial["state"], "failed", "{bad_trial}");
    let error = bad_trial["error"].as_str().expect("error recorded");
    assert!(error.contains("train:") && error.contains("NaN"), "{error}");
    let others: Vec<&Value> = listed
        .values()
        .filter(|trial| trial["id"] != bad.as_str())
        .collect();
    for trial in &others {
        assert_eq!(trial["state"], "pending", "--fail-fast ran {trial}");
    }
    assert!(
        stopped.stderr.contains("failed trials:") && stopped.stderr.contains(bad.as_str()),
        "{}",
        stopped.stderr
    );

    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "out"], 1);
    assert!(
        status
            .stdout
            .contains("3 trials — 0 done, 1 failed, 0 running, 2 pending"),
        "{}",
        status.stdout
    );
    for line in status.stdout.lines().skip(1) {
        if line.contains(" pending ") {
            assert!(line.ends_with("— train: missing"), "{line}");
        } else {
            assert!(
                line.contains(" failed ") && line.contains("last attempt: train:"),
                "{line}"
            );
        }
    }

    // Without --fail-fast the others finish, the failure is retried (and fails again).
    let full = vilab(&workspace, &["run", "sweep.yaml", "--out", "out"], 1);
    let listed = trials(&sweep_dir);
    assert_eq!(listed[bad.as_str()]["state"], "failed");
    assert_eq!(
        listed[bad.as_str()]["attempts"],
        2,
        "the failed trial was not retried"
    );
    for trial in listed.values().filter(|trial| trial["id"] != bad.as_str()) {
        assert_eq!(trial["state"], "done", "{trial}");
    }
    assert!(
        full.stderr.contains(&format!("  {bad}  ")),
        "{}",
        full.stderr
    );
    let markdown = std::fs::read_to_string(sweep_dir.join("summary.md")).expect("summary.md");
    assert!(markdown.contains("## Failed trials") && markdown.contains(bad.as_str()));
    let log = std::fs::read_to_string(sweep_dir.join("trials").join(format!("{bad}.log")))
        .expect("the failed trial's log");
    assert!(log.contains("NaN"), "{log}");
}

#[test]
fn one_trial_runs_on_its_own_by_id_prefix() {
    let workspace = Workspace::with_data1();
    workspace.write("sweep.yaml", sweep_spec(1, 50, GRID));
    let status = vilab(&workspace, &["status", "sweep.yaml", "--out", "out"], 1);
    let first_id = status
        .stdout
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .expect("a trial line")
        .to_owned();

    let output = vilab(
        &workspace,
        &[
            "run",
            "sweep.yaml",
            "--out",
            "out",
            "--trial",
            &first_id[..6],
        ],
        0,
    );
    let run_dir = workspace.path().join(output.last_stdout_line());
    assert!(run_dir.join("run.json").is_file());
    let sweep_dir = entry_names(&workspace.path().join("out/sw"))
        .into_iter()
        .find(|name| name.starts_with("sweep-"))
        .map(|name| workspace.path().join("out/sw").join(name))
        .expect("sweep folder");
    let listed = trials(&sweep_dir);
    assert_eq!(listed[&first_id]["state"], "done");
    assert_eq!(
        listed
            .values()
            .filter(|trial| trial["state"] == "pending")
            .count(),
        3
    );
    assert_eq!(
        trial_run_dirs(&sweep_dir)[&first_id]
            .canonicalize()
            .unwrap(),
        run_dir.canonicalize().unwrap()
    );

    let unknown = vilab(
        &workspace,
        &["run", "sweep.yaml", "--out", "out", "--trial", "zzzz"],
        1,
    );
    assert!(
        unknown.stderr.contains("no trial `zzzz`"),
        "{}",
        unknown.stderr
    );
    let not_a_sweep = workspace.write(
        "plain.yaml",
        "name: plain\ndata:\n  root: data\n  image_size: 16\n",
    );
    let plain = vilab(
        &workspace,
        &["run", &not_a_sweep.display().to_string(), "--trial", "ab"],
        2,
    );
    assert!(
        plain.stderr.contains("has no `sweep` section"),
        "{}",
        plain.stderr
    );
}

#[test]
fn bad_sweep_paths_and_values_are_reported_at_their_lines() {
    let workspace = Workspace::with_data1();
    workspace.write(
        "paths.yaml",
        sweep_spec(
            1,
            50,
            "  grid:\n    train.optimizer.lrr: [1.0e-3]\n    trian.epochs: [1]\n    \
             name: [x]\n  list:\n    - {model.dept: 3}\n  random:\n    n: 2\n    params:\n      \
             train.optimizer.weight_decay: {loguniform: [0.0, 1.0]}\n",
        ),
    );
    let paths = vilab(&workspace, &["validate", "paths.yaml"], 2);
    insta::assert_snapshot!("bad_sweep_paths", workspace.redact(&paths.stderr));

    workspace.write(
        "values.yaml",
        sweep_spec(
            1,
            50,
            "  grid:\n    train.optimizer.lr: [1.0e-3, -1]\n    train.batch_size: [50, 0]\n",
        ),
    );
    let values = vilab(&workspace, &["validate", "values.yaml"], 2);
    insta::assert_snapshot!("bad_sweep_values", workspace.redact(&values.stderr));

    workspace.write(
        "kinds.yaml",
        sweep_spec(
            1,
            50,
            "  random:\n    n: 2\n    params:\n      train.mixup.mixup_alpha: {unifrm: [0.0, 1.0]}\n",
        ),
    );
    let kinds = vilab(&workspace, &["validate", "kinds.yaml"], 2);
    assert_eq!(
        kinds.stderr.trim_end(),
        "kinds.yaml:20:33: sweep.random.params.train.mixup.mixup_alpha.unifrm: unknown kind; \
         did you mean `uniform`?"
    );
}
