//! Plots a person reads after a run: training curves and the confusion-matrix heat-map.
//!
//! Everything is drawn with plotters into memory (a pixel buffer or an SVG string) and then
//! written through `fs_err`, so a failed write names its path. Text uses a font compiled into
//! the binary ([`font`]), never the machine's fonts, so a bare server or container renders
//! the same image as a desktop.
//!
//! - [`curves`]: the per-epoch training history (`history.csv`) and the loss, accuracy and
//!   learning-rate plots drawn from it.
//! - [`confusion`]: the labelled confusion-matrix heat-map.
//! - [`compare`]: several runs side by side (tables, overlaid curves, a sweep's summary plot).
//! - [`html`]: self-contained HTML pages (no network, plots inline) and [`run_page`], a run
//!   folder's `report.html`.

pub mod compare;
pub mod confusion;
pub mod curves;
mod error;
mod figure;
mod font;
pub mod html;
pub mod run_page;

pub use confusion::write_confusion_heatmap;
pub use curves::write_curves;
pub use error::ReportError;

/// The file formats a plot can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    /// The file-name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Svg => "svg",
        }
    }
}
