//! The error type of the plotting module; every variant names the file it was producing.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: cannot draw the plot: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("{}: cannot encode the PNG", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("{}: the bundled font could not be loaded, so no text can be drawn", path.display())]
    Font { path: PathBuf },
    #[error("{}: image size {width}×{height} is too small (at least {min_width}×{min_height})", path.display())]
    ImageTooSmall {
        path: PathBuf,
        width: u32,
        height: u32,
        min_width: u32,
        min_height: u32,
    },
    #[error("{}: the training history has no rows, so there is nothing to plot", path.display())]
    EmptyHistory { path: PathBuf },
    #[error("{}: {name_count} class names for a {class_count}-class confusion matrix", path.display())]
    ClassNameCount {
        path: PathBuf,
        name_count: usize,
        class_count: usize,
    },
    #[error(transparent)]
    History(#[from] crate::metrics::HistoryError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
