//! Helpers shared by the integration tests that drive the real `vilab` binary: a scratch
//! workspace (temporary folder with a copy of the data), a hermetic way to spawn the binary,
//! a fingerprint of a folder tree (contents and modification times), `run.json` readers, and
//! text redaction for snapshots; and the lock on burn's process-wide RNG for the tests that
//! build models in this process.
//!
//! Every test gets its own temporary folder, so tests run in parallel without sharing a cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value;

/// Serialises the use of burn's process-wide backend RNG, which every test module of this
/// binary shares (they run as threads of one process): `Backend::seed` and every draw —
/// `Tensor::random`, parameter initialisation (lazy: drawn when a parameter is first used),
/// stochastic depth. A test that seeds must hold it from the seed to its last draw, and a test
/// that draws without seeding must hold it while it draws, or its draws would land in the middle
/// of a seeded sequence. It is the library's own lock, which model initialisation in training
/// and `vilab bench` takes: never start those while holding it (it is not re-entrant).
/// (Training forward passes draw stochastic depth from a stream of their own thread instead.)
pub use vilab::train::parallel::backend_rng_lock;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vilab");

/// The folder of the Debian package `dataset-fashion-mnist`.
pub const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names in label order, as folder names (the ones data1/ uses).
pub const FASHION_CLASSES: &str =
    "T-shirt_top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle_boot";

/// The stages the data part of the pipeline compiles into, in execution order.
pub const DATA_STAGES: [&str; 3] = ["split", "stats", "augment"];

/// How long any single `vilab` invocation may take before a test calls it hung.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a finished `vilab` process left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// The last non-empty line of stdout (`vilab run` prints the run folder there).
    pub fn last_stdout_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_else(|| panic!("no stdout; stderr:\n{}", self.stderr))
    }

    /// Panics with both streams unless the exit code is `expected`.
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless nothing on either stream mentions a panic.
    pub fn assert_no_panic(&self) -> &Self {
        for stream in [&self.stdout, &self.stderr] {
            assert!(
                !stream.contains("panicked") && !stream.contains("RUST_BACKTRACE"),
                "vilab panicked:\n{stream}"
            );
        }
        self
    }
}

/// A `vilab` command that sees none of the caller's `VILAB_*`, `RUST_LOG` or colour settings,
/// so results do not depend on the environment the tests run in.
pub fn vilab_command(cwd: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd).args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("VILAB_") || text == "RUST_LOG" || text == "NO_COLOR" {
            command.env_remove(&name);
        }
    }
    command
}

/// Spawns a command with both streams captured.
pub fn spawn(mut command: Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {BIN}: {error}"))
}

/// Waits for a child, killing it and failing the test when it runs past `timeout` (a hang
/// must fail clearly rather than block the suite).
pub fn wait(mut child: Child, timeout: Duration) -> Output {
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stdout_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout_pipe, &mut bytes).ok();
        bytes
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stderr_pipe, &mut bytes).ok();
        bytes
    });
    let status = wait_until_done(&mut child, timeout);
    let stdout = stdout_reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().expect("stderr reader");
    Output {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Waits for `child` to exit; kills it and panics when it runs past `timeout`.
pub fn wait_until_done(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("vilab did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `vilab ARGS` in `cwd` and waits for it.
pub fn run_vilab(cwd: &Path, args: &[&str]) -> Output {
    wait(spawn(vilab_command(cwd, args)), PROCESS_TIMEOUT)
}

/// Runs `vilab ARGS` in `cwd` with extra environment variables.
pub fn run_vilab_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = vilab_command(cwd, args);
    command.envs(env.iter().copied());
    wait(spawn(command), PROCESS_TIMEOUT)
}

/// A temporary folder to run experiments in; removed when dropped.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("vilab-test-")
                .tempdir()
                .expect("temporary folder"),
        }
    }

    /// A workspace whose `data/` is a fresh copy of the repository's `data1/` (so mtimes and
    /// contents can be changed freely).
    pub fn with_data1() -> Self {
        let workspace = Self::new();
        copy_tree(&repo_root().join("data1"), &workspace.path().join("data"));
        workspace
    }

    /// A workspace whose `data/` is a fresh copy of `tests/fixtures/<fixture>`.
    pub fn with_fixture(fixture: &str) -> Self {
        let workspace = Self::new();
        copy_tree(
            &repo_root().join("tests").join("fixtures").join(fixture),
            &workspace.path().join("data"),
        );
        workspace
    }

    /// The workspace folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The data copy.
    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Writes a file relative to the workspace; returns its path.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent folder");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Runs `vilab ARGS` with the workspace as current folder.
    pub fn vilab(&self, args: &[&str]) -> Output {
        run_vilab(self.path(), args)
    }

    /// A `vilab ARGS` command with the workspace as current folder, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        vilab_command(self.path(), args)
    }

    /// Replaces every spelling of the workspace path in `text` by `[TMP]`.
    pub fn redact(&self, text: &str) -> String {
        let mut redacted = text.to_owned();
        let mut spellings = vec![self.path().display().to_string()];
        if let Ok(canonical) = self.path().canonicalize() {
            spellings.push(canonical.display().to_string());
        }
        spellings.sort_by_key(|spelling| std::cmp::Reverse(spelling.len()));
        for spelling in spellings {
            redacted = redacted.replace(&spelling, "[TMP]");
        }
        redacted
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// A small, fast experiment on `data/` of a workspace. Training (when the pipeline has it) is
/// kept to zero epochs so these tests stay about the data stages and stay fast.
pub fn small_experiment(name: &str, image_size: u32) -> String {
    // A tiny model at no more than 8×8 tokens whatever the image size, so the model stages
    // stay quick: the smallest patch side that divides the image and gives ≤ 8 patches a side.
    let patch = (1..=image_size)
        .find(|patch| image_size.is_multiple_of(*patch) && image_size / patch <= 8)
        .unwrap_or(image_size);
    format!(
        "# yaml-language-server: $schema=../schemas/experiment.schema.json\n\
         name: {name}\n\
         seed: 42\n\
         data:\n  root: data\n  image_size: {image_size}\n\
         split:\n  val_fraction: 0.3\n  seed: 42\n\
         model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n  patch_size: {patch}\n\
         train:\n  epochs: 0\n  batch_size: 16\n"
    )
}

/// Copies a folder tree (files, folders, hidden entries included).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|error| panic!("{}: {error}", to.display()));
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .unwrap_or_else(|error| panic!("{}: {error}", from.display()))
        .map(|entry| entry.expect("directory entry"))
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&source, &target);
        } else {
            std::fs::copy(&source, &target)
                .unwrap_or_else(|error| panic!("{}: {error}", source.display()));
        }
    }
}

/// Everything observable about a folder tree: for each entry (relative path) its kind, size,
/// modification time in nanoseconds, and for files the blake3 of the contents (for links, the
/// target). Two equal maps mean nothing was added, removed, rewritten or even touched.
pub fn tree_state(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, folder: &Path, out: &mut BTreeMap<String, String>) {
        let entries = std::fs::read_dir(folder)
            .unwrap_or_else(|error| panic!("{}: {error}", folder.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            let relative = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let mtime = metadata
                .modified()
                .expect("mtime")
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos();
            let description = if metadata.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("link target");
                format!("link -> {} mtime {mtime}", target.display())
            } else if metadata.is_dir() {
                walk(root, &path, out);
                format!("folder mtime {mtime}")
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                format!(
                    "file {} bytes blake3 {} mtime {mtime}",
                    metadata.len(),
                    blake3::hash(&bytes).to_hex()
                )
            };
            out.insert(relative, description);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Relative path ⇒ blake3 of the contents, for every file below `root` (following the run
/// folder's links into the cache).
pub fn file_contents(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, folder: &Path, out: &mut BTreeMap<String, String>) {
        let entries = std::fs::read_dir(folder)
            .unwrap_or_else(|error| panic!("{}: {error}", folder.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                let relative = path.strip_prefix(root).expect("below root");
                out.insert(
                    relative.to_string_lossy().into_owned(),
                    blake3::hash(&bytes).to_hex().to_string(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The parsed `run.json` of a run folder.
pub fn read_run_json(run_dir: &Path) -> Value {
    let path = run_dir.join("run.json");
    let text = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One stage as recorded in `run.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRun {
    /// Stage name.
    pub stage: String,
    /// Stage key.
    pub key: String,
    /// `computed` or `reused`.
    pub state: String,
}

/// The stages of a `run.json`, in order.
pub fn stage_runs(run_json: &Value) -> Vec<StageRun> {
    run_json["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("run.json has no stages: {run_json}"))
        .iter()
        .map(|stage| StageRun {
            stage: stage["stage"].as_str().expect("stage name").to_owned(),
            key: stage["key"].as_str().expect("stage key").to_owned(),
            state: stage["state"].as_str().expect("stage state").to_owned(),
        })
        .collect()
}

/// `vilab status` output as stage ⇒ the text after `stage: `.
pub fn status_lines(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(stage, state)| (stage.to_owned(), state.to_owned()))
        .collect()
}

/// Names of the entries directly in `folder` (empty when it does not exist).
pub fn entry_names(folder: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Whether the cache below `out` holds an entry of `stage` with `key`, under any format
/// version (`<out>/cache/<stage>-v<N>/<key[..2]>/<key>`).
pub fn cache_entry_exists(out: &Path, stage: &str, key: &str) -> bool {
    let prefix = format!("{stage}-v");
    entry_names(&out.join("cache"))
        .iter()
        .filter(|name| {
            name.strip_prefix(&prefix)
                .is_some_and(|version| version.chars().all(|c| c.is_ascii_digit()))
        })
        .any(|folder| {
            out.join("cache")
                .join(folder)
                .join(&key[..2])
                .join(key)
                .exists()
        })
}

/// Every committed-looking cache entry folder below `out`: `cache/<stage>-v<N>/<xx>/<key>/`,
/// in no particular order; none when there is no cache.
pub fn cache_entry_folders(out: &Path) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    let Ok(stages) = std::fs::read_dir(out.join("cache")) else {
        return folders;
    };
    for stage in stages {
        let stage = stage.expect("entry").path();
        let name = stage
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !name.contains("-v") {
            continue;
        }
        for prefix in std::fs::read_dir(&stage).expect("stage folder") {
            for entry in std::fs::read_dir(prefix.expect("entry").path()).expect("prefix folder") {
                folders.push(entry.expect("entry").path());
            }
        }
    }
    folders
}
