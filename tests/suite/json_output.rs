//! `--format json` of `plan`, `status`, `validate`, `model info`, `gc`, `verify` and `bench`,
//! through the real binary: stdout is one JSON document that serde_json parses, its fields say
//! what the text output says (the same stage keys and states, problems, parameter counts, paths),
//! and the exit codes are the text output's. The shapes are documented in the README
//! ("Machine-readable output").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::common::{Output, Workspace, entry_names, small_experiment};

/// `vilab ARGS` in the workspace, which must exit with `code` without a panic.
fn vilab(workspace: &Workspace, args: &[&str], code: i32) -> Output {
    let output = workspace.vilab(args);
    output.assert_code(code).assert_no_panic();
    output
}

/// stdout parsed as one JSON document.
fn json(output: &Output) -> Value {
    serde_json::from_str(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not one JSON document ({error}):\n{}\n--- stderr\n{}",
            output.stdout, output.stderr
        )
    })
}

/// A string field.
fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{field}` in {value}"))
}

/// An unsigned field.
fn number(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number `{field}` in {value}"))
}

/// A list field.
fn list<'a>(value: &'a Value, field: &str) -> &'a Vec<Value> {
    value[field]
        .as_array()
        .unwrap_or_else(|| panic!("no list `{field}` in {value}"))
}

/// A copy of data1 with `exp.yaml`, a small experiment on it (data stages only).
fn data1_workspace() -> Workspace {
    let workspace = Workspace::with_data1();
    workspace.write("exp.yaml", small_experiment("tiny", 16));
    workspace
}

/// The stages of a plan or status document as (stage, key, state, reason).
fn stages(document: &Value) -> Vec<(String, String, String, Option<String>)> {
    list(document, "stages")
        .iter()
        .map(|stage| {
            (
                text(stage, "stage").to_owned(),
                text(stage, "key").to_owned(),
                text(stage, "state").to_owned(),
                stage["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn plan_json_has_the_text_tables_stages_keys_and_run_id() {
    let workspace = data1_workspace();
    let plan_args = ["plan", "exp.yaml", "--out", "out"];
    let text_output = vilab(&workspace, &plan_args, 0);
    let document = json(&vilab(
        &workspace,
        &[&plan_args[..], &["--format", "json"]].concat(),
        0,
    ));

    // The text table: `stage    key           state`, then `run id   ID`.
    let mut rows = Vec::new();
    let mut run_id = None;
    for line in text_output.stdout.lines().skip(1) {
        if let Some(id) = line.strip_prefix("run id") {
            run_id = Some(id.trim().to_owned());
        } else {
            let words: Vec<&str> = line.split_whitespace().collect();
            rows.push((
                words[0].to_owned(),
                words[1].to_owned(),
                words[2..].join(" "),
            ));
        }
    }
    let stages = stages(&document);
    assert!(!stages.is_empty(), "{document}");
    assert_eq!(
        stages.len(),
        rows.len(),
        "{document}\n{}",
        text_output.stdout
    );
    for ((stage, key, state, reason), (text_stage, short_key, text_state)) in
        stages.iter().zip(&rows)
    {
        assert_eq!(stage, text_stage);
        assert_eq!(key.len(), 64, "the full key: {key}");
        assert!(key.starts_with(short_key.as_str()), "{key} vs {short_key}");
        assert_eq!(state, text_state);
        assert_eq!(*reason, None);
    }
    assert_eq!(Some(text(&document, "run_id")), run_id.as_deref());
    assert_eq!(text(&document, "experiment"), "tiny");
    assert_eq!(document["all_cached"], false);
}

#[test]
fn status_json_says_what_status_says_with_the_same_exit_codes() {
    let workspace = data1_workspace();
    let status = ["status", "exp.yaml", "--out", "out", "--format", "json"];
    let before = json(&vilab(&workspace, &status, 1));
    assert_eq!(before["all_cached"], false);
    assert!(
        stages(&before)
            .iter()
            .all(|(_, _, state, _)| state == "missing"),
        "{before}"
    );

    let run = vilab(&workspace, &["run", "exp.yaml", "--out", "out"], 0);
    let cached = json(&vilab(&workspace, &status, 0));
    assert_eq!(cached["all_cached"], true);
    let run_id = Path::new(run.last_stdout_line())
        .file_name()
        .expect("run folder")
        .to_string_lossy()
        .into_owned();
    assert_eq!(text(&cached, "run_id"), run_id);

    // A changed seed: the same reasons as the text lines, `stage: stale — reason`.
    let changed = ["--set", "split.seed=7"];
    let text_lines = vilab(&workspace, &[&status[..4], &changed[..]].concat(), 1);
    let stale = json(&vilab(&workspace, &[&status[..], &changed[..]].concat(), 1));
    assert_eq!(stale["all_cached"], false);
    let from_text: Vec<String> = text_lines.stdout.lines().map(str::to_owned).collect();
    let from_json: Vec<String> = stages(&stale)
        .into_iter()
        .map(|(stage, _, state, reason)| match reason {
            Some(reason) => format!("{stage}: {state} — {reason}"),
            None => format!("{stage}: {state}"),
        })
        .collect();
    assert_eq!(from_json, from_text);
    assert_eq!(
        from_json[0], "split: stale — split.seed changed (42 ⇒ 7)",
        "{stale}"
    );
}

#[test]
fn plan_and_status_json_of_a_sweep_list_every_trial() {
    let workspace = Workspace::with_data1();
    let spec = small_experiment("swept", 16) + "sweep:\n  grid:\n    split.seed: [1, 2]\n";
    workspace.write("sweep.yaml", spec);
    let plan = json(&vilab(
        &workspace,
        &["plan", "sweep.yaml", "--out", "out", "--format", "json"],
        0,
    ));
    let status = json(&vilab(
        &workspace,
        &["status", "sweep.yaml", "--out", "out", "--format", "json"],
        1,
    ));
    for document in [&plan, &status] {
        assert_eq!(text(document, "experiment"), "swept");
        assert!(text(document, "sweep").starts_with("out/swept/sweep-"));
        assert_eq!(document["all_done"], false);
        assert_eq!(number(&document["counts"], "pending"), 2, "{document}");
        assert_eq!(number(&document["counts"], "done"), 0, "{document}");
        let trials = list(document, "trials");
        let seeds: BTreeSet<u64> = trials
            .iter()
            .map(|trial| {
                assert_eq!(text(trial, "state"), "pending");
                assert_eq!(trial["slurm"], Value::Null);
                assert!(!stages(trial).is_empty());
                number(&trial["overrides"], "split.seed")
            })
            .collect();
        assert_eq!(seeds, BTreeSet::from([1, 2]));
    }
    assert_eq!(plan["trials"], status["trials"]);
}

/// Two problems in the file and one in `--set`.
const BROKEN: &str = "name: broken\n\
    sed: 42\n\
    data:\n  root: data\n  image_size: 16\n\
    split:\n  val_fraction: 1.5\n";

#[test]
fn validate_json_lists_every_problem_with_its_origin() {
    let workspace = Workspace::with_data1();
    workspace.write("bad.yaml", BROKEN);
    let args = ["validate", "bad.yaml", "--set", "train.epochs=-1"];
    let text_output = vilab(&workspace, &args, 2);
    let output = vilab(&workspace, &[&args[..], &["--format", "json"]].concat(), 2);
    let document = json(&output);
    assert_eq!(document["valid"], false);
    assert_eq!(document["experiment"], Value::Null);
    assert_eq!(text(&document, "file"), "bad.yaml");
    let problems = list(&document, "problems");

    // The same lines as the text output, in the same order.
    let texts: Vec<&str> = problems
        .iter()
        .map(|problem| text(problem, "text"))
        .collect();
    assert_eq!(texts, text_output.stderr.lines().collect::<Vec<_>>());

    let by_field: BTreeMap<&str, &Value> = problems
        .iter()
        .map(|problem| (text(problem, "field"), problem))
        .collect();
    let sed = by_field["sed"];
    assert_eq!(text(sed, "origin"), "file");
    assert_eq!(text(sed, "file"), "bad.yaml");
    assert_eq!((number(sed, "line"), number(sed, "column")), (2, 1));
    assert!(
        text(sed, "message").contains("did you mean `seed`?"),
        "{sed}"
    );
    let fraction = by_field["split.val_fraction"];
    assert_eq!(number(fraction, "line"), 7, "{fraction}");
    assert!(fraction["column"].as_u64().is_some(), "{fraction}");
    let epochs = by_field["train.epochs"];
    assert_eq!(text(epochs, "origin"), "set");
    assert_eq!(text(epochs, "argument"), "train.epochs=-1");
    assert_eq!(epochs["file"], Value::Null);
    assert_eq!(epochs["line"], Value::Null);
    for problem in problems {
        let line = text(problem, "text");
        assert!(line.ends_with(text(problem, "message")), "{problem}");
    }
}

#[test]
fn validate_json_of_a_valid_or_unreadable_file() {
    let workspace = data1_workspace();
    let valid = json(&vilab(
        &workspace,
        &["validate", "exp.yaml", "--format", "json"],
        0,
    ));
    assert_eq!(valid["valid"], true);
    assert_eq!(list(&valid, "problems").len(), 0);
    let experiment = &valid["experiment"];
    assert_eq!(text(experiment, "name"), "tiny");
    assert_eq!(text(experiment, "model"), "vil_micro");
    assert_eq!(number(experiment, "epochs"), 0);
    assert_eq!(number(&experiment["resolved"]["data"], "image_size"), 16);

    let missing = vilab(
        &workspace,
        &["validate", "nowhere.yaml", "--format", "json"],
        2,
    );
    let document = json(&missing);
    let problems = list(&document, "problems");
    assert_eq!(problems.len(), 1, "{document}");
    assert_eq!(text(&problems[0], "file"), "nowhere.yaml");
    assert!(text(&problems[0], "message").starts_with("cannot read"));
}

/// The integer on the line of `vilab model info` that starts with `label`, commas removed.
fn grouped_figure(stdout: &str, label: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{stdout}"));
    line.trim_start()[label.len()..]
        .trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|error| panic!("{line}: {error}"))
}

#[test]
fn model_info_json_counts_what_the_text_counts() {
    let workspace = Workspace::new();
    for (name, classes) in [("vil_micro", "10"), ("vil2_tiny", "1000")] {
        let args = ["model", "info", name, "--classes", classes];
        let text_output = vilab(&workspace, &args, 0).stdout;
        let document = json(&vilab(
            &workspace,
            &[&args[..], &["--format", "json"]].concat(),
            0,
        ));
        assert_eq!(text(&document, "model"), name);
        assert_eq!(number(&document, "classes").to_string(), classes);
        let parameters = &document["parameters"];
        assert_eq!(
            number(parameters, "total"),
            grouped_figure(&text_output, "parameters")
        );
        let mut sum = 0;
        for component in ["patch_embed", "pos_embed", "blocks", "norms", "head"] {
            assert_eq!(
                number(parameters, component),
                grouped_figure(&text_output, component),
                "{component}"
            );
            sum += number(parameters, component);
        }
        assert_eq!(sum, number(parameters, "total"));
        let gmacs = format!(
            "{:.3} GMACs",
            number(&document, "forward_macs") as f64 / 1e9
        );
        assert!(
            text_output.contains(&gmacs),
            "{gmacs} not in:\n{text_output}"
        );
        assert_eq!(
            number(&document, "forward_flops"),
            2 * number(&document, "forward_macs")
        );
        assert!(number(&document, "forward_macs_causal") < number(&document, "forward_macs"));
    }
    // vil_micro at 28×28: 7×7 tokens.
    let micro = json(&vilab(
        &workspace,
        &["model", "info", "vil_micro", "--format", "json"],
        0,
    ));
    assert_eq!(number(&micro, "tokens"), 49);
}

/// The cache entries of `out` as paths relative to `out/cache`.
fn cache_entries(out: &Path) -> BTreeSet<String> {
    crate::common::cache_entry_folders(out)
        .into_iter()
        .map(|folder| {
            folder
                .strip_prefix(out.join("cache"))
                .expect("inside the cache")
                .display()
                .to_string()
        })
        .collect()
}

#[test]
fn gc_dry_run_json_lists_what_the_text_lists_and_deletes_nothing() {
    let workspace = data1_workspace();
    let out = workspace.path().join("out");
    let kept = vilab(&workspace, &["run", "exp.yaml", "--out", "out"], 0);
    let kept_entries = cache_entries(&out);
    let orphan = vilab(
        &workspace,
        &["run", "exp.yaml", "--out", "out", "--set", "split.seed=7"],
        0,
    );
    // Without its run folder, the second run's entries are referenced by nothing.
    std::fs::remove_dir_all(workspace.path().join(orphan.last_stdout_line())).expect("remove");
    let all_entries = cache_entries(&out);
    let orphaned: BTreeSet<String> = all_entries.difference(&kept_entries).cloned().collect();
    assert!(!orphaned.is_empty());

    let text_output = vilab(&workspace, &["gc", "--out", "out", "--dry-run"], 0);
    let document = json(&vilab(
        &workspace,
        &["gc", "--out", "out", "--dry-run", "--format", "json"],
        0,
    ));
    assert_eq!(document["dry_run"], true);
    let deleted = list(&document, "deleted");
    let listed: BTreeSet<String> = deleted
        .iter()
        .map(|folder| {
            assert_eq!(text(folder, "kind"), "entry");
            assert!(number(folder, "bytes") > 0);
            let path = text(folder, "path")
                .strip_prefix("cache/")
                .unwrap_or_else(|| panic!("not relative to --out: {folder}"));
            assert!(path.starts_with(text(folder, "stage_folder")), "{folder}");
            assert!(path.ends_with(text(folder, "key")), "{folder}");
            path.to_owned()
        })
        .collect();
    assert_eq!(listed, orphaned);
    let text_listed: BTreeSet<String> = text_output
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("would delete entry "))
        .map(|rest| rest.split(" (").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(listed, text_listed);
    assert_eq!(number(&document, "deleted_count"), deleted.len() as u64);
    let bytes: u64 = deleted.iter().map(|folder| number(folder, "bytes")).sum();
    assert_eq!(number(&document, "deleted_bytes"), bytes);
    assert_eq!(list(&document, "in_use").len(), 0);
    assert_eq!(
        cache_entries(&out),
        all_entries,
        "a dry run deleted something"
    );

    // Collected for real, the same list goes; the kept run is still whole.
    let collected = json(&vilab(
        &workspace,
        &["gc", "--out", "out", "--format", "json"],
        0,
    ));
    assert_eq!(collected["dry_run"], false);
    assert_eq!(collected["deleted"], document["deleted"]);
    assert_eq!(cache_entries(&out), kept_entries);
    vilab(&workspace, &["status", "exp.yaml", "--out", "out"], 0);
    assert!(workspace.path().join(kept.last_stdout_line()).is_dir());
}

#[test]
fn verify_json_names_the_damaged_file_and_what_was_done() {
    let workspace = data1_workspace();
    let out = workspace.path().join("out");
    vilab(&workspace, &["run", "exp.yaml", "--out", "out"], 0);
    let entries = cache_entries(&out);
    let whole = json(&vilab(
        &workspace,
        &["verify", "--out", "out", "--format", "json"],
        0,
    ));
    assert_eq!(number(&whole, "checked"), entries.len() as u64, "{whole}");
    assert_eq!(number(&whole, "damaged"), 0);
    assert!(number(&whole, "whole_bytes") > 0);
    assert_eq!(list(&whole, "findings").len(), 0);

    // Truncate the split entry's class list.
    let split = entries
        .iter()
        .find(|entry| entry.starts_with("split-v"))
        .expect("a split entry");
    let damaged = Path::new("cache").join(split).join("classes.json");
    assert!(
        entry_names(&out.join("cache").join(split)).contains(&"classes.json".to_owned()),
        "{split}"
    );
    std::fs::write(out.join(&damaged), b"[").expect("damage");
    let found = json(&vilab(
        &workspace,
        &["verify", "--out", "out", "--format", "json"],
        1,
    ));
    assert_eq!(number(&found, "damaged"), 1);
    let findings = list(&found, "findings");
    assert_eq!(findings.len(), 1, "{found}");
    let finding = &findings[0];
    assert_eq!(text(finding, "kind"), "entry");
    assert_eq!(text(finding, "path"), damaged.display().to_string());
    assert_eq!(text(finding, "problem"), "size");
    assert_eq!(text(finding, "action"), "reported");
    assert_eq!(finding["moved_to"], Value::Null);
    assert!(
        text(finding, "message").contains("classes.json"),
        "{finding}"
    );

    let moved = json(&vilab(
        &workspace,
        &["verify", "--out", "out", "--quarantine", "--format", "json"],
        1,
    ));
    let finding = &list(&moved, "findings")[0];
    assert_eq!(text(finding, "action"), "quarantined");
    assert!(
        text(finding, "moved_to").starts_with("cache/corrupt/split-v"),
        "{finding}"
    );
    vilab(
        &workspace,
        &["verify", "--out", "out", "--format", "json"],
        0,
    );
}

#[test]
fn bench_json_has_positive_figures_and_model_infos_flops() {
    let workspace = Workspace::new();
    let settings = [
        "--model",
        "vil_micro",
        "--image-size",
        "8",
        "--classes",
        "2",
    ];
    let bench = [
        &["bench"][..],
        &settings[..],
        &[
            "--batch", "1", "--steps", "1", "--warmup", "0", "--format", "json",
        ],
    ]
    .concat();
    let document = json(&vilab(&workspace, &bench, 0));
    assert_eq!(text(&document, "model"), "vil_micro");
    assert_eq!(number(&document, "image_size"), 8);
    assert_eq!(number(&document, "batch"), 1);
    assert_eq!(number(&document, "steps"), 1);
    assert_eq!(number(&document, "warmup"), 0);
    assert_eq!(text(&document, "precision"), "f32");
    assert_eq!(text(&document, "backend"), "cpu");
    assert_eq!(document["devices"], serde_json::json!([0]));
    let version = vilab(&workspace, &["--version"], 0);
    assert!(
        version
            .stdout
            .contains(&format!("({})", text(&document, "built_with"))),
        "bench and --version name the same build: {} vs {document}",
        version.stdout
    );
    for kind in ["forward", "train_step"] {
        for figure in ["seconds", "images_per_second", "gflops_per_second"] {
            let value = document[kind][figure]
                .as_f64()
                .unwrap_or_else(|| panic!("no {kind}.{figure} in {document}"));
            assert!(value.is_finite() && value > 0.0, "{kind}.{figure}: {value}");
        }
    }
    assert!(number(&document, "peak_memory_bytes") > 0);
    let info = json(&vilab(
        &workspace,
        &[
            &["model", "info", "vil_micro"][..],
            &settings[2..],
            &["--format", "json"],
        ]
        .concat(),
        0,
    ));
    assert_eq!(
        number(&document, "forward_flops_per_image"),
        number(&info, "forward_flops")
    );
}
