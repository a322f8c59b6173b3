//! Converting IDX files (the MNIST family's format) into an image folder vilab can read.
//!
//! IDX is a big-endian header (`0x00 0x00 <type> <dimension count>`, then one `u32` per
//! dimension) followed by the raw values. MNIST-style data sets ship unsigned-byte images
//! (`0x00000803`: count × rows × columns) and labels (`0x00000801`: count), usually gzip-compressed.
//! Each image becomes a greyscale PNG at `out/<class>/<index>.png`, where `index` is its position in
//! the IDX file (zero-padded to five digits), so any PNG can be traced back to its source record.
//!
//! The output is never partially overwritten: into a new folder, everything is written beside it
//! under a temporary name and renamed into place at the end; into an existing folder, no file is
//! written if any target already exists.

use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use ::image::codecs::png::PngEncoder;
use ::image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;

use crate::data::error::{DataError, io_error};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What an import wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    /// The output folder.
    pub out: PathBuf,
    /// Images written per class, in the order of the class names given.
    pub per_class: Vec<usize>,
    /// Image height and width in pixels.
    pub height: usize,
    pub width: usize,
}

impl ImportSummary {
    /// Images written in all.
    pub fn total(&self) -> usize {
        self.per_class.iter().sum()
    }
}

/// Writes the images of an IDX image file (gzip-compressed or plain) as PNGs under
/// `out/<class>/`, naming classes by `classes[label]`.
///
/// With `per_class`, only the first that many images of each class (in file order) are written.
///
/// # Errors
/// Each names the file or folder at fault: unreadable or malformed IDX files (wrong magic
/// number, dimensions, or a length that disagrees with the header), image and label counts that
/// differ, a label without a class name, class names that are not safe folder names or repeat, a
/// class left without images, an output file that already exists, or a write failure.
pub fn import_idx(
    images_gz: &Path,
    labels_gz: &Path,
    classes: &[String],
    out: &Path,
    per_class: Option<usize>,
) -> Result<ImportSummary, DataError> {
    check_class_names(out, classes)?;
    let images = parse_images(images_gz, &read_maybe_gzip(images_gz)?)?;
    let labels = parse_labels(labels_gz, &read_maybe_gzip(labels_gz)?)?;
    if labels.len() != images.count {
        return Err(DataError::Idx {
            path: labels_gz.to_path_buf(),
            message: format!(
                "{} labels for the {} images of {}",
                labels.len(),
                images.count,
                images_gz.display()
            ),
        });
    }

    let limit = per_class.unwrap_or(usize::MAX);
    let mut taken = vec![0usize; classes.len()];
    let mut selected = Vec::new();
    for (index, &label) in labels.iter().enumerate() {
        let label = usize::from(label);
        let Some(count) = taken.get_mut(label) else {
            return Err(DataError::Idx {
                path: labels_gz.to_path_buf(),
                message: format!(
                    "record {index} has label {label}, but only {} class names were given",
                    classes.len()
                ),
            });
        };
        if *count < limit {
            *count += 1;
            selected.push((index, label));
        }
    }
    if let Some(empty) = taken.iter().position(|&count| count == 0) {
        return Err(DataError::Invalid {
            path: labels_gz.to_path_buf(),
            message: format!(
                "class {:?} (label {empty}) would get no images",
                classes[empty]
            ),
        });
    }

    let write_into = |folder: &Path| -> Result<(), DataError> {
        for class in classes {
            let class_folder = folder.join(class);
            fs_err::create_dir_all(&class_folder).map_err(io_error(&class_folder))?;
        }
        selected.par_iter().try_for_each(|&(index, label)| {
            let path = image_path(folder, &classes[label], index);
            write_png(&path, images.image(index), images.width, images.height)
        })
    };
    if fs_err::symlink_metadata(out).is_ok() {
        if !out.is_dir() {
            return Err(DataError::NotADirectory {
                path: out.to_path_buf(),
            });
        }
        for &(index, label) in &selected {
            let path = image_path(out, &classes[label], index);
            if fs_err::symlink_metadata(&path).is_ok() {
                return Err(DataError::AlreadyExists { path });
            }
        }
        write_into(out)?;
    } else {
        let staging = staging_path(out)?;
        if fs_err::symlink_metadata(&staging).is_ok() {
            fs_err::remove_dir_all(&staging).map_err(io_error(&staging))?;
        }
        let written = write_into(&staging).and_then(|()| {
            fs_err::rename(&staging, out).map_err(|error| {
                if out.exists() {
                    DataError::AlreadyExists {
                        path: out.to_path_buf(),
                    }
                } else {
                    io_error(out)(error)
                }
            })
        });
        if written.is_err() {
            // Best effort: the staging folder has a private name, so a leftover is harmless.
            let _ = fs_err::remove_dir_all(&staging);
        }
        written?;
    }
    Ok(ImportSummary {
        out: out.to_path_buf(),
        per_class: taken,
        height: images.height,
        width: images.width,
    })
}

/// Decoded IDX image file.
struct IdxImages {
    count: usize,
    height: usize,
    width: usize,
    pixels: Vec<u8>,
}

impl IdxImages {
    fn image(&self, index: usize) -> &[u8] {
        let length = self.height * self.width;
        &self.pixels[index * length..(index + 1) * length]
    }
}

fn image_path(folder: &Path, class: &str, index: usize) -> PathBuf {
    folder.join(class).join(format!("{index:05}.png"))
}

/// The temporary sibling of `out` that a new output folder is built in.
fn staging_path(out: &Path) -> Result<PathBuf, DataError> {
    out.file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| DataError::Invalid {
            path: out.to_path_buf(),
            message: "output folder needs a plain UTF-8 name".to_owned(),
        })?;
    Ok(crate::files::temp_path(out, "partial"))
}

fn check_class_names(out: &Path, classes: &[String]) -> Result<(), DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: out.to_path_buf(),
        message,
    };
    if classes.is_empty() {
        return Err(invalid("no class names given".to_owned()));
    }
    for (label, class) in classes.iter().enumerate() {
        let unsafe_name = class.is_empty()
            || class.starts_with('.')
            || class.trim() != class
            || class
                .chars()
                .any(|character| matches!(character, '/' | '\\' | '\0') || character.is_control());
        if unsafe_name {
            return Err(invalid(format!(
                "class name {class:?} is not a usable folder name (no '/', '\\', control \
                 characters, leading '.' or surrounding spaces)"
            )));
        }
        if classes[..label].contains(class) {
            return Err(invalid(format!("class name {class:?} is given twice")));
        }
    }
    Ok(())
}

/// The bytes of `path`, decompressed when they start with the gzip magic number.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = fs_err::read(path).map_err(io_error(path))?;
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let mut decompressed = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut decompressed)
        .map_err(|error| DataError::Idx {
            path: path.to_path_buf(),
            message: format!("corrupt gzip data ({error})"),
        })?;
    Ok(decompressed)
}

/// Checks the magic number and reads the dimension sizes; returns them and the data after them.
fn parse_header<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let error = |message: String| DataError::Idx {
        path: path.to_path_buf(),
        message,
    };
    let read_u32 = |offset: usize| {
        u32::from_be_bytes([
            bytes[offset],
            bytes[offset + 1],
            bytes[offset + 2],
            bytes[offset + 3],
        ])
    };
    if bytes.len() < 4 {
        return Err(error(format!("only {} bytes", bytes.len())));
    }
    let found = read_u32(0);
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (this looks like an image file)",
            LABELS_MAGIC => " (this looks like a label file)",
            _ => "",
        };
        return Err(error(format!(
            "magic number {found:#010x}, expected {magic:#010x} for {what}{hint}"
        )));
    }
    let dimensions = (magic & 0xff) as usize;
    let header_length = 4 + 4 * dimensions;
    if bytes.len() < header_length {
        return Err(error(format!(
            "only {} bytes, shorter than the {header_length}-byte header",
            bytes.len()
        )));
    }
    let sizes = (0..dimensions)
        .map(|dimension| read_u32(4 + 4 * dimension) as usize)
        .collect();
    Ok((sizes, &bytes[header_length..]))
}

/// Checks that the data after the header holds exactly `expected` bytes.
fn check_length(path: &Path, data: &[u8], expected: Option<usize>) -> Result<(), DataError> {
    match expected {
        Some(expected) if expected == data.len() => Ok(()),
        _ => Err(DataError::Idx {
            path: path.to_path_buf(),
            message: format!(
                "header announces {} data bytes but the file holds {}",
                expected.map_or_else(|| "too many".to_owned(), |value| value.to_string()),
                data.len()
            ),
        }),
    }
}

fn parse_images(path: &Path, bytes: &[u8]) -> Result<IdxImages, DataError> {
    let (sizes, data) = parse_header(path, bytes, IMAGES_MAGIC, "unsigned-byte images")?;
    let (count, height, width) = (sizes[0], sizes[1], sizes[2]);
    if height == 0 || width == 0 {
        return Err(DataError::Idx {
            path: path.to_path_buf(),
            message: format!("images of {height}×{width} pixels"),
        });
    }
    let expected = count
        .checked_mul(height)
        .and_then(|value| value.checked_mul(width));
    check_length(path, data, expected)?;
    Ok(IdxImages {
        count,
        height,
        width,
        pixels: data.to_vec(),
    })
}

fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let (sizes, data) = parse_header(path, bytes, LABELS_MAGIC, "unsigned-byte labels")?;
    check_length(path, data, Some(sizes[0]))?;
    Ok(data.to_vec())
}

/// Writes one greyscale image as a PNG, refusing to replace an existing file.
fn write_png(path: &Path, pixels: &[u8], width: usize, height: usize) -> Result<(), DataError> {
    let file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                DataError::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                io_error(path)(error)
            }
        })?;
    let (width, height) = (width as u32, height as u32);
    PngEncoder::new(BufWriter::new(file))
        .write_image(pixels, width, height, ExtendedColorType::L8)
        .map_err(|error| DataError::Io {
            path: path.to_path_buf(),
            message: crate::data::error::innermost_message(&error),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, sizes: &[u32]) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        for size in sizes {
            bytes.extend_from_slice(&size.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn swapped_files_are_named_and_explained() {
        let labels = [header(LABELS_MAGIC, &[2]), vec![0, 1]].concat();
        let message = parse_images(Path::new("labels.idx"), &labels)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "labels.idx: not a valid IDX file: magic number 0x00000801, expected 0x00000803 for \
             unsigned-byte images (this looks like a label file)"
        );
    }

    #[test]
    fn short_data_is_rejected() {
        let images = [header(IMAGES_MAGIC, &[2, 2, 2]), vec![0; 7]].concat();
        let message = parse_images(Path::new("x.idx"), &images)
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.ends_with("header announces 8 data bytes but the file holds 7"),
            "{message}"
        );
    }

    #[test]
    fn well_formed_images_parse() {
        let images = [header(IMAGES_MAGIC, &[2, 1, 3]), vec![1, 2, 3, 4, 5, 6]].concat();
        let parsed = parse_images(Path::new("x.idx"), &images).unwrap();
        assert_eq!((parsed.count, parsed.height, parsed.width), (2, 1, 3));
        assert_eq!(parsed.image(1), &[4, 5, 6]);
    }

    #[test]
    fn unsafe_class_names_are_refused() {
        for name in ["", "a/b", "..", ".hidden", " padded"] {
            let classes = vec!["fine".to_owned(), name.to_owned()];
            assert!(
                check_class_names(Path::new("out"), &classes).is_err(),
                "{name:?}"
            );
        }
        let repeated = vec!["Bag".to_owned(), "Bag".to_owned()];
        assert!(check_class_names(Path::new("out"), &repeated).is_err());
        let good = vec!["T-shirt_top".to_owned(), "Common chickweed".to_owned()];
        assert!(check_class_names(Path::new("out"), &good).is_ok());
    }
}
