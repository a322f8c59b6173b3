//! `vilab validate` on experiments with mistakes, through the real binary: one fixture per kind of
//! mistake under `tests/fixtures/invalid/`, plus `--set` and environment overrides, plus files
//! that are not YAML at all. Every case must exit 2 with nothing on stdout and one problem per
//! line on stderr, `FILE:LINE:COL: field: message` (or the `--set ARG:` / `environment VAR:`
//! origin forms); the exact text is snapshotted, since it is what users read.

use crate::common::{Output, Workspace, repo_root, run_vilab, run_vilab_with_env};

const FIXTURES: &str = "tests/fixtures/invalid";

/// A valid experiment that overrides are layered on.
const MINIMAL: &str = "tests/fixtures/minimal.yaml";

/// Whether `text` starts with a dotted field path followed by `: `.
fn starts_with_field(text: &str) -> bool {
    text.split_once(": ").is_some_and(|(head, _)| {
        !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    })
}

/// Checks one stderr line against the documented forms. `file` is the experiment file as
/// passed on the command line; `file_lines` its line count, to check positions lie inside it.
fn check_problem_line(line: &str, file: &str, file_lines: usize) -> Result<(), String> {
    if let Some(rest) = line.strip_prefix(&format!("{file}:")) {
        if let Some(whole_file) = rest.strip_prefix(' ') {
            // Only problems of the file as a whole (empty, not UTF-8) may lack a position.
            if starts_with_field(whole_file) {
                return Err("a field's problem without LINE:COL".into());
            }
            return if whole_file.trim().is_empty() {
                Err("empty message".into())
            } else {
                Ok(())
            };
        }
        let mut parts = rest.splitn(3, ':');
        let line_number: usize = parts
            .next()
            .and_then(|text| text.parse().ok())
            .ok_or("no LINE number")?;
        let column: usize = parts
            .next()
            .and_then(|text| text.parse().ok())
            .ok_or("no COL number")?;
        let message = parts
            .next()
            .and_then(|text| text.strip_prefix(' '))
            .ok_or("no `: ` after LINE:COL")?;
        if line_number == 0 || column == 0 {
            return Err("positions count from 1".into());
        }
        if line_number > file_lines + 1 {
            return Err(format!("line {line_number} is past the end of the file"));
        }
        if message.trim().is_empty() {
            return Err("empty message".into());
        }
        return Ok(());
    }
    let rest = line
        .strip_prefix("--set ")
        .or_else(|| line.strip_prefix("environment VILAB_"))
        .ok_or("neither FILE:, --set nor environment origin")?;
    match rest.split_once(": ") {
        Some((_, message)) if !message.trim().is_empty() => Ok(()),
        _ => Err("no message after the origin".into()),
    }
}

/// Exit 2, nothing on stdout, no panic, and every stderr line in a documented form.
fn assert_validation_failure(output: &Output, file: &str) {
    output.assert_code(2).assert_no_panic();
    assert_eq!(
        output.stdout, "",
        "validation failures print nothing on stdout"
    );
    assert!(!output.stderr.trim().is_empty(), "no problem reported");
    let file_lines = std::fs::read(repo_root().join(file))
        .map(|bytes| bytes.iter().filter(|&&byte| byte == b'\n').count())
        .unwrap_or(0);
    for line in output.stderr.lines() {
        if let Err(why) = check_problem_line(line, file, file_lines) {
            panic!(
                "badly formed problem line ({why}):\n{line}\n--- whole stderr\n{}",
                output.stderr
            );
        }
    }
}

/// Validates `tests/fixtures/invalid/<fixture>.yaml`, checks the failure, and returns stderr.
fn validate_fixture(fixture: &str) -> String {
    let file = format!("{FIXTURES}/{fixture}.yaml");
    let output = run_vilab(&repo_root(), &["validate", &file]);
    assert_validation_failure(&output, &file);
    output.stderr
}

macro_rules! invalid_fixture {
    ($($test:ident => $fixture:literal,)*) => {$(
        #[test]
        fn $test() {
            insta::assert_snapshot!($fixture, validate_fixture($fixture));
        }
    )*};
}

invalid_fixture! {
    yaml_syntax_error => "syntax_error",
    file_with_only_a_comment_is_empty => "empty",
    top_level_list => "top_level_list",
    unknown_top_level_key_gets_a_suggestion => "unknown_top_level_key",
    unknown_nested_key_gets_a_suggestion => "unknown_nested_key",
    wrong_type => "wrong_type",
    learning_rate_must_be_positive => "lr_not_positive",
    val_fraction_must_be_inside_zero_one => "val_fraction_out_of_range",
    batch_size_zero => "batch_size_zero",
    negative_epochs => "negative_epochs",
    unknown_model_gets_a_suggestion => "unknown_model",
    missing_data_root_folder => "missing_data_root",
    name_with_parent_folder_is_unsafe => "unsafe_name_parent",
    absolute_name_is_unsafe => "unsafe_name_absolute",
    missing_required_fields => "missing_required",
    stats_mean_without_std => "stats_mean_without_std",
}

#[test]
fn many_mistakes_are_all_reported_in_line_order() {
    let stderr = validate_fixture("many_mistakes");
    let positions: Vec<(usize, usize)> = stderr
        .lines()
        .map(|line| {
            let mut parts = line.split(':').skip(1);
            let line_number = parts.next().and_then(|text| text.parse().ok());
            let column = parts.next().and_then(|text| text.parse().ok());
            (line_number.expect("line"), column.expect("column"))
        })
        .collect();
    // The fixture holds eleven mistakes, one per line it names.
    assert_eq!(positions.len(), 11, "{stderr}");
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(
        positions, sorted,
        "problems are not in line order:\n{stderr}"
    );
    insta::assert_snapshot!("many_mistakes", stderr);
}

#[test]
fn run_refuses_an_invalid_file_with_the_same_lines_and_computes_nothing() {
    let workspace = Workspace::new();
    let out = workspace.path().join("out");
    let file = format!("{FIXTURES}/many_mistakes.yaml");
    let validate = run_vilab(&repo_root(), &["validate", &file]);
    let run = run_vilab(
        &repo_root(),
        &["run", &file, "--out", out.to_str().expect("UTF-8 path")],
    );
    assert_validation_failure(&run, &file);
    assert_eq!(run.stderr, validate.stderr);
    assert!(
        !out.exists(),
        "an invalid experiment created {}",
        out.display()
    );
}

/// Validates the minimal experiment with `--set` arguments.
fn validate_with_sets(sets: &[&str]) -> String {
    let mut args = vec!["validate", MINIMAL];
    for set in sets {
        args.extend(["--set", set]);
    }
    let output = run_vilab(&repo_root(), &args);
    assert_validation_failure(&output, MINIMAL);
    output.stderr
}

#[test]
fn minimal_fixture_is_valid() {
    // The override tests below rely on the only problems being the overrides' own.
    run_vilab(&repo_root(), &["validate", MINIMAL]).assert_code(0);
}

#[test]
fn set_without_equals_sign_is_malformed() {
    insta::assert_snapshot!("set_malformed", validate_with_sets(&["train.epochs"]));
}

#[test]
fn set_with_a_path_that_is_not_dotted_names_is_malformed() {
    insta::assert_snapshot!("set_bad_path", validate_with_sets(&["train..epochs=3"]));
}

#[test]
fn set_with_an_unparsable_value() {
    insta::assert_snapshot!(
        "set_unparsable_value",
        validate_with_sets(&["train.epochs=[1,"])
    );
}

#[test]
fn set_with_an_out_of_range_value() {
    insta::assert_snapshot!(
        "set_out_of_range",
        validate_with_sets(&["split.val_fraction=0"])
    );
}

#[test]
fn set_with_a_wrong_type() {
    insta::assert_snapshot!(
        "set_wrong_type",
        validate_with_sets(&["train.batch_size=abc"])
    );
}

#[test]
fn set_with_an_unknown_path_gets_a_suggestion() {
    insta::assert_snapshot!("set_unknown_path", validate_with_sets(&["train.epocs=3"]));
}

#[test]
fn environment_variable_typo_gets_a_suggestion() {
    let output = run_vilab_with_env(
        &repo_root(),
        &["validate", MINIMAL],
        &[("VILAB_TRAIN__EPOCS", "3")],
    );
    assert_validation_failure(&output, MINIMAL);
    insta::assert_snapshot!("env_unknown_path", output.stderr);
}

#[test]
fn environment_and_set_layer_over_the_file() {
    // The file says nothing about epochs; the environment sets 3 and `--set` wins with 5.
    let environment_only = run_vilab_with_env(
        &repo_root(),
        &["validate", MINIMAL],
        &[("VILAB_TRAIN__EPOCHS", "3")],
    );
    environment_only.assert_code(0);
    assert!(
        environment_only.stdout.contains("3 epochs"),
        "{}",
        environment_only.stdout
    );
    let both = run_vilab_with_env(
        &repo_root(),
        &["validate", MINIMAL, "--set", "train.epochs=5"],
        &[("VILAB_TRAIN__EPOCHS", "3")],
    );
    both.assert_code(0);
    assert!(both.stdout.contains("5 epochs"), "{}", both.stdout);
}

#[test]
fn non_utf8_file_is_one_clear_line() {
    let workspace = Workspace::new();
    workspace.write("binary.yaml", b"name: \xff\xfe\x00 data\n");
    let output = workspace.vilab(&["validate", "binary.yaml"]);
    output.assert_code(2).assert_no_panic();
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    insta::assert_snapshot!("non_utf8", output.stderr);
}

#[test]
fn zero_byte_file_is_empty() {
    let workspace = Workspace::new();
    workspace.write("empty.yaml", b"");
    let output = workspace.vilab(&["validate", "empty.yaml"]);
    output.assert_code(2).assert_no_panic();
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    assert!(
        output
            .stderr
            .starts_with("empty.yaml: empty experiment file"),
        "{}",
        output.stderr
    );
}

#[test]
fn missing_file_is_one_line_naming_it_once() {
    let workspace = Workspace::new();
    let missing = workspace.path().join("missing.yaml");
    let missing_text = missing.to_str().expect("UTF-8 path");
    let output = workspace.vilab(&["validate", missing_text]);
    output.assert_code(2).assert_no_panic();
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    let stderr = workspace.redact(&output.stderr);
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert_eq!(
        stderr.matches("[TMP]/missing.yaml").count(),
        1,
        "the path should be named once: {stderr}"
    );
}

#[test]
fn folder_instead_of_file_is_one_line() {
    let workspace = Workspace::new();
    std::fs::create_dir(workspace.path().join("folder.yaml")).expect("create folder");
    let output = workspace.vilab(&["validate", "folder.yaml"]);
    output.assert_code(2).assert_no_panic();
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    assert!(output.stderr.contains("folder.yaml"), "{}", output.stderr);
}

#[test]
fn line_checker_rejects_what_it_should() {
    // The format check above is itself a specification; make sure it can fail.
    let file = "x.yaml";
    assert!(check_problem_line("x.yaml:3:5: train.epochs: must be ≥ 0 (got -1)", file, 10).is_ok());
    assert!(check_problem_line("x.yaml: empty experiment file; expected", file, 10).is_ok());
    assert!(check_problem_line("--set a=b: a: unknown field", file, 10).is_ok());
    assert!(check_problem_line("environment VILAB_A__B: a.b: unknown field", file, 10).is_ok());
    assert!(check_problem_line("x.yaml: name: missing required field", file, 10).is_err());
    assert!(check_problem_line("x.yaml:0:5: name: bad", file, 10).is_err());
    assert!(check_problem_line("x.yaml:30:5: name: bad", file, 10).is_err());
    assert!(check_problem_line("error: something", file, 10).is_err());
    assert!(check_problem_line("x.yaml:3: name: bad", file, 10).is_err());
}
