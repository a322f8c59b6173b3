//! Decoding any supported image file into 8-bit RGB, and resizing it to the model's square input.
//!
//! Files are recognised by their content, never their extension: a PNG saved as `photo.jpg` is
//! decoded as a PNG. Whatever the stored pixel format (grey, grey+alpha, RGBA, 16 bits per channel,
//! CMYK JPEG), the result is 8-bit RGB. For 8-bit inputs that is what torchvision's `ImageFolder`
//! gets from `PIL.Image.convert("RGB")`; 16-bit samples are scaled down here, where PIL would clip
//! them to 255 and lose the picture. Like that path, EXIF orientation is not applied.
//!
//! A file that cannot be decoded yields a [`BadImage`] whose text is a short reason meant for
//! `skipped.csv` and warnings, e.g. `truncated or corrupt PNG: unexpected end of file`.

use std::io::BufReader;
use std::path::Path;

use ::image::imageops::FilterType;
use ::image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

/// Largest accepted width or height.
pub const MAX_SIDE: u32 = 16_384;

/// Largest accepted pixel count (128 Mpixel, 2^27): above any camera in common use, and low
/// enough that the decoded buffer (at most 8 bytes a pixel, for 16-bit RGBA) stays under 1 GiB.
/// Together with [`MAX_SIDE`] this stops a decompression bomb, a tiny file declaring a huge
/// image, before any pixel memory is allocated.
pub const MAX_PIXELS: u64 = 1 << 27;

/// Ceiling on what a decoder may allocate for one image.
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Why a file could not be used as an image. The text is a short reason without the path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadImage {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("not an image (unrecognised format)")]
    NotAnImage,
    #[error("truncated or corrupt {format}: {message}")]
    Corrupt { format: String, message: String },
    #[error("unsupported {format}: {message}")]
    Unsupported { format: String, message: String },
    #[error(
        "too large: {width}×{height} pixels (limit {MAX_SIDE} per side and {} Mpixel)",
        MAX_PIXELS >> 20
    )]
    TooLarge { width: u32, height: u32 },
    #[error("cannot read file: {message}")]
    Unreadable { message: String },
}

/// Decodes the image file at `path` into 8-bit RGB.
///
/// Conversions: grey is replicated to three channels; 16-bit samples are scaled to 8 bits; CMYK
/// JPEGs are converted by the JPEG decoder. An alpha channel is dropped, not composited over a
/// background, which is what PIL's `convert("RGB")` does and so what models trained with
/// torchvision saw.
///
/// # Errors
/// A [`BadImage`] saying why the file is unusable.
pub fn decode_rgb8(path: &Path) -> Result<RgbImage, BadImage> {
    let file = fs_err::File::open(path).map_err(unreadable)?;
    let length = file.metadata().map_err(unreadable)?.len();
    if length == 0 {
        return Err(BadImage::Empty);
    }
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(unreadable)?;
    let Some(format) = reader.format() else {
        return Err(BadImage::NotAnImage);
    };
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|error| classify(format, error, None))?;
    let (width, height) = decoder.dimensions();
    let too_large = BadImage::TooLarge { width, height };
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(too_large);
    }
    let image = DynamicImage::from_decoder(decoder)
        .map_err(|error| classify(format, error, Some(too_large)))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(BadImage::Corrupt {
            format: format_name(format),
            message: format!("zero-sized image ({}×{})", image.width(), image.height()),
        });
    }
    Ok(image.into_rgb8())
}

/// Resizes `image` to exactly `size`×`size` pixels, ignoring its aspect ratio.
///
/// Uses a triangle (bilinear) filter whose support widens with the downscaling factor, so
/// shrinking averages over every source pixel: the same idea as torchvision's
/// `Resize((size, size), antialias=True)` with bilinear interpolation, though the two do not agree
/// bit for bit. Returns a copy unchanged when the image already has that size.
pub fn resize_square(image: &RgbImage, size: u32) -> RgbImage {
    if image.width() == size && image.height() == size {
        return image.clone();
    }
    ::image::imageops::resize(image, size, size, FilterType::Triangle)
}

/// The `(width, height)` whose shorter side is `side`, the longer one scaled to keep the aspect
/// and truncated (torchvision's `Resize(side)`), never below 1.
pub fn shorter_side_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    let scaled = |longer: u32, shorter: u32| {
        (u64::from(side) * u64::from(longer) / u64::from(shorter.max(1))) as u32
    };
    let (new_width, new_height) = if width <= height {
        (side, scaled(height, width))
    } else {
        (scaled(width, height), side)
    };
    (new_width.max(1), new_height.max(1))
}

/// Resizes `image` so its shorter side is `side`, keeping the aspect ([`shorter_side_size`]),
/// with the same filter as [`resize_square`]; returns it unchanged when it already has that size.
pub fn resize_shorter_side(image: RgbImage, side: u32) -> RgbImage {
    let (width, height) = shorter_side_size(image.width(), image.height(), side);
    if (width, height) == image.dimensions() {
        return image;
    }
    ::image::imageops::resize(&image, width, height, FilterType::Triangle)
}

/// Decodes `path` and resizes it to `size`×`size` RGB.
///
/// # Errors
/// A [`BadImage`] saying why the file is unusable.
pub fn load_resized(path: &Path, size: u32) -> Result<RgbImage, BadImage> {
    let image = decode_rgb8(path)?;
    Ok(resize_square(&image, size))
}

/// Upper-case name of a format for messages: `PNG`, `JPEG`, `BMP`.
fn format_name(format: ImageFormat) -> String {
    format!("{format:?}").to_uppercase()
}

fn unreadable(error: std::io::Error) -> BadImage {
    BadImage::Unreadable {
        message: crate::data::error::innermost_message(&error),
    }
}

/// Turns a decoder error into a reason. `too_large` is what to report when a memory limit trips.
fn classify(format: ImageFormat, error: ImageError, too_large: Option<BadImage>) -> BadImage {
    let format = format_name(format);
    match error {
        ImageError::Limits(limit) => too_large.unwrap_or(BadImage::Unsupported {
            format,
            message: limit.to_string(),
        }),
        ImageError::Unsupported(unsupported) => BadImage::Unsupported {
            format,
            message: unsupported.to_string(),
        },
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            BadImage::Corrupt {
                format,
                message: "unexpected end of file".to_owned(),
            }
        }
        ImageError::IoError(io) => unreadable(io),
        other => BadImage::Corrupt {
            format,
            message: crate::data::error::innermost_message(&other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_gives_exact_square_and_keeps_flat_colour() {
        let image = RgbImage::from_pixel(37, 11, ::image::Rgb([10, 200, 30]));
        let resized = resize_square(&image, 16);
        assert_eq!(resized.dimensions(), (16, 16));
        assert!(resized.pixels().all(|pixel| pixel.0 == [10, 200, 30]));
    }

    #[test]
    fn resize_to_same_size_is_identity() {
        let image = RgbImage::from_fn(8, 8, |x, y| ::image::Rgb([x as u8 * 30, y as u8 * 30, 7]));
        assert_eq!(resize_square(&image, 8), image);
    }

    #[test]
    fn too_large_reason_names_size_and_limit() {
        let reason = BadImage::TooLarge {
            width: 40_000,
            height: 40_000,
        };
        assert_eq!(
            reason.to_string(),
            "too large: 40000×40000 pixels (limit 16384 per side and 128 Mpixel)"
        );
    }
}
