//! `vilab compare` through the real binary on runs of a tiny model on a copy of `data1/`: two
//! runs that differ in one parameter show exactly that parameter (snapshot of the markdown,
//! numbers masked since they come from training), the JSON and CSV forms agree with it, the
//! baseline can be chosen, a sweep folder stands for its trials, overlaid curves are drawn,
//! and runs with different class sets are compared on the classes they share.

use std::path::Path;

use serde_json::Value;

use crate::common::{Output, Workspace, copy_tree};

/// A tiny model trained for one epoch on `root`.
fn experiment(root: &str) -> String {
    format!(
        "name: cmp\n\
         seed: 42\n\
         data:\n  root: {root}\n  image_size: 16\n\
         model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n\
         train:\n  epochs: 1\n  batch_size: 50\n  workers: 0\n\
         plot:\n  formats: [png]\n"
    )
}

fn vilab(workspace: &Workspace, args: &[&str], code: i32) -> Output {
    let output = workspace.vilab(args);
    output.assert_code(code).assert_no_panic();
    output
}

/// Runs `exp.yaml` with extra `--set`s; returns the run folder relative to the workspace.
fn run(workspace: &Workspace, sets: &[&str]) -> String {
    let mut args = vec!["run", "exp.yaml", "--out", "out"];
    for set in sets {
        args.extend(["--set", set]);
    }
    vilab(workspace, &args, 0).last_stdout_line().to_owned()
}

fn folder_name(run_dir: &str) -> String {
    Path::new(run_dir)
        .file_name()
        .expect("run folder name")
        .to_string_lossy()
        .into_owned()
}

/// The markdown with the run ids named by role and every number of the metric and per-class
/// tables replaced: those come from training, the layout and the parameter table do not.
fn masked(markdown: &str, runs: &[(&str, &str)]) -> String {
    let mut text = markdown.to_owned();
    for (run_id, name) in runs {
        text = text.replace(run_id, name);
    }
    let mut numeric = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("## ") {
                numeric = line.starts_with("## Metrics") || line.starts_with("## Per-class");
            }
            let is_row = line.starts_with("| ")
                && !line.starts_with("| metric |")
                && !line.starts_with("| class |");
            if !(numeric && is_row) {
                return line.to_owned();
            }
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            let mut out = vec![cells[0].trim().to_owned()];
            for cell in &cells[1..] {
                let cell = cell.trim();
                out.push(if cell.contains('(') {
                    "N (Δ)".to_owned()
                } else if cell == "—" {
                    cell.to_owned()
                } else {
                    "N".to_owned()
                });
            }
            format!("| {} |", out.join(" | "))
        })
        .collect();
    lines.join("\n")
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", output.stdout))
}

#[test]
fn two_runs_differing_in_one_parameter_show_exactly_that_parameter() {
    let workspace = Workspace::with_data1();
    workspace.write("exp.yaml", experiment("data"));
    let first = run(&workspace, &[]);
    let second = run(&workspace, &["train.optimizer.lr=0.003"]);
    let (first_id, second_id) = (folder_name(&first), folder_name(&second));

    // stdout is a pipe here, so the default format is markdown.
    let markdown = vilab(&workspace, &["compare", &first, &second], 0);
    insta::assert_snapshot!(
        "one_parameter_markdown",
        masked(
            &markdown.stdout,
            &[(&first_id, "[RUN-A]"), (&second_id, "[RUN-B]")]
        )
    );

    let document = json(&vilab(
        &workspace,
        &["compare", &first, &second, "--format", "json"],
        0,
    ));
    let parameters = document["parameters"].as_object().expect("parameters");
    assert_eq!(
        parameters.keys().collect::<Vec<_>>(),
        ["train.optimizer.lr"]
    );
    assert_eq!(parameters["train.optimizer.lr"][&second_id], "0.003");
    let accuracy = &document["metrics"]["best_val_acc1"];
    let (a, b) = (
        accuracy[&first_id]["value"].as_f64().expect("value"),
        accuracy[&second_id]["value"].as_f64().expect("value"),
    );
    assert!((accuracy[&second_id]["delta"].as_f64().expect("delta") - (b - a)).abs() < 1e-9);
    assert_eq!(
        document["class_f1"].as_object().expect("class_f1").len(),
        10
    );
    assert_eq!(document["notes"], Value::Array(Vec::new()));

    let flipped = json(&vilab(
        &workspace,
        &[
            "compare",
            &first,
            &second,
            "--format",
            "json",
            "--baseline",
            &second_id,
        ],
        0,
    ));
    assert_eq!(flipped["baseline"], second_id.as_str());
    let delta = flipped["metrics"]["best_val_acc1"][&first_id]["delta"]
        .as_f64()
        .expect("delta");
    assert!((delta - (a - b)).abs() < 1e-9);

    let everything = json(&vilab(
        &workspace,
        &["compare", &first, &second, "--format", "json", "--all"],
        0,
    ));
    let all = everything["parameters"].as_object().expect("parameters");
    assert!(
        all.contains_key("seed") && all.contains_key("model.dim"),
        "{all:?}"
    );

    let csv = vilab(
        &workspace,
        &["compare", &first, &second, "--format", "csv"],
        0,
    );
    let mut reader = csv::Reader::from_reader(csv.stdout.as_bytes());
    assert_eq!(
        reader.headers().expect("header"),
        vec!["table", "row", "run", "value", "delta"]
    );
    let parameter_rows: Vec<String> = reader
        .records()
        .map(|row| row.expect("row"))
        .filter(|row| &row[0] == "parameter")
        .map(|row| row[1].to_owned())
        .collect();
    assert_eq!(parameter_rows, ["train.optimizer.lr", "train.optimizer.lr"]);

    let table = vilab(
        &workspace,
        &[
            "compare",
            &first,
            &second,
            "--format",
            "table",
            "--plot",
            "curves.png",
        ],
        0,
    );
    assert!(table.stdout.starts_with("Parameters\n"), "{}", table.stdout);
    let curves = image::open(workspace.path().join("curves.png")).expect("curves.png");
    assert!(curves.width() >= 900);

    // A sweep over the same two settings reuses both runs; its folder stands for them.
    workspace.write(
        "sweep.yaml",
        format!(
            "{}sweep:\n  list:\n    - {{train.optimizer.lr: 0.001}}\n    \
             - {{train.optimizer.lr: 0.003}}\n",
            experiment("data")
        ),
    );
    let sweep = vilab(&workspace, &["run", "sweep.yaml", "--out", "out"], 0);
    assert_eq!(
        sweep.stderr.matches("done already —").count(),
        2,
        "{}",
        sweep.stderr
    );
    let from_sweep = json(&vilab(
        &workspace,
        &["compare", sweep.last_stdout_line(), "--format", "json"],
        0,
    ));
    let labels: Vec<&str> = from_sweep["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| run["label"].as_str().expect("label"))
        .collect();
    assert_eq!(labels.len(), 2);
    assert!(
        labels.iter().all(|label| label.len() == 10),
        "trial ids: {labels:?}"
    );
    assert_eq!(
        from_sweep["parameters"]
            .as_object()
            .expect("parameters")
            .keys()
            .collect::<Vec<_>>(),
        ["train.optimizer.lr"]
    );

    let alone = vilab(&workspace, &["compare", &first], 1);
    assert!(
        alone.stderr.contains("at least two runs"),
        "{}",
        alone.stderr
    );
    let same_twice = vilab(&workspace, &["compare", &first, &first], 1);
    assert!(
        same_twice.stderr.contains("at least two runs"),
        "{}",
        same_twice.stderr
    );
}

#[test]
fn runs_with_different_classes_compare_on_the_shared_ones() {
    let workspace = Workspace::with_data1();
    copy_tree(&workspace.data(), &workspace.path().join("fewer"));
    std::fs::remove_dir_all(workspace.path().join("fewer/Trouser")).expect("remove a class");
    workspace.write("exp.yaml", experiment("data"));
    let all_classes = run(&workspace, &[]);
    let fewer_classes = run(&workspace, &["data.root=fewer"]);

    let document = json(&vilab(
        &workspace,
        &["compare", &all_classes, &fewer_classes, "--format", "json"],
        0,
    ));
    let classes = document["class_f1"].as_object().expect("class_f1");
    assert_eq!(classes.len(), 9);
    assert!(!classes.contains_key("Trouser"));
    let notes = document["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = notes[0].as_str().expect("note");
    assert!(
        note.contains("different classes")
            && note.contains("the 9 shared")
            && note.contains("Trouser"),
        "{note}"
    );
    assert!(
        document["parameters"]
            .as_object()
            .expect("parameters")
            .contains_key("data.root")
    );
}
