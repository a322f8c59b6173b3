//! A corpus of bad inputs driven through the real binary: broken or wrong experiment files,
//! broken data folders, and command lines that name the wrong things.
//!
//! Every case starts from the same small workspace (two classes of real images from `data1/`,
//! a valid experiment and one complete earlier run in `out/`, trained for zero epochs so it has
//! weights), breaks one thing, runs one command, and checks what a user relies on:
//! - the documented exit code (2 for a validation or usage error, 1 for a failure while
//!   running, see `src/cli/mod.rs`), and no panic;
//! - one line on stderr naming the file or the field at fault (snapshotted, with the workspace
//!   path shown as `[TMP]`);
//! - the inputs untouched (every file and folder outside `out/`: contents, size, mode, mtime)
//!   and the earlier outputs untouched (every file already in `out/`, byte for byte), with no
//!   cache entry committed without its manifest.
//!
//! Cases are rows of three tables (`cases!` below), one test each so they run in parallel. Data
//! cases fail at the split stage; the only training anywhere is zero-epoch runs (the earlier
//! run, and the deeper model whose weights the foreign-weights cases swap in).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{self, Workspace, cache_entry_folders, repo_root, small_experiment};

/// Two classes, images per class: enough for a split with one validation image each.
const CLASSES: [&str; 2] = ["Coat", "Trouser"];
const IMAGES_PER_CLASS: usize = 4;

/// `vilab run` on the broken experiment file every YAML case writes.
const RUN_BAD: &[&str] = &["run", "bad.yaml", "--out", "out", "-q"];
/// `vilab run` on the valid experiment (data cases break the data instead).
const RUN_GOOD: &[&str] = &["run", "exp.yaml", "--out", "out", "-q"];

/// The earlier run's folder (the `latest` link of experiment `exp`).
const EARLIER_RUN: &str = "out/exp/latest";

/// One row of the corpus.
struct Case {
    /// Breaks one thing in a fresh workspace.
    setup: fn(&Workspace),
    /// The command line, relative to the workspace.
    args: &'static [&'static str],
    /// The exit code the case must end with.
    code: i32,
    /// Text the message must contain: the file or field at fault.
    names: &'static str,
    /// The case relies on file permissions, which a privileged user does not obey.
    needs_permissions: bool,
}

impl Case {
    const fn new(
        setup: fn(&Workspace),
        args: &'static [&'static str],
        code: i32,
        names: &'static str,
    ) -> Self {
        Self {
            setup,
            args,
            code,
            names,
            needs_permissions: false,
        }
    }
}

/// A workspace with `data/` (two small classes), `exp.yaml` and a complete run in `out/`.
fn workspace() -> Workspace {
    let workspace = Workspace::new();
    for class in CLASSES {
        let source = repo_root().join("data1").join(class);
        let mut names: Vec<_> = std::fs::read_dir(&source)
            .expect("data1 class folder")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        names.sort();
        let target = workspace.data().join(class);
        std::fs::create_dir_all(&target).expect("class folder");
        for name in names.iter().take(IMAGES_PER_CLASS) {
            std::fs::copy(source.join(name), target.join(name)).expect("copy image");
        }
    }
    workspace.write("exp.yaml", experiment());
    workspace.vilab(RUN_GOOD).assert_code(0).assert_no_panic();
    workspace
}

fn experiment() -> String {
    small_experiment("exp", 28)
}

/// Writes `bad.yaml`: the valid experiment with `from` replaced by `to`.
fn replaced(workspace: &Workspace, from: &str, to: &str) {
    let text = experiment();
    assert!(text.contains(from), "`{from}` is not in the experiment");
    workspace.write("bad.yaml", text.replacen(from, to, 1));
}

/// Writes `bad.yaml`: the valid experiment followed by `extra`.
fn appended(workspace: &Workspace, extra: &str) {
    workspace.write("bad.yaml", format!("{}{extra}", experiment()));
}

/// The files of one class folder of `data/`.
fn class_files(workspace: &Workspace, class: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(workspace.data().join(class))
        .expect("class folder")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// Overwrites every image of a class with `bytes`.
fn overwrite_class(workspace: &Workspace, class: &str, bytes: &[u8]) {
    for file in class_files(workspace, class) {
        std::fs::write(file, bytes).expect("overwrite image");
    }
}

/// A small, valid PNG header declaring `width`×`height` RGB pixels, followed by a few bytes of
/// image data: a decompression bomb if the decoder believed it.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &header);
    // A stored (uncompressed) zlib stream of 16 zero bytes: far less than the header promises.
    let mut idat = vec![0x78, 0x01, 0x01, 16, 0, !16, 0xff];
    idat.extend_from_slice(&[0; 16]);
    idat.extend_from_slice(&[0, 0, 0, 16]);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// CRC-32 as PNG chunks use it (ISO 3309, reflected polynomial 0xEDB88320).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Copies a folder tree, following symbolic links (a run folder links into the cache).
fn copy_resolved(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if std::fs::metadata(entry.path()).expect("metadata").is_dir() {
            copy_resolved(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// `fake-run/`: a copy of the earlier run whose best weights come from a deeper model.
fn run_with_foreign_weights(workspace: &Workspace) {
    workspace
        .vilab(&[
            "run",
            "exp.yaml",
            "--out",
            "other",
            "-q",
            "--set",
            "model.depth=3",
        ])
        .assert_code(0);
    copy_resolved(
        &workspace.path().join(EARLIER_RUN),
        &workspace.path().join("fake-run"),
    );
    std::fs::copy(
        workspace
            .path()
            .join("other/exp/latest/train/best/model.safetensors"),
        workspace
            .path()
            .join("fake-run/train/best/model.safetensors"),
    )
    .expect("swap the weights");
}

/// Everything observable about the inputs: each entry outside `out/` with its kind, size,
/// mode, modification time and, for readable files, a blake3 of the contents.
fn input_state(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, folder: &Path, state: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(folder)
            .expect("read folder")
            .map(|entry| entry.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let relative = path.strip_prefix(root).expect("below root");
            if relative == Path::new("out") {
                continue;
            }
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            let common = format!(
                "mode {:o} size {} mtime {}.{}",
                metadata.mode(),
                metadata.len(),
                metadata.mtime(),
                metadata.mtime_nsec()
            );
            let description = if metadata.is_symlink() {
                let target = std::fs::read_link(&path).expect("link target");
                format!("link -> {} {common}", target.display())
            } else if metadata.is_dir() {
                walk(root, &path, state);
                format!("folder {common}")
            } else {
                let contents = std::fs::read(&path)
                    .map(|bytes| blake3::hash(&bytes).to_hex().to_string())
                    .unwrap_or_else(|error| format!("unreadable ({})", error.kind()));
                format!("file {contents} {common}")
            };
            state.insert(relative.to_string_lossy().into_owned(), description);
        }
    }
    let mut state = BTreeMap::new();
    walk(root, root, &mut state);
    state
}

/// Every regular file below `root` (links not followed) with the blake3 of its contents.
fn output_files(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, folder: &Path, files: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            let relative = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            if metadata.is_dir() {
                walk(root, &path, files);
            } else if metadata.is_symlink() {
                let target = std::fs::read_link(&path).expect("link target");
                files.insert(relative, format!("link -> {}", target.display()));
            } else {
                let bytes = std::fs::read(&path).expect("read output file");
                files.insert(relative, blake3::hash(&bytes).to_hex().to_string());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

/// Cache entries (`cache/<stage>-v<N>/<xx>/<key>/`) below `out` that have no `manifest.json`.
fn entries_without_manifest(out: &Path) -> Vec<String> {
    cache_entry_folders(out)
        .into_iter()
        .filter(|entry| !entry.join("manifest.json").is_file())
        .map(|entry| entry.display().to_string())
        .collect()
}

/// Whether this process reads files whatever their mode (root, or CAP_DAC_OVERRIDE).
fn permissions_are_ignored(workspace: &Workspace) -> bool {
    let probe = workspace.path().join("permission-probe");
    std::fs::write(&probe, b"x").expect("write probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let readable = std::fs::read(&probe).is_ok();
    std::fs::remove_file(&probe).expect("remove probe");
    readable
}

fn check(name: &str, case: Case) {
    let workspace = workspace();
    (case.setup)(&workspace);
    let out = workspace.path().join("out");
    let inputs_before = input_state(workspace.path());
    let outputs_before = output_files(&out);

    let privileged = case.needs_permissions && permissions_are_ignored(&workspace);

    let output = workspace.vilab(case.args);
    output.assert_no_panic();

    assert_eq!(
        input_state(workspace.path()),
        inputs_before,
        "{name}: an input file or folder changed"
    );
    if privileged {
        println!(
            "{name}: only checked that nothing panicked and the inputs are unchanged: this \
             process reads files of mode 000 (running as root?), so vilab does too, and the run \
             succeeds as a new run"
        );
        return;
    }
    let outputs_after = output_files(&out);
    for (file, hash) in &outputs_before {
        assert_eq!(
            outputs_after.get(file),
            Some(hash),
            "{name}: earlier output {file} was changed or removed"
        );
    }
    assert_eq!(
        entries_without_manifest(&out),
        Vec::<String>::new(),
        "{name}: a cache entry was committed without its manifest"
    );

    output.assert_code(case.code);
    let message = workspace.redact(output.stderr.trim_end());
    assert_eq!(
        message.lines().count(),
        1,
        "{name}: the message is not one line:\n{message}"
    );
    assert!(
        message.contains(case.names),
        "{name}: the message does not name `{}`:\n{message}",
        case.names
    );
    assert_eq!(output.stdout, "", "{name}: a failure printed a result");
    insta::assert_snapshot!(name, message);
}

macro_rules! cases {
    ($($name:ident => $case:expr,)*) => {$(
        #[test]
        fn $name() {
            check(stringify!($name), $case);
        }
    )*};
}

// The experiment file. Most of these exit 2 before anything is read or written.
cases! {
    yaml_unclosed_flow_list => Case::new(
        |w| replaced(w, "seed: 42", "seed: [42"), RUN_BAD, 2, "bad.yaml:4:5"),
    yaml_tab_indentation => Case::new(
        |w| replaced(w, "  epochs: 0", "\tepochs: 0"), RUN_BAD, 2, "bad.yaml:"),
    yaml_key_written_twice => Case::new(
        |w| appended(w, "seed: 7\n"), RUN_BAD, 2, "seed"),
    yaml_two_documents => Case::new(
        |w| appended(w, "---\nname: other\n"), RUN_BAD, 2, "bad.yaml"),
    top_level_key_typo => Case::new(
        |w| replaced(w, "seed: 42", "sed: 42"), RUN_BAD, 2, "sed"),
    nested_key_typo => Case::new(
        |w| replaced(w, "image_size", "imag_size"), RUN_BAD, 2, "data.imag_size"),
    epochs_is_a_word => Case::new(
        |w| replaced(w, "epochs: 0", "epochs: many"), RUN_BAD, 2, "train.epochs"),
    data_root_is_a_list => Case::new(
        |w| replaced(w, "root: data", "root: [data]"), RUN_BAD, 2, "data.root"),
    image_size_zero => Case::new(
        |w| replaced(w, "image_size: 28", "image_size: 0"), RUN_BAD, 2, "data.image_size"),
    image_size_huge => Case::new(
        |w| replaced(w, "image_size: 28", "image_size: 100000"), RUN_BAD, 2, "data.image_size"),
    val_fraction_above_one => Case::new(
        |w| replaced(w, "val_fraction: 0.3", "val_fraction: 1.5"), RUN_BAD, 2,
        "split.val_fraction"),
    learning_rate_negative => Case::new(
        |w| appended(w, "  optimizer: {lr: -0.1}\n"), RUN_BAD, 2, "train.optimizer.lr"),
    learning_rate_nan => Case::new(
        |w| appended(w, "  optimizer: {lr: .nan}\n"), RUN_BAD, 2, "train.optimizer.lr"),
    batch_size_past_32_bits => Case::new(
        |w| replaced(w, "batch_size: 16", "batch_size: 10000000000000"), RUN_BAD, 2,
        "train.batch_size"),
    seed_past_64_bits => Case::new(
        |w| replaced(w, "seed: 42\ndata", "seed: 18446744073709551616\ndata"), RUN_BAD, 2,
        "seed"),
    unknown_model_preset => Case::new(
        |w| replaced(w, "vil_micro", "resnet50"), RUN_BAD, 2, "model.name"),
    model_preset_typo => Case::new(
        |w| replaced(w, "vil_micro", "vil_mirco"), RUN_BAD, 2, "model.name"),
    patch_size_does_not_divide_image_size => Case::new(
        |w| replaced(w, "patch_size: 4", "patch_size: 5"), RUN_BAD, 2, "model.patch_size"),
    name_climbs_out_of_the_output_folder => Case::new(
        |w| replaced(w, "name: exp", "name: ../x"), RUN_BAD, 2, "name"),
    name_is_an_absolute_path => Case::new(
        |w| replaced(w, "name: exp", "name: /tmp/x"), RUN_BAD, 2, "name"),
    name_is_dot_dot => Case::new(
        |w| replaced(w, "name: exp", "name: '..'"), RUN_BAD, 2, "name"),
    data_root_missing => Case::new(
        |w| replaced(w, "root: data", "root: nowhere"), RUN_BAD, 2, "data.root"),
    data_root_is_a_file => Case::new(
        |w| replaced(w, "root: data", "root: exp.yaml"), RUN_BAD, 2, "data.root"),
    data_root_empty => Case::new(
        |w| replaced(w, "root: data", "root: ''"), RUN_BAD, 2, "data.root"),
    val_root_is_the_data_root => Case::new(
        |w| replaced(w, "root: data\n", "root: data\n  val_root: ./data\n"), RUN_BAD, 2,
        "data.val_root"),
    sweep_over_a_field_that_does_not_exist => Case::new(
        |w| appended(w, "sweep:\n  grid:\n    train.epohcs: [1, 2]\n"), RUN_BAD, 2,
        "sweep.grid.train.epohcs"),
    sweep_of_four_billion_trials => Case::new(
        |w| appended(
            w,
            "sweep:\n  random:\n    n: 4000000000\n    params:\n      \
             train.optimizer.lr: {loguniform: [0.0001, 0.01]}\n",
        ),
        RUN_BAD, 2, "sweep"),
    sweep_without_values => Case::new(
        |w| appended(w, "sweep:\n  grid:\n    train.epochs: []\n"), RUN_BAD, 2,
        "sweep.grid.train.epochs"),
    half_precision_on_the_cpu => Case::new(
        |w| appended(w, "  precision: bf16\n"), RUN_BAD, 2, "train.precision"),
    mean_without_std => Case::new(
        |w| appended(w, "stats:\n  mean: [0.5, 0.5, 0.5]\n"), RUN_BAD, 2, "stats.std"),
    mean_outside_pixel_range => Case::new(
        |w| appended(w, "stats:\n  mean: [0.5, 128, 0.5]\n  std: [0.2, 0.2, 0.2]\n"),
        RUN_BAD, 2, "stats.mean.1"),
    unknown_ranking_metric => Case::new(
        |w| appended(w, "evaluate:\n  metric: val_acc7\n"), RUN_BAD, 2, "evaluate.metric"),
    unknown_transform => Case::new(
        |w| appended(w, "augment:\n  train:\n    - flip: {p: 0.5}\n"), RUN_BAD, 2,
        "augment.train.0.flip"),
    set_empty_data_root => Case::new(
        |w| appended(w, ""),
        &["run", "bad.yaml", "--out", "out", "-q", "--set", "data.root="], 2, "data.root"),
}

// The data folder. These pass validation and fail in the split stage, exit 1.
cases! {
    root_without_class_folders => Case::new(
        |w| {
            std::fs::create_dir(w.path().join("loose")).expect("folder");
            w.write("loose/readme.txt", "no classes here");
            replaced(w, "root: data", "root: loose");
        },
        RUN_BAD, 1, "[TMP]/loose"),
    empty_class_folder => Case::new(
        |w| {
            std::fs::create_dir(w.data().join("Bag")).expect("folder");
        },
        RUN_GOOD, 1, "[TMP]/data/Bag"),
    class_folder_with_only_hidden_files => Case::new(
        |w| {
            w.write("data/Bag/.DS_Store", "x");
        },
        RUN_GOOD, 1, "[TMP]/data/Bag"),
    single_class => Case::new(
        |w| {
            std::fs::create_dir(w.path().join("one")).expect("folder");
            common::copy_tree(&w.data().join("Coat"), &w.path().join("one/Coat"));
            replaced(w, "root: data", "root: one");
        },
        RUN_BAD, 1, "[TMP]/one"),
    class_only_in_val_root => Case::new(
        |w| {
            common::copy_tree(&w.data(), &w.path().join("val"));
            common::copy_tree(&w.data().join("Coat"), &w.path().join("val/Bag"));
            replaced(w, "root: data\n", "root: data\n  val_root: val\n");
        },
        RUN_BAD, 1, "[TMP]/val"),
    class_missing_from_test_root => Case::new(
        |w| {
            common::copy_tree(&w.data().join("Coat"), &w.path().join("test/Coat"));
            replaced(w, "root: data\n", "root: data\n  test_root: test\n");
        },
        RUN_BAD, 1, "[TMP]/test"),
    all_images_corrupt => Case::new(
        |w| {
            overwrite_class(w, "Coat", b"not an image");
            overwrite_class(w, "Trouser", b"\x89PNG\r\n\x1a\ntruncated");
        },
        RUN_GOOD, 1, "[TMP]/data/Coat"),
    all_images_of_a_class_empty => Case::new(
        |w| overwrite_class(w, "Trouser", b""), RUN_GOOD, 1, "[TMP]/data/Trouser"),
    png_declaring_100000_squared_pixels => Case::new(
        |w| {
            w.write("data/Coat/bomb.png", png_declaring(100_000, 100_000));
            replaced(w, "image_size: 28\n", "image_size: 28\n  on_bad_image: fail\n");
        },
        RUN_BAD, 1, "[TMP]/data/Coat/bomb.png"),
    every_image_of_a_class_declares_a_huge_size => Case::new(
        |w| overwrite_class(w, "Trouser", &png_declaring(100_000, 100_000)),
        RUN_GOOD, 1, "[TMP]/data/Trouser"),
    too_few_images_for_a_validation_split => Case::new(
        |w| {
            for class in CLASSES {
                for file in class_files(w, class).into_iter().skip(1) {
                    std::fs::remove_file(file).expect("remove image");
                }
            }
        },
        RUN_GOOD, 1, "split.val_fraction"),
    symbolic_link_loop => Case::new(
        |w| {
            std::os::unix::fs::symlink("..", w.data().join("Coat/loop")).expect("symlink");
        },
        RUN_GOOD, 1, "[TMP]/data/Coat/loop"),
    dangling_links_only => Case::new(
        |w| {
            for file in class_files(w, "Trouser") {
                std::fs::remove_file(&file).expect("remove image");
                std::os::unix::fs::symlink(w.path().join("gone.png"), &file).expect("symlink");
            }
        },
        RUN_GOOD, 1, "[TMP]/data/Trouser"),
    unreadable_images => Case {
        needs_permissions: true,
        ..Case::new(
            |w| {
                for file in class_files(w, "Trouser") {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o000))
                        .expect("chmod");
                }
            },
            // Another seed than the earlier run's, so a privileged user who can read the
            // files makes a new run rather than repeating the earlier one.
            &["run", "exp.yaml", "--out", "out", "-q", "--set", "split.seed=5"],
            1, "[TMP]/data/Trouser")
    },
}

// The command line: missing files, folders that are not runs, weights of another model.
cases! {
    experiment_file_missing => Case::new(
        |_| {}, &["run", "missing.yaml", "--out", "out", "-q"], 2, "missing.yaml"),
    plan_of_a_folder => Case::new(
        |_| {}, &["plan", "data", "--out", "out"], 2, "data"),
    unknown_flag => Case::new(
        |_| {}, &["run", "exp.yaml", "--frobnicate"], 2, "--frobnicate"),
    unknown_verb => Case::new(|_| {}, &["frobnicate"], 2, "frobnicate"),
    missing_argument => Case::new(|_| {}, &["validate"], 2, "<FILE>"),
    compare_with_a_data_folder => Case::new(
        |_| {}, &["compare", EARLIER_RUN, "data"], 2, "data"),
    compare_with_a_missing_folder => Case::new(
        |_| {}, &["compare", EARLIER_RUN, "nowhere"], 2, "nowhere"),
    predict_with_a_data_folder_as_run => Case::new(
        |_| {}, &["predict", "data", "data/Coat"], 2, "data"),
    predict_a_missing_image => Case::new(
        |_| {}, &["predict", EARLIER_RUN, "missing.png"], 2, "missing.png"),
    predict_with_unknown_weights_choice => Case::new(
        |_| {}, &["predict", EARLIER_RUN, "data/Coat", "--weights", "worst"], 2, "--weights"),
    predict_with_weights_of_another_model => Case::new(
        |_| {},
        &["predict", "--model", "vil_tiny", "--weights",
          "out/exp/latest/train/best/model.safetensors", "--classes", "Coat,Trouser",
          "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "data/Coat"],
        1, "out/exp/latest/train/best/model.safetensors"),
    predict_with_an_experiment_file_as_weights => Case::new(
        |_| {},
        &["predict", "--model", "vil_micro", "--weights", "exp.yaml", "--classes",
          "Coat,Trouser", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "data/Coat"],
        1, "exp.yaml"),
    predict_from_a_run_with_foreign_weights => Case::new(
        run_with_foreign_weights, &["predict", "fake-run", "data/Coat"], 1,
        "fake-run/train/best/model.safetensors"),
    export_a_data_folder => Case::new(
        |_| {}, &["export", "data", "--out", "model.safetensors"], 2, "data"),
    export_to_a_wrong_extension => Case::new(
        |_| {}, &["export", EARLIER_RUN, "--out", "model.bin"], 2, "model.bin"),
    export_a_run_with_foreign_weights => Case::new(
        run_with_foreign_weights, &["export", "fake-run", "--out", "exported/model.safetensors"],
        1, "fake-run/train/best/model.safetensors"),
}

#[test]
fn png_bomb_header_is_well_formed() {
    // The bomb cases above only mean something if the file is a PNG the decoder accepts up to
    // its declared size: check the signature, the IHDR fields and the chunk checksum.
    let png = png_declaring(100_000, 100_000);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 100_000);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 100_000);
    let stored = u32::from_be_bytes(png[29..33].try_into().unwrap());
    assert_eq!(stored, crc32(&png[12..29]));
    // The CRC-32 check value of "123456789" (ISO 3309).
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn byte_order_mark_is_not_a_second_document() {
    let workspace = Workspace::new();
    let text = experiment().replace(
        "root: data",
        &format!("root: {}", repo_root().join("data1").display()),
    );
    workspace.write("bom.yaml", format!("\u{feff}{text}"));
    let output = workspace.vilab(&["validate", "bom.yaml"]);
    output.assert_code(0).assert_no_panic();
}
