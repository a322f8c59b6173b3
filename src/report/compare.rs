//! Comparing finished runs: what differs in their specs, what it did to their metrics and to
//! each class, as tables (`vilab compare`) and overlaid curves ([`plots`]).
//!
//! A run folder is read through its files only — `spec.yaml`, `train/history.csv`,
//! `evaluate/metrics.json` and `evaluate/classification_report.csv` — so runs made by other
//! vilab versions or copied from another machine compare as well; whatever a run lacks (a run
//! of zero epochs has no curves) shows as a dash.
//!
//! Deltas are against a baseline run (the first unless chosen). Per-class F1 is compared on the
//! classes all runs share; runs whose class sets differ get a note naming what was left out.

pub mod page;
pub mod plots;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::metrics::{EvalMetrics, HistoryRow, MetricName, read_history};
use crate::pipeline::layout::RunDir;
use crate::spec::sweep::show_value;

/// Why a run folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A file of the run folder is missing or unreadable.
    #[error("{}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// What one run folder holds that a comparison reads.
#[derive(Debug, Clone)]
pub struct RunResults {
    /// How the run is named in tables and legends.
    pub label: String,
    /// The run folder.
    pub dir: PathBuf,
    /// The resolved spec (`spec.yaml`).
    pub spec: Value,
    /// The train stage's per-epoch history (empty without one).
    pub history: Vec<HistoryRow>,
    /// The evaluate stage's scores, when it ran.
    pub evaluation: Option<EvalMetrics>,
    /// Per-class F1 of the best weights on the validation split, in class order.
    pub class_f1: Vec<(String, f64)>,
}

impl RunResults {
    /// Reads a run folder; only `spec.yaml` is required.
    pub fn read(dir: &Path, label: &str) -> Result<Self, CompareError> {
        let folder = RunDir::new(dir);
        let spec_path = folder.spec();
        let text = fs_err::read_to_string(&spec_path).map_err(|error| CompareError::Read {
            path: spec_path.clone(),
            message: format!("not a run folder ({error})"),
        })?;
        let spec: Value = serde_yaml::from_str(&text).map_err(|error| CompareError::Read {
            path: spec_path.clone(),
            message: error.to_string(),
        })?;
        let history_path = folder.history();
        let history = if history_path.is_file() {
            read_history(&history_path).map_err(|error| CompareError::Read {
                path: history_path.clone(),
                message: error.to_string(),
            })?
        } else {
            Vec::new()
        };
        let metrics_path = folder.metrics();
        let evaluation = if metrics_path.is_file() {
            let bytes = fs_err::read(&metrics_path).map_err(|error| CompareError::Read {
                path: metrics_path.clone(),
                message: error.to_string(),
            })?;
            Some(
                serde_json::from_slice(&bytes).map_err(|error| CompareError::Read {
                    path: metrics_path.clone(),
                    message: error.to_string(),
                })?,
            )
        } else {
            None
        };
        let report_path = folder.class_report();
        let class_f1 = if report_path.is_file() {
            read_class_f1(&report_path)?
        } else {
            Vec::new()
        };
        Ok(Self {
            label: label.to_owned(),
            dir: dir.to_path_buf(),
            spec,
            history,
            evaluation,
            class_f1,
        })
    }

    /// The headline numbers of the run.
    pub fn metrics(&self) -> RunMetrics {
        let best = |value: fn(&HistoryRow) -> Option<f64>| {
            self.history
                .iter()
                .filter_map(value)
                .filter(|value| value.is_finite())
                .reduce(f64::max)
        };
        let last = self.history.last();
        let scores = self
            .evaluation
            .as_ref()
            .and_then(|evaluation| evaluation.get("best"))
            .and_then(|splits| splits.get("val"));
        RunMetrics {
            best_val_acc1: best(|row| Some(row.val_acc1)),
            best_val_acc5: best(|row| Some(row.val_acc5)),
            ema_val_acc1: best(|row| row.ema_val_acc1),
            final_train_loss: last.map(|row| row.train_loss),
            final_val_loss: last.map(|row| row.val_loss),
            epochs: self.history.len(),
            train_seconds: (!self.history.is_empty())
                .then(|| self.history.iter().map(|row| row.epoch_seconds).sum()),
            macro_f1: scores.map(|scores| scores.macro_f1),
        }
    }
}

/// `class,precision,recall,f1,support` rows up to the `accuracy` row.
fn read_class_f1(path: &Path) -> Result<Vec<(String, f64)>, CompareError> {
    let read_error = |message: String| CompareError::Read {
        path: path.to_path_buf(),
        message,
    };
    let file = fs_err::File::open(path).map_err(|error| read_error(error.to_string()))?;
    let mut reader = csv::Reader::from_reader(file);
    let mut classes = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|error| read_error(error.to_string()))?;
        let (Some(name), Some(precision), Some(f1)) = (record.get(0), record.get(1), record.get(3))
        else {
            return Err(read_error(
                "expected class,precision,recall,f1,support".into(),
            ));
        };
        // sklearn's layout: the summary rows start with `accuracy`, whose precision is empty.
        if precision.is_empty() {
            break;
        }
        let f1: f64 = f1
            .parse()
            .map_err(|_| read_error(format!("class {name}: f1 `{f1}` is not a number")))?;
        classes.push((name.to_owned(), f1));
    }
    Ok(classes)
}

/// The numbers a run is judged by; `None` where the run has no such result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RunMetrics {
    /// Highest validation ACC1 over the epochs, in percent.
    pub best_val_acc1: Option<f64>,
    /// Highest validation ACC5 over the epochs, in percent.
    pub best_val_acc5: Option<f64>,
    /// Highest validation ACC1 of the EMA weights, in percent.
    pub ema_val_acc1: Option<f64>,
    /// Training loss of the last epoch.
    pub final_train_loss: Option<f64>,
    /// Validation loss of the last epoch.
    pub final_val_loss: Option<f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Time spent in the epochs.
    pub train_seconds: Option<f64>,
    /// Macro-averaged F1 of the evaluated (best) weights on the validation split.
    pub macro_f1: Option<f64>,
}

impl RunMetrics {
    /// The value of a headline metric.
    pub fn value(&self, metric: MetricName) -> Option<f64> {
        match metric {
            MetricName::BestValAcc1 => self.best_val_acc1,
            MetricName::BestValAcc5 => self.best_val_acc5,
            MetricName::EmaValAcc1 => self.ema_val_acc1,
            MetricName::FinalTrainLoss => self.final_train_loss,
            MetricName::FinalValLoss => self.final_val_loss,
            MetricName::ValMacroF1 => self.macro_f1,
            MetricName::Epochs => Some(self.epochs as f64),
            MetricName::TrainSeconds => self.train_seconds,
        }
    }
}

/// A value printed with a metric's decimals; a dash when absent.
pub fn format_value(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(value) if value.is_finite() => format!("{value:.decimals$}"),
        Some(value) => value.to_string(),
        None => "—".to_owned(),
    }
}

fn format_delta(value: Option<f64>, baseline: Option<f64>, decimals: usize) -> Option<String> {
    let delta = value? - baseline?;
    delta
        .is_finite()
        .then(|| format!("{delta:+.decimals$}"))
        .map(|text| {
            // `-0.00` reads as a change; it is none.
            if text
                .trim_start_matches(['+', '-'])
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                format!("±{}", text.trim_start_matches(['+', '-']))
            } else {
                text
            }
        })
}

/// A table as lines of space-padded columns (two spaces between), trailing blanks trimmed.
pub fn aligned_table(header: &[String], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    std::iter::once(header)
        .chain(rows.iter().map(Vec::as_slice))
        .map(|cells| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
                .collect();
            padded.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// A markdown table (cells' `|` escaped), one line per row.
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|cell| cell.replace('|', "\\|")).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(header);
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One parameter that differs (or, with `--all`, every parameter).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParameterRow {
    /// Dotted path in the resolved spec.
    pub key: String,
    /// Its value in each run, in run order; `None` where the run's spec lacks it.
    pub values: Vec<Option<String>>,
}

/// One metric across runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    /// Machine name.
    pub name: String,
    /// Table label.
    #[serde(skip)]
    pub label: String,
    /// Digits shown.
    #[serde(skip)]
    pub decimals: usize,
    /// Value per run.
    pub values: Vec<Option<f64>>,
}

/// Everything `vilab compare` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Run labels, in argument order.
    pub runs: Vec<String>,
    /// Run folders, in the same order.
    pub folders: Vec<String>,
    /// Index of the baseline run.
    pub baseline: usize,
    /// Parameters that differ (or all of them).
    pub parameters: Vec<ParameterRow>,
    /// Headline metrics.
    pub metrics: Vec<MetricRow>,
    /// Per-class F1 on the validation split, for the classes all runs share.
    pub class_f1: Vec<MetricRow>,
    /// Caveats (different class sets, missing results).
    pub notes: Vec<String>,
}

/// The leaves of a spec as dotted path ⇒ shown value, in document order; lists are leaves.
pub fn flatten_spec(spec: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, item) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, item, out);
                }
            }
            other => out.push((prefix.to_owned(), show_value(other))),
        }
    }
    let mut out = Vec::new();
    walk("", spec, &mut out);
    out
}

/// Compares `runs` against `runs[baseline]`; `all_parameters` keeps parameters that agree.
pub fn compare(runs: &[RunResults], baseline: usize, all_parameters: bool) -> Comparison {
    let flattened: Vec<Vec<(String, String)>> =
        runs.iter().map(|run| flatten_spec(&run.spec)).collect();
    let mut keys: Vec<String> = Vec::new();
    for run in &flattened {
        for (key, _) in run {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    let parameters = keys
        .into_iter()
        .map(|key| ParameterRow {
            values: flattened
                .iter()
                .map(|run| {
                    run.iter()
                        .find(|(candidate, _)| *candidate == key)
                        .map(|(_, value)| value.clone())
                })
                .collect(),
            key,
        })
        .filter(|row| all_parameters || row.values.iter().any(|value| *value != row.values[0]))
        .collect();

    let run_metrics: Vec<RunMetrics> = runs.iter().map(RunResults::metrics).collect();
    let metrics = MetricName::ALL
        .into_iter()
        .map(|metric| MetricRow {
            name: metric.name().to_owned(),
            label: metric.label().to_owned(),
            decimals: metric.decimals(),
            values: run_metrics.iter().map(|run| run.value(metric)).collect(),
        })
        .collect();

    let mut notes = Vec::new();
    let class_sets: Vec<BTreeSet<&str>> = runs
        .iter()
        .map(|run| run.class_f1.iter().map(|(name, _)| name.as_str()).collect())
        .collect();
    let with_report: Vec<usize> = (0..runs.len())
        .filter(|&index| !runs[index].class_f1.is_empty())
        .collect();
    for run in runs {
        if run.class_f1.is_empty() {
            notes.push(format!(
                "{} has no evaluation report; it has no per-class F1",
                run.label
            ));
        }
        if run.history.is_empty() {
            notes.push(format!(
                "{} has no training history (no train stage, or zero epochs)",
                run.label
            ));
        }
    }
    let shared: Vec<String> = match with_report.first() {
        Some(&first) => runs[first]
            .class_f1
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| {
                with_report
                    .iter()
                    .all(|&index| class_sets[index].contains(name.as_str()))
            })
            .collect(),
        None => Vec::new(),
    };
    let all_classes: BTreeSet<&str> = with_report
        .iter()
        .flat_map(|&index| class_sets[index].iter().copied())
        .collect();
    if all_classes.len() > shared.len() {
        let mut left_out = Vec::new();
        for &index in &with_report {
            let only: Vec<&str> = class_sets[index]
                .iter()
                .copied()
                .filter(|name| !shared.iter().any(|shared| shared == name))
                .collect();
            if !only.is_empty() {
                left_out.push(format!("{}: {}", runs[index].label, only.join(", ")));
            }
        }
        notes.push(format!(
            "the runs have different classes; per-class F1 compares the {} shared ones \
             (left out — {})",
            shared.len(),
            left_out.join("; ")
        ));
    }
    let class_f1 = shared
        .iter()
        .map(|class| MetricRow {
            name: class.clone(),
            label: class.clone(),
            decimals: 4,
            values: runs
                .iter()
                .map(|run| {
                    run.class_f1
                        .iter()
                        .find(|(name, _)| name == class)
                        .map(|(_, f1)| *f1)
                })
                .collect(),
        })
        .collect();
    Comparison {
        runs: runs.iter().map(|run| run.label.clone()).collect(),
        folders: runs
            .iter()
            .map(|run| run.dir.display().to_string())
            .collect(),
        baseline,
        parameters,
        metrics,
        class_f1,
        notes,
    }
}

impl Comparison {
    /// A metric cell: the value, and for runs other than the baseline its delta.
    fn metric_cell(&self, row: &MetricRow, run: usize) -> String {
        let value = format_value(row.values[run], row.decimals);
        if run == self.baseline {
            return value;
        }
        match format_delta(row.values[run], row.values[self.baseline], row.decimals) {
            Some(delta) => format!("{value} ({delta})"),
            None => value,
        }
    }

    /// The three tables as (title, header, rows) with cells as text.
    fn tables(&self) -> Vec<(String, Vec<String>, Vec<Vec<String>>)> {
        let mut headers = self.runs.clone();
        headers[self.baseline] = format!("{} (baseline)", headers[self.baseline]);
        let with_first = |first: &str| {
            std::iter::once(first.to_owned())
                .chain(headers.iter().cloned())
                .collect::<Vec<_>>()
        };
        let parameters = self
            .parameters
            .iter()
            .map(|row| {
                std::iter::once(row.key.clone())
                    .chain(
                        row.values
                            .iter()
                            .map(|value| value.clone().unwrap_or_else(|| "—".to_owned())),
                    )
                    .collect()
            })
            .collect();
        let metric_rows = |rows: &[MetricRow]| -> Vec<Vec<String>> {
            rows.iter()
                .map(|row| {
                    std::iter::once(row.label.clone())
                        .chain((0..self.runs.len()).map(|run| self.metric_cell(row, run)))
                        .collect()
                })
                .collect()
        };
        let parameter_title = if self.parameters.is_empty() {
            "Parameters: the specs are identical".to_owned()
        } else {
            "Parameters".to_owned()
        };
        vec![
            (parameter_title, with_first("parameter"), parameters),
            (
                "Metrics (delta against the baseline)".to_owned(),
                with_first("metric"),
                metric_rows(&self.metrics),
            ),
            (
                "Per-class F1 on the validation split".to_owned(),
                with_first("class"),
                metric_rows(&self.class_f1),
            ),
        ]
    }

    /// Plain text with aligned columns, for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        for (title, header, rows) in self.tables() {
            let _ = writeln!(out, "{title}");
            if rows.is_empty() {
                let _ = writeln!(out);
                continue;
            }
            for line in aligned_table(&header, &rows) {
                let _ = writeln!(out, "  {line}");
            }
            let _ = writeln!(out);
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    /// Markdown tables under `##` headings.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for (title, header, rows) in self.tables() {
            let _ = writeln!(out, "## {title}\n");
            if rows.is_empty() {
                continue;
            }
            out.push_str(&markdown_table(&header, &rows));
            let _ = writeln!(out);
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "## Notes\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// One CSV in long form: `table,row,run,value,delta` (delta empty for the baseline).
    pub fn to_csv(&self) -> Result<String, csv::Error> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(["table", "row", "run", "value", "delta"])?;
        for row in &self.parameters {
            for (run, value) in row.values.iter().enumerate() {
                writer.write_record([
                    "parameter",
                    &row.key,
                    &self.runs[run],
                    value.as_deref().unwrap_or(""),
                    "",
                ])?;
            }
        }
        let number = |value: Option<f64>| value.map(|value| value.to_string()).unwrap_or_default();
        for (table, rows) in [("metric", &self.metrics), ("class_f1", &self.class_f1)] {
            for row in rows {
                for (run, value) in row.values.iter().enumerate() {
                    let delta = if run == self.baseline {
                        None
                    } else {
                        value.zip(row.values[self.baseline]).map(|(v, b)| v - b)
                    };
                    writer.write_record([
                        table,
                        &row.name,
                        &self.runs[run],
                        &number(*value),
                        &number(delta),
                    ])?;
                }
            }
        }
        for note in &self.notes {
            writer.write_record(["note", note, "", "", ""])?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|error| csv::Error::from(std::io::Error::other(error.to_string())))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Pretty JSON: runs, parameters by key, metrics and per-class F1 with deltas, notes.
    pub fn to_json(&self) -> String {
        let by_run = |values: &[Option<f64>]| -> BTreeMap<String, Value> {
            self.runs
                .iter()
                .zip(values)
                .map(|(run, value)| {
                    let delta = values[self.baseline]
                        .zip(*value)
                        .map(|(baseline, value)| value - baseline);
                    (
                        run.clone(),
                        serde_json::json!({ "value": value, "delta": delta }),
                    )
                })
                .collect()
        };
        let metric_map = |rows: &[MetricRow]| -> serde_json::Map<String, Value> {
            rows.iter()
                .map(|row| (row.name.clone(), serde_json::json!(by_run(&row.values))))
                .collect()
        };
        let parameters: serde_json::Map<String, Value> = self
            .parameters
            .iter()
            .map(|row| {
                let values: BTreeMap<&String, &Option<String>> =
                    self.runs.iter().zip(&row.values).collect();
                (row.key.clone(), serde_json::json!(values))
            })
            .collect();
        let document = serde_json::json!({
            "runs": self.runs.iter().zip(&self.folders)
                .map(|(label, folder)| serde_json::json!({"label": label, "folder": folder}))
                .collect::<Vec<_>>(),
            "baseline": self.runs[self.baseline],
            "parameters": parameters,
            "metrics": metric_map(&self.metrics),
            "class_f1": metric_map(&self.class_f1),
            "notes": self.notes,
        });
        let mut text = serde_json::to_string_pretty(&document)
            .unwrap_or_else(|error| unreachable!("JSON values always serialise: {error}"));
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(label: &str, spec: Value, classes: &[(&str, f64)], acc: f64) -> RunResults {
        RunResults {
            label: label.to_owned(),
            dir: PathBuf::from(label),
            spec,
            history: vec![HistoryRow {
                epoch: 1,
                lr: 0.001,
                train_loss: 2.0,
                train_acc1: 10.0,
                val_loss: 1.5,
                val_acc1: acc,
                val_acc5: 90.0,
                ema_val_loss: None,
                ema_val_acc1: None,
                ema_val_acc5: None,
                epoch_seconds: 1.0,
                train_images_per_second: 100.0,
            }],
            evaluation: None,
            class_f1: classes
                .iter()
                .map(|(name, f1)| ((*name).to_owned(), *f1))
                .collect(),
        }
    }

    #[test]
    fn only_differing_parameters_and_deltas_against_the_baseline() {
        let a = run(
            "a",
            json!({"seed": 1, "train": {"optimizer": {"lr": 0.001}, "epochs": 1}}),
            &[("cat", 0.5), ("dog", 0.25)],
            40.0,
        );
        let b = run(
            "b",
            json!({"seed": 1, "train": {"optimizer": {"lr": 0.01}, "epochs": 1}}),
            &[("cat", 0.75), ("dog", 0.25)],
            42.5,
        );
        let comparison = compare(&[a.clone(), b.clone()], 0, false);
        assert_eq!(
            comparison.parameters,
            [ParameterRow {
                key: "train.optimizer.lr".into(),
                values: vec![Some("0.001".into()), Some("0.01".into())]
            }]
        );
        assert_eq!(
            compare(&[a.clone(), b.clone()], 0, true).parameters.len(),
            3
        );
        let accuracy = &comparison.metrics[0];
        assert_eq!(comparison.metric_cell(accuracy, 1), "42.50 (+2.50)");
        assert_eq!(
            comparison.metric_cell(&comparison.class_f1[1], 1),
            "0.2500 (±0.0000)"
        );
        let flipped = compare(&[a, b], 1, false);
        assert_eq!(flipped.metric_cell(&flipped.metrics[0], 0), "40.00 (-2.50)");
        assert!(flipped.notes.is_empty(), "{:?}", flipped.notes);
    }

    #[test]
    fn different_class_sets_compare_on_the_shared_ones_with_a_note() {
        let a = run("a", json!({}), &[("cat", 0.5), ("dog", 0.25)], 40.0);
        let b = run("b", json!({}), &[("cat", 0.75), ("eel", 0.1)], 40.0);
        let comparison = compare(&[a, b], 0, false);
        let classes: Vec<&str> = comparison
            .class_f1
            .iter()
            .map(|row| row.name.as_str())
            .collect();
        assert_eq!(classes, ["cat"]);
        assert_eq!(
            comparison.notes,
            [
                "the runs have different classes; per-class F1 compares the 1 shared ones \
              (left out — a: dog; b: eel)"
            ]
        );
    }
}
