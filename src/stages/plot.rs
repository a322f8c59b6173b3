//! The `plot` stage: training curves from the train stage's `history.csv` — `loss`, `acc`
//! (train on un-mixed labels, val, EMA val) and `lr` — in each of `plot.formats`, at
//! `plot.width`×`plot.height`, rendered with a bundled font so a bare machine draws the same.

use std::path::Path;

use super::{StageContext, StageError};
use crate::metrics::{HISTORY_FILE, read_history};
use crate::pipeline::StageKind;
use crate::report::{ImageFormat, write_curves};
use crate::spec::types::PlotFormat;

/// Runs the stage.
pub fn run(context: &StageContext<'_>, out: &Path) -> Result<String, StageError> {
    let plot = &context.spec.spec.plot;
    let history = read_history(&context.upstream(StageKind::Train)?.join(HISTORY_FILE))
        .map_err(|error| StageError::Invalid(error.to_string()))?;
    if history.is_empty() {
        // `train.epochs: 0` evaluates untrained weights; there is no curve to draw.
        return Ok("no epochs trained, nothing to plot".into());
    }
    let formats: Vec<ImageFormat> = plot
        .formats
        .iter()
        .map(|format| match format {
            PlotFormat::Png => ImageFormat::Png,
            PlotFormat::Svg => ImageFormat::Svg,
        })
        .collect();
    let written = write_curves(&history, out, &formats, plot.width, plot.height)
        .map_err(|error| StageError::Invalid(error.to_string()))?;
    Ok(format!(
        "{} file(s) over {} epoch(s)",
        written.len(),
        history.len()
    ))
}
