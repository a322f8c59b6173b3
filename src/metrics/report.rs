//! Per-class classification report and confusion matrix, the numbers the evaluate stage writes.
//!
//! The report follows scikit-learn's `classification_report` called with `labels=range(n)` and
//! `zero_division=0`: every class is listed even when it never occurs in the true labels, a
//! ratio whose denominator is zero is 0.0, the macro average is the unweighted mean over all
//! classes (zero-support ones included) and the weighted average weights each class by its
//! support. Users compare these numbers with the reference recipe's printed sklearn report, so
//! matching it exactly matters more than any other convention. Both are computed from the
//! confusion matrix, so one pass over the predictions serves both outputs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a report or confusion matrix could not be computed or written.
#[derive(Debug, thiserror::Error)]
pub enum ClassificationReportError {
    #[error("{true_count} true labels but {predicted_count} predictions")]
    LengthMismatch {
        true_count: usize,
        predicted_count: usize,
    },
    #[error(
        "{which} label {label} at position {position} is out of range for {class_count} classes"
    )]
    LabelOutOfRange {
        which: &'static str,
        label: usize,
        position: usize,
        class_count: usize,
    },
    #[error("{name_count} class names given for a {class_count}-class confusion matrix")]
    ClassNameCount {
        name_count: usize,
        class_count: usize,
    },
    #[error("{path}: cannot write CSV")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Precision, recall, F1 and support of one class (or of an average over classes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of true labels of this class; for an average, the total number of samples.
    pub support: u64,
}

/// Counts of (true class, predicted class) pairs: `counts[true][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<u64>>,
}

/// scikit-learn's `classification_report`, one entry per class in class-index order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    pub classes: Vec<String>,
    pub per_class: Vec<ClassReport>,
    pub accuracy: f64,
    pub macro_avg: ClassReport,
    pub weighted_avg: ClassReport,
    pub total: u64,
}

/// `numerator / denominator`, or 0.0 when the denominator is zero (sklearn's `zero_division=0`).
fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

fn check_labels(
    labels: &[usize],
    which: &'static str,
    class_count: usize,
) -> Result<(), ClassificationReportError> {
    match labels
        .iter()
        .enumerate()
        .find(|(_, label)| **label >= class_count)
    {
        Some((position, &label)) => Err(ClassificationReportError::LabelOutOfRange {
            which,
            label,
            position,
            class_count,
        }),
        None => Ok(()),
    }
}

impl ConfusionMatrix {
    /// Counts the pairs; labels must be class indices below `class_count`.
    pub fn from_labels(
        true_labels: &[usize],
        predicted: &[usize],
        class_count: usize,
    ) -> Result<Self, ClassificationReportError> {
        if true_labels.len() != predicted.len() {
            return Err(ClassificationReportError::LengthMismatch {
                true_count: true_labels.len(),
                predicted_count: predicted.len(),
            });
        }
        check_labels(true_labels, "true", class_count)?;
        check_labels(predicted, "predicted", class_count)?;
        let mut counts = vec![vec![0u64; class_count]; class_count];
        for (&truth, &prediction) in true_labels.iter().zip(predicted) {
            counts[truth][prediction] += 1;
        }
        Ok(Self { counts })
    }

    pub fn class_count(&self) -> usize {
        self.counts.len()
    }

    /// Number of samples whose true class is `class` (the row sum).
    pub fn support(&self, class: usize) -> u64 {
        self.counts[class].iter().sum()
    }

    /// Number of samples predicted as `class` (the column sum).
    pub fn predicted_count(&self, class: usize) -> u64 {
        self.counts.iter().map(|row| row[class]).sum()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Writes a header `true\predicted,<class names>` and one row per true class.
    pub fn to_csv(
        &self,
        path: &Path,
        class_names: &[String],
    ) -> Result<(), ClassificationReportError> {
        if class_names.len() != self.class_count() {
            return Err(ClassificationReportError::ClassNameCount {
                name_count: class_names.len(),
                class_count: self.class_count(),
            });
        }
        let csv_error = |source| ClassificationReportError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = csv::Writer::from_writer(fs_err::File::create(path)?);
        let header =
            std::iter::once("true\\predicted").chain(class_names.iter().map(String::as_str));
        writer.write_record(header).map_err(csv_error)?;
        for (name, row) in class_names.iter().zip(&self.counts) {
            let cells = std::iter::once(name.clone()).chain(row.iter().map(u64::to_string));
            writer.write_record(cells).map_err(csv_error)?;
        }
        writer.flush()?;
        Ok(())
    }
}

impl ClassificationReport {
    /// The report for `predicted` against `true_labels`, both class indices into `class_names`.
    pub fn from_labels(
        true_labels: &[usize],
        predicted: &[usize],
        class_names: &[String],
    ) -> Result<Self, ClassificationReportError> {
        let matrix = ConfusionMatrix::from_labels(true_labels, predicted, class_names.len())?;
        Self::from_confusion(&matrix, class_names)
    }

    /// The report read off a confusion matrix whose rows are true classes.
    pub fn from_confusion(
        matrix: &ConfusionMatrix,
        class_names: &[String],
    ) -> Result<Self, ClassificationReportError> {
        let class_count = matrix.class_count();
        if class_names.len() != class_count {
            return Err(ClassificationReportError::ClassNameCount {
                name_count: class_names.len(),
                class_count,
            });
        }
        let per_class: Vec<ClassReport> = (0..class_count)
            .map(|class| {
                let true_positives = matrix.counts[class][class];
                let support = matrix.support(class);
                let predicted_count = matrix.predicted_count(class);
                ClassReport {
                    precision: ratio(true_positives, predicted_count),
                    recall: ratio(true_positives, support),
                    // sklearn computes F1 from counts, 2·tp / (support + predicted), which is
                    // 2PR / (P + R) without the 0/0 case when tp = 0.
                    f1: ratio(2 * true_positives, support + predicted_count),
                    support,
                }
            })
            .collect();
        let total = matrix.total();
        let correct: u64 = (0..class_count)
            .map(|class| matrix.counts[class][class])
            .sum();
        let mean = |value: fn(&ClassReport) -> f64| {
            if class_count == 0 {
                0.0
            } else {
                per_class.iter().map(value).sum::<f64>() / class_count as f64
            }
        };
        let weighted = |value: fn(&ClassReport) -> f64| {
            if total == 0 {
                0.0
            } else {
                per_class
                    .iter()
                    .map(|report| value(report) * report.support as f64)
                    .sum::<f64>()
                    / total as f64
            }
        };
        let macro_avg = ClassReport {
            precision: mean(|report| report.precision),
            recall: mean(|report| report.recall),
            f1: mean(|report| report.f1),
            support: total,
        };
        let weighted_avg = ClassReport {
            precision: weighted(|report| report.precision),
            recall: weighted(|report| report.recall),
            f1: weighted(|report| report.f1),
            support: total,
        };
        Ok(Self {
            classes: class_names.to_vec(),
            per_class,
            accuracy: ratio(correct, total),
            macro_avg,
            weighted_avg,
            total,
        })
    }

    /// Writes `class,precision,recall,f1,support`: one row per class, then `accuracy` (its value
    /// in the f1 column, precision and recall empty, as sklearn's text report lays it out),
    /// `macro avg` and `weighted avg`. Values keep full precision so the file round-trips.
    pub fn to_csv(&self, path: &Path) -> Result<(), ClassificationReportError> {
        let csv_error = |source| ClassificationReportError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = csv::Writer::from_writer(fs_err::File::create(path)?);
        writer
            .write_record(["class", "precision", "recall", "f1", "support"])
            .map_err(csv_error)?;
        let report_row = |name: &str, report: &ClassReport| {
            [
                name.to_owned(),
                report.precision.to_string(),
                report.recall.to_string(),
                report.f1.to_string(),
                report.support.to_string(),
            ]
        };
        for (name, report) in self.classes.iter().zip(&self.per_class) {
            writer
                .write_record(report_row(name, report))
                .map_err(csv_error)?;
        }
        let accuracy_row = [
            "accuracy".to_owned(),
            String::new(),
            String::new(),
            self.accuracy.to_string(),
            self.total.to_string(),
        ];
        writer.write_record(accuracy_row).map_err(csv_error)?;
        writer
            .write_record(report_row("macro avg", &self.macro_avg))
            .map_err(csv_error)?;
        writer
            .write_record(report_row("weighted avg", &self.weighted_avg))
            .map_err(csv_error)?;
        writer.flush()?;
        Ok(())
    }

    /// A Markdown table with four decimals, laid out like sklearn's text report.
    pub fn to_markdown(&self) -> String {
        let mut table = String::from(
            "| class | precision | recall | f1-score | support |\n|:--|--:|--:|--:|--:|\n",
        );
        let row = |name: &str, report: &ClassReport| {
            format!(
                "| {} | {:.4} | {:.4} | {:.4} | {} |\n",
                escape_markdown_cell(name),
                report.precision,
                report.recall,
                report.f1,
                report.support
            )
        };
        for (name, report) in self.classes.iter().zip(&self.per_class) {
            table.push_str(&row(name, report));
        }
        table.push_str(&format!(
            "| **accuracy** | | | {:.4} | {} |\n",
            self.accuracy, self.total
        ));
        table.push_str(&row("**macro avg**", &self.macro_avg));
        table.push_str(&row("**weighted avg**", &self.weighted_avg));
        table
    }
}

/// Class names come from folder names, which may contain `|` and would split the cell.
fn escape_markdown_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("class{index}")).collect()
    }

    #[test]
    fn class_absent_from_both_labels_and_predictions_scores_zero() {
        let report = ClassificationReport::from_labels(&[0, 1, 1], &[0, 1, 0], &names(3)).unwrap();
        assert_eq!(
            report.per_class[2],
            ClassReport {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                support: 0
            }
        );
        // (2/3 + 2/3 + 0) / 3: the empty class still counts in the macro average (sklearn's
        // `f1_score(..., labels=range(3), average="macro", zero_division=0)` gives 0.444…).
        assert!((report.macro_avg.f1 - 4.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn empty_input_gives_zeros_not_nan() {
        let report = ClassificationReport::from_labels(&[], &[], &names(2)).unwrap();
        assert_eq!(report.accuracy, 0.0);
        assert_eq!(report.weighted_avg.precision, 0.0);
        assert_eq!(report.total, 0);
    }

    #[test]
    fn rejects_out_of_range_and_mismatched_labels() {
        let error = ConfusionMatrix::from_labels(&[0, 3], &[0, 1], 3).unwrap_err();
        assert_eq!(
            error.to_string(),
            "true label 3 at position 1 is out of range for 3 classes"
        );
        let error = ConfusionMatrix::from_labels(&[0], &[0, 1], 3).unwrap_err();
        assert_eq!(error.to_string(), "1 true labels but 2 predictions");
        let matrix = ConfusionMatrix::from_labels(&[0], &[1], 3).unwrap();
        assert!(ClassificationReport::from_confusion(&matrix, &names(2)).is_err());
    }

    #[test]
    fn markdown_escapes_pipes_in_class_names() {
        let classes = vec!["a|b".to_owned(), "c".to_owned()];
        let report = ClassificationReport::from_labels(&[0, 1], &[0, 0], &classes).unwrap();
        let markdown = report.to_markdown();
        assert!(markdown.contains("| a\\|b | 0.5000 | 1.0000 | 0.6667 | 1 |"));
    }
}
