//! Crash injection through the real binary: a small experiment (every stage, three epochs of
//! training) is killed with SIGKILL at 20 moments spread over its run, and re-run after each
//! kill on the same output folder until it completes. The moments are chosen by a seeded
//! generator as "when this progress line appears on stderr, plus this many milliseconds", so
//! the sequence is the same on every run of the test. After every kill, each committed cache
//! entry and each training checkpoint matches its manifest byte for byte (nothing half
//! written is ever visible under a key), and every completed run gives the results of the
//! uninterrupted run: metrics, history (without its timing columns), weights, evaluation
//! reports and plots, bit for bit (the train stage is bit-reproducible on the CPU).
//!
//! SIGTERM and SIGINT during training end the process with exit code 130 after saving a
//! checkpoint, and the next run resumes from it to the same results.
//!
//! With `train.checkpoint_every` (`{steps: 2}`, and a minutes interval short enough to save
//! after every step) a SIGKILL inside an epoch loses at most that interval: the process is
//! stopped until its newest checkpoint is a mid-epoch one, killed, and the next run resumes at
//! that step to the uninterrupted run's results. The interval is not part of the train key: a
//! checkpoint written under one interval is resumed under another, and a finished run is reused.
//!
//! Damaged files are caught on use: a committed entry whose file was edited or truncated, and a
//! checkpoint whose tensors were edited, are reported with a warning naming the file, set
//! aside, and recomputed (training resumes from the checkpoint before the damaged one), again
//! with the results of a clean run. A file only touched is hashed once, found intact and reused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Output, Workspace, entry_names};
use crate::faults::{
    self, Watched, assert_cache_whole, assert_same_results, checkpoints, small_workspace,
};

/// Three epochs of a tiny model on 3 × 60 images: the whole pipeline takes about a second.
const EXPERIMENT: &str = "\
name: crash
seed: 7
data:
  root: data
  image_size: 16
split:
  val_fraction: 0.3
  seed: 42
model:
  name: vil_micro
  dim: 16
  depth: 2
  patch_size: 4
train:
  epochs: 3
  batch_size: 12
  workers: 1
  ema: {decay: 0.99}
plot:
  formats: [png]
";

const CLASSES: [&str; 3] = ["Bag", "Coat", "Sandal"];
const IMAGES_PER_CLASS: usize = 60;

/// The progress lines a kill can follow, in the order a full run prints them, with the
/// longest delay (milliseconds) that still usually lands before the next one: the stages
/// before training take a few milliseconds, an epoch about a hundred.
const TRIGGERS: [(&str, u64); 14] = [
    ("split    computing", 5),
    ("split    computed in", 5),
    ("stats    computing", 5),
    ("stats    computed in", 5),
    ("augment  computing", 5),
    ("augment  computed in", 5),
    ("train    computing", 150),
    ("train    epoch 1/3", 150),
    ("train    epoch 2/3", 150),
    ("train    epoch 3/3", 20),
    ("train    computed in", 20),
    ("evaluate computing", 60),
    ("evaluate computed in", 5),
    ("plot     computing", 5),
];

const KILLS: usize = 20;
const KILLS_PER_ROUND: usize = 5;

/// splitmix64: a seeded, dependency-free source of the kill moments.
struct Moments(u64);

impl Moments {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// One kill: after the line `TRIGGERS[trigger]` appears, wait `delay`, then SIGKILL.
#[derive(Debug, Clone, Copy)]
struct Kill {
    trigger: usize,
    delay: Duration,
}

/// The 20 kills in rounds of 5; within a round, in pipeline order at distinct lines, so each
/// kill finds its line still ahead of the resumed run.
fn kill_plan(seed: u64) -> Vec<Vec<Kill>> {
    let mut moments = Moments(seed);
    (0..KILLS / KILLS_PER_ROUND)
        .map(|_| {
            let mut triggers: Vec<usize> = Vec::new();
            while triggers.len() < KILLS_PER_ROUND {
                let trigger = moments.below(TRIGGERS.len() as u64) as usize;
                if !triggers.contains(&trigger) {
                    triggers.push(trigger);
                }
            }
            triggers.sort_unstable();
            triggers
                .into_iter()
                .map(|trigger| Kill {
                    trigger,
                    delay: Duration::from_millis(moments.below(TRIGGERS[trigger].1 + 1)),
                })
                .collect()
        })
        .collect()
}

/// The kill plan's seed: fixed, so CI always tries the same moments, unless `VILAB_CRASH_SEED`
/// (decimal or `0x` hex) asks for another plan, as `scripts/soak.sh` does round after round.
fn plan_seed() -> u64 {
    let Ok(text) = std::env::var("VILAB_CRASH_SEED") else {
        return 0x5eed_c0de;
    };
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("VILAB_CRASH_SEED={text:?} is not a u64"))
}

fn workspace() -> Workspace {
    let workspace = small_workspace(&CLASSES, IMAGES_PER_CLASS);
    workspace.write("crash.yaml", EXPERIMENT);
    workspace
}

fn start(workspace: &Workspace, out: &str) -> Watched {
    Watched::spawn(workspace.command(&["run", "crash.yaml", "--out", out]))
}

/// Runs to the end on `out`; returns the run folder.
fn complete(workspace: &Workspace, out: &str) -> (PathBuf, Output) {
    let output = start(workspace, out).finish();
    output.assert_code(0).assert_no_panic();
    (workspace.path().join(output.last_stdout_line()), output)
}

/// Checks a run that completed after kills (or damage) against the reference.
fn assert_recovered(workspace: &Workspace, out: &str, run_dir: &Path, reference: &Path) {
    assert_same_results(reference, run_dir, out);
    let out_dir = workspace.path().join(out);
    assert_cache_whole(&out_dir);
    assert!(
        checkpoints(&out_dir).is_empty(),
        "{out}: checkpoints left after training was committed"
    );
    assert!(
        !run_dir.join("pending.json").exists(),
        "{out}: pending.json left in a finished run folder"
    );
}

#[test]
fn twenty_sigkills_anywhere_never_change_the_results() {
    let workspace = workspace();
    let (reference, _) = complete(&workspace, "reference");
    let seed = plan_seed();
    // Shown with the failure, so a soak's failing plan can be replayed.
    eprintln!("kill plan seed {seed:#x} (VILAB_CRASH_SEED={seed:#x} replays it)");
    let plan = kill_plan(seed);
    let mut landed = 0;
    let mut checked_folders = 0;
    let mut folders = 0;
    for kills in &plan {
        let mut out = format!("run-{folders}");
        for kill in kills {
            let (line, _) = TRIGGERS[kill.trigger];
            let mut fresh_tries = 0;
            let mut child = loop {
                let mut child = start(&workspace, &out);
                if child.wait_for_line(line) {
                    break child;
                }
                // An earlier kill landed past this line, so the resumed run went by it and
                // finished: check it, and aim this kill at a fresh folder instead.
                let output = child.finish();
                output.assert_code(0).assert_no_panic();
                let run_dir = workspace.path().join(output.last_stdout_line());
                assert_recovered(&workspace, &out, &run_dir, &reference);
                fresh_tries += 1;
                assert!(fresh_tries < 2, "`{line}` never printed by a fresh run");
                folders += 1;
                out = format!("run-{folders}");
            };
            let context = format!("{out}: kill {} ms after `{line}`", kill.delay.as_millis());
            std::thread::sleep(kill.delay);
            if child.kill() {
                landed += 1;
            }
            let output = child.finish();
            output.assert_no_panic();
            assert!(
                !output.stderr.contains("damaged"),
                "{context}: a half-written entry was taken for a damaged one:\n{}",
                output.stderr
            );
            checked_folders += assert_cache_whole(&workspace.path().join(&out));
        }
        let (run_dir, output) = complete(&workspace, &out);
        assert!(
            !output.stderr.contains("damaged"),
            "{out}: a half-written entry was read:\n{}",
            output.stderr
        );
        assert_recovered(&workspace, &out, &run_dir, &reference);
        folders += 1;
    }
    eprintln!(
        "{landed} of {KILLS} kills caught vilab running, over {folders} output folders; \
         {checked_folders} entries and checkpoints checked against their manifests"
    );
    assert!(
        landed >= KILLS / 2,
        "only {landed} of {KILLS} kills caught the process still running"
    );
}

/// Starts a run and sends `signal` once the first epoch's line is out. Returns `None` when
/// training had finished before the signal was handled (a slow machine), so the caller tries
/// again on a fresh folder.
fn interrupt_training(workspace: &Workspace, out: &str, signal: &str) -> Option<Output> {
    let mut child = start(workspace, out);
    assert!(
        child.wait_for_line("train    epoch 1/3"),
        "training never finished an epoch"
    );
    child.signal(signal);
    let output = child.finish();
    output.assert_no_panic();
    if !output.stderr.contains("interrupted at epoch") {
        return None;
    }
    Some(output)
}

#[test]
fn sigterm_and_sigint_save_a_checkpoint_exit_130_and_resume_to_the_same_results() {
    let workspace = workspace();
    let (reference, _) = complete(&workspace, "reference");
    for signal in ["TERM", "INT"] {
        let interrupted = (0..3).find_map(|attempt| {
            interrupt_training(&workspace, &format!("{signal}-{attempt}"), signal)
                .map(|output| (attempt, output))
        });
        let Some((attempt, output)) = interrupted else {
            panic!("SIG{signal} never arrived while training ran (3 attempts)");
        };
        let out = format!("{signal}-{attempt}");
        output.assert_code(130);
        let out_dir = workspace.path().join(&out);
        let saved = checkpoints(&out_dir);
        assert!(!saved.is_empty(), "SIG{signal}: no checkpoint saved");
        assert_cache_whole(&out_dir);

        let (run_dir, resumed) = complete(&workspace, &out);
        assert!(
            resumed.stderr.contains("resuming at epoch"),
            "SIG{signal}: did not resume from {saved:?}:\n{}",
            resumed.stderr
        );
        assert_recovered(&workspace, &out, &run_dir, &reference);
    }
}

/// Flips one bit of the byte at `offset` from the end of `path`: same size, other contents.
fn flip_byte(path: &Path, offset_from_end: usize) {
    let mut bytes =
        std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let index = bytes.len() - 1 - offset_from_end;
    bytes[index] ^= 0x10;
    std::fs::write(path, bytes).expect("write damaged file");
}

/// Cuts the last `count` bytes off `path`.
fn truncate(path: &Path, count: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let len = file.metadata().expect("metadata").len();
    file.set_len(len - count).expect("truncate");
}

/// `path` as vilab prints it when run in the workspace with a relative `--out`.
fn shown(workspace: &Workspace, path: &Path) -> String {
    let root = std::fs::canonicalize(workspace.path()).expect("workspace");
    path.strip_prefix(&root)
        .or_else(|_| path.strip_prefix(workspace.path()))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The committed entry of `stage` a run folder links to.
fn entry_of(run_dir: &Path, stage: &str) -> PathBuf {
    std::fs::canonicalize(run_dir.join(stage)).expect("stage link resolves")
}

/// Starts a run and SIGKILLs it once the second epoch's line is out, so the newest and the
/// one-before checkpoints both exist. `None` when training was committed before the kill.
fn kill_after_second_epoch(workspace: &Workspace, out: &str) -> Option<()> {
    let mut child = start(workspace, out);
    assert!(child.wait_for_line("train    epoch 2/3"));
    child.kill();
    child.finish();
    (checkpoints(&workspace.path().join(out)).len() >= 2).then_some(())
}

#[test]
fn damaged_entries_and_checkpoints_are_reported_and_recomputed() {
    let workspace = workspace();
    let (reference, _) = complete(&workspace, "reference");

    // A committed upstream entry edited and another truncated, and the newest checkpoint of
    // the interrupted training edited.
    let out = (0..3)
        .map(|attempt| format!("damaged-{attempt}"))
        .find(|out| kill_after_second_epoch(&workspace, out).is_some())
        .expect("training was never caught between its second epoch and its end");
    let out_dir = workspace.path().join(&out);
    let killed_entries = faults::committed_entries(&out_dir);
    let stage_entry = |stage: &str| {
        killed_entries
            .iter()
            .find(|entry| {
                entry
                    .parent()
                    .and_then(Path::parent)
                    .and_then(Path::file_name)
                    .is_some_and(|name| name.to_string_lossy().starts_with(&format!("{stage}-v")))
            })
            .unwrap_or_else(|| panic!("no {stage} entry"))
            .clone()
    };
    let packed = stage_entry("augment").join("train.u8");
    let stats = stage_entry("stats").join("stats.json");
    let newest = checkpoints(&out_dir).pop().expect("a checkpoint");
    let tensors = newest.join("state.safetensors");
    // The inode change time has the kernel tick's resolution: let one pass, as it would
    // between any real commit and edit.
    std::thread::sleep(Duration::from_millis(50));
    flip_byte(&packed, 100);
    truncate(&stats, 3);
    flip_byte(&tensors, 0);

    let (run_dir, output) = complete(&workspace, &out);
    for damaged in [&packed, &stats, &tensors] {
        let named = output
            .stderr
            .lines()
            .any(|line| line.contains("WARN") && line.contains(&shown(&workspace, damaged)));
        assert!(
            named,
            "no warning naming {}:\n{}",
            damaged.display(),
            output.stderr
        );
    }
    assert!(
        output.stderr.contains("resuming at epoch"),
        "training did not resume from the checkpoint before the damaged one:\n{}",
        output.stderr
    );
    assert_recovered(&workspace, &out, &run_dir, &reference);
    assert_eq!(
        entry_names(&out_dir.join("cache/corrupt")).len(),
        2,
        "the damaged entries are kept under corrupt/"
    );

    // Damage in committed entries of a finished run: the weights of the train entry (training
    // starts over) and an evaluation report.
    std::thread::sleep(Duration::from_millis(50));
    let weights = entry_of(&run_dir, "train").join("last/model.safetensors");
    let report = entry_of(&run_dir, "evaluate").join("metrics.json");
    flip_byte(&weights, 7);
    truncate(&report, 1);
    let (again_dir, again) = complete(&workspace, &out);
    assert_eq!(again_dir, run_dir);
    for damaged in [&weights, &report] {
        assert!(
            again.stderr.contains(&shown(&workspace, damaged)),
            "no warning naming {}:\n{}",
            damaged.display(),
            again.stderr
        );
    }
    assert_recovered(&workspace, &out, &run_dir, &reference);

    // Touched but intact: hashed once, found whole, recorded, and reused without a warning.
    let packed = entry_of(&run_dir, "augment").join("train.u8");
    std::thread::sleep(Duration::from_millis(50));
    std::fs::File::options()
        .write(true)
        .open(&packed)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()))
        .expect("touch");
    let touched = start(&workspace, &out).finish();
    touched.assert_code(0).assert_no_panic();
    assert!(!touched.stderr.contains("WARN"), "{}", touched.stderr);
    assert!(
        touched.stderr.contains("augment  cached"),
        "{}",
        touched.stderr
    );
    let records = entry_names(&out_dir.join("cache/verified"));
    assert!(
        records.iter().any(|name| name.starts_with("augment-v")),
        "the re-hashed file was not recorded: {records:?}"
    );
}

/// Training steps per epoch of [`EXPERIMENT`]: 126 training images in batches of 12.
const STEPS_PER_EPOCH: u64 = 10;

/// Starts a run of [`EXPERIMENT`] on `out` with extra arguments (`--set`s, `-v`).
fn start_with(workspace: &Workspace, out: &str, extra: &[&str]) -> Watched {
    let mut arguments = vec!["run", "crash.yaml", "--out", out];
    arguments.extend_from_slice(extra);
    Watched::spawn(workspace.command(&arguments))
}

/// The newest checkpoint under `out` as (epoch it is in, steps of it done), when it was saved
/// inside an epoch: an epoch's own checkpoint has no steps of the next one done, and one saved
/// after an epoch's last step (an interrupt there) has all of them.
fn newest_mid_epoch(out: &Path) -> Option<(u64, u64)> {
    let newest = checkpoints(out).pop()?;
    // Read while the writer is stopped, or raced by its rotation: a vanished file is no answer.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest.join("state.json")).ok()?).ok()?;
    let epochs_done = state["epochs_done"].as_u64()?;
    let steps = state["progress"]["batches_done"].as_u64()?;
    (1..STEPS_PER_EPOCH)
        .contains(&steps)
        .then_some((epochs_done + 1, steps))
}

/// Starts a run with `extra` arguments and, once training has finished its first epoch,
/// SIGKILLs it at a moment when its newest checkpoint was saved inside an epoch: the process
/// is stopped (SIGSTOP) before its resume folder is looked at, so what is seen is what the
/// kill leaves, and let go again (SIGCONT) until that is a mid-epoch checkpoint. Returns the
/// (epoch, step) the next run must resume at, or `None` when training was committed first.
fn kill_at_a_mid_epoch_checkpoint(
    workspace: &Workspace,
    out: &str,
    extra: &[&str],
) -> Option<(u64, u64)> {
    let out_dir = workspace.path().join(out);
    let mut child = start_with(workspace, out, extra);
    assert!(
        child.wait_for_line("train    epoch 1/3"),
        "training never finished an epoch"
    );
    let deadline = std::time::Instant::now() + crate::common::PROCESS_TIMEOUT;
    let found = loop {
        child.signal("STOP");
        if let Some(found) = newest_mid_epoch(&out_dir) {
            break Some(found);
        }
        // Past the last epoch the resume folder is removed with the commit: too late.
        if checkpoints(&out_dir).is_empty() || std::time::Instant::now() > deadline {
            break None;
        }
        child.signal("CONT");
        std::thread::sleep(Duration::from_millis(1));
    };
    let kept = checkpoints(&out_dir).len();
    child.kill();
    let output = child.finish();
    output.assert_no_panic();
    // Two are kept; a third exists between a new one's rename into place and the removal of
    // the oldest, a moment a stop can catch.
    assert!(
        kept <= 3,
        "{out}: {kept} checkpoints on disk, the rotation keeps 2"
    );
    assert_cache_whole(&out_dir);
    found
}

/// `resuming at epoch E/3, step S/10` in a run's stderr, as (E, S).
fn resumed_at(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .find_map(|line| line.split("resuming at epoch ").nth(1))?;
    let (epoch, step) = line.split_once(", step ")?;
    let number = |text: &str| text.split('/').next()?.trim().parse().ok();
    Some((number(epoch)?, number(step)?))
}

/// Kills at a mid-epoch checkpoint (three tries on fresh folders: on a slow machine training
/// could end first) and returns the folder and where the next run must resume.
fn killed_mid_epoch(workspace: &Workspace, name: &str, extra: &[&str]) -> (String, (u64, u64)) {
    (0..3)
        .find_map(|attempt| {
            let out = format!("{name}-{attempt}");
            kill_at_a_mid_epoch_checkpoint(workspace, &out, extra).map(|found| (out, found))
        })
        .unwrap_or_else(|| panic!("{name}: never caught a mid-epoch checkpoint (3 runs)"))
}

#[test]
fn checkpoint_every_steps_or_minutes_bounds_what_a_sigkill_loses() {
    let workspace = workspace();
    // (interval, mid-epoch checkpoints per epoch): every 2 steps saves after steps 2, 4, 6
    // and 8 (the epoch's own checkpoint follows step 10); a 6 µs interval after every step but
    // the last.
    for (interval, per_epoch) in [("{steps: 2}", 4), ("{minutes: 0.0000001}", 9)] {
        let set = format!("train.checkpoint_every={interval}");
        let (reference, output) = {
            let output = start_with(
                &workspace,
                &format!("reference-{per_epoch}"),
                &["-v", "--set", &set],
            )
            .finish();
            output.assert_code(0).assert_no_panic();
            (workspace.path().join(output.last_stdout_line()), output)
        };
        let saved = output
            .stderr
            .lines()
            .filter(|line| line.contains("mid-epoch checkpoint at epoch"))
            .count();
        assert_eq!(saved, 3 * per_epoch, "{interval}:\n{}", output.stderr);

        let (out, (epoch, step)) =
            killed_mid_epoch(&workspace, &format!("every-{per_epoch}"), &["--set", &set]);
        assert!(
            epoch >= 2 && step > 0,
            "{interval}: epoch {epoch}, step {step}"
        );
        let resumed = start_with(&workspace, &out, &["--set", &set]).finish();
        resumed.assert_code(0).assert_no_panic();
        assert_eq!(
            resumed_at(&resumed.stderr),
            Some((epoch, step)),
            "{interval}: not resumed from the mid-epoch checkpoint:\n{}",
            resumed.stderr
        );
        let run_dir = workspace.path().join(resumed.last_stdout_line());
        assert_recovered(&workspace, &out, &run_dir, &reference);
    }
}

#[test]
fn checkpoint_every_is_not_part_of_the_train_key() {
    let workspace = workspace();
    let (reference, _) = complete(&workspace, "reference");

    // Killed inside an epoch with one interval, resumed without any: the same training.
    let (out, (epoch, step)) = killed_mid_epoch(
        &workspace,
        "changed",
        &["--set", "train.checkpoint_every={steps: 3}"],
    );
    let (run_dir, resumed) = complete(&workspace, &out);
    assert_eq!(
        resumed_at(&resumed.stderr),
        Some((epoch, step)),
        "the checkpoint of the other interval was not resumed:\n{}",
        resumed.stderr
    );
    assert_recovered(&workspace, &out, &run_dir, &reference);

    // Another interval on the finished run: every stage, training included, comes from the
    // cache, the same entry.
    let again = start_with(
        &workspace,
        &out,
        &["--set", "train.checkpoint_every={minutes: 30}"],
    )
    .finish();
    again.assert_code(0).assert_no_panic();
    assert!(
        again.stderr.contains("train    cached") && !again.stderr.contains("computing"),
        "{}",
        again.stderr
    );
    let again_dir = workspace.path().join(again.last_stdout_line());
    assert_eq!(entry_of(&again_dir, "train"), entry_of(&run_dir, "train"));
}
