//! Helpers for the tests that break `vilab` on purpose (kills, signals, damaged files,
//! concurrent processes): a workspace with a few classes of `data1/`, a child process whose
//! stderr is watched line by line (to kill it at a chosen moment), a check that every committed
//! cache entry and every training checkpoint is exactly what its manifest says, and the
//! contents of a run folder in a form that can be compared across runs.
//!
//! Kept apart from `common` because only the fault tests (cli_gc, concurrency, crash_injection)
//! need it.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::Value;

use crate::common::{Output, PROCESS_TIMEOUT, Workspace, entry_names, repo_root, wait_until_done};

/// A workspace whose `data/` holds the first `per_class` images (by name) of each of `classes`
/// from `data1/`: a dataset that trains in a fraction of a second per epoch.
pub fn small_workspace(classes: &[&str], per_class: usize) -> Workspace {
    let workspace = Workspace::new();
    for class in classes {
        let from = repo_root().join("data1").join(class);
        let to = workspace.data().join(class);
        std::fs::create_dir_all(&to).expect("class folder");
        let names = entry_names(&from);
        assert!(
            names.len() >= per_class,
            "{} has too few images",
            from.display()
        );
        for name in names.iter().take(per_class) {
            std::fs::copy(from.join(name), to.join(name))
                .unwrap_or_else(|error| panic!("{}: {error}", from.join(name).display()));
        }
    }
    workspace
}

/// A running `vilab` whose stderr lines arrive one by one as it prints them.
pub struct Watched {
    child: Child,
    lines: Receiver<String>,
    stderr: JoinHandle<Vec<String>>,
    stdout: JoinHandle<Vec<u8>>,
}

impl Watched {
    /// Starts `command` with both streams captured.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start vilab: {error}"));
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = channel();
        let stderr = std::thread::spawn(move || {
            let mut all = Vec::new();
            for line in std::io::BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                // The receiver may be gone (nobody waits for more lines): keep collecting.
                let _ = sender.send(line.clone());
                all.push(line);
            }
            all
        });
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut stdout_pipe, &mut bytes).ok();
            bytes
        });
        Self {
            child,
            lines,
            stderr,
            stdout,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line starts with `prefix`: `true` then, `false` when the process
    /// closed stderr (ended) without printing one.
    pub fn wait_for_line(&mut self, prefix: &str) -> bool {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return true,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("no line starting with {prefix:?} within {PROCESS_TIMEOUT:?}");
                }
            }
        }
    }

    /// Sends SIGKILL; `true` when the process was still running to receive it.
    pub fn kill(&mut self) -> bool {
        let running = self.child.try_wait().expect("try_wait").is_none();
        self.child.kill().expect("SIGKILL");
        running
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to end; panics when it runs past [`PROCESS_TIMEOUT`].
    pub fn finish(mut self) -> Output {
        let status = wait_until_done(&mut self.child, PROCESS_TIMEOUT);
        let stderr = self.stderr.join().expect("stderr reader");
        let stdout = self.stdout.join().expect("stdout reader");
        Output {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: stderr.join("\n"),
        }
    }
}

/// The files of `dir` (relative paths, `/`-separated), recursively.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for name in entry_names(&folder) {
            let path = folder.join(&name);
            if path.is_dir() {
                folders.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("below dir");
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    found
}

/// Panics unless the files of `dir` are exactly those its `manifest.json` lists, each with
/// its size and blake3. Returns the number of bytes checked.
pub fn assert_matches_manifest(dir: &Path) -> u64 {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read(&manifest_path)
        .unwrap_or_else(|error| panic!("{}: {error}", manifest_path.display()));
    let manifest: Value = serde_json::from_slice(&text)
        .unwrap_or_else(|error| panic!("{}: {error}", manifest_path.display()));
    let listed: BTreeMap<String, (u64, String)> = manifest["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no files", manifest_path.display()))
        .iter()
        .map(|file| {
            (
                file["path"].as_str().expect("path").to_owned(),
                (
                    file["len"].as_u64().expect("len"),
                    file["blake3"].as_str().expect("blake3").to_owned(),
                ),
            )
        })
        .collect();
    let mut present = files_under(dir);
    present.retain(|path| path != "manifest.json");
    assert_eq!(
        present,
        listed.keys().cloned().collect::<Vec<_>>(),
        "{}: files differ from the manifest",
        dir.display()
    );
    let mut bytes = 0;
    for (path, (len, hash)) in &listed {
        let contents = std::fs::read(dir.join(path)).expect("read listed file");
        assert_eq!(
            contents.len() as u64,
            *len,
            "{}/{path}: size",
            dir.display()
        );
        assert_eq!(
            blake3::hash(&contents).to_hex().as_str(),
            hash,
            "{}/{path}: contents",
            dir.display()
        );
        bytes += len;
    }
    bytes
}

/// The committed entries under `<out>/cache/<stage>-v<N>/<kk>/<key>/`.
pub fn committed_entries(out: &Path) -> Vec<PathBuf> {
    let cache = out.join("cache");
    let mut entries = Vec::new();
    for stage in entry_names(&cache) {
        let is_stage = stage
            .rsplit_once("-v")
            .is_some_and(|(_, version)| version.chars().all(|c| c.is_ascii_digit()));
        if !is_stage {
            continue;
        }
        for prefix in entry_names(&cache.join(&stage)) {
            for key in entry_names(&cache.join(&stage).join(&prefix)) {
                entries.push(cache.join(&stage).join(&prefix).join(key));
            }
        }
    }
    entries
}

/// The complete checkpoints under `<out>/cache/resume/*/ckpt-*`.
pub fn checkpoints(out: &Path) -> Vec<PathBuf> {
    let resume = out.join("cache").join("resume");
    let mut found = Vec::new();
    for folder in entry_names(&resume) {
        for name in entry_names(&resume.join(&folder)) {
            if name.starts_with("ckpt-") {
                found.push(resume.join(&folder).join(name));
            }
        }
    }
    found.sort();
    found
}

/// Panics unless every committed entry and every checkpoint under `out` is whole: no half
/// entry is visible under a key, whatever moment a process was killed at. Returns how many
/// folders were checked.
pub fn assert_cache_whole(out: &Path) -> usize {
    let folders: Vec<PathBuf> = committed_entries(out)
        .into_iter()
        .chain(checkpoints(out))
        .collect();
    for folder in &folders {
        assert_matches_manifest(folder);
    }
    folders.len()
}

/// `history.csv` without its two timing columns (`epoch_seconds`, `train_images_per_second`).
pub fn without_timings(history: &str) -> String {
    history
        .lines()
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            cells[..cells.len() - 2].join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file of a run folder (following its links into the cache) that must be the same in
/// any run of the same spec, as relative path ⇒ bytes: everything except `run.json` and
/// `report.html` (times, host, which stages this invocation computed), the train entry's `manifest.json` (it hashes `history.csv`, which holds timings),
/// and with `train/history.csv` stripped of its timing columns.
pub fn run_results(run_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut results = BTreeMap::new();
    for relative in files_under(run_dir) {
        if ["run.json", "report.html", "train/manifest.json"].contains(&relative.as_str()) {
            continue;
        }
        let bytes = std::fs::read(run_dir.join(&relative))
            .unwrap_or_else(|error| panic!("{}/{relative}: {error}", run_dir.display()));
        let bytes = if relative == "train/history.csv" {
            without_timings(&String::from_utf8(bytes).expect("utf-8 history")).into_bytes()
        } else {
            bytes
        };
        results.insert(relative, bytes);
    }
    results
}

/// Panics unless two run folders hold the same results (see [`run_results`]), naming the
/// first file that differs.
pub fn assert_same_results(expected: &Path, actual: &Path, context: &str) {
    let (expected, actual) = (run_results(expected), run_results(actual));
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "{context}: the run folders hold different files"
    );
    for (path, bytes) in &expected {
        assert!(
            actual[path] == *bytes,
            "{context}: {path} differs from the uninterrupted run"
        );
    }
}
