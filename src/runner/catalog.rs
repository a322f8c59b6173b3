//! Every run under an output root, one row each (`vilab runs`, `index.html`): like `dvc exp
//! show`, the runs' states, the parameters that vary between them and their main metrics.
//!
//! Everything is read from the folders: a run folder's `run.json` or `pending.json`, its lock
//! (a running folder's process holds `.run.lock`), `live/status.json` while it trains, and its
//! results through [`RunResults`]; a sweep folder's `sweep.json` names its trials' runs, and
//! its trials that have not started yet get rows of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::sweep::{SweepFile, TrialState};
use crate::metrics::MetricName;
use crate::pipeline::layout::{
    INDEX_HTML, LATEST, REPORT_HTML, RunDir, RunState, SUMMARY_HTML, SWEEP_FILE, read_record,
};
use crate::report::compare::{
    RunResults, aligned_table, flatten_spec, format_value, markdown_table,
};
use crate::report::html::{Cell, Page, link};
use crate::spec::sweep::show_value;
use crate::train::live::LiveStatus;

/// The metric columns, in order.
pub const COLUMNS: [MetricName; 5] = [
    MetricName::BestValAcc1,
    MetricName::BestValAcc5,
    MetricName::EmaValAcc1,
    MetricName::FinalValLoss,
    MetricName::TrainSeconds,
];

/// Why the output root could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The output root is missing or unreadable.
    #[error("{}: {message}", path.display())]
    Root {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One row: a run folder, or a sweep's trial that has no run folder yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// The experiment's name.
    pub name: String,
    /// The run folder's name; `None` for a trial not started.
    pub run_id: Option<String>,
    /// The run folder, relative to the output root.
    pub folder: Option<String>,
    /// When its results were made (done: the last stage computation) or when it started
    /// (otherwise), RFC 3339.
    pub when: Option<String>,
    /// `done`, `running`, `failed`, `interrupted` or (a sweep's trial not started) `pending`.
    pub state: String,
    /// Epochs finished.
    pub epoch: u32,
    /// Epochs in the recipe.
    pub epochs: Option<u32>,
    /// The sweep folder's name, for a sweep's trial.
    pub sweep: Option<String>,
    /// The trial id, for a sweep's trial.
    pub trial: Option<String>,
    /// The values of the parameters that vary between the listed runs (dotted paths).
    pub params: BTreeMap<String, String>,
    /// The main metrics (`None` where the run has no such result yet).
    pub metrics: BTreeMap<String, Option<f64>>,
    /// Why it stopped, for a failed or interrupted run.
    pub error: Option<String>,
    /// What a running (or stopped) training last reported.
    pub live: Option<LiveStatus>,
    #[serde(skip)]
    all_params: Vec<(String, String)>,
}

impl RunRow {
    /// `3/10`, and for a training in progress `3/10 (step 12/40 of epoch 4)`.
    pub fn progress(&self) -> String {
        let mut text = match self.epochs {
            Some(epochs) => format!("{}/{epochs}", self.epoch),
            None => self.epoch.to_string(),
        };
        if let Some(live) = &self.live
            && self.state != "done"
            && live.step < live.steps_per_epoch
        {
            let _ = write!(
                text,
                " (step {}/{} of epoch {})",
                live.step, live.steps_per_epoch, live.epoch
            );
        }
        text
    }

    /// The value of a metric column.
    pub fn metric(&self, metric: MetricName) -> Option<f64> {
        self.metrics.get(metric.name()).copied().flatten()
    }
}

/// The runs of an output root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catalog {
    /// The output root.
    pub out: String,
    /// The parameters that vary between the rows, in first-seen order.
    pub varied: Vec<String>,
    /// One row per run folder and per sweep trial not started.
    pub runs: Vec<RunRow>,
    /// Sweep folders, relative to the output root.
    pub sweeps: Vec<String>,
}

impl Catalog {
    /// Reads every run under `out` (only experiment `name` when given), oldest first within
    /// each experiment.
    pub fn read(out: &Path, name: Option<&str>) -> Result<Self, CatalogError> {
        let root_error = |message: String| CatalogError::Root {
            path: out.to_path_buf(),
            message,
        };
        if !out.is_dir() {
            return Err(root_error(
                "no such output root (run an experiment first, or pass --out)".to_owned(),
            ));
        }
        let mut experiments = sorted_folders(out).map_err(|error| root_error(error.to_string()))?;
        experiments.retain(|folder| {
            let folder_name = folder.file_name().map(|n| n.to_string_lossy().into_owned());
            folder_name.as_deref() != Some("cache")
                && name.is_none_or(|wanted| folder_name.as_deref() == Some(wanted))
        });
        if let Some(wanted) = name
            && experiments.is_empty()
        {
            return Err(root_error(format!("has no experiment named `{wanted}`")));
        }
        let mut runs = Vec::new();
        let mut sweeps = Vec::new();
        for experiment in &experiments {
            let Ok(children) = sorted_folders(experiment) else {
                continue;
            };
            let mut here: Vec<RunRow> = children
                .iter()
                .filter(|child| !child.ends_with(LATEST))
                .filter_map(|child| read_run(out, child))
                .collect();
            here.sort_by(|a, b| a.when.cmp(&b.when));
            for sweep_dir in children
                .iter()
                .filter(|child| child.join(SWEEP_FILE).is_file())
            {
                let Some(sweep) = read_sweep(sweep_dir) else {
                    continue;
                };
                let sweep_name = file_name(sweep_dir);
                sweeps.push(relative(out, sweep_dir));
                attach_sweep(&mut here, &sweep, &sweep_name);
            }
            runs.extend(here);
        }
        let varied = varied_parameters(&runs);
        for row in &mut runs {
            row.params = row
                .all_params
                .iter()
                .filter(|(key, _)| varied.contains(key))
                .cloned()
                .collect();
        }
        Ok(Self {
            out: out.display().to_string(),
            varied,
            runs,
            sweeps,
        })
    }

    /// Orders the rows best first by `metric`; rows without a value keep their order at the
    /// end.
    pub fn sort_by(&mut self, metric: MetricName) {
        self.runs
            .sort_by(|a, b| metric.best_first(a.metric(metric), b.metric(metric)));
    }

    /// Header and cells as text, shared by the table, markdown and HTML forms.
    fn grid(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header: Vec<String> = ["experiment", "run", "when", "state", "epoch", "sweep"]
            .map(str::to_owned)
            .to_vec();
        header.extend(self.varied.iter().cloned());
        header.extend(COLUMNS.iter().map(|metric| metric.label().to_owned()));
        let rows = self
            .runs
            .iter()
            .map(|row| {
                let mut cells = vec![
                    row.name.clone(),
                    row.run_id.clone().unwrap_or_else(|| "—".to_owned()),
                    row.when.as_deref().map(short_time).unwrap_or_default(),
                    row.state.clone(),
                    row.progress(),
                    match (&row.sweep, &row.trial) {
                        (Some(sweep), Some(trial)) => format!("{sweep} {trial}"),
                        _ => String::new(),
                    },
                ];
                cells.extend(
                    self.varied
                        .iter()
                        .map(|key| row.params.get(key).cloned().unwrap_or_else(|| "—".into())),
                );
                cells.extend(
                    COLUMNS
                        .iter()
                        .map(|metric| format_value(row.metric(*metric), metric.decimals())),
                );
                cells
            })
            .collect();
        (header, rows)
    }

    /// Aligned columns for a terminal.
    pub fn to_table(&self) -> String {
        if self.runs.is_empty() {
            return format!("no runs under {}\n", self.out);
        }
        let (header, rows) = self.grid();
        let mut out = String::new();
        for line in aligned_table(&header, &rows) {
            let _ = writeln!(out, "{line}");
        }
        for row in self.runs.iter().filter(|row| row.error.is_some()) {
            let _ = writeln!(
                out,
                "{} {}: {}",
                row.run_id
                    .as_deref()
                    .or(row.trial.as_deref())
                    .unwrap_or("—"),
                row.state,
                row.error.as_deref().unwrap_or_default()
            );
        }
        out
    }

    /// A markdown table.
    pub fn to_markdown(&self) -> String {
        let (header, rows) = self.grid();
        markdown_table(&header, &rows)
    }

    /// One CSV row per run, with machine names and full-precision values.
    pub fn to_csv(&self) -> Result<String, csv::Error> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let mut header: Vec<String> = [
            "name", "run_id", "folder", "when", "state", "epoch", "epochs", "sweep", "trial",
        ]
        .map(str::to_owned)
        .to_vec();
        header.extend(self.varied.iter().cloned());
        header.extend(COLUMNS.iter().map(|metric| metric.name().to_owned()));
        header.push("error".to_owned());
        writer.write_record(&header)?;
        for row in &self.runs {
            let mut record = vec![
                row.name.clone(),
                row.run_id.clone().unwrap_or_default(),
                row.folder.clone().unwrap_or_default(),
                row.when.clone().unwrap_or_default(),
                row.state.clone(),
                row.epoch.to_string(),
                row.epochs
                    .map(|epochs| epochs.to_string())
                    .unwrap_or_default(),
                row.sweep.clone().unwrap_or_default(),
                row.trial.clone().unwrap_or_default(),
            ];
            record.extend(
                self.varied
                    .iter()
                    .map(|key| row.params.get(key).cloned().unwrap_or_default()),
            );
            record.extend(COLUMNS.iter().map(|metric| {
                row.metric(*metric)
                    .map(|value| value.to_string())
                    .unwrap_or_default()
            }));
            record.push(row.error.clone().unwrap_or_default());
            writer.write_record(&record)?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|error| csv::Error::from(std::io::Error::other(error.to_string())))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Pretty JSON: `{out, varied, runs: [...], sweeps}`.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self)
            .unwrap_or_else(|error| unreachable!("the catalog always serialises: {error}"));
        text.push('\n');
        text
    }

    /// `index.html` of the output root: the table with every run linked to its
    /// `report.html`, and the sweeps linked to their `summary.html`.
    pub fn index_page(&self) -> String {
        let mut page = Page::new("vilab runs");
        page.section("runs", &format!("Runs ({})", self.runs.len()));
        let (header, rows) = self.grid();
        let cells: Vec<Vec<Cell>> = rows
            .into_iter()
            .zip(&self.runs)
            .map(|(texts, row)| {
                texts
                    .into_iter()
                    .enumerate()
                    .map(|(column, text)| match (column, &row.folder) {
                        (1, Some(folder)) => Cell::link(&text, &format!("{folder}/{REPORT_HTML}")),
                        (3, _) => Cell::html(format!(
                            "<span class=\"state-{state}\">{state}</span>",
                            state = crate::report::html::escape(&text)
                        )),
                        _ => Cell::text(&text),
                    })
                    .collect()
            })
            .collect();
        if cells.is_empty() {
            page.note("No runs yet.");
        } else {
            page.cells(&header, &cells);
        }
        let failures: Vec<&RunRow> = self.runs.iter().filter(|row| row.error.is_some()).collect();
        if !failures.is_empty() {
            page.subsection("Stopped runs");
            let mut list = String::from("<ul>");
            for row in failures {
                let _ = write!(
                    list,
                    "<li><b>{}</b> {}: {}</li>",
                    crate::report::html::escape(
                        row.run_id
                            .as_deref()
                            .or(row.trial.as_deref())
                            .unwrap_or("—")
                    ),
                    crate::report::html::escape(&row.state),
                    crate::report::html::escape(row.error.as_deref().unwrap_or_default())
                );
            }
            list.push_str("</ul>");
            page.raw(&list);
        }
        if !self.sweeps.is_empty() {
            page.section("sweeps", "Sweeps");
            let mut list = String::from("<ul>");
            for sweep in &self.sweeps {
                let _ = write!(
                    list,
                    "<li>{}</li>",
                    link(sweep, &format!("{sweep}/{SUMMARY_HTML}"))
                );
            }
            list.push_str("</ul>");
            page.raw(&list);
        }
        let subtitle = format!(
            "{} runs under {}, written {}",
            self.runs.len(),
            self.out,
            crate::files::now_rfc3339()
        );
        let navigation: &[(&str, &str)] = if self.sweeps.is_empty() {
            &[("runs", "Runs")]
        } else {
            &[("runs", "Runs"), ("sweeps", "Sweeps")]
        };
        page.finish(&subtitle, navigation)
    }

    /// Writes `index.html` into the output root, and `report.html` into every run folder that
    /// has none yet (folders made before vilab wrote them); returns the index's path.
    pub fn write_index(&self, out: &Path) -> std::io::Result<PathBuf> {
        for row in &self.runs {
            let Some(folder) = &row.folder else { continue };
            let run = RunDir::new(&out.join(folder));
            if !run.report_html().is_file()
                && let Err(error) = crate::report::run_page::write_run_page(&run)
            {
                tracing::warn!("{error}");
            }
        }
        let path = out.join(INDEX_HTML);
        crate::files::write_atomic(&path, self.index_page().as_bytes())?;
        Ok(path)
    }
}

/// The sub-folders of `dir` (not links), by name.
fn sorted_folders(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut folders: Vec<PathBuf> = fs_err::read_dir(dir)?
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect();
    folders.sort();
    Ok(folders)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn relative(out: &Path, path: &Path) -> String {
    path.strip_prefix(out)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// `2026-12-02T12:41:08Z` → `2026-12-02 12:41`.
fn short_time(rfc3339: &str) -> String {
    rfc3339
        .get(..16)
        .map(|head| head.replacen('T', " ", 1))
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// The row of a run folder, or `None` when `dir` is no run folder.
fn read_run(out: &Path, dir: &Path) -> Option<RunRow> {
    let folder = RunDir::new(dir);
    let state = folder.state()?;
    let record = read_record(dir);
    let pending = folder.read_pending();
    let results = RunResults::read(dir, &file_name(dir)).ok();
    let live = folder.read_live_status();
    let spec = results.as_ref().map(|results| &results.spec);
    let epochs = spec
        .and_then(|spec| spec.pointer("/train/epochs"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|epochs| u32::try_from(epochs).ok());
    let finished_epochs = results
        .as_ref()
        .map_or(0, |results| results.history.len() as u32);
    let live_epochs = live.as_ref().map_or(0, |live| {
        if live.step >= live.steps_per_epoch {
            live.epoch
        } else {
            live.epoch.saturating_sub(1)
        }
    });
    let epoch = if state == RunState::Done {
        finished_epochs
    } else {
        live_epochs.max(finished_epochs)
    };
    let mut metrics: BTreeMap<String, Option<f64>> = COLUMNS
        .iter()
        .map(|metric| {
            (
                metric.name().to_owned(),
                results
                    .as_ref()
                    .and_then(|results| results.metrics().value(*metric)),
            )
        })
        .collect();
    if state != RunState::Done
        && let Some(best) = live.as_ref().and_then(|live| live.best_val_acc1)
    {
        metrics.insert(MetricName::BestValAcc1.name().to_owned(), Some(best));
    }
    // A finished run is dated by when its results were made: a re-run that reused every
    // stage does not make it newer.
    let when = match (&record, &pending) {
        (_, Some(pending)) => Some(pending.started_at.clone()),
        (Some(record), None) => record
            .stages
            .iter()
            .filter_map(|stage| stage.computed.as_ref())
            .map(|computed| computed.finished_at.clone())
            .max()
            .or_else(|| Some(record.finished_at.clone())),
        (None, None) => None,
    };
    let error = pending
        .as_ref()
        .and_then(|pending| pending.failure.as_ref())
        .filter(|_| state != RunState::Running)
        .map(|failure| format!("{}: {}", failure.stage.name(), failure.error));
    let error = match (state, error) {
        (RunState::Interrupted, None) => {
            Some("the process stopped without a word (killed?); `vilab run` resumes".to_owned())
        }
        (_, error) => error,
    };
    Some(RunRow {
        name: record
            .as_ref()
            .map(|record| record.name.clone())
            .unwrap_or_else(|| dir.parent().map(file_name).unwrap_or_default()),
        run_id: Some(file_name(dir)),
        folder: Some(relative(out, dir)),
        when,
        state: state.as_str().to_owned(),
        epoch,
        epochs,
        sweep: None,
        trial: None,
        params: BTreeMap::new(),
        metrics,
        error,
        live: live.filter(|_| state != RunState::Done),
        all_params: spec
            .map(flatten_spec)
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| key != "name" && !key.starts_with("sweep."))
            .collect(),
    })
}

fn read_sweep(dir: &Path) -> Option<SweepFile> {
    let bytes = std::fs::read(dir.join(SWEEP_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Marks the sweep's trials among `rows`: by the run folder `sweep.json` links (done trials),
/// else by an unfinished run folder whose spec holds every one of the trial's overrides; a
/// trial with neither gets a row of its own.
fn attach_sweep(rows: &mut Vec<RunRow>, sweep: &SweepFile, sweep_name: &str) {
    for trial in &sweep.trials {
        let linked = trial
            .run
            .as_deref()
            .map(|run| run.trim_start_matches("../").to_owned());
        let matches_overrides = |row: &RunRow| {
            row.state != "done"
                && row.sweep.is_none()
                && trial.status.overrides.iter().all(|(path, value)| {
                    row.all_params
                        .iter()
                        .any(|(key, shown)| key == path && *shown == show_value(value))
                })
        };
        let position = match &linked {
            Some(run) => rows
                .iter()
                .position(|row| row.run_id.as_deref() == Some(run.as_str())),
            None if trial.status.state != TrialState::Pending => {
                rows.iter().position(matches_overrides)
            }
            None => None,
        };
        match position {
            Some(index) => {
                rows[index].sweep = Some(sweep_name.to_owned());
                rows[index].trial = Some(trial.status.id.clone());
            }
            None => rows.push(RunRow {
                name: sweep.name.clone(),
                run_id: None,
                folder: None,
                when: None,
                state: trial.status.state.as_str().to_owned(),
                epoch: 0,
                epochs: None,
                sweep: Some(sweep_name.to_owned()),
                trial: Some(trial.status.id.clone()),
                params: BTreeMap::new(),
                metrics: COLUMNS
                    .iter()
                    .map(|metric| (metric.name().to_owned(), None))
                    .collect(),
                error: trial.status.error.clone(),
                live: None,
                all_params: trial
                    .status
                    .overrides
                    .iter()
                    .map(|(path, value)| (path.clone(), show_value(value)))
                    .collect(),
            }),
        }
    }
}

/// The parameters whose values are not the same in every row, in first-seen order. A
/// not-started trial only knows its overrides, so it counts only for those.
fn varied_parameters(rows: &[RunRow]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for row in rows {
        for (key, _) in &row.all_params {
            if seen.insert(key.clone()) {
                order.push(key.clone());
            }
        }
    }
    order
        .into_iter()
        .filter(|key| {
            let mut values: BTreeSet<Option<&String>> = BTreeSet::new();
            for row in rows {
                let value = row
                    .all_params
                    .iter()
                    .find(|(candidate, _)| candidate == key)
                    .map(|(_, value)| value);
                if value.is_some() || row.run_id.is_some() {
                    values.insert(value);
                }
            }
            values.len() > 1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shortened_to_the_minute() {
        assert_eq!(short_time("2026-12-02T12:41:08Z"), "2026-12-02 12:41");
        assert_eq!(short_time("soon"), "soon");
    }

    #[test]
    fn a_missing_root_or_experiment_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = Catalog::read(&missing, None).unwrap_err().to_string();
        assert!(error.contains("no such output root"), "{error}");
        let error = Catalog::read(dir.path(), Some("exp"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no experiment named `exp`"), "{error}");
        let empty = Catalog::read(dir.path(), None).unwrap();
        assert!(empty.runs.is_empty());
        assert!(empty.to_table().starts_with("no runs under"));
    }
}
