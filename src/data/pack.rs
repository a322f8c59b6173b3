//! The packed uint8 format: a split decoded and resized once, so training never decodes again.
//!
//! For a split called `name` (`train`, `val`, `test`) a folder holds three files:
//! - `<name>.u8`: every image as `height × width × 3` bytes (rows top to bottom, pixels left to
//!   right, R G B), images one after another in manifest order: an N×H×W×3 array, layout NHWC.
//! - `<name>.labels`: one little-endian `u16` label per image, same order.
//! - `<name>.json`: [`PackInfo`], written last, with the blake3 hash of the `.u8` file.
//!
//! Images are squashed to one square size ([`Storage::Square`], the blog recipe's "resize to
//! 224², then augment"), or resized to a shorter side with their aspect kept
//! ([`Storage::ShorterSide`], `data.storage_size`), so that crop transforms cut real pixels
//! instead of upsampling a squashed copy. Such a pack has a fourth file, `<name>.sizes`: each
//! image's height and width as two little-endian `u32`, in order; its `.u8` file is the images'
//! bytes one after another, and [`PackInfo::height`]/[`PackInfo::width`] are 0.
//!
//! Writing streams: images are decoded and resized in parallel a chunk at a time and appended in
//! order, so memory holds one chunk, not the split. Reading memory-maps the `.u8` file, so
//! batches are slices of the page cache and opening is instant whatever the split's size.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::error::{DataError, io_error};
use crate::data::image::{decode_rgb8, resize_shorter_side, resize_square};

/// Images decoded at once while packing: enough to keep every core busy, small enough that a
/// chunk of 224² images stays around 40 MB.
const CHUNK_SIZE: usize = 256;

/// Channels per pixel in a pack (RGB).
pub const CHANNELS: usize = 3;

/// The one layout packs use.
pub const LAYOUT: &str = "NHWC";

/// Description of a packed split, stored as `<name>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackInfo {
    /// Number of images.
    pub count: usize,
    pub height: usize,
    pub width: usize,
    /// Always 3.
    pub channels: usize,
    /// Always `NHWC`.
    pub layout: String,
    /// blake3 hash of the `.u8` file, lower-case hex.
    pub blake3: String,
    /// The shorter side of every image when they keep their aspect (`<name>.sizes` gives each
    /// one's size); absent for square packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shorter_side: Option<u32>,
}

/// How images are sized when packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Squashed to `side`×`side`, aspect ignored.
    Square(u32),
    /// Resized so the shorter side is `side` and the longer keeps the aspect (torchvision's
    /// `Resize(side)`).
    ShorterSide(u32),
}

impl Storage {
    fn side(self) -> u32 {
        match self {
            Storage::Square(side) | Storage::ShorterSide(side) => side,
        }
    }
}

/// Decodes, resizes to `size`×`size` and packs `entries` (path relative to `root`, label) as the
/// split `name` in `dir`, which must exist.
///
/// # Errors
/// As [`write_pack_with`].
pub fn write_pack(
    dir: &Path,
    name: &str,
    root: &Path,
    entries: &[(String, usize)],
    size: u32,
) -> Result<PackInfo, DataError> {
    write_pack_with(dir, name, root, entries, Storage::Square(size))
}

/// Decodes, resizes as `storage` says and packs `entries` (path relative to `root`, label) as
/// the split `name` in `dir`, which must exist.
///
/// # Errors
/// Names the file at fault: a bad `name` or size, an image that does not decode (callers
/// filter those out first with `verify`), a label above 65535, or a write failure.
pub fn write_pack_with(
    dir: &Path,
    name: &str,
    root: &Path,
    entries: &[(String, usize)],
    storage: Storage,
) -> Result<PackInfo, DataError> {
    let paths = PackPaths::new(dir, name)?;
    let size = storage.side();
    if size == 0 {
        return Err(DataError::Invalid {
            path: paths.pixels,
            message: "image size must be at least 1".to_owned(),
        });
    }
    let mut labels = Vec::with_capacity(entries.len() * 2);
    for (relative, label) in entries {
        let label = u16::try_from(*label).map_err(|_| DataError::Invalid {
            path: root.join(relative),
            message: format!("label {label} does not fit the pack's 16-bit labels"),
        })?;
        labels.extend_from_slice(&label.to_le_bytes());
    }

    let file = fs_err::File::create(&paths.pixels).map_err(io_error(&paths.pixels))?;
    let mut pixels = BufWriter::new(file);
    let mut hasher = blake3::Hasher::new();
    let mut sizes = Vec::new();
    for chunk in entries.chunks(CHUNK_SIZE) {
        let images: Vec<_> = chunk
            .par_iter()
            .map(|(relative, _)| {
                let path = root.join(relative);
                decode_rgb8(&path)
                    .map(|image| match storage {
                        Storage::Square(side) => resize_square(&image, side),
                        Storage::ShorterSide(side) => resize_shorter_side(image, side),
                    })
                    .map_err(|reason| DataError::BadImage { path, reason })
            })
            .collect();
        for image in images {
            let image = image?;
            sizes.extend_from_slice(&image.height().to_le_bytes());
            sizes.extend_from_slice(&image.width().to_le_bytes());
            let bytes = image.into_raw();
            hasher.update(&bytes);
            pixels.write_all(&bytes).map_err(io_error(&paths.pixels))?;
        }
    }
    pixels
        .into_inner()
        .map_err(|error| io_error(&paths.pixels)(error.into_error()))?
        .sync_all()
        .map_err(io_error(&paths.pixels))?;
    fs_err::write(&paths.labels, &labels).map_err(io_error(&paths.labels))?;
    let (side, shorter_side) = match storage {
        Storage::Square(side) => (side as usize, None),
        Storage::ShorterSide(side) => {
            fs_err::write(&paths.sizes, &sizes).map_err(io_error(&paths.sizes))?;
            (0, Some(side))
        }
    };
    let info = PackInfo {
        count: entries.len(),
        height: side,
        width: side,
        channels: CHANNELS,
        layout: LAYOUT.to_owned(),
        blake3: hasher.finalize().to_hex().to_string(),
        shorter_side,
    };
    let json = serde_json::to_string_pretty(&info).map_err(|error| DataError::Format {
        path: paths.info.clone(),
        message: error.to_string(),
    })?;
    fs_err::write(&paths.info, json + "\n").map_err(io_error(&paths.info))?;
    Ok(info)
}

/// A packed split opened for reading, its pixels memory-mapped.
#[derive(Debug)]
pub struct PackedSplit {
    info: PackInfo,
    pixels: Mmap,
    labels: Vec<u16>,
    /// Each image's `(height, width)` and first byte, for a pack whose images keep their aspect.
    sizes: Option<Vec<(u32, u32, usize)>>,
    pixels_path: PathBuf,
}

impl PackedSplit {
    /// Opens the split `name` in `dir`, checking that the files' sizes agree with `<name>.json`.
    ///
    /// # Errors
    /// Names the file at fault: missing, unreadable, malformed JSON, or a size that does not match
    /// (for instance a `.u8` file cut short by a full disk).
    pub fn open(dir: &Path, name: &str) -> Result<PackedSplit, DataError> {
        let paths = PackPaths::new(dir, name)?;
        let text = fs_err::read_to_string(&paths.info).map_err(io_error(&paths.info))?;
        let info: PackInfo = serde_json::from_str(&text).map_err(|error| DataError::Format {
            path: paths.info.clone(),
            message: error.to_string(),
        })?;
        if info.channels != CHANNELS || info.layout != LAYOUT {
            return Err(DataError::PackMismatch {
                path: paths.info,
                message: format!(
                    "unsupported layout {} with {} channels (expected {LAYOUT} with {CHANNELS})",
                    info.layout, info.channels
                ),
            });
        }

        let sizes = match info.shorter_side {
            None => None,
            Some(_) => Some(read_sizes(&paths.sizes, &info)?),
        };
        let expected_pixels = match &sizes {
            None => info
                .count
                .checked_mul(info.height)
                .and_then(|value| value.checked_mul(info.width))
                .and_then(|value| value.checked_mul(CHANNELS)),
            Some(sizes) => Some(sizes.last().map_or(0, |&(height, width, start)| {
                start + height as usize * width as usize * CHANNELS
            })),
        };
        let file = fs_err::File::open(&paths.pixels).map_err(io_error(&paths.pixels))?;
        let actual_pixels = file.metadata().map_err(io_error(&paths.pixels))?.len();
        check_size(&paths.pixels, expected_pixels, actual_pixels, &info)?;
        // SAFETY: the mapping is read-only and packs are immutable once written (they live in
        // cache entries that are never modified after being renamed into place). Another process
        // truncating the file while it is mapped would be undefined behaviour; vilab never does.
        let pixels = unsafe { Mmap::map(file.file()) }.map_err(io_error(&paths.pixels))?;

        let label_bytes = fs_err::read(&paths.labels).map_err(io_error(&paths.labels))?;
        check_size(
            &paths.labels,
            info.count.checked_mul(2),
            label_bytes.len() as u64,
            &info,
        )?;
        let labels = label_bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        Ok(PackedSplit {
            info,
            pixels,
            labels,
            sizes,
            pixels_path: paths.pixels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.info.count
    }

    pub fn is_empty(&self) -> bool {
        self.info.count == 0
    }

    /// Height of every image of a square pack; 0 when images keep their aspect.
    pub fn height(&self) -> usize {
        self.info.height
    }

    /// Width of every image of a square pack; 0 when images keep their aspect.
    pub fn width(&self) -> usize {
        self.info.width
    }

    /// `(height, width)` of image `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn image_size(&self, index: usize) -> (usize, usize) {
        match &self.sizes {
            None => {
                assert!(
                    index < self.len(),
                    "image {index} of a pack with {}",
                    self.len()
                );
                (self.info.height, self.info.width)
            }
            Some(sizes) => {
                let (height, width, _) = sizes[index];
                (height as usize, width as usize)
            }
        }
    }

    /// The description read from `<name>.json`.
    pub fn info(&self) -> &PackInfo {
        &self.info
    }

    /// Bytes of one image of a square pack; 0 when images keep their aspect.
    pub fn image_len(&self) -> usize {
        self.info.height * self.info.width * CHANNELS
    }

    /// Image `index` as `height × width × 3` bytes (HWC, RGB), its size given by
    /// [`PackedSplit::image_size`].
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn image(&self, index: usize) -> &[u8] {
        assert!(
            index < self.len(),
            "image {index} of a pack with {}",
            self.len()
        );
        match &self.sizes {
            None => {
                let length = self.image_len();
                &self.pixels[index * length..(index + 1) * length]
            }
            Some(sizes) => {
                let (height, width, start) = sizes[index];
                &self.pixels[start..start + height as usize * width as usize * CHANNELS]
            }
        }
    }

    /// Label of image `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn label(&self, index: usize) -> usize {
        usize::from(self.labels[index])
    }

    /// Path of the `.u8` file, for messages.
    pub fn pixels_path(&self) -> &Path {
        &self.pixels_path
    }

    /// All pixels, N×H×W×3.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Re-hashes the `.u8` file and compares with the stored hash (reads the whole file).
    ///
    /// # Errors
    /// [`DataError::PackMismatch`] naming the `.u8` file when the content changed.
    pub fn verify_hash(&self) -> Result<(), DataError> {
        let actual = blake3::hash(&self.pixels).to_hex().to_string();
        if actual == self.info.blake3 {
            Ok(())
        } else {
            Err(DataError::PackMismatch {
                path: self.pixels_path.clone(),
                message: format!(
                    "content hash {actual} differs from the recorded {}",
                    self.info.blake3
                ),
            })
        }
    }
}

/// Reads `<name>.sizes`: each image's size and first byte in the `.u8` file.
fn read_sizes(path: &Path, info: &PackInfo) -> Result<Vec<(u32, u32, usize)>, DataError> {
    let bytes = fs_err::read(path).map_err(io_error(path))?;
    check_size(path, info.count.checked_mul(8), bytes.len() as u64, info)?;
    let mut start = 0_usize;
    let mut sizes = Vec::with_capacity(info.count);
    for pair in bytes.chunks_exact(8) {
        let height = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let width = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
        sizes.push((height, width, start));
        start = (height as usize)
            .checked_mul(width as usize)
            .and_then(|bytes| bytes.checked_mul(CHANNELS))
            .and_then(|bytes| bytes.checked_add(start))
            .ok_or_else(|| DataError::PackMismatch {
                path: path.to_path_buf(),
                message: format!(
                    "image {} has an impossible size {height}×{width}",
                    sizes.len()
                ),
            })?;
    }
    Ok(sizes)
}

/// The file paths of a split, after checking the split name is a plain file stem.
struct PackPaths {
    pixels: PathBuf,
    labels: PathBuf,
    info: PathBuf,
    sizes: PathBuf,
}

impl PackPaths {
    fn new(dir: &Path, name: &str) -> Result<PackPaths, DataError> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|character| character.is_alphanumeric() || "_-".contains(character));
        if !plain {
            return Err(DataError::Invalid {
                path: dir.to_path_buf(),
                message: format!(
                    "split name {name:?} must be letters, digits, '_' or '-' (like train, val, test)"
                ),
            });
        }
        Ok(PackPaths {
            pixels: dir.join(format!("{name}.u8")),
            labels: dir.join(format!("{name}.labels")),
            info: dir.join(format!("{name}.json")),
            sizes: dir.join(format!("{name}.sizes")),
        })
    }
}

fn check_size(
    path: &Path,
    expected: Option<usize>,
    actual: u64,
    info: &PackInfo,
) -> Result<(), DataError> {
    match expected {
        Some(expected) if expected as u64 == actual => Ok(()),
        _ => Err(DataError::PackMismatch {
            path: path.to_path_buf(),
            message: format!(
                "size {actual} bytes does not match {} images of {}×{}",
                info.count, info.height, info.width
            ),
        }),
    }
}
