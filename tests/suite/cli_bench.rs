//! `vilab bench`: the real binary measures `vil_micro` (forward, training step, GFLOP/s, peak
//! memory) and rejects an unknown model with one line. Only the form of the figures is checked
//! (present, finite, positive), never their size: timings depend on the machine.

use crate::common::Workspace;

/// The first number after `label` on the line that starts with it.
fn figure(stdout: &str, label: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|line| line.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{stdout}"));
    line[label.len()..]
        .split_whitespace()
        .find_map(|word| word.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no number on `{line}`"))
}

#[test]
fn bench_prints_positive_throughput_and_memory() {
    let workspace = Workspace::new();
    let output = workspace.vilab(&[
        "bench",
        "--model",
        "vil_micro",
        "--batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--classes",
        "10",
    ]);
    output.assert_code(0).assert_no_panic();
    let stdout = &output.stdout;
    assert!(
        stdout.starts_with("vil_micro at 28×28, batch 4, 10 classes, f32 on cpu"),
        "{stdout}"
    );
    for label in ["forward", "train step", "model", "peak memory"] {
        let value = figure(stdout, label);
        assert!(value.is_finite() && value > 0.0, "{label}: {value}");
    }
    // images/s and GFLOP/s on both throughput lines.
    for label in ["forward", "train step"] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(label))
            .unwrap_or_default();
        assert!(
            line.contains("images/s") && line.contains("GFLOP/s"),
            "{line}"
        );
    }
    // The FLOPs behind GFLOP/s are the ones `vilab model info` reports for the same model.
    let info = workspace.vilab(&["model", "info", "vil_micro", "--classes", "10"]);
    info.assert_code(0);
    let info_flops = info
        .stdout
        .split_once("GMACs (")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|word| word.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no GFLOPs in:\n{}", info.stdout));
    assert_eq!(figure(stdout, "model"), info_flops);
}

#[test]
fn unknown_model_is_a_one_line_usage_error() {
    let workspace = Workspace::new();
    let output = workspace.vilab(&["bench", "--model", "vil_tinny", "--steps", "1"]);
    output.assert_code(2).assert_no_panic();
    assert!(output.stdout.is_empty(), "{}", output.stdout);
    let lines: Vec<&str> = output.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", output.stderr);
    assert!(
        lines[0].starts_with("error: unknown model `vil_tinny` (did you mean `vil_tiny`?)"),
        "{}",
        lines[0]
    );
}

#[test]
fn the_version_and_a_missing_backend_name_the_backends_the_binary_has() {
    let workspace = Workspace::new();
    let version = workspace.vilab(&["--version"]);
    version.assert_code(0);
    let backends = match (cfg!(feature = "cuda"), cfg!(feature = "wgpu")) {
        (true, true) => "cpu, cuda, wgpu (fusion, autotune)",
        (true, false) => "cpu, cuda (fusion, autotune)",
        (false, true) => "cpu, wgpu (fusion, autotune)",
        (false, false) => "cpu",
    };
    assert_eq!(
        version.stdout,
        format!(
            "vilab {} (backends: {backends})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    if !cfg!(feature = "cuda") {
        let output = workspace.vilab(&["bench", "--model", "vil_micro", "--backend", "cuda"]);
        output.assert_code(2);
        assert_eq!(
            output.stderr.trim(),
            format!(
                "error: backend: cuda needs a vilab built with `cargo build --release --features cuda` \
                 (this one has backends: {backends})"
            )
        );
    }
    if !cfg!(feature = "wgpu") {
        let output = workspace.vilab(&["bench", "--model", "vil_micro", "--backend", "wgpu"]);
        output.assert_code(2);
        assert!(
            output.stderr.contains("backend: wgpu") && output.stderr.contains("--features wgpu"),
            "{}",
            output.stderr
        );
    }
}
