//! The plots decode, have the requested size and actually show something: text where the
//! title goes, the series colours in the curves, shaded cells in the heat-map.

use std::ops::Range;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use vilab::metrics::report::ConfusionMatrix;
use vilab::metrics::{HISTORY_HEADER, HistoryError, HistoryRow, read_history, write_history};
use vilab::report::{ImageFormat, ReportError, write_confusion_heatmap, write_curves};

/// Share of pixels that must differ from the background in a plot with lines or cells.
const MIN_DRAWN: f64 = 0.02;
/// A one-epoch curve is mostly text and grid (about 2% of its pixels); this still rejects a blank
/// image, and the series-colour counts check the markers.
const ONE_EPOCH_MIN_DRAWN: f64 = 0.01;

const TRAIN_COLOR: Rgb<u8> = Rgb([31, 119, 180]);
const VAL_COLOR: Rgb<u8> = Rgb([255, 127, 14]);
const EMA_COLOR: Rgb<u8> = Rgb([44, 160, 44]);
const TOP5_COLOR: Rgb<u8> = Rgb([148, 103, 189]);

/// A plausible run: loss falls, accuracy rises, cosine learning rate after a short warm-up.
/// The series differ at every epoch, so even one epoch's markers do not cover each other.
fn history(epochs: u32, with_ema: bool) -> Vec<HistoryRow> {
    (1..=epochs)
        .map(|epoch| {
            let progress = f64::from(epoch) / f64::from(epochs.max(2));
            let lr = if epoch <= 5 {
                1e-3 * f64::from(epoch) / 5.0
            } else {
                5e-4 * (1.0 + (std::f64::consts::PI * progress).cos())
            };
            HistoryRow {
                epoch,
                lr,
                train_loss: 2.3 - 1.6 * progress,
                train_acc1: 20.0 + 60.0 * progress,
                val_loss: 2.0 - 1.2 * progress,
                val_acc1: 25.0 + 55.0 * progress,
                val_acc5: 60.0 + 38.0 * progress,
                ema_val_loss: with_ema.then_some(2.1 - 1.3 * progress),
                ema_val_acc1: with_ema.then_some(16.0 + 60.0 * progress),
                ema_val_acc5: with_ema.then_some(58.0 + 40.0 * progress),
                epoch_seconds: 12.5,
                train_images_per_second: 410.0,
            }
        })
        .collect()
}

fn is_near(pixel: &Rgb<u8>, color: Rgb<u8>, tolerance: i32) -> bool {
    pixel
        .0
        .iter()
        .zip(color.0)
        .all(|(&a, b)| (i32::from(a) - i32::from(b)).abs() <= tolerance)
}

fn count_near(image: &RgbImage, color: Rgb<u8>) -> usize {
    image
        .pixels()
        .filter(|pixel| is_near(pixel, color, 12))
        .count()
}

/// Like [`count_near`], but only in the columns `columns`, away from the legend's samples.
fn count_near_in_columns(image: &RgbImage, color: Rgb<u8>, columns: Range<u32>) -> usize {
    image
        .enumerate_pixels()
        .filter(|(x, _, pixel)| columns.contains(x) && is_near(pixel, color, 12))
        .count()
}

/// Decodes `path`, checks its size, that at least `min_drawn` of its pixels differ from the
/// white background, and that the band where the title is drawn holds dark (text) pixels.
fn assert_readable_png(
    path: &Path,
    size: (u32, u32),
    title_band: (u32, u32),
    min_drawn: f64,
) -> RgbImage {
    let image = image::open(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .to_rgb8();
    assert_eq!(image.dimensions(), size, "{}", path.display());
    let background = Rgb([255, 255, 255]);
    let drawn = image.pixels().filter(|pixel| **pixel != background).count();
    let share = drawn as f64 / image.pixels().len() as f64;
    assert!(
        share >= min_drawn,
        "{}: only {share:.4} drawn",
        path.display()
    );
    let mut colors: Vec<[u8; 3]> = image.pixels().map(|pixel| pixel.0).collect();
    colors.sort_unstable();
    colors.dedup();
    assert!(
        colors.len() >= 8,
        "{}: {} colours",
        path.display(),
        colors.len()
    );
    let (band_top, band_bottom) = title_band;
    let dark_in_title = (band_top..band_bottom)
        .flat_map(|y| (size.0 / 4..size.0 * 3 / 4).map(move |x| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0.iter().all(|&channel| channel < 90))
        .count();
    assert!(dark_in_title >= 30, "{}: no title text", path.display());
    image
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn one_epoch_curves_show_every_series() {
    let directory = tempfile::tempdir().unwrap();
    let written = write_curves(
        &history(1, true),
        directory.path(),
        &[ImageFormat::Png],
        900,
        600,
    )
    .unwrap();
    assert_eq!(file_names(&written), ["loss.png", "acc.png", "lr.png"]);

    let loss = assert_readable_png(&written[0], (900, 600), (8, 45), ONE_EPOCH_MIN_DRAWN);
    // A single epoch has no line to draw; the markers must carry each value. The epoch sits in
    // the middle of the plotting area (about x = 100..890 at this size), left of the legend.
    let marker_columns = 470..530;
    for color in [TRAIN_COLOR, VAL_COLOR, EMA_COLOR] {
        let marker = count_near_in_columns(&loss, color, marker_columns.clone());
        assert!(marker >= 40, "loss: {color:?} marker missing");
    }
    let accuracy = assert_readable_png(&written[1], (900, 600), (8, 45), ONE_EPOCH_MIN_DRAWN);
    for color in [TRAIN_COLOR, VAL_COLOR, EMA_COLOR, TOP5_COLOR] {
        let marker = count_near_in_columns(&accuracy, color, marker_columns.clone());
        assert!(marker >= 40, "acc: {color:?} marker missing");
    }
    let learning_rate = assert_readable_png(&written[2], (900, 600), (8, 45), ONE_EPOCH_MIN_DRAWN);
    assert!(count_near_in_columns(&learning_rate, TRAIN_COLOR, marker_columns) >= 40);
}

#[test]
fn long_run_curves_in_both_formats() {
    let directory = tempfile::tempdir().unwrap();
    let written = write_curves(
        &history(300, false),
        directory.path(),
        &[ImageFormat::Png, ImageFormat::Svg],
        1200,
        700,
    )
    .unwrap();
    assert_eq!(
        file_names(&written),
        [
            "loss.png", "loss.svg", "acc.png", "acc.svg", "lr.png", "lr.svg"
        ]
    );
    let loss = assert_readable_png(&written[0], (1200, 700), (8, 50), MIN_DRAWN);
    assert!(count_near(&loss, TRAIN_COLOR) >= 300);
    assert_eq!(
        count_near(&loss, EMA_COLOR),
        0,
        "EMA drawn without EMA values"
    );
    assert_readable_png(&written[2], (1200, 700), (8, 50), MIN_DRAWN);
    assert_readable_png(&written[4], (1200, 700), (8, 50), MIN_DRAWN);

    for (path, title, legend) in [
        (&written[1], "Loss per epoch", "val"),
        (
            &written[3],
            "Accuracy per epoch",
            "train (on un-mixed labels)",
        ),
        (&written[5], "Learning rate per epoch", "epoch"),
    ] {
        let svg = fs_err::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", path.display());
        assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
        assert!(svg.contains(title), "{}: no title", path.display());
        assert!(svg.contains(legend), "{}: no {legend}", path.display());
        assert!(svg.contains("width=\"1200\""), "{}", path.display());
    }
}

#[test]
fn non_finite_values_are_skipped_not_fatal() {
    let directory = tempfile::tempdir().unwrap();
    let mut rows = history(4, false);
    rows[2].val_loss = f64::NAN;
    rows[3].train_loss = f64::INFINITY;
    let written = write_curves(&rows, directory.path(), &[ImageFormat::Png], 900, 600).unwrap();
    assert_readable_png(&written[0], (900, 600), (8, 45), MIN_DRAWN);
}

#[test]
fn curve_errors_name_the_output_folder() {
    let directory = tempfile::tempdir().unwrap();
    let error = write_curves(&[], directory.path(), &[ImageFormat::Png], 900, 600).unwrap_err();
    assert!(matches!(error, ReportError::EmptyHistory { .. }));
    assert!(
        error
            .to_string()
            .starts_with(&directory.path().display().to_string())
    );
    let error = write_curves(
        &history(3, true),
        directory.path(),
        &[ImageFormat::Png],
        100,
        600,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("100×600 is too small"),
        "{error}"
    );
    let missing = directory.path().join("missing");
    let error =
        write_curves(&history(3, true), &missing, &[ImageFormat::Png], 900, 600).unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn history_csv_round_trips_with_the_fixed_header() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("history.csv");
    let mut rows = history(3, true);
    rows[1].ema_val_loss = None;
    write_history(&path, &rows).unwrap();
    let text = fs_err::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "epoch,lr,train_loss,train_acc1,val_loss,val_acc1,val_acc5,ema_val_loss,ema_val_acc1,\
         ema_val_acc5,epoch_seconds,train_images_per_second"
    );
    assert_eq!(HISTORY_HEADER.join(","), text.lines().next().unwrap());
    assert_eq!(read_history(&path).unwrap(), rows);

    write_history(&path, &[]).unwrap();
    assert_eq!(read_history(&path).unwrap(), []);
    assert_eq!(
        fs_err::read_to_string(&path).unwrap().trim_end(),
        HISTORY_HEADER.join(",")
    );
}

#[test]
fn history_reading_names_the_file_and_the_problem() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("history.csv");
    fs_err::write(
        &path,
        format!(
            "{}\n1,0.001,not-a-number,1,1,1,1,,,,1,1\n",
            HISTORY_HEADER.join(",")
        ),
    )
    .unwrap();
    let error = read_history(&path).unwrap_err();
    assert!(matches!(error, HistoryError::Csv { .. }));
    assert!(error.to_string().contains("history.csv"), "{error}");
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn heatmap_of_a_few_classes_is_labelled_and_shaded() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("confusion_matrix.png");
    let class_names = names(&[
        "Maize",
        "Tomato___Spider_mites Two-spotted_spider_mite",
        "Wheat",
        "Rice_blast",
        "Potato___Early_blight",
    ]);
    let true_labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 4, 4, 4];
    let predicted = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 4, 4, 3];
    let matrix = ConfusionMatrix::from_labels(&true_labels, &predicted, 5).unwrap();
    let size = write_confusion_heatmap(
        &matrix,
        &class_names,
        "Confusion matrix (val, best)",
        &path,
        ImageFormat::Png,
    )
    .unwrap();
    let image = assert_readable_png(&path, size, (16, 40), MIN_DRAWN);
    // Rows that are all correct get the darkest shade; empty cells stay near white.
    assert!(count_near(&image, Rgb([8, 48, 107])) >= 500);
    assert!(count_near(&image, Rgb([247, 251, 255])) >= 500);

    let svg_path = directory.path().join("confusion_matrix.svg");
    write_confusion_heatmap(
        &matrix,
        &class_names,
        "Confusion matrix (val, best)",
        &svg_path,
        ImageFormat::Svg,
    )
    .unwrap();
    let svg = fs_err::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("Confusion matrix (val, best)"));
    assert!(svg.contains("Rice_blast"));
    assert!(svg.contains("predicted class"));
}

#[test]
fn heatmap_grows_with_the_class_count() {
    let directory = tempfile::tempdir().unwrap();
    let few = 3;
    let many = 45;
    let mut sizes = Vec::new();
    for class_count in [few, many] {
        let class_names: Vec<String> = (0..class_count)
            .map(|index| format!("class_{index:03}"))
            .collect();
        let labels: Vec<usize> = (0..class_count * 4)
            .map(|index| index % class_count)
            .collect();
        let predicted: Vec<usize> = labels
            .iter()
            .map(|label| (label * 7 / 6) % class_count)
            .collect();
        let matrix = ConfusionMatrix::from_labels(&labels, &predicted, class_count).unwrap();
        let path = directory
            .path()
            .join(format!("confusion_{class_count}.png"));
        let size = write_confusion_heatmap(
            &matrix,
            &class_names,
            "Confusion matrix",
            &path,
            ImageFormat::Png,
        )
        .unwrap();
        assert_readable_png(&path, size, (16, 40), MIN_DRAWN);
        sizes.push(size);
    }
    assert!(
        sizes[1].0 > sizes[0].0 && sizes[1].1 > sizes[0].1,
        "{sizes:?}"
    );
}

#[test]
fn heatmap_rejects_a_wrong_number_of_names() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("confusion_matrix.png");
    let matrix = ConfusionMatrix::from_labels(&[0, 1, 2], &[0, 1, 1], 3).unwrap();
    let error = write_confusion_heatmap(
        &matrix,
        &names(&["a", "b"]),
        "Confusion matrix",
        &path,
        ImageFormat::Png,
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("2 class names for a 3-class confusion matrix")
    );
    assert!(!path.exists());
}
