//! Split, pack and statistics on real image files: the shipped Fashion-MNIST folder (data1/) and
//! the awkward fixture folder. Packs must hold exactly the resized decoded pixels in manifest order,
//! refuse files that disagree with their description, and statistics must equal a direct two-pass
//! computation over the same pixels.

use std::path::{Path, PathBuf};

use vilab::data::DataError;
use vilab::data::image::load_resized;
use vilab::data::pack::{PackInfo, PackedSplit, write_pack};
use vilab::data::scan::scan_image_folder;
use vilab::data::split::split_indices;
use vilab::data::stats::{channel_stats, channel_stats_from_pack};

fn data1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data1")
}

fn odd_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odd_images")
}

/// The decodable images of the fixture folder, with labels.
fn good_fixture_entries() -> Vec<(String, usize)> {
    let skipped = ["empty.png", "notes.jpg", "truncated.png"];
    scan_image_folder(&odd_images())
        .unwrap()
        .files
        .into_iter()
        .filter(|file| !skipped.iter().any(|name| file.rel_path.ends_with(name)))
        .map(|file| (file.rel_path, file.class))
        .collect()
}

#[test]
fn data1_splits_stratified_and_reproducibly() {
    let scan = scan_image_folder(&data1()).unwrap();
    assert_eq!(scan.classes.len(), 10);
    assert_eq!(scan.files.len(), 1000);
    let labels: Vec<usize> = scan.files.iter().map(|file| file.class).collect();
    let (train, validation) = split_indices(&labels, 10, 0.2, true, 42);
    assert_eq!((train.len(), validation.len()), (800, 200));
    for class in 0..10 {
        let in_validation = validation
            .iter()
            .filter(|&&index| labels[index] == class)
            .count();
        assert_eq!(in_validation, 20, "class {}", scan.classes[class]);
    }
    assert_eq!(
        split_indices(&labels, 10, 0.2, true, 42),
        (train.clone(), validation.clone())
    );
    let (_, other_validation) = split_indices(&labels, 10, 0.2, true, 43);
    assert_ne!(validation, other_validation);
}

#[test]
fn pack_round_trips_resized_pixels_in_order() {
    let root = odd_images();
    let entries = good_fixture_entries();
    assert_eq!(entries.len(), 11);
    let folder = tempfile::tempdir().unwrap();
    let info = write_pack(folder.path(), "train", &root, &entries, 12).unwrap();

    let pixels = std::fs::read(folder.path().join("train.u8")).unwrap();
    assert_eq!(
        info,
        PackInfo {
            count: 11,
            height: 12,
            width: 12,
            channels: 3,
            layout: "NHWC".to_owned(),
            blake3: blake3::hash(&pixels).to_hex().to_string(),
            shorter_side: None,
        }
    );
    let written: PackInfo =
        serde_json::from_str(&std::fs::read_to_string(folder.path().join("train.json")).unwrap())
            .unwrap();
    assert_eq!(written, info);

    let pack = PackedSplit::open(folder.path(), "train").unwrap();
    assert_eq!((pack.len(), pack.height(), pack.width()), (11, 12, 12));
    for (index, (relative, label)) in entries.iter().enumerate() {
        let expected = load_resized(&root.join(relative), 12).unwrap();
        assert_eq!(
            pack.image(index),
            expected.as_raw().as_slice(),
            "{relative}"
        );
        assert_eq!(pack.label(index), *label, "{relative}");
    }
    let labels = std::fs::read(folder.path().join("train.labels")).unwrap();
    assert_eq!(labels.len(), 22);
    assert_eq!(&labels[..2], &(entries[0].1 as u16).to_le_bytes());
    pack.verify_hash().unwrap();
}

#[test]
fn pack_streams_more_than_one_chunk_in_order() {
    // data1 has 1000 images, so packing it crosses several 256-image chunks.
    let root = data1();
    let entries: Vec<(String, usize)> = scan_image_folder(&root)
        .unwrap()
        .files
        .into_iter()
        .map(|file| (file.rel_path, file.class))
        .rev()
        .collect();
    let folder = tempfile::tempdir().unwrap();
    write_pack(folder.path(), "val", &root, &entries, 28).unwrap();
    let pack = PackedSplit::open(folder.path(), "val").unwrap();
    assert_eq!(pack.len(), 1000);
    for index in [0, 255, 256, 511, 700, 999] {
        let (relative, label) = &entries[index];
        let expected = load_resized(&root.join(relative), 28).unwrap();
        assert_eq!(
            pack.image(index),
            expected.as_raw().as_slice(),
            "image {index}"
        );
        assert_eq!(pack.label(index), *label);
    }
}

#[test]
fn opening_a_damaged_pack_names_the_file() {
    let root = odd_images();
    let entries = good_fixture_entries();
    let folder = tempfile::tempdir().unwrap();
    write_pack(folder.path(), "val", &root, &entries[..3], 4).unwrap();

    let pixels = folder.path().join("val.u8");
    let full = std::fs::read(&pixels).unwrap();
    std::fs::write(&pixels, &full[..full.len() - 1]).unwrap();
    let error = PackedSplit::open(folder.path(), "val").unwrap_err();
    assert!(matches!(error, DataError::PackMismatch { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: size 143 bytes does not match 3 images of 4×4",
            pixels.display()
        )
    );

    let mut flipped = full.clone();
    flipped[0] ^= 1;
    std::fs::write(&pixels, &flipped).unwrap();
    let pack = PackedSplit::open(folder.path(), "val").unwrap();
    let error = pack.verify_hash().unwrap_err().to_string();
    assert!(error.starts_with(&pixels.display().to_string()), "{error}");

    std::fs::remove_file(folder.path().join("val.labels")).unwrap();
    let error = PackedSplit::open(folder.path(), "val")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&folder.path().join("val.labels").display().to_string()),
        "{error}"
    );
}

#[test]
fn pack_refuses_bad_images_and_bad_names() {
    let root = odd_images();
    let folder = tempfile::tempdir().unwrap();
    let entries = vec![("Black-grass/empty.png".to_owned(), 0)];
    let error = write_pack(folder.path(), "train", &root, &entries, 8).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: empty file (0 bytes)",
            root.join("Black-grass/empty.png").display()
        )
    );
    let error = write_pack(folder.path(), "../train", &root, &[], 8).unwrap_err();
    assert!(matches!(error, DataError::Invalid { .. }), "{error}");
}

#[test]
fn empty_pack_opens_with_no_images() {
    let folder = tempfile::tempdir().unwrap();
    write_pack(folder.path(), "test", &odd_images(), &[], 8).unwrap();
    let pack = PackedSplit::open(folder.path(), "test").unwrap();
    assert!(pack.is_empty());
    assert!(channel_stats_from_pack(&pack).is_err());
}

/// Mean and population std per channel by the textbook two passes over [0, 1] values.
fn two_pass(images: &[Vec<u8>]) -> ([f64; 3], [f64; 3]) {
    let values = |channel: usize| {
        images
            .iter()
            .flat_map(move |image| image.iter().skip(channel).step_by(3))
            .map(|&byte| f64::from(byte) / 255.0)
    };
    let mut mean = [0.0; 3];
    let mut std = [0.0; 3];
    for channel in 0..3 {
        let count = values(channel).count() as f64;
        mean[channel] = values(channel).sum::<f64>() / count;
        let squared: f64 = values(channel)
            .map(|value| (value - mean[channel]).powi(2))
            .sum();
        std[channel] = (squared / count).sqrt();
    }
    (mean, std)
}

fn assert_close(actual: [f64; 3], expected: [f64; 3], what: &str) {
    for channel in 0..3 {
        let difference = (actual[channel] - expected[channel]).abs();
        assert!(
            difference < 1e-12,
            "{what}[{channel}]: {actual:?} vs {expected:?}"
        );
    }
}

#[test]
fn stats_equal_a_direct_two_pass_computation() {
    for (root, entries, size) in [
        (odd_images(), good_fixture_entries(), 9),
        (
            data1(),
            scan_image_folder(&data1())
                .unwrap()
                .files
                .into_iter()
                .step_by(7)
                .map(|file| (file.rel_path, file.class))
                .collect(),
            28,
        ),
    ] {
        let paths: Vec<String> = entries.iter().map(|(path, _)| path.clone()).collect();
        let images: Vec<Vec<u8>> = paths
            .iter()
            .map(|path| load_resized(&root.join(path), size).unwrap().into_raw())
            .collect();
        let (mean, std) = two_pass(&images);
        let stats = channel_stats(&root, &paths, size).unwrap();
        assert_eq!(
            stats.pixels,
            (paths.len() * size as usize * size as usize) as u64
        );
        assert_close(stats.mean, mean, "mean");
        assert_close(stats.std, std, "std");

        let folder = tempfile::tempdir().unwrap();
        write_pack(folder.path(), "train", &root, &entries, size).unwrap();
        let pack = PackedSplit::open(folder.path(), "train").unwrap();
        assert_eq!(channel_stats_from_pack(&pack).unwrap(), stats);
    }
}

#[test]
fn data1_is_grey_so_its_channels_agree() {
    let root = data1();
    let paths: Vec<String> = scan_image_folder(&root)
        .unwrap()
        .files
        .into_iter()
        .map(|file| file.rel_path)
        .collect();
    let stats = channel_stats(&root, &paths, 28).unwrap();
    assert_eq!(stats.mean[0], stats.mean[1]);
    assert_eq!(stats.std[1], stats.std[2]);
    // Fashion-MNIST's published training-set statistics are mean ≈ 0.286, std ≈ 0.353; a thousand
    // images land near them.
    assert!((stats.mean[0] - 0.286).abs() < 0.03, "{stats:?}");
    assert!((stats.std[0] - 0.353).abs() < 0.03, "{stats:?}");
}

#[test]
fn stats_report_the_bad_image() {
    let root = odd_images();
    let paths = vec![
        "Black-grass/rgb.png".to_owned(),
        "Common chickweed/notes.jpg".to_owned(),
    ];
    let error = channel_stats(&root, &paths, 4).unwrap_err();
    assert_eq!(error.path(), root.join("Common chickweed/notes.jpg"));
}
