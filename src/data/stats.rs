//! Exact per-channel mean and standard deviation of a set of images, for input normalisation.
//!
//! Values are taken as `ToTensor` produces them (byte / 255, in [0, 1]) after resizing to the
//! training size, and the statistics are over all pixels of all images pooled together: the
//! population std of that pool. That is the quantity normalisation needs, since
//! `(x - mean) / std` is applied per pixel and should give unit variance over the training
//! distribution. The often-seen shortcut "average the per-image stds" leaves out the variance
//! between images (one photo darker than another) and so underestimates it.
//!
//! Accumulation is exact: per image, channel sums and sums of squares of the bytes are integers,
//! merged in `u128`, and the variance numerator `n·Σx² − (Σx)²` is also formed in integers before a
//! single conversion to `f64`. There is no cancellation and no dependence on the order in which
//! parallel workers finish, so the result is identical on every run.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::error::DataError;
use crate::data::image::load_resized;
use crate::data::pack::{CHANNELS, PackedSplit};

/// Per-channel (R, G, B) statistics of pixel values scaled to [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub mean: [f64; 3],
    /// Population standard deviation over every pixel.
    pub std: [f64; 3],
    /// Pixels per channel that went into the statistics.
    pub pixels: u64,
}

/// Exact integer sums of bytes and squared bytes per channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ByteSums {
    sum: [u128; 3],
    sum_of_squares: [u128; 3],
    pixels: u64,
}

impl ByteSums {
    fn of_pixels(bytes: &[u8]) -> ByteSums {
        // Per-image sums fit u64 easily (255² × 2^32 pixels < 2^49), and u64 adds are cheaper.
        let mut sum = [0u64; 3];
        let mut sum_of_squares = [0u64; 3];
        for pixel in bytes.chunks_exact(CHANNELS) {
            for channel in 0..CHANNELS {
                let value = u64::from(pixel[channel]);
                sum[channel] += value;
                sum_of_squares[channel] += value * value;
            }
        }
        ByteSums {
            sum: sum.map(u128::from),
            sum_of_squares: sum_of_squares.map(u128::from),
            pixels: (bytes.len() / CHANNELS) as u64,
        }
    }

    fn merge(self, other: ByteSums) -> ByteSums {
        let mut merged = self;
        for channel in 0..CHANNELS {
            merged.sum[channel] += other.sum[channel];
            merged.sum_of_squares[channel] += other.sum_of_squares[channel];
        }
        merged.pixels += other.pixels;
        merged
    }

    fn into_stats(self) -> ChannelStats {
        let count = u128::from(self.pixels);
        let mut mean = [0.0; 3];
        let mut std = [0.0; 3];
        for channel in 0..CHANNELS {
            let sum = self.sum[channel];
            // n·Σx² ≥ (Σx)² by Cauchy–Schwarz, so this never underflows.
            let numerator = count * self.sum_of_squares[channel] - sum * sum;
            let scale = count as f64 * 255.0;
            mean[channel] = sum as f64 / scale;
            std[channel] = (numerator as f64).sqrt() / scale;
        }
        ChannelStats {
            mean,
            std,
            pixels: self.pixels,
        }
    }
}

/// Statistics of the images at `rel_paths` (relative to `root`), each resized to `size`×`size`.
///
/// Images are decoded in parallel; memory holds one image per worker.
///
/// # Errors
/// [`DataError::BadImage`] naming the first image that does not decode (callers filter those out
/// first), or [`DataError::Invalid`] naming `root` when there is no image or `size` is 0.
pub fn channel_stats(
    root: &Path,
    rel_paths: &[String],
    size: u32,
) -> Result<ChannelStats, DataError> {
    if rel_paths.is_empty() || size == 0 {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            message: "statistics need at least one image and an image size of at least 1"
                .to_owned(),
        });
    }
    let sums = rel_paths
        .par_iter()
        .map(|relative| {
            let path = root.join(relative);
            let image =
                load_resized(&path, size).map_err(|reason| DataError::BadImage { path, reason })?;
            Ok(ByteSums::of_pixels(image.as_raw()))
        })
        .try_reduce(ByteSums::default, |left, right| Ok(left.merge(right)))?;
    Ok(sums.into_stats())
}

/// Statistics of every image of a packed split.
///
/// # Errors
/// [`DataError::Invalid`] naming the pack when it holds no image.
pub fn channel_stats_from_pack(pack: &PackedSplit) -> Result<ChannelStats, DataError> {
    if pack.is_empty() || pack.pixels().is_empty() {
        return Err(DataError::Invalid {
            path: pack.pixels_path().to_path_buf(),
            message: "statistics need at least one image".to_owned(),
        });
    }
    let sums = (0..pack.len())
        .into_par_iter()
        .map(|index| ByteSums::of_pixels(pack.image(index)))
        .reduce(ByteSums::default, ByteSums::merge);
    Ok(sums.into_stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_has_zero_std() {
        let bytes: Vec<u8> = std::iter::repeat_n([51u8, 102, 255], 10)
            .flatten()
            .collect();
        let stats = ByteSums::of_pixels(&bytes).into_stats();
        assert_eq!(stats.mean, [0.2, 0.4, 1.0]);
        assert_eq!(stats.std, [0.0; 3]);
        assert_eq!(stats.pixels, 10);
    }

    #[test]
    fn pooled_std_includes_between_image_variance() {
        // Two flat images, black and white: each has std 0, but the pool is half 0 and half 1,
        // whose population std is 0.5.
        let black = ByteSums::of_pixels(&[0; 12]);
        let white = ByteSums::of_pixels(&[255; 12]);
        let stats = black.merge(white).into_stats();
        assert_eq!(stats.mean, [0.5; 3]);
        assert_eq!(stats.std, [0.5; 3]);
    }

    #[test]
    fn merge_order_does_not_matter() {
        let first = ByteSums::of_pixels(&[1, 2, 3, 200, 100, 50]);
        let second = ByteSums::of_pixels(&[9, 8, 7]);
        assert_eq!(first.merge(second), second.merge(first));
    }
}
