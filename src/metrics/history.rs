//! The per-epoch training history: `history.csv` as the train stage writes it (and updates in
//! checkpoints), as `report` plots and compares it, and as `train/metrics.json` quotes its best
//! and final rows (without timings).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The history's file name in the train stage's output and in checkpoints.
pub const HISTORY_FILE: &str = "history.csv";

/// Why `history.csv` could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Not valid CSV of [`HistoryRow`]s, or not writable as such.
    #[error("{}: cannot read or write the training history", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The CSV error.
        #[source]
        source: csv::Error,
    },
    /// A file system failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One epoch of training as the train stage records it. Accuracies are percentages (0–100),
/// as timm's `accuracy` reports them; the EMA columns are empty when EMA is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub epoch: u32,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc1: f64,
    pub val_loss: f64,
    pub val_acc1: f64,
    pub val_acc5: f64,
    pub ema_val_loss: Option<f64>,
    pub ema_val_acc1: Option<f64>,
    pub ema_val_acc5: Option<f64>,
    #[serde(default)]
    pub epoch_seconds: f64,
    #[serde(default)]
    pub train_images_per_second: f64,
}

/// A history row without its timings, as `train/metrics.json` quotes the best and the final
/// epoch: timings differ between otherwise identical runs (a resumed one included), and the
/// file must not. Reads back with the timings at 0.
#[derive(Debug, Clone, PartialEq)]
pub struct WithoutTimings(pub HistoryRow);

/// The columns of [`HistoryRow`] that are timings.
const TIMING_COLUMNS: [&str; 2] = ["epoch_seconds", "train_images_per_second"];

impl Serialize for WithoutTimings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.0).map_err(serde::ser::Error::custom)?;
        if let Some(fields) = value.as_object_mut() {
            for column in TIMING_COLUMNS {
                fields.remove(column);
            }
        }
        value.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for WithoutTimings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        HistoryRow::deserialize(deserializer).map(Self)
    }
}

/// The header of `history.csv`, in column order; it matches [`HistoryRow`]'s fields.
pub const HISTORY_HEADER: [&str; 12] = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc1",
    "val_loss",
    "val_acc1",
    "val_acc5",
    "ema_val_loss",
    "ema_val_acc1",
    "ema_val_acc5",
    "epoch_seconds",
    "train_images_per_second",
];

/// Reads `history.csv`; empty EMA cells become `None`.
pub fn read_history(path: &Path) -> Result<Vec<HistoryRow>, HistoryError> {
    let mut reader = csv::Reader::from_reader(fs_err::File::open(path)?);
    reader
        .deserialize()
        .collect::<Result<Vec<HistoryRow>, csv::Error>>()
        .map_err(|source| HistoryError::Csv {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `history.csv` with [`HISTORY_HEADER`], also when `rows` is empty.
pub fn write_history(path: &Path, rows: &[HistoryRow]) -> Result<(), HistoryError> {
    let history_error = |source| HistoryError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(fs_err::File::create(path)?);
    writer.write_record(HISTORY_HEADER).map_err(history_error)?;
    for row in rows {
        writer.serialize(row).map_err(history_error)?;
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_rows_leave_the_timings_out_and_keep_the_column_order() {
        let row = HistoryRow {
            epoch: 3,
            lr: 0.5,
            train_loss: 1.0,
            train_acc1: 50.0,
            val_loss: 1.5,
            val_acc1: 40.0,
            val_acc5: 90.0,
            ema_val_loss: None,
            ema_val_acc1: Some(41.0),
            ema_val_acc5: None,
            epoch_seconds: 7.25,
            train_images_per_second: 99.0,
        };
        let text = serde_json::to_string(&WithoutTimings(row.clone())).unwrap();
        let keys: Vec<&str> = HISTORY_HEADER[..10].to_vec();
        let expected = format!(
            "{{{}}}",
            keys.iter()
                .zip([
                    "3", "0.5", "1.0", "50.0", "1.5", "40.0", "90.0", "null", "41.0", "null"
                ])
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(text, expected);
        let back: WithoutTimings = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.0,
            HistoryRow {
                epoch_seconds: 0.0,
                train_images_per_second: 0.0,
                ..row
            }
        );
    }
}
