//! The training fields of an experiment: problems a schema cannot see, and the mistakes a
//! `train.checkpoint_every` interval can hold, are reported by `vilab validate` with their
//! dotted path, and a loss that blows up stops training with an
//! error naming the epoch and step instead of training on NaN.

use crate::common::Workspace;

const BASE: &str = "\
name: spec_check
data:
  root: data
  image_size: 28
model:
  name: vil_micro
  dim: 16
  depth: 2
train:
  epochs: 1
  batch_size: 35
";

#[test]
fn cross_field_problems_name_their_field() {
    let workspace = Workspace::with_data1();
    workspace.write("spec.yaml", BASE);
    let cases = [
        (
            "train.select=ema_val_acc1",
            "train.ema.enabled=false",
            "train.select",
            "needs ema.enabled: true",
        ),
        (
            "train.precision=bf16",
            "train.epochs=1",
            "train.precision",
            "needs backend: cuda or wgpu",
        ),
        (
            "train.devices=[0, 1, 0]",
            "train.epochs=1",
            "train.devices.2",
            "listed twice",
        ),
        (
            "model.patch_size=5",
            "train.epochs=1",
            "model.patch_size",
            "must divide data.image_size 28",
        ),
        (
            "model.conv_kind=2d",
            "model.conv_kernel_size=4",
            "model.conv_kernel_size",
            "must be odd for 2d convolutions",
        ),
        (
            "train.clip_grad={norm: 0}",
            "train.epochs=1",
            "train.clip_grad.norm",
            "must be > 0",
        ),
        (
            "train.ema.decay=1.0",
            "train.epochs=1",
            "train.ema.decay",
            "must be in [0, 1)",
        ),
    ];
    for (first, second, field, message) in cases {
        let output = workspace.vilab(&["validate", "spec.yaml", "--set", first, "--set", second]);
        output.assert_no_panic();
        assert_eq!(
            output.code, 2,
            "{first}: expected a validation error\n{}",
            output.stderr
        );
        let line = output
            .stderr
            .lines()
            .find(|line| line.contains(field))
            .unwrap_or_else(|| panic!("{first}: no problem names {field}:\n{}", output.stderr));
        assert!(line.contains(message), "{first}: {line}");
    }
    workspace
        .vilab(&["validate", "spec.yaml"])
        .assert_code(0)
        .assert_no_panic();
}

#[test]
fn checkpoint_every_mistakes_name_the_field() {
    let workspace = Workspace::with_data1();
    workspace.write("spec.yaml", BASE);
    let cases = [
        (
            "{steps: 0}",
            "train.checkpoint_every.steps",
            "must be ≥ 1 (got 0)",
        ),
        (
            "{steps: 2.5}",
            "train.checkpoint_every.steps",
            "expected an integer",
        ),
        (
            "{minutes: 0}",
            "train.checkpoint_every.minutes",
            "must be > 0 (got 0)",
        ),
        (
            "{minutes: -1.5}",
            "train.checkpoint_every.minutes",
            "must be > 0 (got -1.5)",
        ),
        (
            "{minutes: .inf}",
            "train.checkpoint_every.minutes",
            "expected a number",
        ),
        (
            "{seconds: 30}",
            "train.checkpoint_every.seconds",
            "unknown kind; expected one of: steps, minutes",
        ),
        (
            "{steps: 10, minutes: 5}",
            "train.checkpoint_every",
            "exactly one of: steps, minutes",
        ),
        (
            "100",
            "train.checkpoint_every",
            "exactly one of: steps, minutes",
        ),
    ];
    for (value, field, message) in cases {
        let set = format!("train.checkpoint_every={value}");
        let output = workspace.vilab(&["validate", "spec.yaml", "--set", &set]);
        output.assert_no_panic();
        assert_eq!(output.code, 2, "{set}: expected a validation error");
        assert_eq!(
            output.stderr.lines().count(),
            1,
            "{set}: one problem, one line:\n{}",
            output.stderr
        );
        let expected = format!("--set {set}: {field}: ");
        assert!(
            output.stderr.starts_with(&expected) && output.stderr.contains(message),
            "{set}: expected `{expected}…{message}`, got:\n{}",
            output.stderr
        );
    }
    for value in [
        "{steps: 1}",
        "{steps: 500}",
        "{minutes: 0.0001}",
        "{minutes: 30}",
    ] {
        workspace
            .vilab(&[
                "validate",
                "spec.yaml",
                "--set",
                &format!("train.checkpoint_every={value}"),
            ])
            .assert_code(0)
            .assert_no_panic();
    }
}

#[test]
fn a_diverging_loss_stops_with_the_epoch_and_step() {
    let workspace = Workspace::with_data1();
    workspace.write("spec.yaml", BASE);
    let output = workspace.vilab(&[
        "run",
        "spec.yaml",
        "--set",
        "train.optimizer.lr=1e30",
        "--set",
        "train.ema.enabled=false",
    ]);
    output.assert_code(1).assert_no_panic();
    assert!(
        output.stderr.contains("at epoch 1, step "),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("train.optimizer.lr"),
        "{}",
        output.stderr
    );
}
