//! Renders one drawing to a PNG or SVG file, so each plot is written once for both formats.
//!
//! The PNG is drawn into an in-memory RGB buffer and encoded with the `image` crate instead of
//! letting plotters open the file itself: the write then goes through `fs_err` and a failure
//! names the path.

use std::ops::Range;
use std::path::Path;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::{
    BitMapBackend, DrawingArea, DrawingAreaErrorKind, DrawingBackend, IntoDrawingArea, SVGBackend,
};

use super::{ImageFormat, ReportError, font};

/// A picture that can be drawn on any plotters backend.
pub(crate) trait Figure {
    fn draw<Backend: DrawingBackend>(
        &self,
        root: &DrawingArea<Backend, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<Backend::ErrorType>>;
}

fn draw_error<E: std::error::Error + Send + Sync>(
    path: &Path,
    error: DrawingAreaErrorKind<E>,
) -> ReportError {
    ReportError::Draw {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// Draws `figure` at `width`×`height` pixels and writes it to `path` in `format`.
pub(crate) fn write_figure(
    figure: &impl Figure,
    path: &Path,
    format: ImageFormat,
    size: (u32, u32),
) -> Result<(), ReportError> {
    let bytes = render_figure(figure, path, format, size)?;
    fs_err::write(path, bytes)?;
    Ok(())
}

/// Draws `figure` at `width`×`height` pixels into the bytes of a `format` file; `path` is only
/// named in errors.
pub(crate) fn render_figure(
    figure: &impl Figure,
    path: &Path,
    format: ImageFormat,
    (width, height): (u32, u32),
) -> Result<Vec<u8>, ReportError> {
    if !font::ensure_registered() {
        return Err(ReportError::Font {
            path: path.to_path_buf(),
        });
    }
    match format {
        ImageFormat::Png => {
            let mut pixels = vec![0u8; width as usize * height as usize * 3];
            {
                let root =
                    BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
                figure
                    .draw(&root)
                    .map_err(|error| draw_error(path, error))?;
                root.present().map_err(|error| draw_error(path, error))?;
            }
            let mut encoded = Vec::new();
            PngEncoder::new(&mut encoded)
                .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
                .map_err(|source| ReportError::Encode {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(encoded)
        }
        ImageFormat::Svg => {
            let mut document = String::new();
            {
                let root =
                    SVGBackend::with_string(&mut document, (width, height)).into_drawing_area();
                figure
                    .draw(&root)
                    .map_err(|error| draw_error(path, error))?;
                root.present().map_err(|error| draw_error(path, error))?;
            }
            Ok(document.into_bytes())
        }
    }
}

/// [`render_figure`] as an SVG document.
pub(crate) fn render_svg(
    figure: &impl Figure,
    path: &Path,
    size: (u32, u32),
) -> Result<String, ReportError> {
    let bytes = render_figure(figure, path, ImageFormat::Svg, size)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Digits after the point so that ticks about a tenth of `span` apart stay distinct.
pub(crate) fn decimals_for(span: f64) -> usize {
    let step = span / 8.0;
    if step.is_finite() && step > 0.0 {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        2
    }
}

/// A linear axis whose grid lines and labels sit at chosen positions only: whole epochs on a
/// curve plot (plotters' own f64 axis would also label half epochs, and its integer axis cannot
/// pad the ends by a fraction of an epoch), or the values a sweep tried.
pub(crate) struct TickedAxis {
    pub(crate) linear: RangedCoordf64,
    pub(crate) ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}
