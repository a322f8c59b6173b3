//! Importing IDX files into an image folder, on the real Fashion-MNIST files of the Debian package
//! `dataset-fashion-mnist` (CI installs it). Each written PNG is checked against the raw IDX bytes
//! read here independently, and the shipped data1/ folder is checked to be exactly what the import
//! produces.

use std::io::Read;
use std::path::{Path, PathBuf};

use vilab::data::DataError;
use vilab::data::idx::import_idx;

const PACKAGE_FOLDER: &str = "/usr/share/datasets/fashion-mnist";

const CLASSES: [&str; 10] = [
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
];

fn classes() -> Vec<String> {
    CLASSES.iter().map(|&name| name.to_owned()).collect()
}

/// The training images and labels files, or `None` (with a note) when the package is missing.
fn package_files() -> Option<(PathBuf, PathBuf)> {
    let folder = Path::new(PACKAGE_FOLDER);
    let images = folder.join("train-images-idx3-ubyte.gz");
    let labels = folder.join("train-labels-idx1-ubyte.gz");
    if images.is_file() && labels.is_file() {
        Some((images, labels))
    } else {
        eprintln!(
            "SKIPPED: {PACKAGE_FOLDER} not found; install it with \
             `apt-get install dataset-fashion-mnist` to run the IDX import tests"
        );
        None
    }
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// Raw IDX records: labels, and the 28×28 pixels of record `index`.
struct Reference {
    labels: Vec<u8>,
    images: Vec<u8>,
}

impl Reference {
    fn load(images: &Path, labels: &Path) -> Reference {
        let images = gunzip(images);
        let labels = gunzip(labels);
        assert_eq!(&images[..4], &[0, 0, 8, 3]);
        assert_eq!(&labels[..4], &[0, 0, 8, 1]);
        Reference {
            labels: labels[8..].to_vec(),
            images: images[16..].to_vec(),
        }
    }

    fn image(&self, index: usize) -> &[u8] {
        &self.images[index * 784..(index + 1) * 784]
    }

    /// Indices of the first `count` records of each class, by label.
    fn first_of_each(&self, count: usize) -> Vec<Vec<usize>> {
        let mut chosen = vec![Vec::new(); 10];
        for (index, &label) in self.labels.iter().enumerate() {
            if chosen[label as usize].len() < count {
                chosen[label as usize].push(index);
            }
        }
        chosen
    }
}

/// Sorted PNG file names under `folder`.
fn names(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn assert_png_matches(path: &Path, expected: &[u8]) {
    let decoded = image::open(path).unwrap();
    assert_eq!(decoded.color(), image::ColorType::L8, "{}", path.display());
    assert_eq!((decoded.width(), decoded.height()), (28, 28));
    assert_eq!(
        decoded.into_luma8().as_raw().as_slice(),
        expected,
        "{}",
        path.display()
    );
}

#[test]
fn import_writes_the_first_images_of_each_class_as_png() {
    let Some((images, labels)) = package_files() else {
        return;
    };
    let reference = Reference::load(&images, &labels);
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("fashion");
    let summary = import_idx(&images, &labels, &classes(), &out, Some(3)).unwrap();
    assert_eq!(summary.per_class, vec![3; 10]);
    assert_eq!(
        (summary.total(), summary.height, summary.width),
        (30, 28, 28)
    );
    let mut sorted_classes = CLASSES.to_vec();
    sorted_classes.sort_unstable();
    assert_eq!(names(&out), sorted_classes);
    for (label, indices) in reference.first_of_each(3).iter().enumerate() {
        let class_folder = out.join(CLASSES[label]);
        let expected: Vec<String> = indices
            .iter()
            .map(|index| format!("{index:05}.png"))
            .collect();
        assert_eq!(names(&class_folder), expected, "{}", CLASSES[label]);
        for index in indices {
            assert_png_matches(
                &class_folder.join(format!("{index:05}.png")),
                reference.image(*index),
            );
        }
    }
    // Nothing but the output folder appears beside it (the staging folder was renamed).
    assert_eq!(names(folder.path()), ["fashion"]);
}

#[test]
fn import_refuses_to_overwrite_and_leaves_files_alone() {
    let Some((images, labels)) = package_files() else {
        return;
    };
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("fashion");
    import_idx(&images, &labels, &classes(), &out, Some(1)).unwrap();
    let boot = out.join("Ankle_boot/00000.png");
    let before = std::fs::read(&boot).unwrap();
    let error = import_idx(&images, &labels, &classes(), &out, Some(2)).unwrap_err();
    assert!(matches!(error, DataError::AlreadyExists { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: already exists; refusing to overwrite it",
            boot.display()
        )
    );
    assert_eq!(std::fs::read(&boot).unwrap(), before);
    assert_eq!(names(&out.join("Ankle_boot")), ["00000.png"]);
}

#[test]
fn import_into_an_existing_empty_folder_works() {
    let Some((images, labels)) = package_files() else {
        return;
    };
    let folder = tempfile::tempdir().unwrap();
    let summary = import_idx(&images, &labels, &classes(), folder.path(), Some(1)).unwrap();
    assert_eq!(summary.total(), 10);
    assert_eq!(names(&folder.path().join("T-shirt_top")), ["00001.png"]);
}

#[test]
fn swapped_or_mismatched_files_are_named() {
    let Some((images, labels)) = package_files() else {
        return;
    };
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("out");
    let error = import_idx(&labels, &images, &classes(), &out, Some(1)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: not a valid IDX file: magic number 0x00000801, expected 0x00000803 for \
             unsigned-byte images (this looks like a label file)",
            labels.display()
        )
    );
    let test_labels = Path::new(PACKAGE_FOLDER).join("t10k-labels-idx1-ubyte.gz");
    let error = import_idx(&images, &test_labels, &classes(), &out, Some(1)).unwrap_err();
    assert_eq!(error.path(), test_labels);
    assert!(
        error
            .to_string()
            .contains("10000 labels for the 60000 images"),
        "{error}"
    );

    let too_few: Vec<String> = classes().into_iter().take(9).collect();
    let error = import_idx(&images, &labels, &too_few, &out, Some(1)).unwrap_err();
    assert_eq!(error.path(), labels);
    assert!(
        error.to_string().contains("only 9 class names were given"),
        "{error}"
    );
    assert!(!out.exists(), "a failed import leaves no output");
    assert_eq!(
        names(folder.path()),
        Vec::<String>::new(),
        "and no staging folder"
    );
}

#[test]
fn shipped_data1_is_exactly_what_the_import_produces() {
    let Some((images, labels)) = package_files() else {
        return;
    };
    let reference = Reference::load(&images, &labels);
    let data1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("data1");
    for (label, indices) in reference.first_of_each(100).iter().enumerate() {
        let class_folder = data1.join(CLASSES[label]);
        let expected: Vec<String> = indices
            .iter()
            .map(|index| format!("{index:05}.png"))
            .collect();
        assert_eq!(names(&class_folder), expected, "{}", CLASSES[label]);
        for index in indices {
            assert_png_matches(
                &class_folder.join(format!("{index:05}.png")),
                reference.image(*index),
            );
        }
    }
}
