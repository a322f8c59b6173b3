//! `vilab runs` and the live status, through the real binary on real images.
//!
//! One output root gets a finished run, a failed run (its batch is larger than the training
//! split), an interrupted run (SIGTERM during training) and a two-trial sweep; `vilab runs`
//! lists them all with the right states and epochs (a snapshot of the markdown table, with
//! run ids, times and metric values redacted), `--format json` parses to the same, `--sort`
//! orders by a metric, and `--html` writes `index.html` plus every run's `report.html`.
//!
//! While a training runs (paused with SIGSTOP so the check cannot race it), its run folder's
//! `live/status.json` and `live/history.csv` hold the current epoch, `vilab status` and
//! `vilab runs` say it is running at that epoch, and `report.html` reloads itself; once it has
//! finished, `live/` is gone and the page is final.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Output, Workspace};
use crate::faults::{Watched, small_workspace};

const CLASSES: [&str; 3] = ["Bag", "Coat", "Sandal"];

/// A tiny model on 3 × 40 images at 16²: an epoch takes about a tenth of a second.
fn experiment(name: &str, epochs: u32) -> String {
    format!(
        "name: {name}\n\
         seed: 7\n\
         data:\n  root: data\n  image_size: 16\n\
         split:\n  val_fraction: 0.3\n  seed: 42\n\
         model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n  patch_size: 4\n\
         train:\n  epochs: {epochs}\n  batch_size: 12\n  workers: 1\n\
         plot:\n  formats: [svg]\n"
    )
}

fn workspace() -> Workspace {
    small_workspace(&CLASSES, 40)
}

fn vilab(workspace: &Workspace, args: &[&str], code: i32) -> Output {
    let output = workspace.vilab(args);
    output.assert_code(code).assert_no_panic();
    output
}

/// The markdown table of `vilab runs` with what differs from one test run to the next
/// replaced: run ids, times, metric values (kept: whether there is one), the epoch an
/// interrupted run reached. Rows sorted.
fn redacted_table(markdown: &str) -> String {
    let mut lines = markdown.lines();
    let header = lines.next().unwrap_or_default();
    let columns: Vec<&str> = header.trim_matches('|').split('|').map(str::trim).collect();
    let metric_start = columns
        .iter()
        .position(|column| column.starts_with("best val ACC1"))
        .expect("metric columns");
    let separator = lines.next().unwrap_or_default();
    let mut rows: Vec<String> = lines
        .map(|line| {
            let interrupted = line.contains("| interrupted |");
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .enumerate()
                .map(|(index, cell)| match index {
                    1 if cell != "—" => "[RUN]".to_owned(),
                    2 if !cell.is_empty() => "[TIME]".to_owned(),
                    // Where SIGTERM lands in training depends on the machine's speed.
                    4 if interrupted => "[EPOCH]".to_owned(),
                    index if index >= metric_start && cell != "—" => "[N]".to_owned(),
                    _ => cell.to_owned(),
                })
                .collect();
            format!("| {} |", cells.join(" | "))
        })
        .collect();
    rows.sort();
    format!("{header}\n{separator}\n{}\n", rows.join("\n"))
}

/// The run folders under `out/<name>/` (not the `latest` link).
fn run_folders(out: &Path, name: &str) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(out.join(name))
        .map(|items| {
            items
                .flatten()
                .filter(|item| item.file_type().is_ok_and(|kind| kind.is_dir()))
                .map(|item| item.path())
                .filter(|path| {
                    path.join("pending.json").is_file() || path.join("run.json").is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    folders.sort();
    folders
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", output.stdout))
}

/// Runs `file` and stops it with SIGTERM once its first epoch is out; `false` when training
/// ended before the signal arrived (then the caller tries again with more epochs).
fn interrupted_run(workspace: &Workspace, file: &str) -> bool {
    let mut child = Watched::spawn(workspace.command(&["run", file, "--out", "out"]));
    assert!(
        child.wait_for_line("train    epoch 1/"),
        "training never finished an epoch"
    );
    child.signal("TERM");
    let output = child.finish();
    output.assert_no_panic();
    output.code == 130
}

#[test]
fn runs_lists_done_failed_interrupted_and_sweep_runs_with_their_states() {
    let workspace = workspace();
    workspace.write("done.yaml", experiment("done", 2));
    vilab(&workspace, &["run", "done.yaml", "--out", "out"], 0);

    // 84 training images, drop_last: a batch of 200 leaves no step, which the train stage
    // refuses after split, stats and augment were computed.
    workspace.write("failed.yaml", experiment("failed", 2));
    let failed = vilab(
        &workspace,
        &[
            "run",
            "failed.yaml",
            "--out",
            "out",
            "--set",
            "train.batch_size=200",
        ],
        1,
    );
    assert!(
        failed.stderr.contains("train.batch_size"),
        "{}",
        failed.stderr
    );

    workspace.write("stopped.yaml", experiment("stopped", 400));
    assert!(
        interrupted_run(&workspace, "stopped.yaml"),
        "400 epochs ended before SIGTERM"
    );

    let mut sweep = experiment("swept", 1);
    sweep.push_str("sweep:\n  grid:\n    train.optimizer.lr: [1.0e-3, 3.0e-3]\n");
    workspace.write("sweep.yaml", sweep);
    vilab(&workspace, &["run", "sweep.yaml", "--out", "out"], 0);

    let table = vilab(&workspace, &["runs", "--out", "out", "--format", "md"], 0);
    insta::assert_snapshot!("runs_table", redacted_table(&table.stdout));

    let listed = json(&vilab(
        &workspace,
        &["runs", "--out", "out", "--format", "json"],
        0,
    ));
    let runs = listed["runs"].as_array().expect("runs");
    let state_of = |name: &str| -> Vec<(String, u64)> {
        runs.iter()
            .filter(|run| run["name"] == name)
            .map(|run| {
                (
                    run["state"].as_str().expect("state").to_owned(),
                    run["epoch"].as_u64().expect("epoch"),
                )
            })
            .collect()
    };
    assert_eq!(state_of("done"), [("done".to_owned(), 2)]);
    assert_eq!(state_of("failed"), [("failed".to_owned(), 0)]);
    let stopped = state_of("stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].0, "interrupted");
    assert!(
        stopped[0].1 >= 1,
        "the stopped run reached epoch {}",
        stopped[0].1
    );
    assert_eq!(
        state_of("swept"),
        [("done".to_owned(), 1), ("done".to_owned(), 1)]
    );
    let failed_row = runs
        .iter()
        .find(|run| run["name"] == "failed")
        .expect("failed");
    assert!(
        failed_row["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("train: ") && error.contains("batch_size")),
        "{failed_row}"
    );
    assert_eq!(
        listed["varied"],
        serde_json::json!(["train.epochs", "train.batch_size", "train.optimizer.lr"])
    );
    for run in runs.iter().filter(|run| run["name"] == "swept") {
        assert!(
            run["sweep"]
                .as_str()
                .is_some_and(|sweep| sweep.starts_with("sweep-"))
        );
        assert!(run["trial"].is_string());
        assert!(run["metrics"]["best_val_acc1"].is_f64(), "{run}");
    }

    // Sorted by a metric: every run with a value first, best first.
    let sorted = json(&vilab(
        &workspace,
        &["runs", "--out", "out", "--sort", "acc1", "--format", "json"],
        0,
    ));
    let values: Vec<Option<f64>> = sorted["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["metrics"]["best_val_acc1"].as_f64())
        .collect();
    let present: Vec<f64> = values.iter().map_while(|value| *value).collect();
    assert!(present.len() >= 3, "{values:?}");
    assert!(
        values[present.len()..].iter().all(Option::is_none),
        "{values:?}"
    );
    assert!(
        present.windows(2).all(|pair| pair[0] >= pair[1]),
        "{values:?}"
    );

    // One experiment only, and a metric or experiment that does not exist.
    let one = json(&vilab(
        &workspace,
        &["runs", "swept", "--out", "out", "--format", "json"],
        0,
    ));
    assert_eq!(one["runs"].as_array().map(Vec::len), Some(2));
    let unknown = vilab(&workspace, &["runs", "--out", "out", "--sort", "speed"], 2);
    assert!(
        unknown.stderr.contains("--sort speed: not a metric"),
        "{}",
        unknown.stderr
    );
    let missing = vilab(&workspace, &["runs", "nope", "--out", "out"], 2);
    assert!(
        missing.stderr.contains("no experiment named `nope`"),
        "{}",
        missing.stderr
    );

    // The index links every run's page, and each linked page exists.
    vilab(&workspace, &["runs", "--out", "out", "--html"], 0);
    let index = std::fs::read_to_string(workspace.path().join("out/index.html")).expect("index");
    for run in runs.iter().filter_map(|run| run["folder"].as_str()) {
        let page = format!("{run}/report.html");
        assert!(
            index.contains(&format!("href=\"{page}\"")),
            "index lacks {page}"
        );
        assert!(
            workspace.path().join("out").join(&page).is_file(),
            "{page} missing"
        );
    }
    assert!(index.contains("summary.html"));
    // The sweep's page links each trial's run page and inlines its plots.
    let sweep_dir = listed["sweeps"][0].as_str().expect("one sweep");
    let summary = std::fs::read_to_string(
        workspace
            .path()
            .join("out")
            .join(sweep_dir)
            .join("summary.html"),
    )
    .expect("summary.html");
    for run in runs.iter().filter(|run| run["name"] == "swept") {
        let id = run["run_id"].as_str().expect("run id");
        assert!(
            summary.contains(&format!("href=\"../{id}/report.html\"")),
            "summary lacks {id}"
        );
    }
    assert!(summary.contains("<svg"), "summary.html has no inline plot");
    let failed_page = std::fs::read_to_string(
        run_folders(&workspace.path().join("out"), "failed")[0].join("report.html"),
    )
    .expect("failed run's page");
    assert!(failed_page.contains("state-failed"));
    assert!(failed_page.contains("batch_size"));
}

#[test]
fn a_running_training_shows_its_epoch_in_the_run_folder_status_and_runs() {
    let workspace = workspace();
    workspace.write("live.yaml", experiment("live", 40));
    let mut child = Watched::spawn(workspace.command(&["run", "live.yaml", "--out", "out"]));
    assert!(
        child.wait_for_line("train    epoch 2/40"),
        "training never finished two epochs"
    );
    // Paused, the process keeps its lock and its files stay as they are while we look.
    child.signal("STOP");
    let out = workspace.path().join("out");
    let folders = run_folders(&out, "live");
    assert_eq!(folders.len(), 1, "{folders:?}");
    let run = &folders[0];
    let status: Value = serde_json::from_slice(
        &std::fs::read(run.join("live/status.json")).expect("live/status.json"),
    )
    .expect("status JSON");
    let epoch = status["epoch"].as_u64().expect("epoch");
    assert!(epoch >= 2, "{status}");
    assert_eq!(status["epochs"], 40);
    assert!(status["last_val_acc1"].is_f64(), "{status}");
    let history = std::fs::read_to_string(run.join("live/history.csv")).expect("live history");
    assert!(history.lines().count() >= 3, "{history}");
    let page = std::fs::read_to_string(run.join("report.html")).expect("live page");
    assert!(page.contains("http-equiv=\"refresh\""));
    assert!(page.contains("state-running"));

    let status_output = workspace.vilab(&["status", "live.yaml", "--out", "out"]);
    status_output.assert_no_panic();
    assert!(
        status_output.stdout.contains("running: epoch "),
        "{}",
        status_output.stdout
    );
    let status_json = workspace.vilab(&["status", "live.yaml", "--out", "out", "--format", "json"]);
    status_json.assert_code(1).assert_no_panic();
    let document = json(&status_json);
    assert_eq!(document["run"]["state"], "running", "{document}");
    assert_eq!(
        document["run"]["live"]["epoch"], status["epoch"],
        "{document}"
    );
    let listed = json(&vilab(
        &workspace,
        &["runs", "--out", "out", "--format", "json"],
        0,
    ));
    let row = &listed["runs"][0];
    assert_eq!(row["state"], "running", "{row}");
    assert!(row["epoch"].as_u64().is_some_and(|done| done >= 2), "{row}");
    assert!(row["live"]["eta_seconds"].is_f64(), "{row}");

    child.signal("CONT");
    let output = child.finish();
    output.assert_code(0).assert_no_panic();
    assert!(!run.join("live").exists(), "live/ left behind");
    let page = std::fs::read_to_string(run.join("report.html")).expect("final page");
    assert!(!page.contains("http-equiv=\"refresh\""));
    assert!(page.contains("state-done"));
    let listed = json(&vilab(
        &workspace,
        &["runs", "--out", "out", "--format", "json"],
        0,
    ));
    assert_eq!(listed["runs"][0]["state"], "done");
    assert_eq!(listed["runs"][0]["epoch"], 40);
}
