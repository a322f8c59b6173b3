//! Data handling through the real binary: a run on the awkward image folder of
//! `tests/fixtures/odd_images` (see its README) uses every readable image, lists the unreadable
//! ones in `skipped.csv`, copes with spaces and non-ASCII letters in class names, and leaves the
//! folder byte for byte and time stamp for time stamp as it was; and `vilab data import-idx`
//! writes a class-per-folder tree from the Debian Fashion-MNIST files, refusing to overwrite.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::{FASHION_CLASSES, FASHION_MNIST, Workspace, entry_names, tree_state};

/// The readable images of the fixture, relative to its root.
const GOOD_IMAGES: [&str; 11] = [
    "Black-grass/grey.png",
    "Black-grass/grey_alpha.png",
    "Black-grass/rgb.png",
    "Black-grass/rgba.png",
    "Common chickweed/bitmap.bmp",
    "Common chickweed/cmyk.jpg",
    "Common chickweed/more photos/leaf photo.png",
    "Common chickweed/rgb16.png",
    "Löwenzahn/grey16.png",
    "Löwenzahn/one_pixel.png",
    "Löwenzahn/really_png.jpg",
];

/// The unreadable files, as `skipped.csv` names them (the root as the spec writes it), and a
/// word their reason must contain.
const BAD_FILES: [(&str, &str); 3] = [
    ("data/Black-grass/empty.png", "empty"),
    ("data/Common chickweed/notes.jpg", "not an image"),
    ("data/Löwenzahn/truncated.png", "truncated"),
];

const CLASSES: [&str; 3] = ["Black-grass", "Common chickweed", "Löwenzahn"];

/// An experiment on the fixture copy: 3 or 4 readable images per class, so a third of each
/// class (rounded) leaves at least one image on each side of the split.
fn odd_experiment(on_bad_image: &str) -> String {
    format!(
        "name: odd\n\
         data:\n  root: data\n  image_size: 16\n  on_bad_image: {on_bad_image}\n\
         split:\n  val_fraction: 0.34\n\
         train:\n  epochs: 0\n  batch_size: 4\n"
    )
}

/// Rows of a split manifest (`path,class,label`), without the header.
fn manifest_rows(path: &Path) -> Vec<(String, String, usize)> {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        ["path", "class", "label"]
    );
    reader
        .records()
        .map(|record| {
            let record = record.expect("CSV record");
            (
                record[0].to_owned(),
                record[1].to_owned(),
                record[2].parse().expect("numeric label"),
            )
        })
        .collect()
}

#[test]
fn odd_images_are_used_or_skipped_and_the_data_folder_is_untouched() {
    let workspace = Workspace::with_fixture("odd_images");
    workspace.write("odd.yaml", odd_experiment("skip"));
    let before = tree_state(&workspace.data());

    let output = workspace.vilab(&["run", "odd.yaml", "--out", "out"]);
    output.assert_code(0).assert_no_panic();
    let split = workspace
        .path()
        .join(output.last_stdout_line())
        .join("split");

    let classes: Vec<String> =
        serde_json::from_slice(&std::fs::read(split.join("classes.json")).expect("classes.json"))
            .expect("classes.json is JSON");
    assert_eq!(classes, CLASSES);

    let train = manifest_rows(&split.join("train.csv"));
    let val = manifest_rows(&split.join("val.csv"));
    assert!(!train.is_empty() && !val.is_empty());
    let mut used = BTreeSet::new();
    for (path, class, label) in train.iter().chain(&val) {
        assert!(used.insert(path.clone()), "{path} is used twice");
        assert!(
            path.starts_with(&format!("{class}/")),
            "{path} listed as {class}"
        );
        assert_eq!(CLASSES[*label], class, "label of {path}");
    }
    assert_eq!(
        used,
        GOOD_IMAGES
            .iter()
            .map(|p| p.to_string())
            .collect::<BTreeSet<_>>()
    );
    for class in CLASSES {
        for rows in [&train, &val] {
            assert!(
                rows.iter().any(|(_, c, _)| c == class),
                "{class} missing on one side"
            );
        }
    }

    let mut reader = csv::Reader::from_path(split.join("skipped.csv")).expect("skipped.csv");
    let skipped: Vec<(String, String)> = reader
        .records()
        .map(|record| {
            let record = record.expect("CSV record");
            (record[0].to_owned(), record[1].to_owned())
        })
        .collect();
    assert_eq!(skipped.len(), BAD_FILES.len(), "{skipped:?}");
    for ((path, reason), (expected_path, word)) in skipped.iter().zip(BAD_FILES) {
        assert_eq!(path, expected_path);
        assert!(
            reason.contains(word),
            "{path}: reason `{reason}` lacks `{word}`"
        );
    }
    insta::assert_snapshot!(
        "odd_images_skipped_csv",
        std::fs::read_to_string(split.join("skipped.csv")).expect("skipped.csv")
    );

    // The stages after split read the same images: stats measured every train image.
    let stats_dir = workspace
        .path()
        .join(output.last_stdout_line())
        .join("stats");
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stats_dir.join("stats.json")).expect("stats.json"))
            .expect("stats.json is JSON");
    assert_eq!(stats["images"].as_u64(), Some(train.len() as u64));

    assert_eq!(
        tree_state(&workspace.data()),
        before,
        "the data folder changed during the run"
    );
}

#[test]
fn fail_policy_stops_at_the_first_bad_image_and_writes_nothing_under_data() {
    let workspace = Workspace::with_fixture("odd_images");
    workspace.write("odd.yaml", odd_experiment("fail"));
    let before = tree_state(&workspace.data());
    let output = workspace.vilab(&["run", "odd.yaml", "--out", "out"]);
    output.assert_code(1).assert_no_panic();
    assert_eq!(output.stdout, "");
    assert!(
        BAD_FILES.iter().any(|(path, _)| {
            let file_name = path.rsplit('/').next().expect("file name");
            output.stderr.contains(file_name)
        }),
        "the error does not name a bad file:\n{}",
        output.stderr
    );
    assert!(output.stderr.contains("on_bad_image"), "{}", output.stderr);
    assert_eq!(tree_state(&workspace.data()), before);
    // Nothing half-done became a cache entry.
    assert!(entry_names(&workspace.path().join("out/cache/tmp")).is_empty());
}

#[test]
fn a_stage_error_is_one_line_saying_it_once() {
    let workspace = Workspace::with_fixture("odd_images");
    workspace.write("odd.yaml", odd_experiment("fail"));
    let output = workspace.vilab(&["run", "odd.yaml", "--out", "out"]);
    output.assert_code(1).assert_no_panic();
    let errors: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", output.stderr);
    assert_eq!(
        errors[0].matches("(data.on_bad_image is fail)").count(),
        1,
        "the cause is repeated: {}",
        errors[0]
    );
}

#[test]
fn warnings_are_plain_text_when_stderr_is_not_a_terminal() {
    // Logs captured by CI or a pipe must not carry terminal colour codes.
    let workspace = Workspace::with_fixture("odd_images");
    workspace.write("odd.yaml", odd_experiment("skip"));
    let output = workspace.vilab(&["run", "odd.yaml", "--out", "out"]);
    output.assert_code(0);
    assert!(
        output.stderr.contains("empty.png"),
        "no warning for the empty file:\n{}",
        output.stderr
    );
    assert!(
        !output.stderr.contains('\u{1b}'),
        "escape codes on a non-terminal stderr:\n{:?}",
        output.stderr
    );
}

/// The Debian package's training files, or `None` with a note when it is not installed.
fn fashion_files() -> Option<(String, String)> {
    let folder = Path::new(FASHION_MNIST);
    let images = folder.join("train-images-idx3-ubyte.gz");
    let labels = folder.join("train-labels-idx1-ubyte.gz");
    if images.is_file() && labels.is_file() {
        Some((
            images.to_string_lossy().into_owned(),
            labels.to_string_lossy().into_owned(),
        ))
    } else {
        eprintln!(
            "SKIPPED: {FASHION_MNIST} not found; install it with \
             `apt-get install dataset-fashion-mnist` to run the import-idx CLI test"
        );
        None
    }
}

#[test]
fn import_idx_writes_class_folders_and_refuses_to_overwrite() {
    let Some((images, labels)) = fashion_files() else {
        return;
    };
    let workspace = Workspace::new();
    let args = [
        "data",
        "import-idx",
        "--images",
        &images,
        "--labels",
        &labels,
        "--classes",
        FASHION_CLASSES,
        "--out",
        "imported",
        "--per-class",
        "3",
    ];
    let first = workspace.vilab(&args);
    first.assert_code(0).assert_no_panic();
    assert_eq!(first.last_stdout_line(), "imported");

    let imported = workspace.path().join("imported");
    let expected_classes: BTreeSet<&str> = FASHION_CLASSES.split(',').collect();
    let folders = entry_names(&imported);
    assert_eq!(
        folders.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        expected_classes
    );
    let mut total = 0;
    for folder in &folders {
        let files = entry_names(&imported.join(folder));
        assert_eq!(files.len(), 3, "{folder}: {files:?}");
        for file in &files {
            let bytes = std::fs::read(imported.join(folder).join(file)).expect("read PNG");
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{folder}/{file} is not a PNG"
            );
        }
        total += files.len();
    }
    assert_eq!(total, 30);

    let before = tree_state(&imported);
    let second = workspace.vilab(&args);
    second.assert_no_panic();
    assert_ne!(second.code, 0, "importing over existing files must fail");
    assert_eq!(second.stderr.lines().count(), 1, "{}", second.stderr);
    assert!(
        second.stderr.contains("imported/") && second.stderr.contains(".png"),
        "the error does not name the existing file: {}",
        second.stderr
    );
    assert_eq!(
        tree_state(&imported),
        before,
        "a refused import changed files"
    );
}
