//! `data.storage_size`: packs whose images keep their aspect at a chosen shorter side, so crop
//! transforms cut the original's pixels instead of upsampling a copy squashed to the training
//! size. On real images: data1/ (Fashion-MNIST, 28×28 PNG) and the RGB fixtures of
//! tests/fixtures/odd_images (40×30 and 25×35).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use tempfile::TempDir;
use vilab::data::DataError;
use vilab::data::image::{decode_rgb8, resize_shorter_side};
use vilab::data::loader::{Batch, LoaderConfig, batches};
use vilab::data::pack::{PackedSplit, Storage, write_pack_with};
use vilab::data::scan::scan_image_folder;
use vilab::data::transforms::Transform;

use crate::common::Workspace;

fn data1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data1")
}

fn odd_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odd_images")
}

/// Eight data1/ images spread over the classes.
fn data1_entries() -> Vec<(String, usize)> {
    scan_image_folder(&data1())
        .unwrap()
        .files
        .into_iter()
        .step_by(125)
        .map(|file| (file.rel_path, file.class))
        .collect()
}

/// Two non-square RGB photos: 40×30 (landscape) and 25×35 (portrait).
fn photo_entries() -> Vec<(String, usize)> {
    vec![
        ("Black-grass/rgb.png".to_owned(), 0),
        ("Löwenzahn/really_png.jpg".to_owned(), 1),
    ]
}

fn pack(root: &Path, entries: &[(String, usize)], storage: Storage) -> (TempDir, Arc<PackedSplit>) {
    let folder = tempfile::tempdir().unwrap();
    write_pack_with(folder.path(), "train", root, entries, storage).unwrap();
    let pack = PackedSplit::open(folder.path(), "train").unwrap();
    (folder, Arc::new(pack))
}

/// Mean 0 and std 1: the batch holds `level / 255`, so pixels can be compared with levels.
fn config(image_size: u32, transforms: &str, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 2,
        shuffle: false,
        drop_last: false,
        seed: 3,
        workers,
        prefetch: 2,
        image_size,
        mean: [0.0; 3],
        std: [1.0; 3],
        transforms: serde_json::from_str::<Vec<Transform>>(transforms).unwrap(),
        mixup: None,
    }
}

fn collect(pack: &Arc<PackedSplit>, config: &LoaderConfig) -> Vec<Batch> {
    batches(Arc::clone(pack), config, 0, 10).unwrap().collect()
}

/// Sample `index` of the epoch as an 8-bit image (the batch's `level / 255` values, rounded).
fn sample(batches: &[Batch], index: usize) -> RgbImage {
    let batch = &batches[index / 2];
    let (height, width) = (batch.height, batch.width);
    let plane = height * width;
    let values = &batch.images[(index % 2) * 3 * plane..][..3 * plane];
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let at = y as usize * width + x as usize;
        image::Rgb([0, 1, 2].map(|channel| {
            let value = values[channel * plane + at] * 255.0;
            assert!(
                (value - value.round()).abs() < 1e-3,
                "{value} is not a level"
            );
            value.round() as u8
        }))
    })
}

fn crop(image: &RgbImage, left: u32, top: u32, side: u32) -> RgbImage {
    image::imageops::crop_imm(image, left, top, side, side).to_image()
}

#[test]
fn packs_keep_the_aspect_at_the_shorter_side() {
    let (folder, pack) = pack(&odd_images(), &photo_entries(), Storage::ShorterSide(20));
    let info = pack.info();
    assert_eq!(info.shorter_side, Some(20));
    assert_eq!((info.height, info.width), (0, 0));
    // 40×30 ⇒ 26×20 (40·20/30 = 26.7, truncated like torchvision); 25×35 ⇒ 20×28.
    assert_eq!(pack.image_size(0), (20, 26));
    assert_eq!(pack.image_size(1), (28, 20));
    for (index, (relative, label)) in photo_entries().iter().enumerate() {
        let original = decode_rgb8(&odd_images().join(relative)).unwrap();
        let expected = resize_shorter_side(original, 20);
        assert_eq!(
            pack.image(index),
            expected.as_raw().as_slice(),
            "{relative}"
        );
        assert_eq!(pack.label(index), *label);
    }
    assert_eq!(pack.pixels().len(), (20 * 26 + 28 * 20) * 3);
    pack.verify_hash().unwrap();

    // A sizes file cut short is named, like any other mismatch.
    let sizes = folder.path().join("train.sizes");
    let bytes = std::fs::read(&sizes).unwrap();
    std::fs::write(&sizes, &bytes[..bytes.len() - 3]).unwrap();
    match PackedSplit::open(folder.path(), "train").unwrap_err() {
        DataError::PackMismatch { path, .. } => assert_eq!(path, sizes),
        other => panic!("expected a pack mismatch, got {other}"),
    }
}

#[test]
fn a_centre_crop_of_the_stored_copy_is_a_crop_of_the_original() {
    let entries = data1_entries();
    let transforms = r#"[{"center_crop": {"size": 14}}]"#;
    let (_stored, stored) = pack(&data1(), &entries, Storage::ShorterSide(28));
    let (_squashed, squashed) = pack(&data1(), &entries, Storage::Square(14));
    let from_stored = collect(&stored, &config(14, transforms, 0));
    let from_squashed = collect(&squashed, &config(14, transforms, 0));
    for (index, (relative, _)) in entries.iter().enumerate() {
        let original = decode_rgb8(&data1().join(relative)).unwrap();
        // 28×28 stored as is: the centre 14×14 starts at (7, 7), pixel for pixel.
        assert_eq!(
            sample(&from_stored, index),
            crop(&original, 7, 7, 14),
            "{relative}"
        );
        // Squashed first, the same recipe sees the whole garment at half resolution instead.
        let whole =
            image::imageops::resize(&original, 14, 14, image::imageops::FilterType::Triangle);
        assert_eq!(sample(&from_squashed, index), whole, "{relative}");
        assert_ne!(
            sample(&from_squashed, index),
            crop(&original, 7, 7, 14),
            "{relative}"
        );
    }
}

#[test]
fn random_resized_crops_cut_real_pixels_only_from_a_stored_copy() {
    // A quarter of the area at aspect 1: a 14×14 window, resized to 14×14, i.e. copied.
    let entries = data1_entries();
    let transforms = r#"[{"random_resized_crop": {"scale": [0.25, 0.25], "ratio": [1.0, 1.0]}}]"#;
    let (_stored, stored) = pack(&data1(), &entries, Storage::ShorterSide(28));
    let (_squashed, squashed) = pack(&data1(), &entries, Storage::Square(14));
    let from_stored = collect(&stored, &config(14, transforms, 0));
    let from_squashed = collect(&squashed, &config(14, transforms, 0));
    let windows = |original: &RgbImage| -> Vec<RgbImage> {
        (0..=14)
            .flat_map(|top| (0..=14).map(move |left| (left, top)))
            .map(|(left, top)| crop(original, left, top, 14))
            .collect()
    };
    let mut offsets = std::collections::BTreeSet::new();
    for (index, (relative, _)) in entries.iter().enumerate() {
        let original = decode_rgb8(&data1().join(relative)).unwrap();
        let windows = windows(&original);
        let stored_sample = sample(&from_stored, index);
        let position = windows.iter().position(|window| *window == stored_sample);
        offsets
            .insert(position.unwrap_or_else(|| panic!("{relative}: not a window of the original")));
        // From the squashed copy the window is 7×7 pixels blown up to 14×14: no real window.
        let squashed_sample = sample(&from_squashed, index);
        assert!(!windows.contains(&squashed_sample), "{relative}");
    }
    // The windows are drawn, not fixed.
    assert!(offsets.len() > 1, "{offsets:?}");
}

#[test]
fn aspect_kept_packs_load_the_same_for_any_worker_count() {
    let transforms = r#"[{"random_resized_crop": {}}, {"horizontal_flip": {}},
        {"rotation": {"degrees": 10}}, {"gaussian_blur": {"kernel_size": 3}},
        {"color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}}]"#;
    let (_folder, pack) = pack(&odd_images(), &photo_entries(), Storage::ShorterSide(24));
    let inline = collect(&pack, &config(16, transforms, 0));
    assert_eq!(inline.len(), 1);
    assert_eq!((inline[0].height, inline[0].width), (16, 16));
    for workers in [1, 2] {
        assert_eq!(collect(&pack, &config(16, transforms, workers)), inline);
    }
    // Without transforms the stored image, whatever its aspect, is resized to the model's square.
    let plain = collect(&pack, &config(16, "[]", 0));
    let original = decode_rgb8(&odd_images().join("Black-grass/rgb.png")).unwrap();
    let stored = resize_shorter_side(original, 24);
    // The image crate's triangle filter, an independent bilinear resize with antialiasing.
    let expected = image::imageops::resize(&stored, 16, 16, image::imageops::FilterType::Triangle);
    let differences = sample(&plain, 0)
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .map(|(actual, expected)| actual.abs_diff(*expected))
        .collect::<Vec<_>>();
    assert!(
        differences.iter().all(|&difference| difference <= 2),
        "{differences:?}"
    );
}

/// The loader's resampling (`resize`, `random_resized_crop`, the final resize) against Pillow 13,
/// which torchvision uses on PIL images:
/// ```python
/// from PIL import Image
/// image = Image.open("tests/fixtures/odd_images/Black-grass/rgb.png").convert("RGB")
/// list(image.resize((5, 4), Image.BILINEAR).getdata())
/// ```
#[test]
fn resampling_matches_pillow_within_one_level() {
    let pillow: [[u8; 3]; 20] = [
        [27, 34, 114],
        [75, 34, 117],
        [127, 34, 120],
        [179, 34, 124],
        [227, 34, 127],
        [27, 94, 116],
        [75, 94, 120],
        [127, 94, 123],
        [179, 94, 127],
        [227, 94, 129],
        [27, 160, 119],
        [75, 160, 123],
        [127, 160, 126],
        [179, 160, 130],
        [227, 160, 132],
        [27, 220, 121],
        [75, 220, 126],
        [127, 220, 129],
        [179, 220, 133],
        [227, 220, 134],
    ];
    let original = decode_rgb8(&odd_images().join("Black-grass/rgb.png")).unwrap();
    let resize: Transform = serde_json::from_str(r#"{"resize": {"size": [4, 5]}}"#).unwrap();
    let resized = resize.apply(
        original,
        99,
        &mut vilab::data::transforms::sample_rng(0, 0, 0),
    );
    assert_eq!(resized.dimensions(), (5, 4));
    for (pixel, reference) in resized.pixels().zip(pillow) {
        for (actual, wanted) in pixel.0.into_iter().zip(reference) {
            assert!(actual.abs_diff(wanted) <= 1, "{pixel:?} vs {reference:?}");
        }
    }
}

#[test]
fn a_storage_size_below_the_image_size_is_refused() {
    let workspace = Workspace::with_data1();
    workspace.write(
        "spec.yaml",
        "name: storage\ndata:\n  root: data\n  image_size: 28\nmodel:\n  name: vil_micro\n",
    );
    let output = workspace.vilab(&["validate", "spec.yaml", "--set", "data.storage_size=20"]);
    output.assert_no_panic();
    assert_eq!(output.code, 2, "{}", output.stderr);
    let line = output
        .stderr
        .lines()
        .find(|line| line.contains("data.storage_size"))
        .unwrap_or_else(|| panic!("no problem names data.storage_size:\n{}", output.stderr));
    assert!(
        line.contains("must be ≥ data.image_size 28 (got 20)"),
        "{line}"
    );
    workspace
        .vilab(&["validate", "spec.yaml", "--set", "data.storage_size=32"])
        .assert_code(0)
        .assert_no_panic();
}
