//! The batch loader and the augment preview on real packed images (data1/, Fashion-MNIST at 28²):
//! epoch order, determinism whatever the worker count, batch sizes, normalisation values, soft
//! targets with and without mixing, errors naming the pack, early drop, and `preview.png`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use image::RgbImage;
use tempfile::TempDir;
use vilab::data::DataError;
use vilab::data::loader::{
    Batch, LoaderConfig, batches, batches_from, batches_per_epoch, epoch_order,
};
use vilab::data::mixup::{MixMode, MixupConfig};
use vilab::data::pack::{PackedSplit, write_pack};
use vilab::data::preview::{GAP, write_preview};
use vilab::data::scan::scan_image_folder;
use vilab::data::transforms::{Transform, to_normalized_chw};

const CLASSES: usize = 10;
const MEAN: [f32; 3] = [0.25, 0.5, 0.75];
const STD: [f32; 3] = [0.5, 0.25, 0.125];

fn data1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data1")
}

/// Every `stride`-th image of data1/ (all ten classes), packed at `size`.
fn pack_data1(stride: usize, size: u32) -> (TempDir, Arc<PackedSplit>) {
    let folder = tempfile::tempdir().unwrap();
    let entries: Vec<(String, usize)> = scan_image_folder(&data1())
        .unwrap()
        .files
        .into_iter()
        .step_by(stride)
        .map(|file| (file.rel_path, file.class))
        .collect();
    write_pack(folder.path(), "train", &data1(), &entries, size).unwrap();
    let pack = PackedSplit::open(folder.path(), "train").unwrap();
    (folder, Arc::new(pack))
}

fn plain_config(batch_size: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last: false,
        seed: 7,
        workers: 0,
        prefetch: 2,
        image_size: 28,
        mean: MEAN,
        std: STD,
        transforms: Vec::new(),
        mixup: None,
    }
}

fn augmented_config(batch_size: usize) -> LoaderConfig {
    let transforms: Vec<Transform> = serde_json::from_str(
        r#"[
            {"random_resized_crop": {"scale": [0.5, 1.0]}},
            {"horizontal_flip": {"p": 0.5}},
            {"rotation": {"degrees": 10}},
            {"color_jitter": {"brightness": 0.4, "contrast": 0.4}},
            {"cutout": {"holes": 1, "size": 8}}
        ]"#,
    )
    .unwrap();
    LoaderConfig {
        transforms,
        mixup: Some(MixupConfig {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            prob: 1.0,
            mode: MixMode::Elem,
            ..MixupConfig::default()
        }),
        ..plain_config(batch_size)
    }
}

fn collect(pack: &Arc<PackedSplit>, config: &LoaderConfig, epoch: u64) -> Vec<Batch> {
    batches(Arc::clone(pack), config, epoch, CLASSES)
        .unwrap()
        .collect()
}

#[test]
fn epoch_order_is_a_seeded_permutation_that_changes_every_epoch() {
    let order = epoch_order(500, 42, 3, true);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..500).collect::<Vec<_>>());
    assert_ne!(order, sorted, "shuffling left the identity");
    assert_eq!(order, epoch_order(500, 42, 3, true));
    assert_ne!(order, epoch_order(500, 42, 4, true));
    assert_ne!(order, epoch_order(500, 43, 3, true));
    assert_eq!(epoch_order(500, 42, 3, false), sorted);
    assert!(epoch_order(0, 42, 3, true).is_empty());
}

#[test]
fn batches_are_bit_identical_for_any_worker_count() {
    let (_folder, pack) = pack_data1(5, 28);
    let inline = collect(&pack, &augmented_config(16), 2);
    assert_eq!(inline.len(), 200_usize.div_ceil(16));
    for (workers, prefetch) in [(1, 1), (4, 3), (3, 0)] {
        let config = LoaderConfig {
            workers,
            prefetch,
            ..augmented_config(16)
        };
        let threaded = collect(&pack, &config, 2);
        assert!(
            threaded == inline,
            "{workers} workers with prefetch {prefetch} differ from the inline loader"
        );
    }
    // A different epoch reorders and re-augments the same images.
    let next_epoch = collect(&pack, &augmented_config(16), 3);
    assert_ne!(next_epoch[0].indices, inline[0].indices);
}

#[test]
fn augmentation_and_mixing_depend_on_the_epoch_not_only_the_order() {
    let (_folder, pack) = pack_data1(5, 28);
    let unshuffled = LoaderConfig {
        shuffle: false,
        ..augmented_config(20)
    };
    let first = collect(&pack, &unshuffled, 0);
    let second = collect(&pack, &unshuffled, 1);
    assert_eq!(first[0].indices, second[0].indices);
    assert_ne!(first[0].images, second[0].images);
    assert_ne!(first[0].targets, second[0].targets);
}

#[test]
fn starting_mid_epoch_gives_the_remaining_batches() {
    let (_folder, pack) = pack_data1(5, 28);
    let whole = collect(&pack, &augmented_config(16), 4);
    for (workers, first_batch) in [(0, 5), (3, 5), (2, whole.len() - 1), (2, whole.len())] {
        let config = LoaderConfig {
            workers,
            ..augmented_config(16)
        };
        let rest: Vec<Batch> = batches_from(Arc::clone(&pack), &config, 4, CLASSES, first_batch)
            .unwrap()
            .collect();
        assert!(
            rest == whole[first_batch..],
            "{workers} workers from batch {first_batch}"
        );
    }
}

#[test]
fn drop_last_leaves_out_only_the_short_batch() {
    let (_folder, pack) = pack_data1(10, 28);
    assert_eq!(pack.len(), 100);
    let kept = collect(&pack, &plain_config(32), 0);
    let sizes: Vec<usize> = kept.iter().map(|batch| batch.n).collect();
    assert_eq!(sizes, vec![32, 32, 32, 4]);
    let mut seen: Vec<usize> = kept
        .iter()
        .flat_map(|batch| batch.indices.clone())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());

    let dropping = LoaderConfig {
        drop_last: true,
        workers: 2,
        ..plain_config(32)
    };
    let dropped = collect(&pack, &dropping, 0);
    assert_eq!(dropped.len(), 3);
    assert_eq!(dropped, kept[..3]);
    assert_eq!(batches_per_epoch(100, 32, true), 3);
    assert_eq!(batches_per_epoch(100, 32, false), 4);
    assert_eq!(batches_per_epoch(96, 32, false), 3);
    let loader = batches(Arc::clone(&pack), &dropping, 0, CLASSES).unwrap();
    assert_eq!(loader.len(), 3);
}

#[test]
fn images_are_normalised_chw_copies_of_the_packed_pixels() {
    let (_folder, pack) = pack_data1(10, 28);
    let batch = collect(&pack, &plain_config(8), 0).remove(1);
    let (side, plane) = (28, 28 * 28);
    assert_eq!((batch.n, batch.height, batch.width), (8, side, side));
    assert_eq!(batch.images.len(), 8 * 3 * plane);
    for (sample, &index) in batch.indices.iter().enumerate() {
        assert_eq!(batch.labels[sample], pack.label(index));
        let bytes = pack.image(index);
        // Pixel (row 14, column 9) of each channel, by the formula.
        let pixel = 14 * side + 9;
        for channel in 0..3 {
            let level = f32::from(bytes[pixel * 3 + channel]);
            let expected = (level / 255.0 - MEAN[channel]) / STD[channel];
            let actual = batch.images[sample * 3 * plane + channel * plane + pixel];
            assert_eq!(actual, expected, "sample {sample} channel {channel}");
        }
        // The whole sample, against the shared conversion.
        let image = RgbImage::from_raw(28, 28, bytes.to_vec()).unwrap();
        let mut reference = vec![0.0; 3 * plane];
        to_normalized_chw(&image, MEAN, STD, &mut reference);
        assert_eq!(
            batch.images[sample * 3 * plane..(sample + 1) * 3 * plane],
            reference[..]
        );
    }
}

#[test]
fn the_transform_path_matches_the_fast_path_for_an_identity_list() {
    let (_folder, pack) = pack_data1(10, 28);
    let never_flip = LoaderConfig {
        transforms: serde_json::from_str(r#"[{"horizontal_flip": {"p": 0.0}}]"#).unwrap(),
        ..plain_config(16)
    };
    assert_eq!(
        collect(&pack, &never_flip, 0),
        collect(&pack, &plain_config(16), 0)
    );
    // A pack at another size goes through the resize at the end of the list.
    let larger = LoaderConfig {
        image_size: 32,
        ..plain_config(16)
    };
    let batch = collect(&pack, &larger, 0).remove(0);
    assert_eq!((batch.height, batch.width), (32, 32));
    assert_eq!(batch.images.len(), 16 * 3 * 32 * 32);
}

#[test]
fn targets_are_one_hot_without_mixup_and_sum_to_one_with_it() {
    let (_folder, pack) = pack_data1(10, 28);
    for batch in collect(&pack, &plain_config(16), 0) {
        for (row, &label) in batch.targets.chunks_exact(CLASSES).zip(&batch.labels) {
            let mut expected = [0.0; CLASSES];
            expected[label] = 1.0;
            assert_eq!(row, expected);
        }
    }
    let mixed_batches = collect(&pack, &augmented_config(16), 0);
    let mut mixed_rows = 0;
    for batch in &mixed_batches {
        assert_eq!(batch.targets.len(), batch.n * CLASSES);
        for (row, &label) in batch.targets.chunks_exact(CLASSES).zip(&batch.labels) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}");
            // Smoothing 0.1 over 10 classes: the floor is 0.01, and the own label never drops
            // below it.
            assert!(row.iter().all(|&value| value >= 0.01 - 1e-6));
            assert!(row[label] >= 0.01 - 1e-6);
            if row.iter().filter(|&&value| value > 0.011).count() == 2 {
                mixed_rows += 1;
            }
        }
    }
    assert!(mixed_rows > 0, "prob 1 mixed nothing");
    // The last batch (100 % 16 = 4 samples) is even, so elem mode mixes it too.
    let last = mixed_batches.last().unwrap();
    assert_eq!(last.n, 4);
    assert!(
        last.targets
            .iter()
            .any(|&value| value > 0.011 && value < 0.9)
    );
}

#[test]
fn an_odd_last_batch_in_a_pairing_mode_is_smoothed_but_not_mixed() {
    let (_folder, pack) = pack_data1(11, 28);
    assert_eq!(pack.len() % 6, 1);
    let pair_mode = augmented_config(6);
    let config = LoaderConfig {
        mixup: Some(MixupConfig {
            mode: MixMode::Pair,
            ..pair_mode.mixup.clone().unwrap()
        }),
        ..pair_mode
    };
    let last = collect(&pack, &config, 0).pop().unwrap();
    assert_eq!(last.n, 1);
    let mut expected = [0.01_f32; CLASSES];
    expected[last.labels[0]] = 0.91;
    for (actual, expected) in last.targets.iter().zip(expected) {
        assert!((actual - expected).abs() < 1e-6, "{:?}", last.targets);
    }
}

#[test]
fn invalid_settings_are_errors_naming_the_pack() {
    let (_folder, pack) = pack_data1(10, 28);
    let error_for = |config: &LoaderConfig, classes: usize| -> DataError {
        match batches(Arc::clone(&pack), config, 0, classes) {
            Ok(_) => panic!("{config:?} with {classes} classes was accepted"),
            Err(error) => error,
        }
    };
    let cases = [
        (error_for(&plain_config(0), CLASSES), "batch size"),
        (error_for(&plain_config(8), 3), "outside the 3 classes"),
        (
            error_for(
                &LoaderConfig {
                    std: [0.5, 0.0, 0.5],
                    ..plain_config(8)
                },
                CLASSES,
            ),
            "std[1] must be > 0",
        ),
        (error_for(&augmented_config(7), CLASSES), "even batch size"),
    ];
    for (error, fragment) in cases {
        let message = error.to_string();
        assert!(message.contains(fragment), "{message}");
        assert_eq!(error.path(), pack.pixels_path(), "{message}");
    }
    // Batch mode mixes an odd batch (the middle sample with itself).
    let batch_mode = LoaderConfig {
        mixup: Some(MixupConfig::default()),
        ..plain_config(7)
    };
    assert!(batches(Arc::clone(&pack), &batch_mode, 0, CLASSES).is_ok());
}

#[test]
fn dropping_a_loader_mid_epoch_stops_its_workers() {
    let (_folder, pack) = pack_data1(2, 28);
    let config = LoaderConfig {
        workers: 2,
        prefetch: 1,
        ..augmented_config(8)
    };
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut loader = batches(pack, &config, 0, CLASSES).unwrap();
        let first = loader.next().unwrap();
        drop(loader);
        done.send(first.n).unwrap();
    });
    // Dropping joins the workers; a deadlock would never send. The bound only turns a hang into
    // a failure and is far above the milliseconds this takes.
    let received = finished.recv_timeout(Duration::from_secs(120));
    assert_eq!(received, Ok(8), "dropping the loader did not return");
}

#[test]
fn preview_is_a_grid_of_the_denormalised_samples() {
    let (folder, pack) = pack_data1(10, 28);
    let path = folder.path().join("preview.png");
    let plain = collect(&pack, &plain_config(16), 0).remove(0);
    write_preview(&path, &plain, MEAN, STD, 4).unwrap();
    let grid = image::open(&path).unwrap().to_rgb8();
    // 28² tiles enlarged 4× to 112², four to a row, 2-pixel gaps.
    let tile = 112_usize;
    assert_eq!(GAP, 2);
    assert_eq!(grid.dimensions(), (454, 454));
    // Without augmentation the de-normalised tiles are the packed bytes again, pixel for pixel.
    for (sample, &index) in plain.indices.iter().enumerate() {
        let (left, top) = ((sample % 4) * (tile + 2), (sample / 4) * (tile + 2));
        let bytes = pack.image(index);
        for (row, column) in [(0, 0), (13, 20), (27, 27)] {
            let pixel = grid.get_pixel((left + column * 4 + 3) as u32, (top + row * 4 + 1) as u32);
            let offset = (row * 28 + column) * 3;
            assert_eq!(
                pixel.0,
                [bytes[offset], bytes[offset + 1], bytes[offset + 2]]
            );
        }
    }

    // The augmented, mixed version still decodes and is not blank.
    let augmented = collect(&pack, &augmented_config(16), 0).remove(0);
    write_preview(&path, &augmented, MEAN, STD, 4).unwrap();
    let grid = image::open(&path).unwrap().to_rgb8();
    assert_eq!(grid.dimensions(), (454, 454));
    let mut levels: Vec<u8> = grid.pixels().map(|pixel| pixel.0[0]).collect();
    levels.sort_unstable();
    levels.dedup();
    assert!(levels.len() > 50, "only {} grey levels", levels.len());

    // An empty batch is refused, naming the file.
    let empty = Batch {
        images: Vec::new(),
        labels: Vec::new(),
        targets: Vec::new(),
        indices: Vec::new(),
        n: 0,
        ..plain
    };
    let error = write_preview(&path, &empty, MEAN, STD, 4).unwrap_err();
    assert_eq!(error.path(), path);
}
