//! A sweep's summary: `summary.csv` and `summary.md` (one row per trial: its overrides, best
//! validation ACC1/ACC5, EMA ACC1, final loss, epochs, wall time; best first by
//! `evaluate.metric`) and `summary.png` (the metric against each varied parameter).
//!
//! Rows are read from the trials' run folders, so the summary always reflects what is on disk;
//! trials without results (failed, pending, running) follow the finished ones in sweep order.

use std::fmt::Write as _;

use super::sweep::{Sweep, SweepError, SweepFile, SweepTrial, TrialState};
use crate::metrics::MetricName;
use crate::pipeline::layout::{REPORT_HTML, SUMMARY_CSV, SUMMARY_HTML, SUMMARY_MD, SUMMARY_PLOT};
use crate::report::compare::page::compare_sections;
use crate::report::compare::plots::{ParameterPoints, summary_plot_svg, write_summary_plot};
use crate::report::compare::{RunMetrics, RunResults, compare, format_value};
use crate::report::html::{Page, markdown};
use crate::spec::sweep::show_value;

/// The metric columns, in order.
const COLUMNS: [MetricName; 5] = [
    MetricName::BestValAcc1,
    MetricName::BestValAcc5,
    MetricName::EmaValAcc1,
    MetricName::FinalTrainLoss,
    MetricName::Epochs,
];

/// A column's heading in `summary.md` (shorter than the comparison table's label).
fn heading(metric: MetricName) -> &'static str {
    match metric {
        MetricName::FinalTrainLoss => "final loss",
        other => other.label(),
    }
}

/// One trial's row.
struct Row<'a> {
    trial: &'a SweepTrial,
    metrics: Option<RunMetrics>,
}

impl Row<'_> {
    /// The trial's id, its state and its value of each varied path.
    fn leading_cells(&self, varied: &[String]) -> Vec<String> {
        let status = &self.trial.status;
        let mut cells = vec![status.id.clone(), status.state.as_str().to_owned()];
        cells.extend(varied.iter().map(|path| {
            status
                .overrides
                .get(path)
                .map(show_value)
                .unwrap_or_default()
        }));
        cells
    }
}

/// The ranking metric and a note when `evaluate.metric` names none vilab knows.
fn ranking(sweep_file: &SweepFile) -> (MetricName, Option<String>) {
    match MetricName::parse(&sweep_file.metric) {
        Some(metric) => (metric, None),
        None => (
            MetricName::BestValAcc1,
            Some(format!(
                "evaluate.metric `{}` is not a metric the summary knows; sorted by best val ACC1",
                sweep_file.metric
            )),
        ),
    }
}

/// Writes `summary.csv`, `summary.md` and (with at least one finished trial) `summary.png`.
pub fn write_summary(sweep: &Sweep, sweep_file: &SweepFile) -> Result<(), SweepError> {
    let mut rows: Vec<Row<'_>> = sweep_file
        .trials
        .iter()
        .map(|trial| Row {
            trial,
            metrics: trial
                .run
                .as_ref()
                .filter(|_| trial.status.state == TrialState::Done)
                .and_then(|run| RunResults::read(&sweep.dir.join(run), &trial.status.id).ok())
                .map(|results| results.metrics()),
        })
        .collect();
    let (metric, note) = ranking(sweep_file);
    let key = |row: &Row<'_>| {
        row.metrics
            .as_ref()
            .and_then(|metrics| metrics.value(metric))
            .filter(|value| value.is_finite())
    };
    // Stable: trials without a value keep their sweep order at the end.
    rows.sort_by(|a, b| metric.best_first(key(a), key(b)));
    let varied = &sweep_file.varied;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let csv_error = |error: csv::Error| {
        std::io::Error::other(format!(
            "{}: {error}",
            sweep.dir.join(SUMMARY_CSV).display()
        ))
    };
    let mut header = vec!["rank", "trial", "state"];
    header.extend(varied.iter().map(String::as_str));
    header.extend(COLUMNS.iter().map(|column| column.name()));
    header.extend(["seconds", "run", "error"]);
    writer.write_record(&header).map_err(csv_error)?;
    for (rank, row) in rows.iter().enumerate() {
        let mut record = vec![(rank + 1).to_string()];
        record.extend(row.leading_cells(varied));
        for column in COLUMNS {
            record.push(
                row.metrics
                    .as_ref()
                    .and_then(|metrics| metrics.value(column))
                    .map(|value| value.to_string())
                    .unwrap_or_default(),
            );
        }
        record.push(
            row.trial
                .seconds
                .map(|s| format!("{s:.1}"))
                .unwrap_or_default(),
        );
        record.push(row.trial.run.clone().unwrap_or_default());
        record.push(row.trial.status.error.clone().unwrap_or_default());
        writer.write_record(&record).map_err(csv_error)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    crate::files::write_atomic(&sweep.dir.join(SUMMARY_CSV), &bytes)?;

    let counts = &sweep_file.counts;
    let mut markdown = format!(
        "# Sweep {} of {}\n\n{} trials: {} done, {} failed, {} running, {} pending. \
         Sorted by {} ({} first).\n\n",
        sweep_file.sweep_id,
        sweep_file.name,
        sweep_file.trials.len(),
        counts.get("done").copied().unwrap_or(0),
        counts.get("failed").copied().unwrap_or(0),
        counts.get("running").copied().unwrap_or(0),
        counts.get("pending").copied().unwrap_or(0),
        metric.label(),
        if metric.higher_is_better() {
            "highest"
        } else {
            "lowest"
        },
    );
    if let Some(note) = &note {
        let _ = writeln!(markdown, "Note: {note}.\n");
    }
    let mut headings = vec!["trial".to_owned(), "state".to_owned()];
    headings.extend(varied.iter().map(|path| format!("`{path}`")));
    headings.extend(COLUMNS.iter().map(|column| heading(*column).to_owned()));
    headings.extend(["wall time".to_owned(), "run".to_owned()]);
    let _ = writeln!(markdown, "| {} |", headings.join(" | "));
    let _ = writeln!(markdown, "|{}", "---|".repeat(headings.len()));
    for row in &rows {
        let mut cells = row.leading_cells(varied);
        for column in COLUMNS {
            cells.push(match &row.metrics {
                Some(metrics) => format_value(metrics.value(column), column.decimals()),
                None => String::new(),
            });
        }
        cells.push(
            row.trial
                .seconds
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_default(),
        );
        cells.push(
            row.trial
                .run
                .as_ref()
                .map(|run| format!("[{}]({run})", run.trim_start_matches("../")))
                .unwrap_or_default(),
        );
        let cells: Vec<String> = cells.iter().map(|cell| cell.replace('|', "\\|")).collect();
        let _ = writeln!(markdown, "| {} |", cells.join(" | "));
    }
    let failed: Vec<&Row<'_>> = rows
        .iter()
        .filter(|row| row.trial.status.state == TrialState::Failed)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(markdown, "\n## Failed trials\n");
        for row in failed {
            let _ = writeln!(
                markdown,
                "- `{}` ({}): {} — log: [trials/{}.log](trials/{}.log)",
                row.trial.status.id,
                crate::spec::sweep::describe_overrides(&row.trial.status.overrides),
                row.trial
                    .status
                    .error
                    .as_deref()
                    .unwrap_or("no error recorded"),
                row.trial.status.id,
                row.trial.status.id
            );
        }
    }

    let parameters: Vec<ParameterPoints> = varied
        .iter()
        .map(|path| ParameterPoints {
            path: path.clone(),
            points: rows
                .iter()
                .filter_map(|row| Some((row.trial.status.overrides.get(path)?.clone(), key(row)?)))
                .collect(),
        })
        .collect();
    let plotted = parameters
        .iter()
        .any(|parameter| !parameter.points.is_empty());
    let table_markdown = markdown.clone();
    if plotted {
        write_summary_plot(&parameters, metric.label(), &sweep.dir.join(SUMMARY_PLOT))?;
        let _ = writeln!(
            markdown,
            "\n![{} against each varied parameter](summary.png)",
            metric.label()
        );
    }
    crate::files::write_atomic(&sweep.dir.join(SUMMARY_MD), markdown.as_bytes())?;
    let plot = if plotted {
        Some(summary_plot_svg(
            &parameters,
            metric.label(),
            &sweep.dir.join(SUMMARY_HTML),
        )?)
    } else {
        None
    };
    let page = summary_page(sweep, sweep_file, &table_markdown, plot.as_deref(), metric)?;
    crate::files::write_atomic(&sweep.dir.join(SUMMARY_HTML), page.as_bytes())?;
    Ok(())
}

/// `summary.html`: the summary table (each finished trial linked to its run's page), the
/// metric against each varied parameter, and the finished trials compared side by side.
fn summary_page(
    sweep: &Sweep,
    sweep_file: &SweepFile,
    table_markdown: &str,
    plot: Option<&str>,
    metric: MetricName,
) -> Result<String, SweepError> {
    let mut page = Page::new(&format!(
        "Sweep {} of {}",
        sweep_file.sweep_id, sweep_file.name
    ));
    // The markdown's own `#` title is the page's heading already.
    let mut body: String = table_markdown
        .lines()
        .skip_while(|line| line.starts_with("# ") || line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    for trial in &sweep_file.trials {
        if let Some(run) = &trial.run {
            body = body.replace(&format!("]({run})"), &format!("]({run}/{REPORT_HTML})"));
        }
    }
    page.section("trials", "Trials");
    page.raw(&markdown(&body));
    if let Some(svg) = plot {
        page.section("parameters", "Metric against each varied parameter");
        page.svg_figure(svg, &format!("{} of every finished trial", metric.label()));
    }
    let finished: Vec<RunResults> = sweep_file
        .finished_runs(&sweep.dir)
        .into_iter()
        .filter_map(|(folder, label)| RunResults::read(&folder, &label).ok())
        .collect();
    if finished.len() >= 2 {
        let comparison = compare(&finished, 0, false);
        page.raw(&compare_sections(&comparison, &finished, &sweep.dir)?);
    }
    Ok(page.finish(
        &format!(
            "{} trials, written {}",
            sweep_file.trials.len(),
            sweep_file.updated_at
        ),
        &[
            ("trials", "Trials"),
            ("parameters", "Parameters"),
            ("curves", "Curves"),
        ],
    ))
}
