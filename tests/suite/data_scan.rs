//! Scanning image folders: classes, files, hidden entries, the errors that name the folder, and the
//! promise that nothing under the data root is ever modified, checked by hashing the tree before
//! and after every read-only operation the data layer offers.

use std::path::{Path, PathBuf};

use vilab::data::DataError;
use vilab::data::manifest::{ManifestRow, write_manifest};
use vilab::data::pack::write_pack;
use vilab::data::scan::scan_image_folder;
use vilab::data::stats::channel_stats;
use vilab::data::verify::verify_images;
use walkdir::WalkDir;

fn odd_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odd_images")
}

/// Hash of every entry under `root`, hidden ones included: path, kind, size, modification time,
/// permissions and content. Any write, touch, rename or new file changes it.
fn tree_hash(root: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut hasher = blake3::Hasher::new();
    for entry in WalkDir::new(root).sort_by_file_name() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        hasher.update(entry.path().to_string_lossy().as_bytes());
        hasher.update(&[u8::from(metadata.is_dir())]);
        hasher.update(&metadata.len().to_le_bytes());
        hasher.update(&metadata.permissions().mode().to_le_bytes());
        let modified = metadata.modified().unwrap();
        hasher.update(format!("{modified:?}").as_bytes());
        if metadata.is_file() {
            hasher.update(&std::fs::read(entry.path()).unwrap());
        }
    }
    hasher.finalize().to_hex().to_string()
}

#[test]
fn classes_are_sorted_bytewise_including_non_ascii() {
    let scan = scan_image_folder(&odd_images()).unwrap();
    assert_eq!(
        scan.classes,
        ["Black-grass", "Common chickweed", "Löwenzahn"]
    );
}

#[test]
fn files_are_listed_recursively_sorted_without_hidden_or_loose_ones() {
    let root = odd_images();
    let scan = scan_image_folder(&root).unwrap();
    let listed: Vec<(&str, usize)> = scan
        .files
        .iter()
        .map(|file| (file.rel_path.as_str(), file.class))
        .collect();
    assert_eq!(
        listed,
        [
            ("Black-grass/empty.png", 0),
            ("Black-grass/grey.png", 0),
            ("Black-grass/grey_alpha.png", 0),
            ("Black-grass/rgb.png", 0),
            ("Black-grass/rgba.png", 0),
            ("Common chickweed/bitmap.bmp", 1),
            ("Common chickweed/cmyk.jpg", 1),
            ("Common chickweed/more photos/leaf photo.png", 1),
            ("Common chickweed/notes.jpg", 1),
            ("Common chickweed/rgb16.png", 1),
            ("Löwenzahn/grey16.png", 2),
            ("Löwenzahn/one_pixel.png", 2),
            ("Löwenzahn/really_png.jpg", 2),
            ("Löwenzahn/truncated.png", 2),
        ]
    );
    for file in &scan.files {
        let metadata = std::fs::metadata(file.path_under(&root)).unwrap();
        assert_eq!(file.len, metadata.len(), "{}", file.rel_path);
        let modified = metadata.modified().unwrap();
        let since_epoch = modified.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(
            file.mtime_ns,
            since_epoch.as_nanos() as i128,
            "{}",
            file.rel_path
        );
    }
}

#[test]
fn reading_the_data_root_changes_nothing_under_it() {
    let root = odd_images();
    let before = tree_hash(&root);
    let scan = scan_image_folder(&root).unwrap();
    let results = verify_images(&root, &scan.files);
    let good: Vec<(String, usize)> = scan
        .files
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|(file, _)| (file.rel_path.clone(), file.class))
        .collect();
    let output = tempfile::tempdir().unwrap();
    write_pack(output.path(), "train", &root, &good, 8).unwrap();
    let paths: Vec<String> = good.iter().map(|(path, _)| path.clone()).collect();
    channel_stats(&root, &paths, 8).unwrap();
    let rows: Vec<ManifestRow> = good
        .iter()
        .map(|(path, label)| ManifestRow {
            path: path.clone(),
            class: scan.classes[*label].clone(),
            label: *label,
        })
        .collect();
    write_manifest(&output.path().join("train.csv"), &rows).unwrap();
    assert_eq!(tree_hash(&root), before);
}

#[test]
fn missing_root_and_file_root_are_named() {
    let folder = tempfile::tempdir().unwrap();
    let missing = folder.path().join("no such folder");
    let error = scan_image_folder(&missing).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: data folder does not exist", missing.display())
    );
    let file = folder.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let error = scan_image_folder(&file).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: not a directory", file.display())
    );
}

#[test]
fn root_without_class_folders_is_an_error() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("loose.png"), "x").unwrap();
    std::fs::create_dir(folder.path().join(".hidden")).unwrap();
    std::fs::write(folder.path().join(".hidden/a.png"), "x").unwrap();
    let error = scan_image_folder(folder.path()).unwrap_err();
    assert!(matches!(error, DataError::NoClasses { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: no class folders (expected one sub-folder per class)",
            folder.path().display()
        )
    );
}

#[test]
fn class_folder_with_only_hidden_files_is_empty() {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path().join("data1");
    std::fs::create_dir_all(root.join("Maize/.cache")).unwrap();
    std::fs::create_dir_all(root.join("Wheat")).unwrap();
    std::fs::write(root.join("Maize/.DS_Store"), "x").unwrap();
    std::fs::write(root.join("Maize/.cache/a.png"), "x").unwrap();
    std::fs::write(root.join("Wheat/a.png"), "x").unwrap();
    let error = scan_image_folder(&root).unwrap_err();
    assert_eq!(error.path(), root.join("Maize"));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: empty class folder (no images)",
            root.join("Maize").display()
        )
    );
}

#[test]
fn symlinked_class_is_followed_and_a_link_loop_is_reported() {
    let folder = tempfile::tempdir().unwrap();
    let elsewhere = folder.path().join("elsewhere");
    let root = folder.path().join("root");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(root.join("Real")).unwrap();
    std::fs::write(elsewhere.join("linked.png"), "x").unwrap();
    std::fs::write(root.join("Real/a.png"), "x").unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("Linked")).unwrap();
    let scan = scan_image_folder(&root).unwrap();
    assert_eq!(scan.classes, ["Linked", "Real"]);
    let paths: Vec<&str> = scan
        .files
        .iter()
        .map(|file| file.rel_path.as_str())
        .collect();
    assert_eq!(paths, ["Linked/linked.png", "Real/a.png"]);

    std::os::unix::fs::symlink(root.join("Real"), root.join("Real/again")).unwrap();
    let error = scan_image_folder(&root).unwrap_err();
    assert!(matches!(error, DataError::Walk { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("symbolic link loop"), "{message}");
    assert!(
        message.starts_with(&root.join("Real/again").display().to_string()),
        "{message}"
    );
}

#[test]
fn dangling_link_is_listed_for_verification_to_reject() {
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    std::fs::create_dir_all(root.join("Oats")).unwrap();
    std::fs::write(root.join("Oats/a.png"), "x").unwrap();
    std::os::unix::fs::symlink(root.join("gone.png"), root.join("Oats/b.png")).unwrap();
    let scan = scan_image_folder(root).unwrap();
    let paths: Vec<&str> = scan
        .files
        .iter()
        .map(|file| file.rel_path.as_str())
        .collect();
    assert_eq!(paths, ["Oats/a.png", "Oats/b.png"]);
    let results = verify_images(root, &scan.files);
    let reason = results[1].as_ref().unwrap_err().to_string();
    assert!(reason.starts_with("cannot read file: "), "{reason}");
}
