//! A full disk (ENOSPC) through the real binary, on small tmpfs file systems the test mounts.
//!
//! The output root sits on a 4 MiB tmpfs filled up to leave a given amount free, chosen so the
//! disk runs out at different moments: while the augment stage packs images, and while training
//! writes its checkpoint after the first, second or third epoch. Each time the run exits 1 with
//! one line, naming the file it could not write and the reason, and no warning besides; no
//! half-written file is left (no `*.tmp` anywhere under the output root); `vilab verify` finds
//! every committed entry and checkpoint whole; and once the filler is deleted the same command
//! finishes — resuming from the last checkpoint — with the weights and scores of a run that
//! never hit a full disk.
//!
//! Mounting needs root (as in CI, where `.ci/run` sets `VILAB_REQUIRE_MOUNT=1` so a failed
//! mount is a failure); elsewhere the test says it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Output, Workspace, copy_tree};
use crate::faults::small_workspace;

const EXPERIMENT: &str = "\
name: full
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
plot:
  formats: [png]
";

/// Free space left on the file system, in KiB, and where the run is expected to stop: the
/// whole run writes about 700 KiB (augment's packs ~120 KiB, each training checkpoint ~150).
const CASES: [(u64, &str); 4] = [
    (60, "augment"),
    (200, "train"),
    (450, "train"),
    (700, "train"),
];

/// The files that hold a run's results and do not depend on where its data folder is.
const RESULTS: [&str; 6] = [
    "train/best/model.safetensors",
    "train/last/model.safetensors",
    "train/metrics.json",
    "evaluate/metrics.json",
    "evaluate/classification_report.csv",
    "evaluate/confusion_matrix.csv",
];

/// A mounted tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Self {
            path: path.to_path_buf(),
        })
    }

    fn free_bytes(&self) -> u64 {
        let output = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.path)
            .output()
            .expect("df");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .and_then(|line| line.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Every `*.tmp` file or folder under `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|path| path.ends_with(".tmp"))
        .collect()
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(items) = std::fs::read_dir(dir) else {
        return found;
    };
    for item in items.flatten() {
        let path = item.path();
        found.push(path.display().to_string());
        if item.file_type().is_ok_and(|kind| kind.is_dir()) {
            found.extend(walk(&path));
        }
    }
    found
}

fn run(workspace: &Workspace, folder: &str) -> Output {
    let file = format!("{folder}/full.yaml");
    let out = format!("{folder}/out");
    let output = workspace.vilab(&["run", &file, "--out", &out]);
    output.assert_no_panic();
    output
}

fn results(run_dir: &Path) -> Vec<Vec<u8>> {
    RESULTS
        .iter()
        .map(|file| {
            std::fs::read(run_dir.join(file))
                .unwrap_or_else(|error| panic!("{}/{file}: {error}", run_dir.display()))
        })
        .collect()
}

#[test]
fn a_full_disk_stops_a_run_in_one_line_keeps_every_entry_whole_and_resumes_once_freed() {
    let workspace = small_workspace(&["Bag", "Coat", "Sandal"], 40);
    workspace.write("reference/full.yaml", EXPERIMENT);
    copy_tree(&workspace.data(), &workspace.path().join("reference/data"));
    let reference = run(&workspace, "reference");
    reference.assert_code(0);
    let expected = results(&workspace.path().join(reference.last_stdout_line()));

    for (free_kib, stage) in CASES {
        let folder = format!("disk-{free_kib}");
        let Some(disk) = Tmpfs::mount(&workspace.path().join(&folder), "4m") else {
            assert!(
                std::env::var("VILAB_REQUIRE_MOUNT").as_deref() != Ok("1"),
                "VILAB_REQUIRE_MOUNT=1 but a tmpfs could not be mounted (not root?)"
            );
            eprintln!(
                "skipped: cannot mount a tmpfs here (VILAB_REQUIRE_MOUNT=1 makes this a failure)"
            );
            return;
        };
        workspace.write(&format!("{folder}/full.yaml"), EXPERIMENT);
        copy_tree(&workspace.data(), &disk.path.join("data"));
        let filler = disk.path.join("filler");
        let fill = disk.free_bytes().saturating_sub(free_kib * 1024);
        std::fs::write(&filler, vec![0_u8; fill as usize]).expect("filler");

        let context = format!("{free_kib} KiB free");
        let failed = run(&workspace, &folder);
        failed.assert_code(1);
        let problems: Vec<&str> = failed
            .stderr
            .lines()
            .filter(|line| {
                !line.starts_with(' ')
                    && !line.contains("comput")
                    && !line.starts_with("train    epoch")
            })
            .collect();
        assert_eq!(problems.len(), 1, "{context}: {problems:#?}");
        let line = problems[0];
        assert!(
            line.starts_with(&format!("error: {stage}: ")),
            "{context}: stopped elsewhere than {stage}: {line}"
        );
        assert!(
            line.contains("No space left on device"),
            "{context}: {line}"
        );
        assert!(
            line.contains(&format!("{folder}/out/")),
            "{context}: no path: {line}"
        );
        let out = disk.path.join("out");
        assert_eq!(
            temporaries(&out),
            Vec::<String>::new(),
            "{context}: half-written files"
        );
        let verify = workspace.vilab(&["verify", "--out", &format!("{folder}/out")]);
        verify.assert_code(0).assert_no_panic();
        assert!(
            verify.stdout.contains("all whole"),
            "{context}: {}",
            verify.stdout
        );

        std::fs::remove_file(&filler).expect("free the disk");
        let resumed = run(&workspace, &folder);
        resumed.assert_code(0);
        if stage == "train" && free_kib > 200 {
            assert!(
                resumed.stderr.contains("resuming at epoch"),
                "{context}: did not resume:\n{}",
                resumed.stderr
            );
        }
        let run_dir = workspace.path().join(resumed.last_stdout_line());
        assert!(
            results(&run_dir) == expected,
            "{context}: the resumed run's results differ from the reference"
        );
        let verify = workspace.vilab(&["verify", "--out", &format!("{folder}/out")]);
        verify.assert_code(0);
        drop(disk);
    }
}
