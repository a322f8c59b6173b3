//! `vilab runs [NAME]`: every run under the output root, one row each — state (done, running,
//! failed, interrupted, with the epoch reached), the parameters that vary between the runs and
//! the main metrics — like `dvc exp show`; `--html` also writes `index.html` there.

use std::path::PathBuf;

use clap::Args;

use super::compare::Format;
use super::{EXIT_OK, usage};
use crate::metrics::MetricName;
use crate::runner::catalog::Catalog;

/// Arguments of `vilab runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only the runs of this experiment (its `name`).
    pub name: Option<String>,
    /// Output root holding the run folders.
    #[arg(long, value_name = "DIR", default_value = "outputs", env = "VILAB_OUT")]
    pub out: PathBuf,
    /// Order best first by this metric (e.g. acc1, val_loss, ema_val_acc1); default: by
    /// experiment, oldest first.
    #[arg(long, value_name = "METRIC")]
    pub sort: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Also write `index.html` into the output root: the table, every run linked to its
    /// `report.html`, every sweep to its `summary.html`.
    #[arg(long)]
    pub html: bool,
}

/// Runs the verb.
pub fn run(args: &RunsArgs) -> anyhow::Result<u8> {
    let metric = match &args.sort {
        Some(name) => Some(MetricName::parse(name).ok_or_else(|| {
            usage(format!(
                "--sort {name}: not a metric; one of {}",
                MetricName::accepted_names().join(", ")
            ))
        })?),
        None => None,
    };
    let mut catalog = Catalog::read(&args.out, args.name.as_deref()).map_err(|error| {
        // A missing output root or experiment is a mistake in the arguments.
        usage(error.to_string())
    })?;
    if let Some(metric) = metric {
        catalog.sort_by(metric);
    }
    let text = match args.format {
        Format::Table => catalog.to_table(),
        Format::Md => catalog.to_markdown(),
        Format::Csv => catalog.to_csv()?,
        Format::Json => catalog.to_json(),
    };
    print!("{text}");
    if args.html {
        let path = catalog.write_index(&args.out)?;
        eprintln!("index written to {}", path.display());
    }
    Ok(EXIT_OK)
}
