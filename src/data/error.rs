//! The one error type of the data layer.
//!
//! Every variant carries the path it is about and prints as a single line starting with that path
//! (`data1/Maize: empty class folder (no images)`), so a stage can show it to the user unchanged.
//! Low-level causes (an OS error, a CSV parse error) are folded into the message rather than kept
//! as a `source`, because error chains printed with `{:#}` would otherwise repeat the path.

use std::path::{Path, PathBuf};

use crate::data::image::BadImage;

/// A failure reading or writing image data, manifests or packed splits.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error while reading or writing `path`.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },

    #[error("{}: data folder does not exist", path.display())]
    Missing { path: PathBuf },

    #[error("{}: not a directory", path.display())]
    NotADirectory { path: PathBuf },

    #[error("{}: no class folders (expected one sub-folder per class)", path.display())]
    NoClasses { path: PathBuf },

    #[error("{}: empty class folder (no images)", path.display())]
    EmptyClass { path: PathBuf },

    /// Walking a folder failed, for example on a symbolic-link loop.
    #[error("{}: {message}", path.display())]
    Walk { path: PathBuf, message: String },

    #[error("{}: name is not valid UTF-8", path.display())]
    NonUtf8Name { path: PathBuf },

    /// An image that had to be decoded could not be (the caller did not filter it out first).
    #[error("{}: {reason}", path.display())]
    BadImage { path: PathBuf, reason: BadImage },

    /// A CSV or JSON file that does not have the expected shape.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },

    /// A packed split whose files disagree with its description.
    #[error("{}: {message}", path.display())]
    PackMismatch { path: PathBuf, message: String },

    /// A malformed IDX (MNIST-style) file.
    #[error("{}: not a valid IDX file: {message}", path.display())]
    Idx { path: PathBuf, message: String },

    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },

    /// An argument that cannot work with the named output or input.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl DataError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DataError::Io { path, .. }
            | DataError::Missing { path }
            | DataError::NotADirectory { path }
            | DataError::NoClasses { path }
            | DataError::EmptyClass { path }
            | DataError::Walk { path, .. }
            | DataError::NonUtf8Name { path }
            | DataError::BadImage { path, .. }
            | DataError::Format { path, .. }
            | DataError::PackMismatch { path, .. }
            | DataError::Idx { path, .. }
            | DataError::AlreadyExists { path }
            | DataError::Invalid { path, .. } => path,
        }
    }
}

/// Maps an I/O error about `path` to [`DataError::Io`].
///
/// `fs_err` wraps the operating-system error in a message that already names the path; the
/// innermost error is used instead so the path is printed once. Where `fs_err` does not expose
/// that error (its default features keep it inside its own message, ``failed to write to file
/// `PATH`: REASON``), the part after the quoted path is kept.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |error| {
        let message = innermost_message(&error);
        let quoted = format!("`{}`: ", path.display());
        let message = match message.find(&quoted) {
            Some(at) => message[at + quoted.len()..].to_owned(),
            None => message,
        };
        DataError::Io {
            path: path.to_path_buf(),
            message,
        }
    }
}

/// The message of the deepest error in `error`'s source chain.
pub(crate) fn innermost_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_path_once() {
        let path = Path::new("out/cache/tmp/train.u8");
        let wrapped = std::io::Error::other(format!(
            "failed to write to file `{}`: File too large (os error 27)",
            path.display()
        ));
        assert_eq!(
            io_error(path)(wrapped).to_string(),
            "out/cache/tmp/train.u8: File too large (os error 27)"
        );
        let plain = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            io_error(path)(plain).to_string(),
            "out/cache/tmp/train.u8: entity not found"
        );
    }
}
