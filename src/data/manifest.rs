//! CSV manifests: which images belong to a split (`train.csv`, `val.csv`) and which files were left
//! out and why (`skipped.csv`).
//!
//! Manifests are the hand-off between the split stage and everything after it, and they are meant
//! to be read by people and by pandas too, hence plain CSV with a header:
//! `path,class,label` (path relative to the data root with `/` separators, class name, label
//! index) and `path,reason`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::error::{DataError, io_error};

/// One image of a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Relative to the data root, `/`-separated.
    pub path: String,
    /// Class (folder) name.
    pub class: String,
    /// Index of the class in the sorted class list.
    pub label: usize,
}

/// One file under the data root that was not used, with a short reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRow {
    /// Relative to the data root, `/`-separated.
    pub path: String,
    /// Why, e.g. `empty file (0 bytes)`.
    pub reason: String,
}

/// The header line of a split manifest.
pub const MANIFEST_HEADER: [&str; 3] = ["path", "class", "label"];

/// The header line of `skipped.csv`.
pub const SKIPPED_HEADER: [&str; 2] = ["path", "reason"];

/// Writes a split manifest to `path` (header `path,class,label`).
///
/// # Errors
/// [`DataError::Io`] naming `path`.
pub fn write_manifest(path: &Path, rows: &[ManifestRow]) -> Result<(), DataError> {
    write_rows(path, &MANIFEST_HEADER, rows)
}

/// Reads a split manifest, checking its header.
///
/// # Errors
/// Names `path`: unreadable file, a header other than `path,class,label`, or a malformed row (with
/// its line number).
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>, DataError> {
    read_rows(path, &MANIFEST_HEADER)
}

/// Writes `skipped.csv` (header `path,reason`); with no rows it holds just the header.
///
/// # Errors
/// [`DataError::Io`] naming `path`.
pub fn write_skipped(path: &Path, rows: &[SkippedRow]) -> Result<(), DataError> {
    write_rows(path, &SKIPPED_HEADER, rows)
}

/// Reads `skipped.csv`, checking its header.
///
/// # Errors
/// As [`read_manifest`], for header `path,reason`.
pub fn read_skipped(path: &Path) -> Result<Vec<SkippedRow>, DataError> {
    read_rows(path, &SKIPPED_HEADER)
}

fn write_rows<Row: Serialize>(path: &Path, header: &[&str], rows: &[Row]) -> Result<(), DataError> {
    let file = fs_err::File::create(path).map_err(io_error(path))?;
    // The header is written explicitly so an empty list still produces a valid file.
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(std::io::BufWriter::new(file));
    writer
        .write_record(header)
        .map_err(|error| csv_error(path, error))?;
    for row in rows {
        writer
            .serialize(row)
            .map_err(|error| csv_error(path, error))?;
    }
    writer.flush().map_err(io_error(path))
}

fn read_rows<Row: for<'de> Deserialize<'de>>(
    path: &Path,
    header: &[&str],
) -> Result<Vec<Row>, DataError> {
    let file = fs_err::File::open(path).map_err(io_error(path))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(std::io::BufReader::new(file));
    let found = reader
        .headers()
        .map_err(|error| csv_error(path, error))?
        .clone();
    if found.iter().ne(header.iter().copied()) {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "expected header `{}`, found `{}`",
                header.join(","),
                found.iter().collect::<Vec<_>>().join(",")
            ),
        });
    }
    reader
        .deserialize()
        .map(|row| row.map_err(|error| csv_error(path, error)))
        .collect()
}

/// A CSV error as one line naming the file and, when known, the line.
fn csv_error(path: &Path, error: csv::Error) -> DataError {
    let line = error.position().map(|position| position.line());
    let message = match error.into_kind() {
        csv::ErrorKind::Io(io) => {
            return io_error(path)(io);
        }
        csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields, found {len}"),
        csv::ErrorKind::Utf8 { err, .. } => format!("not valid UTF-8 ({err})"),
        other => format!("{other:?}"),
    };
    DataError::Format {
        path: path.to_path_buf(),
        message: match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_awkward_names() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("train.csv");
        let rows = vec![
            ManifestRow {
                path: "Common chickweed/a, b \"quoted\".png".to_owned(),
                class: "Common chickweed".to_owned(),
                label: 1,
            },
            ManifestRow {
                path: "Löwenzahn/x.png".to_owned(),
                class: "Löwenzahn".to_owned(),
                label: 2,
            },
        ];
        write_manifest(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("path,class,label\n"), "{text}");
        assert_eq!(read_manifest(&path).unwrap(), rows);
    }

    #[test]
    fn empty_skipped_list_still_has_header() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("skipped.csv");
        write_skipped(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "path,reason\n");
        assert!(read_skipped(&path).unwrap().is_empty());
    }

    #[test]
    fn wrong_header_is_reported_with_the_file() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("val.csv");
        std::fs::write(&path, "file,label\na.png,0\n").unwrap();
        let message = read_manifest(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: expected header `path,class,label`, found `file,label`",
                path.display()
            )
        );
    }

    #[test]
    fn malformed_row_names_file_and_line() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("val.csv");
        std::fs::write(&path, "path,class,label\na.png,A,0\nb.png,B,minus one\n").unwrap();
        let message = read_manifest(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}: line 3: ", path.display())),
            "{message}"
        );
    }
}
