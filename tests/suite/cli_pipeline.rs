//! The stage graph and its cache, through the real binary on a copy of `data1/`: re-running an
//! unchanged experiment computes nothing, `status` names why a stage is stale (spec change,
//! upstream change, files added), two concurrent runs on one output folder compute each stage
//! once, and a run killed with SIGKILL in the middle of a stage leaves nothing that looks
//! complete and is finished cleanly by the next run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{
    DATA_STAGES, Output, PROCESS_TIMEOUT, StageRun, Workspace, cache_entry_exists, entry_names,
    file_contents, read_run_json, small_experiment, spawn, stage_runs, status_lines, wait,
};

/// A workspace with a copy of data1 and `exp.yaml`, a small experiment on it.
fn data1_workspace(image_size: u32) -> Workspace {
    let workspace = Workspace::with_data1();
    workspace.write("exp.yaml", small_experiment("tiny", image_size));
    workspace
}

/// `vilab run exp.yaml --out out [extra...]`, which must succeed; returns the output.
fn run_ok(workspace: &Workspace, extra: &[&str]) -> Output {
    let mut args = vec!["run", "exp.yaml", "--out", "out"];
    args.extend_from_slice(extra);
    let output = workspace.vilab(&args);
    output.assert_code(0).assert_no_panic();
    output
}

/// The stages of the data part of a run.json, as stage ⇒ record.
fn data_stage_runs(run_dir: &Path) -> BTreeMap<String, StageRun> {
    let runs: BTreeMap<String, StageRun> = stage_runs(&read_run_json(run_dir))
        .into_iter()
        .map(|run| (run.stage.clone(), run))
        .collect();
    for stage in DATA_STAGES {
        assert!(
            runs.contains_key(stage),
            "run.json lacks stage {stage}: {runs:?}"
        );
    }
    runs
}

#[test]
fn rerunning_an_unchanged_experiment_computes_nothing() {
    let workspace = data1_workspace(16);
    let first = run_ok(&workspace, &[]);
    let first_dir = first.last_stdout_line().to_owned();
    let first_runs = data_stage_runs(&workspace.path().join(&first_dir));
    for stage in DATA_STAGES {
        assert_eq!(first_runs[stage].state, "computed", "first run, {stage}");
    }

    let first_json = read_run_json(&workspace.path().join(&first_dir));
    let second = run_ok(&workspace, &[]);
    assert_eq!(
        second.last_stdout_line(),
        first_dir,
        "the same spec must map to the same run folder"
    );
    let run_dir = workspace.path().join(&first_dir);
    // The re-run's record keeps when, how fast and with what summary each stage was computed.
    let second_json = read_run_json(&run_dir);
    for (first_stage, second_stage) in first_json["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .zip(second_json["stages"].as_array().expect("stages"))
    {
        let computed = &first_stage["computed"];
        assert!(
            computed["seconds"].as_f64().is_some()
                && computed["summary"].as_str() == first_stage["summary"].as_str()
                && computed["finished_at"].is_string(),
            "first run: {first_stage}"
        );
        assert_eq!(
            &second_stage["computed"], computed,
            "second run: {second_stage}"
        );
    }
    let second_runs = stage_runs(&read_run_json(&run_dir));
    for run in &second_runs {
        assert_eq!(run.state, "reused", "second run recomputed {}", run.stage);
    }
    for stage in DATA_STAGES {
        assert_eq!(
            second_runs
                .iter()
                .find(|run| run.stage == stage)
                .map(|run| &run.key),
            Some(&first_runs[stage].key),
            "{stage} key changed between identical runs"
        );
    }
    let latest = std::fs::read_link(workspace.path().join("out/tiny/latest")).expect("latest link");
    assert_eq!(Some(latest.as_os_str()), run_dir.file_name());

    let status = workspace.vilab(&["status", "exp.yaml", "--out", "out"]);
    status.assert_code(0).assert_no_panic();
    let lines = status_lines(&status.stdout);
    assert!(!lines.is_empty(), "status printed nothing");
    for (stage, state) in &lines {
        assert_eq!(state, "cached", "status of {stage}");
    }
    for stage in DATA_STAGES {
        assert!(
            lines.contains_key(stage),
            "status lacks {stage}: {}",
            status.stdout
        );
    }
}

#[test]
fn changing_the_split_seed_makes_exactly_the_data_stages_stale() {
    let workspace = data1_workspace(16);
    run_ok(&workspace, &[]);
    let status = workspace.vilab(&[
        "status",
        "exp.yaml",
        "--out",
        "out",
        "--set",
        "split.seed=7",
    ]);
    status.assert_code(1).assert_no_panic();
    let lines = status_lines(&status.stdout);
    assert_eq!(lines["split"], "stale — split.seed changed (42 ⇒ 7)");
    assert_eq!(lines["stats"], "stale — upstream split changed");
    assert_eq!(lines["augment"], "stale — upstream split changed");
    insta::assert_snapshot!("status_split_seed", workspace.redact(&status.stdout));

    // plan says the same, computing nothing.
    let plan = workspace.vilab(&["plan", "exp.yaml", "--out", "out", "--set", "split.seed=7"]);
    plan.assert_code(0).assert_no_panic();
    assert!(
        plan.stdout.contains("stale — split.seed changed (42 ⇒ 7)"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        entry_names(&workspace.path().join("out/tiny")).len(),
        2,
        "plan wrote a run folder"
    );
}

#[test]
fn changing_only_a_later_section_leaves_the_data_stages_cached() {
    let workspace = data1_workspace(16);
    run_ok(&workspace, &[]);
    for set in [
        "train.epochs=1",
        "train.optimizer.lr=0.0003",
        "plot.width=1000",
    ] {
        let status = workspace.vilab(&["status", "exp.yaml", "--out", "out", "--set", set]);
        status.assert_no_panic();
        let lines = status_lines(&status.stdout);
        for stage in DATA_STAGES {
            assert_eq!(
                lines.get(stage).map(String::as_str),
                Some("cached"),
                "{set}: {stage}"
            );
        }
    }
}

#[test]
fn an_added_image_makes_split_stale_naming_the_folder() {
    let workspace = data1_workspace(16);
    run_ok(&workspace, &[]);
    let bag = workspace.data().join("Bag");
    let first_bag_image = entry_names(&bag).into_iter().next().expect("a Bag image");
    std::fs::copy(bag.join(&first_bag_image), bag.join("added.png")).expect("copy an image");

    let status = workspace.vilab(&["status", "exp.yaml", "--out", "out"]);
    status.assert_code(1).assert_no_panic();
    let lines = status_lines(&status.stdout);
    assert_eq!(lines["split"], "stale — 1 file added under data/Bag");
    assert_eq!(lines["stats"], "stale — upstream split changed");
    assert_eq!(lines["augment"], "stale — upstream split changed");
    insta::assert_snapshot!("status_file_added", workspace.redact(&status.stdout));

    // Running picks the new image up, and everything is cached again afterwards.
    let rerun = run_ok(&workspace, &[]);
    let runs = data_stage_runs(&workspace.path().join(rerun.last_stdout_line()));
    assert_eq!(runs["split"].state, "computed");
    workspace
        .vilab(&["status", "exp.yaml", "--out", "out"])
        .assert_code(0);
}

#[test]
fn touching_files_makes_split_stale_but_verify_data_looks_at_contents() {
    let workspace = data1_workspace(16);
    run_ok(&workspace, &["--verify-data"]);
    let coat = workspace.data().join("Coat");
    let first = entry_names(&coat).into_iter().next().expect("a Coat image");
    let file = std::fs::File::options()
        .write(true)
        .open(coat.join(&first))
        .expect("open image");
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .expect("set mtime");
    drop(file);
    // Contents are unchanged: the exact fingerprint still matches.
    let exact = workspace.vilab(&["status", "exp.yaml", "--out", "out", "--verify-data"]);
    exact.assert_code(0);
    // The fast fingerprint is a different key (mode change), then sees the touched file.
    run_ok(&workspace, &[]);
    let file = std::fs::File::options()
        .write(true)
        .open(coat.join(&first))
        .expect("open image");
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(7200))
        .expect("set mtime");
    drop(file);
    let fast = workspace.vilab(&["status", "exp.yaml", "--out", "out"]);
    fast.assert_code(1);
    assert_eq!(
        status_lines(&fast.stdout)["split"],
        "stale — 1 file modified under data/Coat"
    );
}

/// Counts per stage of `computed` and `cached` progress lines (`split    computed in ...`).
fn progress_counts(stderr: &str) -> BTreeMap<(String, &'static str), usize> {
    let mut counts = BTreeMap::new();
    for line in stderr.lines() {
        let Some((stage, rest)) = line.split_once(' ') else {
            continue;
        };
        if !DATA_STAGES.contains(&stage) {
            continue;
        }
        let rest = rest.trim_start();
        let state = if rest.starts_with("computed in") {
            "computed"
        } else if rest == "cached" {
            "cached"
        } else {
            continue;
        };
        *counts.entry((stage.to_owned(), state)).or_default() += 1;
    }
    counts
}

// The data copy at 64×64 makes `stats` and `augment` take a few hundred milliseconds each on
// two cores, while planning takes a few; so both processes reach each missing stage while the
// other is at it, and the loser must wait on the entry lock.
const CONCURRENT_IMAGE_SIZE: u32 = 64;

#[test]
fn two_concurrent_runs_of_one_spec_compute_each_stage_once() {
    let workspace = data1_workspace(CONCURRENT_IMAGE_SIZE);
    let args = ["run", "exp.yaml", "--out", "out"];
    let first = spawn(workspace.command(&args));
    let second = spawn(workspace.command(&args));
    let outputs = [wait(first, PROCESS_TIMEOUT), wait(second, PROCESS_TIMEOUT)];
    for output in &outputs {
        output.assert_code(0).assert_no_panic();
    }
    assert_eq!(outputs[0].last_stdout_line(), outputs[1].last_stdout_line());

    // Both share one run folder (same spec), so count what each process said it did.
    let mut counts = progress_counts(&outputs[0].stderr);
    for (key, count) in progress_counts(&outputs[1].stderr) {
        *counts.entry(key).or_default() += count;
    }
    for stage in DATA_STAGES {
        assert_eq!(
            counts.get(&(stage.to_owned(), "computed")),
            Some(&1),
            "{stage} computed once across both runs\n--- first\n{}\n--- second\n{}",
            outputs[0].stderr,
            outputs[1].stderr
        );
        assert_eq!(
            counts.get(&(stage.to_owned(), "cached")),
            Some(&1),
            "{stage} reused once"
        );
    }
    data_stage_runs(&workspace.path().join(outputs[0].last_stdout_line()));
    workspace
        .vilab(&["status", "exp.yaml", "--out", "out"])
        .assert_code(0);
}

#[test]
fn two_concurrent_experiments_sharing_stages_compute_each_once() {
    // Two experiments that differ only in name share every stage key but have their own run
    // folders, so each run.json tells what its process did.
    let workspace = data1_workspace(CONCURRENT_IMAGE_SIZE);
    workspace.write("left.yaml", small_experiment("left", CONCURRENT_IMAGE_SIZE));
    workspace.write(
        "right.yaml",
        small_experiment("right", CONCURRENT_IMAGE_SIZE),
    );
    let left = spawn(workspace.command(&["run", "left.yaml", "--out", "out"]));
    let right = spawn(workspace.command(&["run", "right.yaml", "--out", "out"]));
    let outputs = [wait(left, PROCESS_TIMEOUT), wait(right, PROCESS_TIMEOUT)];
    let mut states: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for output in &outputs {
        output.assert_code(0).assert_no_panic();
        let run_dir = workspace.path().join(output.last_stdout_line());
        for run in stage_runs(&read_run_json(&run_dir)) {
            states.entry(run.key.clone()).or_default().push(run.state);
            keys.entry(run.stage).or_default().push(run.key);
        }
    }
    for stage in DATA_STAGES {
        let stage_keys = &keys[stage];
        assert_eq!(stage_keys.len(), 2);
        assert_eq!(
            stage_keys[0], stage_keys[1],
            "{stage}: the name must not be part of the key"
        );
    }
    for (key, mut key_states) in states {
        key_states.sort();
        assert_eq!(
            key_states,
            ["computed", "reused"],
            "stage key {key} across both run.json files"
        );
    }
}

/// The key of an `augment` entry being written, from its folder name under `cache/tmp/`
/// (`augment-v<N>-<key>.<pid>.<nanos>`).
fn pending_augment_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("augment-v")?;
    let (_, rest) = rest.split_once('-')?;
    let (key, _) = rest.split_once('.')?;
    Some(key.to_owned())
}

/// Starts a run and SIGKILLs it while `augment` is being written. Returns the key of the
/// pending entry, or `None` when the process finished the stage before it could be killed.
fn kill_during_augment(workspace: &Workspace) -> Option<String> {
    let tmp = workspace.path().join("out/cache/tmp");
    let mut child = spawn(workspace.command(&["run", "exp.yaml", "--out", "out"]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let pending = loop {
        if let Some(name) = entry_names(&tmp)
            .into_iter()
            .find(|name| name.starts_with("augment-"))
        {
            break name;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "no augment folder appeared under {} within 60 s",
            tmp.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().expect("SIGKILL");
    child.wait().expect("reap the killed process");
    // Caught mid-stage only if the folder was not renamed into place before the signal.
    if !tmp.join(&pending).exists() {
        return None;
    }
    Some(pending_augment_key(&pending).unwrap_or_else(|| panic!("unexpected tmp name {pending}")))
}

#[test]
fn a_run_killed_mid_stage_leaves_no_complete_entry_and_the_rerun_finishes_it() {
    // 96×96 makes augment take about half a second, so a 1 ms poll catches it mid-way; if a
    // very fast machine finishes first, try again from scratch.
    const IMAGE_SIZE: u32 = 96;
    let mut attempt = 0;
    let (workspace, key) = loop {
        attempt += 1;
        let workspace = data1_workspace(IMAGE_SIZE);
        if let Some(key) = kill_during_augment(&workspace) {
            break (workspace, key);
        }
        assert!(
            attempt < 5,
            "augment finished before SIGKILL in {attempt} attempts"
        );
    };
    let out = workspace.path().join("out");
    assert!(
        !cache_entry_exists(&out, "augment", &key),
        "a killed augment left an entry under its key"
    );
    let status = workspace.vilab(&["status", "exp.yaml", "--out", "out"]);
    status.assert_code(1).assert_no_panic();
    let lines = status_lines(&status.stdout);
    assert_eq!(lines["split"], "cached");
    assert_eq!(lines["stats"], "cached");
    assert_ne!(
        lines["augment"], "cached",
        "a half-written augment entry was taken as complete"
    );

    // The killed process held the entry lock; its death must release it.
    let rerun = run_ok(&workspace, &[]);
    let run_dir = workspace.path().join(rerun.last_stdout_line());
    let runs = data_stage_runs(&run_dir);
    assert_eq!(runs["split"].state, "reused");
    assert_eq!(runs["stats"].state, "reused");
    assert_eq!(runs["augment"].state, "computed");
    assert_eq!(runs["augment"].key, key);
    assert!(cache_entry_exists(&out, "augment", &key));
    let leftovers: Vec<String> = entry_names(&out.join("cache/tmp"))
        .into_iter()
        .filter(|name| name.contains(&key))
        .collect();
    assert!(leftovers.is_empty(), "left under cache/tmp: {leftovers:?}");

    // Same outputs as a run that was never interrupted (same data copy, so same keys).
    let clean = workspace.vilab(&["run", "exp.yaml", "--out", "clean"]);
    clean.assert_code(0);
    let clean_dir = workspace.path().join(clean.last_stdout_line());
    for stage in DATA_STAGES {
        let recovered = file_contents(&run_dir.join(stage));
        assert!(!recovered.is_empty(), "{stage} has no files");
        assert_eq!(
            recovered,
            file_contents(&clean_dir.join(stage)),
            "{stage} outputs differ"
        );
    }
}
