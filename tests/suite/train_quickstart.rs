//! The quickstart, shortened: a small Vision-LSTM trained from scratch on data1/ (700 training
//! and 300 validation images of 10 Fashion-MNIST classes) must beat chance (10%) by a wide
//! margin — at least 50% validation ACC1 — and write every output of the train stage.

use std::time::Duration;

use serde_json::Value;

use crate::common::{Workspace, spawn, wait};

/// `experiments/quickstart.yaml` with a narrower, shallower model and fewer epochs, so the test
/// stays around a minute on 2 cores.
const EXPERIMENT: &str = "\
name: quickstart_short
seed: 42
data:
  root: data
  image_size: 28
split:
  val_fraction: 0.3
  seed: 42
model:
  name: vil_micro
  dim: 48
  depth: 4
train:
  epochs: 5
  batch_size: 32
  optimizer: {name: adamw, lr: 0.002, weight_decay: 0.05}
  schedule: {cosine: {warmup_epochs: 0.5, warmup_lr: 0.0001}}
";

#[test]
fn a_short_quickstart_learns_the_classes() {
    let workspace = Workspace::with_data1();
    workspace.write("quickstart.yaml", EXPERIMENT);
    let output = wait(
        spawn(workspace.command(&["run", "quickstart.yaml"])),
        Duration::from_secs(600),
    );
    output.assert_code(0).assert_no_panic();
    let train = workspace
        .path()
        .join(output.last_stdout_line())
        .join("train");
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(train.join("metrics.json")).unwrap()).unwrap();
    let best = metrics["best"]["val_acc1"].as_f64().expect("best val_acc1");
    let last = metrics["final"]["val_acc1"]
        .as_f64()
        .expect("final val_acc1");
    assert!(
        best >= 50.0,
        "best val ACC1 {best}% (chance is 10%)\n{metrics:#}"
    );
    assert!(last >= 45.0, "final val ACC1 {last}%\n{metrics:#}");
    assert_eq!(metrics["epochs"], 5);
    let history = std::fs::read_to_string(train.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 6, "{history}");
    for file in [
        "best/model.safetensors",
        "best/config.json",
        "last/model.safetensors",
    ] {
        assert!(train.join(file).is_file(), "{file} missing");
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(train.join("best/config.json")).unwrap()).unwrap();
    assert_eq!(config["classes"].as_array().map(Vec::len), Some(10));
    assert_eq!(config["epoch"], metrics["best_epoch"]);
}
