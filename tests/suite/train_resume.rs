//! Resuming an interrupted `train` stage gives bit for bit the result of an uninterrupted run on
//! the CPU backend: after `kill -9` once the first epoch's checkpoint exists (resume at an epoch
//! boundary), and after Ctrl-C (SIGINT: the step finishes, a mid-epoch checkpoint is saved, exit
//! 130, resume mid-epoch). The recipe exercises every piece of state: augmentation, MixUp/CutMix,
//! stochastic depth, warm-up + cosine, clipping, EMA and the best checkpoint. Training on two
//! CPU replicas (data parallel) stays close to training on one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Output, Workspace, spawn, wait};

const EXPERIMENT: &str = "\
name: resume
seed: 3
data:
  root: data
  image_size: 28
split:
  val_fraction: 0.3
  seed: 42
augment:
  train:
    - horizontal_flip: {p: 0.5}
    - random_resized_crop: {scale: [0.6, 1.0]}
model:
  name: vil_micro
  dim: 16
  depth: 2
  drop_path: 0.1
train:
  epochs: 4
  batch_size: 35
  workers: 2
  optimizer: {name: adamw, lr: 0.003, weight_decay: 0.05}
  schedule: {cosine: {warmup_epochs: 1, warmup_lr: 0.0001}}
  mixup: {mixup_alpha: 0.8, cutmix_alpha: 1.0, prob: 0.6, label_smoothing: 0.1}
  clip_grad: {norm: 1.0}
  ema: {decay: 0.99}
";

/// Files of the train stage that must match exactly; `history.csv` is compared without its
/// timing columns.
const EXACT_FILES: [&str; 6] = [
    "metrics.json",
    "last/model.safetensors",
    "last/config.json",
    "best/model.safetensors",
    "best/config.json",
    "history.csv",
];

fn run_to_end(workspace: &Workspace, out: &str) -> Output {
    let output = wait(
        spawn(workspace.command(&["run", "resume.yaml", "--out", out])),
        Duration::from_secs(300),
    );
    output.assert_code(0).assert_no_panic();
    output
}

fn train_dir(workspace: &Workspace, output: &Output) -> PathBuf {
    workspace
        .path()
        .join(output.last_stdout_line())
        .join("train")
}

/// The newest checkpoint folder under `<out>/cache/resume/*/`, if any.
fn checkpoint(out: &Path) -> Option<PathBuf> {
    let resume = out.join("cache").join("resume");
    let mut found: Vec<PathBuf> = std::fs::read_dir(resume)
        .ok()?
        .filter_map(Result::ok)
        .flat_map(|entry| std::fs::read_dir(entry.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("ckpt-"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Starts a run and waits until its first checkpoint exists; returns the running child.
fn start_until_checkpoint(workspace: &Workspace, out: &str) -> std::process::Child {
    let child = spawn(workspace.command(&["run", "resume.yaml", "--out", out]));
    let deadline = Instant::now() + Duration::from_secs(300);
    while checkpoint(&workspace.path().join(out)).is_none() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn without_timings(history: &str) -> String {
    history
        .lines()
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            cells[..cells.len() - 2].join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same_results(reference: &Path, resumed: &Path) {
    for file in EXACT_FILES {
        let read = |dir: &Path| {
            std::fs::read(dir.join(file)).unwrap_or_else(|error| panic!("{file}: {error}"))
        };
        let (expected, actual) = (read(reference), read(resumed));
        if file == "history.csv" {
            let text = |bytes: Vec<u8>| without_timings(&String::from_utf8(bytes).unwrap());
            assert_eq!(text(actual), text(expected), "{file} differs");
        } else {
            assert!(expected == actual, "{file} differs after resuming");
        }
    }
}

#[test]
fn kill_and_ctrl_c_both_resume_bit_for_bit() {
    let workspace = Workspace::with_data1();
    workspace.write("resume.yaml", EXPERIMENT);
    let reference = run_to_end(&workspace, "uninterrupted");
    let reference_dir = train_dir(&workspace, &reference);
    let history = std::fs::read_to_string(reference_dir.join("history.csv")).unwrap();
    assert_eq!(
        history.lines().count(),
        5,
        "a header and 4 epochs:\n{history}"
    );

    // kill -9 as soon as the first epoch's checkpoint is complete.
    let mut child = start_until_checkpoint(&workspace, "killed");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let saved = checkpoint(&workspace.path().join("killed")).expect("the checkpoint survives");
    let resumed = run_to_end(&workspace, "killed");
    assert!(
        resumed.stderr.contains("resuming at epoch"),
        "did not resume from {}:\n{}",
        saved.display(),
        resumed.stderr
    );
    assert_same_results(&reference_dir, &train_dir(&workspace, &resumed));
    assert!(
        checkpoint(&workspace.path().join("killed")).is_none(),
        "the resume folder is removed once the stage is committed"
    );

    // Ctrl-C once training runs: the step finishes, a checkpoint is written, exit code 130.
    let child = start_until_checkpoint(&workspace, "interrupted");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let interrupted = wait(child, Duration::from_secs(120));
    interrupted.assert_code(130).assert_no_panic();
    assert!(
        interrupted.stderr.contains("interrupted at epoch"),
        "{}",
        interrupted.stderr
    );
    let resumed = run_to_end(&workspace, "interrupted");
    assert!(
        resumed.stderr.contains("resuming at epoch"),
        "{}",
        resumed.stderr
    );
    assert_same_results(&reference_dir, &train_dir(&workspace, &resumed));
}

#[test]
fn two_replicas_train_like_one() {
    let workspace = Workspace::with_data1();
    workspace.write("resume.yaml", EXPERIMENT);
    let run = |out: &str, devices: &str| {
        let output = wait(
            spawn(workspace.command(&[
                "run",
                "resume.yaml",
                "--out",
                out,
                "--set",
                "train.epochs=3",
                "--set",
                "model.drop_path=0",
                "--set",
                &format!("train.devices={devices}"),
            ])),
            Duration::from_secs(300),
        );
        output.assert_code(0).assert_no_panic();
        let metrics = std::fs::read(train_dir(&workspace, &output).join("metrics.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&metrics).unwrap()
    };
    let one = run("one", "[0]");
    let two = run("two", "[0, 1]");
    let value = |metrics: &serde_json::Value, key: &str| {
        metrics["final"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {metrics}"))
    };
    // Only the order of floating-point sums differs, so the runs stay close.
    assert!((value(&one, "train_loss") - value(&two, "train_loss")).abs() < 0.02);
    assert!((value(&one, "val_loss") - value(&two, "val_loss")).abs() < 0.02);
    assert!((value(&one, "val_acc1") - value(&two, "val_acc1")).abs() <= 2.0);
}
