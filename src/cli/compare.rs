//! `vilab compare A B [C ...]`: runs side by side — the parameters that differ, the metrics
//! with deltas against a baseline, per-class F1 deltas, and optionally overlaid curves.
//!
//! Each argument is a run folder (`<out>/<name>/<run-id>`, or the `latest` link) or a sweep
//! folder (`<out>/<name>/sweep-<id>`), which stands for its finished trials, labelled by trial
//! id. A run named twice is compared once.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::EXIT_OK;
use super::usage;
use crate::pipeline::layout::{SPEC_FILE, SWEEP_FILE};
use crate::report::compare::page::compare_page;
use crate::report::compare::plots::write_compare_curves;
use crate::report::compare::{RunResults, compare};
use crate::runner::sweep::SweepFile;

/// Output formats of `vilab compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// Markdown tables.
    Md,
    /// One long CSV: table,row,run,value,delta.
    Csv,
    /// One JSON document.
    Json,
}

/// Arguments of `vilab compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run folders or sweep folders (at least two runs in all).
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// List every parameter, not only those that differ.
    #[arg(long)]
    pub all: bool,
    /// The run the deltas are computed against: one of the folders given, or a run's label
    /// (run id or trial id); default: the first.
    #[arg(long, value_name = "RUN")]
    pub baseline: Option<String>,
    /// Output format [default: table on a terminal, md otherwise].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write overlaid curves (val ACC1, train loss, val loss per epoch) to this PNG (SVG when
    /// it ends in .svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Also write the comparison as one self-contained HTML page (tables and curves inline,
    /// each run linked to its report.html).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// A run to read: its folder and its label.
struct Named {
    folder: PathBuf,
    label: String,
}

/// The runs an argument stands for.
fn expand(argument: &Path) -> anyhow::Result<Vec<Named>> {
    let sweep_file = argument.join(SWEEP_FILE);
    if sweep_file.is_file() {
        let bytes = fs_err::read(&sweep_file)?;
        let sweep: SweepFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a sweep file", sweep_file.display()))?;
        let runs: Vec<Named> = sweep
            .finished_runs(argument)
            .into_iter()
            .map(|(folder, label)| Named { folder, label })
            .collect();
        if runs.is_empty() {
            bail!(
                "{}: the sweep has no finished trials yet",
                argument.display()
            );
        }
        return Ok(runs);
    }
    if argument.join(SPEC_FILE).is_file() {
        let canonical = fs_err::canonicalize(argument)?;
        let label = canonical
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| argument.display().to_string());
        return Ok(vec![Named {
            folder: argument.to_path_buf(),
            label,
        }]);
    }
    let what = if argument.is_dir() {
        "not a run folder (no spec.yaml) or a sweep folder (no sweep.json)"
    } else if argument.exists() {
        "not a folder; expected a run folder or a sweep folder"
    } else {
        "no such folder; expected a run folder or a sweep folder"
    };
    Err(usage(format!("{}: {what}", argument.display())))
}

/// Runs the verb; an argument that is no run or sweep folder exits 2, as in predict and export.
pub fn run(args: &CompareArgs) -> anyhow::Result<u8> {
    compare_runs(args)
}

fn compare_runs(args: &CompareArgs) -> anyhow::Result<u8> {
    let mut named: Vec<Named> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut baseline = None;
    for argument in &args.runs {
        let runs = expand(argument)?;
        if let Some(wanted) = &args.baseline
            && Path::new(wanted) == argument
        {
            baseline = Some(named.len());
        }
        for run in runs {
            let canonical = fs_err::canonicalize(&run.folder)?;
            if seen.contains(&canonical) {
                continue;
            }
            seen.push(canonical);
            let mut label = run.label;
            if named.iter().any(|other| other.label == label) {
                label = format!("{label}#{}", named.len() + 1);
            }
            named.push(Named {
                folder: run.folder,
                label,
            });
        }
    }
    if named.len() < 2 {
        bail!(
            "compare needs at least two runs; the arguments name {}",
            named.len()
        );
    }
    if let Some(wanted) = &args.baseline
        && baseline.is_none()
    {
        baseline = named.iter().position(|run| run.label == *wanted);
        if baseline.is_none() {
            let labels: Vec<&str> = named.iter().map(|run| run.label.as_str()).collect();
            bail!(
                "--baseline {wanted}: not one of the runs ({})",
                labels.join(", ")
            );
        }
    }
    let runs = named
        .iter()
        .map(|run| RunResults::read(&run.folder, &run.label))
        .collect::<Result<Vec<_>, _>>()?;
    let comparison = compare(&runs, baseline.unwrap_or(0), args.all);
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Md
    });
    let text = match format {
        Format::Table => comparison.to_table(),
        Format::Md => comparison.to_markdown(),
        Format::Csv => comparison.to_csv()?,
        Format::Json => comparison.to_json(),
    };
    print!("{text}");
    if let Some(path) = &args.plot {
        write_compare_curves(&runs, path)?;
        eprintln!("curves written to {}", path.display());
    }
    if let Some(path) = &args.html {
        let page_dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let page = compare_page(&comparison, &runs, page_dir)?;
        crate::files::write_atomic(path, page.as_bytes())
            .with_context(|| format!("{}: cannot write the page", path.display()))?;
        eprintln!("page written to {}", path.display());
    }
    Ok(EXIT_OK)
}
