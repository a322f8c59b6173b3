//! The checked-in JSON Schema and the shipped experiments stay in step with the binary:
//! `vilab schema` must print `schemas/experiment.schema.json` byte for byte (editors read the
//! file, so a stale one silently misleads them), and every file in `experiments/` must point
//! editors at it and validate.

use crate::common::{repo_root, run_vilab};

const SCHEMA_FILE: &str = "schemas/experiment.schema.json";
const HEADER: &str = "# yaml-language-server: $schema=../schemas/experiment.schema.json";

#[test]
fn checked_in_schema_is_current() {
    let output = run_vilab(&repo_root(), &["schema"]);
    output.assert_code(0).assert_no_panic();
    let path = repo_root().join(SCHEMA_FILE);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; create it with `vilab schema --out {SCHEMA_FILE}`",
            path.display()
        )
    });
    assert!(
        output.stdout == checked_in,
        "{SCHEMA_FILE} is stale; regenerate it with `vilab schema --out {SCHEMA_FILE}`"
    );
}

#[test]
fn schema_is_draft_07_json() {
    let output = run_vilab(&repo_root(), &["schema"]);
    output.assert_code(0);
    let schema: serde_json::Value =
        serde_json::from_str(&output.stdout).expect("vilab schema prints JSON");
    assert_eq!(
        schema["$schema"].as_str(),
        Some("http://json-schema.org/draft-07/schema#"),
        "editors' yaml-language-server reads draft-07"
    );
    for section in [
        "name", "data", "split", "stats", "augment", "model", "train",
    ] {
        assert!(
            schema["properties"].get(section).is_some(),
            "schema lacks the `{section}` section"
        );
    }
}

#[test]
fn every_experiment_points_at_the_schema_and_validates() {
    let folder = repo_root().join("experiments");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("{}: {error}", folder.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml" || extension == "yml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no experiments in {}", folder.display());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read experiment");
        assert_eq!(
            text.lines().next(),
            Some(HEADER),
            "{} must start with the schema comment",
            file.display()
        );
        let relative = file
            .strip_prefix(repo_root())
            .expect("inside the repository");
        // Some experiments name data folders the user creates (Kaggle downloads, IDX imports);
        // point them at folders that exist so the rest of the file is what gets checked (the
        // training root at data1, the others elsewhere: a validation root equal to the training
        // root is itself an error).
        let mut arguments = vec![
            "validate".to_owned(),
            relative.to_str().expect("UTF-8").to_owned(),
        ];
        for (field, folder) in [
            ("data.root", "data1"),
            ("data.val_root", "tests/fixtures/odd_images"),
            ("data.test_root", "tests/fixtures/odd_images"),
        ] {
            if text.contains(&format!("{}:", field.rsplit('.').next().unwrap_or(field))) {
                arguments.push("--set".to_owned());
                arguments.push(format!("{field}={folder}"));
            }
        }
        // A GPU experiment on a CPU-only binary is a usage error naming `backend` and the
        // cargo feature, as `run` and `bench` say it; moved to the CPU in f32 (as such a file's
        // own comment says to run it here) the rest of the file must validate.
        let needs_cuda = text.lines().any(|line| line.trim() == "backend: cuda");
        if needs_cuda && !cfg!(feature = "cuda") {
            let as_written: Vec<&str> = arguments.iter().map(String::as_str).collect();
            let output = run_vilab(&repo_root(), &as_written);
            assert_eq!(output.code, 2, "{}: {}", file.display(), output.stderr);
            assert!(
                output.stderr.contains("backend: cuda")
                    && output.stderr.contains("--features cuda"),
                "{}: {}",
                file.display(),
                output.stderr
            );
            for set in ["backend=cpu", "train.precision=f32"] {
                arguments.push("--set".to_owned());
                arguments.push(set.to_owned());
            }
        }
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        let output = run_vilab(&repo_root(), &arguments);
        assert_eq!(
            output.code,
            0,
            "{} does not validate:\n{}",
            file.display(),
            output.stderr
        );
    }
}

/// `vilab schema | true`: when the reader has gone, vilab ends as `ls` would (killed by
/// SIGPIPE, nothing on standard error) instead of panicking on the closed pipe.
#[cfg(unix)]
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let mut child = crate::common::vilab_command(&repo_root(), &["schema"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vilab starts");
    // Closed before vilab has built the schema, let alone printed it.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let status = crate::common::wait_until_done(&mut child, crate::common::PROCESS_TIMEOUT);
    assert_eq!(status.signal(), Some(13), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
