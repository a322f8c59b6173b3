//! `preview.png`: a grid of augmented training samples, so people can see what they configured.
//!
//! The `augment` stage draws one batch through the training loader (transforms, then
//! MixUp/CutMix) and hands it here. Each normalised sample is turned back into 8-bit RGB with
//! the same mean and std (`x·std + mean`, times 255, rounded and clamped, since mixing can leave
//! the range), enlarged by an integer factor with nearest-neighbour sampling so that even 28²
//! images show their pixels at 96 px or more, and placed on a grid with thin white gaps.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};

use crate::data::error::{DataError, io_error};
use crate::data::loader::Batch;
use crate::data::pack::CHANNELS;

/// Smallest side a tile is enlarged to.
pub const MIN_TILE_SIDE: usize = 96;

/// Pixels between neighbouring tiles.
pub const GAP: usize = 2;

const GAP_COLOR: Rgb<u8> = Rgb([255, 255, 255]);

/// Integer enlargement that brings a `height`×`width` image to at least [`MIN_TILE_SIDE`].
pub fn tile_scale(height: usize, width: usize) -> usize {
    MIN_TILE_SIDE.div_ceil(height.max(width).max(1)).max(1)
}

/// Width and height in pixels of the grid [`render_preview`] draws for `batch`.
pub fn preview_size(batch: &Batch, columns: usize) -> (usize, usize) {
    let columns = columns.clamp(1, batch.n.max(1));
    let rows = batch.n.div_ceil(columns);
    let scale = tile_scale(batch.height, batch.width);
    let span = |count: usize, side: usize| count * side * scale + count.saturating_sub(1) * GAP;
    (span(columns, batch.width), span(rows, batch.height))
}

/// Draws the batch's samples row by row, `columns` to a row (clamped to 1..=n), de-normalised
/// with `mean` and `std`.
///
/// # Errors
/// [`DataError::Invalid`] naming `path` (used only for the message) when the batch is empty or
/// its image buffer does not hold `n × 3 × height × width` floats.
pub fn render_preview(
    path: &Path,
    batch: &Batch,
    mean: [f32; 3],
    std: [f32; 3],
    columns: usize,
) -> Result<RgbImage, DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let sample_len = CHANNELS * batch.height * batch.width;
    if batch.n == 0 || sample_len == 0 {
        return Err(invalid("no samples to preview".to_owned()));
    }
    if batch.images.len() != batch.n * sample_len {
        return Err(invalid(format!(
            "batch holds {} floats, expected {}×{CHANNELS}×{}×{}",
            batch.images.len(),
            batch.n,
            batch.height,
            batch.width
        )));
    }
    let columns = columns.clamp(1, batch.n);
    let scale = tile_scale(batch.height, batch.width);
    let (grid_width, grid_height) = preview_size(batch, columns);
    let mut grid = RgbImage::from_pixel(grid_width as u32, grid_height as u32, GAP_COLOR);
    let plane = batch.height * batch.width;
    for (sample, chw) in batch.images.chunks_exact(sample_len).enumerate() {
        let left = (sample % columns) * (batch.width * scale + GAP);
        let top = (sample / columns) * (batch.height * scale + GAP);
        for row in 0..batch.height * scale {
            for column in 0..batch.width * scale {
                let source = (row / scale) * batch.width + column / scale;
                let pixel = Rgb(std::array::from_fn(|channel| {
                    to_level(chw[channel * plane + source], mean[channel], std[channel])
                }));
                grid.put_pixel((left + column) as u32, (top + row) as u32, pixel);
            }
        }
    }
    Ok(grid)
}

/// Renders the batch like [`render_preview`] and writes it to `path` as PNG.
///
/// # Errors
/// As [`render_preview`], or [`DataError::Io`] naming `path` when encoding or writing fails.
pub fn write_preview(
    path: &Path,
    batch: &Batch,
    mean: [f32; 3],
    std: [f32; 3],
    columns: usize,
) -> Result<(), DataError> {
    let grid = render_preview(path, batch, mean, std, columns)?;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            grid.as_raw(),
            grid.width(),
            grid.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|error| DataError::Io {
            path: path.to_path_buf(),
            message: format!("cannot encode PNG: {error}"),
        })?;
    fs_err::write(path, png).map_err(io_error(path))
}

/// Inverts the loader's normalisation for one value and rounds it to an 8-bit level.
fn to_level(value: f32, mean: f32, std: f32) -> u8 {
    ((value * std + mean) * 255.0).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_invert_the_normalisation_and_clamp() {
        let (mean, std) = (0.25_f32, 0.5_f32);
        for level in [0_u8, 1, 64, 200, 255] {
            let normalised = (f32::from(level) / 255.0 - mean) / std;
            assert_eq!(to_level(normalised, mean, std), level);
        }
        assert_eq!(to_level(10.0, mean, std), 255);
        assert_eq!(to_level(-10.0, mean, std), 0);
    }

    #[test]
    fn tiles_reach_the_minimum_side_by_whole_factors() {
        assert_eq!(tile_scale(28, 28), 4);
        assert_eq!(tile_scale(96, 96), 1);
        assert_eq!(tile_scale(224, 224), 1);
        assert_eq!(tile_scale(32, 48), 2);
    }
}
