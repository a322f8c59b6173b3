//! Writes that fail, through the real binary: a file-size limit (`ulimit -f`, so writes past it
//! fail with EFBIG) and output folders without write permission.
//!
//! In every case the command must exit 1 (not die of a signal) with one error line naming the
//! path it could not write; nothing partial may be committed to the cache (every entry has its
//! manifest and its files match it; nothing is left under `cache/tmp/`), and an earlier complete
//! run, its folder and its cache entries, must survive byte for byte. Afterwards, without the
//! limit, the same command succeeds: the failure left nothing that blocks a retry.
//!
//! The limit is set by `sh -c 'ulimit -f N; exec vilab ...'` (the `libc` crate is not a
//! dependency of vilab). `sh`'s block size is 512 bytes (dash) or 1024 (bash); every limit here
//! works with either.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{
    self, BIN, Output, PROCESS_TIMEOUT, Workspace, cache_entry_folders, small_experiment, spawn,
    wait,
};

/// `sh` blocks: 512 KiB or 1 MiB. The packed training images of data1 (700 at 28×28×3, 1.6 MB)
/// do not fit; the split and stats outputs (tens of KiB) do.
const AUGMENT_LIMIT_BLOCKS: u32 = 1024;

/// `sh` blocks: 4 or 8 KiB, less than the weights of the small test model.
const EXPORT_LIMIT_BLOCKS: u32 = 8;

/// Runs `vilab ARGS` in the workspace under a file-size limit of `blocks`.
fn vilab_limited(workspace: &Workspace, blocks: u32, args: &[&str]) -> Output {
    let mut command = Command::new("sh");
    command
        .current_dir(workspace.path())
        .arg("-c")
        .arg("ulimit -f \"$0\" && exec \"$@\"")
        .arg(blocks.to_string())
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("VILAB_") || text == "RUST_LOG" || text == "NO_COLOR" {
            command.env_remove(&name);
        }
    }
    wait(spawn(command), PROCESS_TIMEOUT)
}

/// Every file below `root` (links not followed) with the blake3 of its contents, and every
/// link with its target.
fn files(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, folder: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(folder).expect("read folder") {
            let path = entry.expect("entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            let relative = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            if metadata.is_symlink() {
                let target = std::fs::read_link(&path).expect("link target");
                out.insert(relative, format!("link -> {}", target.display()));
            } else if metadata.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.insert(relative, blake3::hash(&bytes).to_hex().to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// Panics unless every file of `before` is still there with the same contents.
fn assert_survived(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) {
    for (file, hash) in before {
        assert_eq!(
            after.get(file),
            Some(hash),
            "earlier output {file} was changed or removed"
        );
    }
}

/// Panics unless every committed cache entry below `out` has a manifest that its files match
/// (presence, size and blake3), and nothing is left in `cache/tmp/`.
fn assert_cache_complete(out: &Path) {
    let mut entries = 0;
    for entry in cache_entry_folders(out) {
        entries += 1;
        let manifest_path = entry.join("manifest.json");
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(&manifest_path)
                .unwrap_or_else(|error| panic!("{}: {error}", manifest_path.display())),
        )
        .expect("manifest is JSON");
        for file in manifest["files"].as_array().expect("manifest files") {
            let path = entry.join(file["path"].as_str().expect("path"));
            let bytes =
                std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            assert_eq!(
                bytes.len() as u64,
                file["len"].as_u64().expect("len"),
                "{} is truncated",
                path.display()
            );
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                file["blake3"].as_str().expect("blake3"),
                "{} does not match its manifest",
                path.display()
            );
        }
    }
    assert!(
        entries > 0,
        "no cache entries at all below {}",
        out.display()
    );
    let leftovers = common::entry_names(&out.join("cache").join("tmp"));
    assert!(
        leftovers.is_empty(),
        "partial entries left under cache/tmp: {leftovers:?}"
    );
}

/// Panics unless the output is a clean failure: exit 1, one line naming `path_part`.
fn assert_named_failure(workspace: &Workspace, output: &Output, path_part: &str, reason: &str) {
    output.assert_no_panic();
    assert_eq!(
        output.code, 1,
        "expected exit 1 (a failure, not a signal)\n--- stderr\n{}",
        output.stderr
    );
    let message = workspace.redact(output.stderr.trim_end());
    assert_eq!(message.lines().count(), 1, "not one line:\n{message}");
    assert!(
        message.contains(path_part) && message.contains(reason),
        "the message does not name `{path_part}` and `{reason}`:\n{message}"
    );
}

/// A workspace with data1 and an experiment, and one complete earlier run in `out/`.
fn with_earlier_run() -> (Workspace, BTreeMap<String, String>) {
    let workspace = Workspace::with_data1();
    workspace.write("exp.yaml", small_experiment("exp", 28));
    workspace
        .vilab(&["run", "exp.yaml", "--out", "out", "-q"])
        .assert_code(0)
        .assert_no_panic();
    let before = files(&workspace.path().join("out"));
    (workspace, before)
}

/// Whether this process writes into folders without write permission (root does).
fn permissions_are_ignored(workspace: &Workspace) -> bool {
    let folder = workspace.path().join("permission-probe");
    std::fs::create_dir(&folder).expect("probe folder");
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let writable = std::fs::write(folder.join("file"), b"x").is_ok();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::remove_dir_all(&folder).expect("remove probe");
    writable
}

/// Sets the mode of every folder below and including `root`.
fn set_folder_modes(root: &Path, mode: u32) {
    let metadata = std::fs::symlink_metadata(root).expect("metadata");
    if !metadata.is_dir() {
        return;
    }
    if mode & 0o200 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    for entry in std::fs::read_dir(root).expect("read folder") {
        set_folder_modes(&entry.expect("entry").path(), mode);
    }
    if mode & 0o200 == 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

#[test]
fn file_size_limit_fails_the_stage_commits_nothing_and_keeps_earlier_runs() {
    let (workspace, before) = with_earlier_run();
    let args = [
        "run",
        "exp.yaml",
        "--out",
        "out",
        "-q",
        "--set",
        "split.seed=7",
    ];
    let output = vilab_limited(&workspace, AUGMENT_LIMIT_BLOCKS, &args);
    assert_named_failure(&workspace, &output, "out/cache/tmp/", "File too large");
    assert!(
        output.stderr.contains("/train.u8: "),
        "the file that did not fit is not named: {}",
        output.stderr
    );
    let out = workspace.path().join("out");
    assert_survived(&before, &files(&out));
    assert_cache_complete(&out);
    insta::assert_snapshot!(
        "file_size_limit_run",
        redact_run_details(&workspace.redact(output.stderr.trim_end()))
    );

    // Without the limit the same command completes, over what the failure left; the new run
    // becomes `latest`, everything else of the earlier run stays.
    workspace.vilab(&args).assert_code(0).assert_no_panic();
    let mut earlier = before.clone();
    earlier.retain(|file, _| !file.ends_with("/latest"));
    assert_survived(&earlier, &files(&out));
    assert_cache_complete(&out);
}

#[test]
fn file_size_limit_during_export_leaves_no_partial_file() {
    let (workspace, before) = with_earlier_run();
    let args = [
        "export",
        "out/exp/latest",
        "--out",
        "exported/model.safetensors",
    ];
    let output = vilab_limited(&workspace, EXPORT_LIMIT_BLOCKS, &args);
    assert_named_failure(&workspace, &output, "exported/", "File too large");
    let exported = workspace.path().join("exported");
    assert_eq!(
        common::entry_names(&exported),
        Vec::<String>::new(),
        "export left files behind"
    );
    assert_survived(&before, &files(&workspace.path().join("out")));

    workspace.vilab(&args).assert_code(0).assert_no_panic();
    assert_eq!(
        common::entry_names(&exported),
        ["classes.json", "model.safetensors", "normalization.json"]
    );
}

#[test]
fn read_only_output_folder_fails_with_the_path_and_keeps_earlier_runs() {
    let (workspace, before) = with_earlier_run();
    if permissions_are_ignored(&workspace) {
        println!(
            "skipped: this process writes into folders of mode 555 (running as root?), so a \
             read-only output folder cannot be made with permissions; the file-size limit \
             tests cover failing writes"
        );
        return;
    }
    let out = workspace.path().join("out");
    set_folder_modes(&out, 0o555);
    let output = workspace.vilab(&[
        "run",
        "exp.yaml",
        "--out",
        "out",
        "-q",
        "--set",
        "split.seed=7",
    ]);
    let export = workspace.vilab(&[
        "export",
        "out/exp/latest",
        "--out",
        "out/exported/model.safetensors",
    ]);
    set_folder_modes(&out, 0o755);
    assert_named_failure(&workspace, &output, "[TMP]/out/", "Permission denied");
    assert_named_failure(&workspace, &export, "out/", "Permission denied");
    assert_survived(&before, &files(&out));
    assert_cache_complete(&out);
}

/// The run-specific parts of a cache path (key, process id, time) as placeholders.
fn redact_run_details(text: &str) -> String {
    text.split('/')
        .map(|part| {
            let hex_run = part.len() >= 16 && part.chars().all(|c| c.is_ascii_hexdigit());
            match part.split_once('-') {
                _ if hex_run => "[KEY]".to_owned(),
                Some((stage, rest)) if rest.len() > 64 && rest.contains('.') => {
                    format!("{stage}-[KEY].[PID].[TIME]")
                }
                _ => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
