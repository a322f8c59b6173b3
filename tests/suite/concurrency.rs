//! Concurrent processes on one output folder, through the real binary: four `vilab run` at
//! once — two of the same spec, two whose specs share only the data stages with it — all
//! succeed, compute every stage key exactly once between them (the others wait on the entry's
//! lock and reuse it), and leave complete run folders whose links reach whole entries. With
//! `vilab gc` running in a loop meanwhile, the same holds and gc deletes nothing the runs use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{self, Output, Workspace, read_run_json, stage_runs};
use crate::faults::{Watched, assert_matches_manifest, small_workspace};

/// One epoch of a tiny model; the `--set` lines below make the other specs.
const EXPERIMENT: &str = "\
name: NAME
seed: 42
data:
  root: data
  image_size: 24
split:
  val_fraction: 0.3
  seed: 42
model:
  name: vil_micro
  dim: 16
  depth: 2
  patch_size: 6
train:
  epochs: 1
  batch_size: 20
  workers: 1
plot:
  formats: [png]
";

/// (experiment file, experiment name, extra settings) of the four processes.
const RUNS: [(&str, &str, &[&str]); 4] = [
    ("same.yaml", "same", &[]),
    ("same.yaml", "same", &[]),
    ("lr.yaml", "lr", &["--set", "train.optimizer.lr=0.0005"]),
    ("epochs.yaml", "epochs", &["--set", "train.epochs=2"]),
];

const STAGES: [&str; 6] = ["split", "stats", "augment", "train", "evaluate", "plot"];

fn workspace() -> Workspace {
    // Ten classes of 40 images: the data stages take long enough for the processes to meet
    // at each missing entry.
    let workspace = small_workspace(
        &[
            "Ankle_boot",
            "Bag",
            "Coat",
            "Dress",
            "Pullover",
            "Sandal",
            "Shirt",
            "Sneaker",
            "T-shirt_top",
            "Trouser",
        ],
        40,
    );
    for (file, name, _) in RUNS {
        workspace.write(file, EXPERIMENT.replace("NAME", name));
    }
    workspace
}

/// Starts the four runs at once and waits for them.
fn run_four(workspace: &Workspace) -> Vec<Output> {
    let children: Vec<Watched> = RUNS
        .iter()
        .map(|(file, _, extra)| {
            let mut args = vec!["run", file, "--out", "out"];
            args.extend_from_slice(extra);
            Watched::spawn(workspace.command(&args))
        })
        .collect();
    children.into_iter().map(Watched::finish).collect()
}

/// Stage ⇒ key of a run folder.
fn keys(run_dir: &Path) -> BTreeMap<String, String> {
    stage_runs(&read_run_json(run_dir))
        .into_iter()
        .map(|run| (run.stage, run.key))
        .collect()
}

/// The stages a process says it computed (`train    computed in 1.2 s — ...`).
fn computed_stages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| {
            let (stage, rest) = line.split_once(' ')?;
            (STAGES.contains(&stage) && rest.trim_start().starts_with("computed in"))
                .then(|| stage.to_owned())
        })
        .collect()
}

/// Checks what the four processes did; returns their run folders.
fn assert_each_key_computed_once(workspace: &Workspace, outputs: &[Output]) -> Vec<PathBuf> {
    let mut computations: BTreeMap<String, usize> = BTreeMap::new();
    let mut run_dirs = Vec::new();
    for output in outputs {
        output.assert_code(0).assert_no_panic();
        let run_dir = workspace.path().join(output.last_stdout_line());
        let run_keys = keys(&run_dir);
        assert_eq!(
            run_keys
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .len(),
            STAGES.len(),
            "{}: {run_keys:?}",
            run_dir.display()
        );
        for key in run_keys.values() {
            computations.entry(key.clone()).or_default();
        }
        for stage in computed_stages(&output.stderr) {
            *computations.entry(run_keys[&stage].clone()).or_default() += 1;
        }
        run_dirs.push(run_dir);
    }
    let report = || {
        outputs
            .iter()
            .map(|output| output.stderr.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    for (key, count) in &computations {
        assert_eq!(
            *count,
            1,
            "stage key {key} computed {count} times:\n{}",
            report()
        );
    }
    // The same spec twice, and two specs sharing only split, stats and augment: three
    // trainings, each with its own evaluate and plot.
    assert_eq!(computations.len(), 3 + 3 * 3, "{computations:?}");
    assert_eq!(
        run_dirs[0], run_dirs[1],
        "the same spec shares a run folder"
    );
    run_dirs
}

/// Every run folder's links reach entries that are whole, and nothing says it is unfinished.
fn assert_run_folders_complete(run_dirs: &[PathBuf]) {
    for run_dir in run_dirs {
        for stage in STAGES {
            let entry = std::fs::canonicalize(run_dir.join(stage)).unwrap_or_else(|error| {
                panic!(
                    "{}/{stage}: link does not resolve: {error}",
                    run_dir.display()
                )
            });
            assert_matches_manifest(&entry);
        }
        assert!(run_dir.join("spec.yaml").is_file());
        assert!(!run_dir.join("pending.json").exists());
    }
}

#[test]
fn four_runs_at_once_compute_each_stage_key_once() {
    let workspace = workspace();
    let outputs = run_four(&workspace);
    let run_dirs = assert_each_key_computed_once(&workspace, &outputs);
    assert_run_folders_complete(&run_dirs);
}

#[test]
fn gc_running_alongside_deletes_nothing_the_runs_use() {
    let workspace = workspace();
    // gc needs the output folder to exist; the runs create everything in it.
    std::fs::create_dir_all(workspace.path().join("out")).expect("output folder");
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = Arc::clone(&stop);
        let root = workspace.path().to_path_buf();
        std::thread::spawn(move || {
            let mut outputs = Vec::new();
            // At least one pass, however fast the runs are.
            loop {
                let output =
                    Watched::spawn(common::vilab_command(&root, &["gc", "--out", "out"])).finish();
                outputs.push(output);
                if stop.load(Ordering::SeqCst) {
                    break outputs;
                }
            }
        })
    };
    let outputs = run_four(&workspace);
    stop.store(true, Ordering::SeqCst);
    let collections = collector.join().expect("gc loop");
    for collection in &collections {
        collection.assert_code(0).assert_no_panic();
        for line in collection.stdout.lines() {
            assert!(
                !line.starts_with("deleted entry") && !line.starts_with("deleted resume"),
                "gc deleted something a running experiment uses: {line}\n{}",
                collection.stdout
            );
        }
    }
    let run_dirs = assert_each_key_computed_once(&workspace, &outputs);
    assert_run_folders_complete(&run_dirs);
    eprintln!(
        "{} gc passes ran alongside the four runs",
        collections.len()
    );
}
