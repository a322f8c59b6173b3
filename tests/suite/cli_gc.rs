//! `vilab gc` through the real binary: entries no run folder references are deleted (after a
//! dry run that deletes nothing), referenced ones are kept and still reused, entries and
//! leftover folders whose lock a process holds are kept until it is released, nothing outside
//! `<out>/cache` (nor `corrupt/`) is touched, and gc refuses to run without an explicit `--out`.
//! The checkpoints of an interrupted training (`cache/resume/`) are kept while a run folder
//! still lists their key (its `pending.json`), so the next run resumes; orphaned ones go.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::common::{
    Output, Workspace, cache_entry_exists, entry_names, read_run_json, run_vilab_with_env,
    stage_runs, tree_state,
};
use crate::faults::{Watched, small_workspace};

/// A tiny model trained for one epoch, so every stage has an entry.
const EXPERIMENT: &str = "name: tiny\n\
    seed: 42\n\
    data:\n  root: data\n  image_size: 16\n\
    model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n\
    train:\n  epochs: 1\n  batch_size: 50\n  workers: 0\n\
    plot:\n  formats: [png]\n";

fn vilab(workspace: &Workspace, args: &[&str], code: i32) -> Output {
    let output = workspace.vilab(args);
    output.assert_code(code).assert_no_panic();
    output
}

/// Stage ⇒ key of a run folder.
fn keys(run_dir: &Path) -> BTreeMap<String, String> {
    stage_runs(&read_run_json(run_dir))
        .into_iter()
        .map(|run| (run.stage, run.key))
        .collect()
}

/// The cache folder of `stage` (`<stage>-v<N>`).
fn stage_folder(out: &Path, stage: &str) -> String {
    entry_names(&out.join("cache"))
        .into_iter()
        .find(|name| name.starts_with(&format!("{stage}-v")))
        .expect("stage folder")
}

/// The lock file of an entry: `<out>/cache/locks/<stage>-v<N>-<key>.lock`.
fn lock_file(out: &Path, stage: &str, key: &str) -> File {
    let folder = stage_folder(out, stage);
    let path = out.join("cache/locks").join(format!("{folder}-{key}.lock"));
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A workspace where [`EXPERIMENT`] ran once into `out/`: the workspace, `out`, the run
/// folder and its stage keys.
fn ran_once() -> (Workspace, PathBuf, PathBuf, BTreeMap<String, String>) {
    let workspace = Workspace::with_data1();
    workspace.write("exp.yaml", EXPERIMENT);
    let out = workspace.path().join("out");
    let run = vilab(&workspace, &["run", "exp.yaml", "--out", "out"], 0);
    let run_dir = workspace.path().join(run.last_stdout_line());
    let run_keys = keys(&run_dir);
    (workspace, out, run_dir, run_keys)
}

#[test]
fn gc_deletes_orphaned_entries_and_keeps_referenced_ones() {
    let (workspace, out, kept_dir, kept_keys) = ran_once();
    let orphan = vilab(
        &workspace,
        &["run", "exp.yaml", "--out", "out", "--set", "split.seed=7"],
        0,
    );
    let orphan_dir = workspace.path().join(orphan.last_stdout_line());
    let orphan_keys = keys(&orphan_dir);
    assert!(
        orphan_keys
            .values()
            .all(|key| !kept_keys.values().any(|kept| kept == key)),
        "a different split changes every key"
    );
    std::fs::remove_dir_all(&orphan_dir).expect("remove the second run folder");
    std::fs::write(out.join("notes.txt"), "mine").expect("a file of the user's");
    std::fs::create_dir_all(out.join("cache/corrupt/old")).expect("corrupt folder");
    std::fs::write(out.join("cache/corrupt/old/x"), "evidence").expect("corrupt file");
    let fake_key = "ab".repeat(32);
    let leftover_tmp = out.join(format!("cache/tmp/split-v1-{fake_key}.1.2"));
    let leftover_resume = out.join(format!("cache/resume/train-v1-{fake_key}"));
    for folder in [&leftover_tmp, &leftover_resume] {
        std::fs::create_dir_all(folder).expect("leftover folder");
        std::fs::write(folder.join("part"), vec![0u8; 1000]).expect("leftover file");
    }

    let before = tree_state(&out);
    let dry = vilab(&workspace, &["gc", "--out", "out", "--dry-run"], 0);
    assert_eq!(tree_state(&out), before, "--dry-run changed something");
    assert_eq!(
        dry.stdout.matches("would delete entry").count(),
        orphan_keys.len(),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("would delete tmp") && dry.stdout.contains("would delete resume"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains(&format!("would free {} folder(s)", orphan_keys.len() + 2))
    );

    // A process using one orphan (a shared lock, as runs hold) keeps it.
    let busy_key = &orphan_keys["train"];
    let busy = lock_file(&out, "train", busy_key);
    busy.lock_shared().expect("shared lock");
    let kept_run_state = tree_state(&kept_dir);
    let collected = vilab(&workspace, &["gc", "--out", "out"], 0);
    assert!(
        collected.stdout.contains("in use, kept: train-v"),
        "{}",
        collected.stdout
    );
    for (stage, key) in &orphan_keys {
        assert_eq!(
            cache_entry_exists(&out, stage, key),
            key == busy_key,
            "{stage} entry after gc"
        );
    }
    for (stage, key) in &kept_keys {
        assert!(
            cache_entry_exists(&out, stage, key),
            "referenced {stage} entry deleted"
        );
    }
    assert!(!leftover_tmp.exists() && !leftover_resume.exists());
    assert_eq!(
        tree_state(&kept_dir),
        kept_run_state,
        "gc touched a run folder"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(
        out.join("cache/corrupt/old/x").is_file(),
        "gc touched corrupt/"
    );
    assert!(
        collected
            .stdout
            .contains(&format!("freed {} folder(s)", orphan_keys.len() + 1)),
        "{}",
        collected.stdout
    );

    drop(busy);
    let again = vilab(&workspace, &["gc", "--out", "out"], 0);
    assert!(
        again.stdout.contains("freed 1 folder(s)"),
        "{}",
        again.stdout
    );
    assert!(!cache_entry_exists(&out, "train", busy_key));

    // Nothing the kept run needs is gone: running it again reuses every stage.
    vilab(&workspace, &["run", "exp.yaml", "--out", "out"], 0);
    for stage in stage_runs(&read_run_json(&kept_dir)) {
        assert_eq!(stage.state, "reused", "{} recomputed after gc", stage.stage);
    }
}

#[test]
fn gc_needs_an_explicit_out() {
    let workspace = Workspace::new();
    std::fs::create_dir_all(workspace.path().join("outputs/cache")).expect("cache");
    let missing = run_vilab_with_env(workspace.path(), &["gc"], &[("VILAB_OUT", "outputs")]);
    missing.assert_code(2).assert_no_panic();
    assert!(missing.stderr.contains("--out"), "{}", missing.stderr);
    let nowhere = vilab(&workspace, &["gc", "--out", "nowhere"], 1);
    assert!(
        nowhere.stderr.contains("nowhere: no such folder"),
        "{}",
        nowhere.stderr
    );
    let empty = vilab(&workspace, &["gc", "--out", "outputs"], 0);
    assert!(
        empty.stdout.contains("freed 0 folder(s)"),
        "{}",
        empty.stdout
    );
}

/// Enough epochs of a tiny model that a run is still training well after its first checkpoint.
const LONG_TRAINING: &str = "name: long\n\
    seed: 42\n\
    data:\n  root: data\n  image_size: 16\n\
    model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n  patch_size: 4\n\
    train:\n  epochs: 12\n  batch_size: 12\n  workers: 0\n";

/// Runs `vilab run long.yaml --out out EXTRA...` and SIGKILLs it once its first epoch is
/// checkpointed. Returns the run folder (it holds `pending.json`) and the train stage's key.
fn kill_while_training(workspace: &Workspace, extra: &[&str]) -> (PathBuf, String) {
    let mut args = vec!["run", "long.yaml", "--out", "out"];
    args.extend_from_slice(extra);
    let experiment = workspace.path().join("out/long");
    let before = entry_names(&experiment);
    let mut child = Watched::spawn(workspace.command(&args));
    if !child.wait_for_line("train    epoch 1/") {
        panic!("the first epoch never ended:\n{}", child.finish().stderr);
    }
    assert!(child.kill(), "training ended before it could be killed");
    child.finish();
    let run_dir = entry_names(&experiment)
        .into_iter()
        .find(|name| !before.contains(name))
        .map(|name| experiment.join(name))
        .expect("the killed run's folder");
    let pending_path = run_dir.join("pending.json");
    let pending: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&pending_path)
            .unwrap_or_else(|error| panic!("{}: {error}", pending_path.display())),
    )
    .expect("pending.json parses");
    let train_key = pending["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|stage| stage["stage"] == "train")
        .and_then(|stage| stage["key"].as_str())
        .expect("train key")
        .to_owned();
    (run_dir, train_key)
}

/// The resume folder of the train stage with `key`, if there is one.
fn resume_folder(out: &Path, key: &str) -> Option<PathBuf> {
    let resume = out.join("cache/resume");
    entry_names(&resume)
        .into_iter()
        .find(|name| name.starts_with("train-v") && name.ends_with(key))
        .map(|name| resume.join(name))
}

#[test]
fn gc_keeps_the_checkpoints_of_unfinished_runs_and_collects_orphaned_ones() {
    let workspace = small_workspace(&["Bag", "Coat", "Sandal"], 40);
    workspace.write("long.yaml", LONG_TRAINING);
    let out = workspace.path().join("out");
    let (kept_run, kept_key) = kill_while_training(&workspace, &[]);
    let (orphan_run, orphan_key) = kill_while_training(&workspace, &["--set", "train.epochs=11"]);
    assert_ne!(kept_key, orphan_key);
    let kept_resume = resume_folder(&out, &kept_key).expect("checkpoints of the first run");
    let orphan_resume = resume_folder(&out, &orphan_key).expect("checkpoints of the second run");
    std::fs::remove_dir_all(&orphan_run).expect("remove the second run folder");

    let collected = vilab(&workspace, &["gc", "--out", "out"], 0);
    assert!(
        kept_resume.is_dir(),
        "gc deleted the checkpoints of an unfinished run:\n{}",
        collected.stdout
    );
    assert!(
        !orphan_resume.exists(),
        "gc kept orphaned checkpoints:\n{}",
        collected.stdout
    );
    assert!(
        collected.stdout.contains("deleted resume resume/train-v"),
        "{}",
        collected.stdout
    );
    assert!(
        !collected.stdout.contains("deleted entry"),
        "the data entries are shared with the unfinished run:\n{}",
        collected.stdout
    );

    let resumed = vilab(&workspace, &["run", "long.yaml", "--out", "out"], 0);
    assert!(
        resumed.stderr.contains("resuming at epoch 2/12"),
        "the run did not resume from the checkpoint gc kept:\n{}",
        resumed.stderr
    );
    assert_eq!(workspace.path().join(resumed.last_stdout_line()), kept_run);
    for stage in stage_runs(&read_run_json(&kept_run)) {
        let expected = if ["split", "stats", "augment"].contains(&stage.stage.as_str()) {
            "reused"
        } else {
            "computed"
        };
        assert_eq!(stage.state, expected, "{}", stage.stage);
    }
    assert!(!kept_run.join("pending.json").exists());
    assert!(resume_folder(&out, &kept_key).is_none());
}

/// The entry folder of `stage` with `key`: `<out>/cache/<stage>-v<N>/<kk>/<key>`.
fn entry_dir(out: &Path, stage: &str, key: &str) -> PathBuf {
    out.join("cache")
        .join(stage_folder(out, stage))
        .join(&key[..2])
        .join(key)
}

#[test]
fn verify_finds_damage_the_cheap_check_cannot_see_and_quarantines_it() {
    let (workspace, out, run_dir, run_keys) = ran_once();
    let whole = vilab(&workspace, &["verify", "--out", "out"], 0);
    assert!(
        whole
            .stdout
            .contains(&format!("verified {} entries", run_keys.len()))
            && whole.stdout.contains("all whole"),
        "{}",
        whole.stdout
    );

    // Bit rot: one byte of the packed training data changes while its size stays, and the
    // manifest is rewritten with its own bytes afterwards, so no file of the entry looks
    // modified since the entry was committed (the cheap check on use hashes nothing).
    let augment = entry_dir(&out, "augment", &run_keys["augment"]);
    let packed = entry_names(&augment)
        .into_iter()
        .map(|name| augment.join(name))
        .filter(|path| path.is_file())
        .max_by_key(|path| std::fs::metadata(path).expect("metadata").len())
        .expect("the augment entry has files");
    let mut bytes = std::fs::read(&packed).expect("packed data");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&packed, &bytes).expect("damage");
    let manifest = std::fs::read(augment.join("manifest.json")).expect("manifest");
    std::fs::write(augment.join("manifest.json"), manifest).expect("manifest rewritten");
    // `vilab status` exits 0 only when every stage is cached and passes the check on use.
    vilab(&workspace, &["status", "exp.yaml", "--out", "out"], 0);

    let before = tree_state(&out);
    let found = vilab(&workspace, &["verify", "--out", "out"], 1);
    let damaged_line = format!(
        "damaged entry: {}: contents changed since written",
        packed
            .strip_prefix(workspace.path())
            .expect("inside the workspace")
            .display()
    );
    assert!(
        found.stdout.contains(&damaged_line) && found.stdout.contains(": 1 damaged"),
        "{}",
        found.stdout
    );
    assert_eq!(
        tree_state(&out),
        before,
        "verify without --quarantine changed the cache"
    );

    let moved = vilab(&workspace, &["verify", "--out", "out", "--quarantine"], 1);
    assert!(
        moved.stdout.contains("moved to cache/corrupt/augment-v"),
        "{}",
        moved.stdout
    );
    assert!(!augment.exists(), "the damaged entry is still in place");
    assert_eq!(
        entry_names(&out.join("cache/corrupt")).len(),
        1,
        "the damaged entry is kept under corrupt/"
    );

    // The next run computes the entry again (the same bytes), and everything is whole.
    vilab(&workspace, &["run", "exp.yaml", "--out", "out"], 0);
    let states: BTreeMap<String, String> = stage_runs(&read_run_json(&run_dir))
        .into_iter()
        .map(|stage| (stage.stage, stage.state))
        .collect();
    assert_eq!(states["augment"], "computed", "{states:?}");
    assert_eq!(states["split"], "reused", "{states:?}");
    let restored = std::fs::read(&packed).expect("recomputed entry");
    bytes[middle] ^= 0x55;
    assert!(
        restored == bytes,
        "the recomputed entry differs from the original"
    );
    vilab(&workspace, &["verify", "--out", "out"], 0);
    let missing = workspace.vilab(&["verify"]);
    missing.assert_code(2).assert_no_panic();
}

#[test]
fn a_rerun_removes_checkpoints_left_beside_a_committed_entry() {
    // What a process killed between committing the train entry and removing its checkpoints
    // leaves behind.
    let (workspace, out, run_dir, run_keys) = ran_once();
    let resume = out.join("cache/resume").join(format!(
        "{}-{}",
        stage_folder(&out, "train"),
        run_keys["train"]
    ));
    std::fs::create_dir_all(resume.join("ckpt-000000000001")).expect("resume folder");
    std::fs::write(resume.join("ckpt-000000000001/model.bin"), [0u8; 64]).expect("checkpoint");
    vilab(&workspace, &["run", "exp.yaml", "--out", "out"], 0);
    assert!(!resume.exists(), "the leftover checkpoints are still there");
    for stage in stage_runs(&read_run_json(&run_dir)) {
        assert_eq!(stage.state, "reused", "{}", stage.stage);
    }
}
