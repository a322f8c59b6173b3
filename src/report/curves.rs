//! The per-epoch training history (`history.csv`) and the three plots drawn from it.
//!
//! `loss` shows train, val and EMA val loss; `acc` shows train ACC1, val ACC1, EMA val ACC1 and
//! val ACC5; `lr` shows the learning rate the optimizer used in each epoch. Every point carries
//! a marker while there are few epochs, so a one-epoch run still shows its values; past that
//! the markers would hide the lines and are dropped.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::figure::{Figure, TickedAxis, decimals_for, render_svg, write_figure};
use super::font::FAMILY;
use super::{ImageFormat, ReportError};
use crate::metrics::HistoryRow;

/// The smallest plot that still leaves room for the axes, labels and legend.
pub const MIN_PLOT_SIZE: (u32, u32) = (320, 240);

/// Up to this many epochs every point is marked; more would blur the lines.
const MARKED_EPOCHS_MAX: usize = 60;

const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOR: RGBColor = RGBColor(255, 127, 14);
const EMA_COLOR: RGBColor = RGBColor(44, 160, 44);
const TOP5_COLOR: RGBColor = RGBColor(148, 103, 189);
const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);

/// Writes `loss`, `acc` and `lr` plots into `out_dir`, once per format, at `width`×`height`
/// pixels, and returns the written paths in that order (each plot in every format before the
/// next plot).
pub fn write_curves(
    history: &[HistoryRow],
    out_dir: &Path,
    formats: &[ImageFormat],
    width: u32,
    height: u32,
) -> Result<Vec<PathBuf>, ReportError> {
    let (min_width, min_height) = MIN_PLOT_SIZE;
    if width < min_width || height < min_height {
        return Err(ReportError::ImageTooSmall {
            path: out_dir.to_path_buf(),
            width,
            height,
            min_width,
            min_height,
        });
    }
    if history.is_empty() {
        return Err(ReportError::EmptyHistory {
            path: out_dir.to_path_buf(),
        });
    }
    let charts = [
        ("loss", loss_chart(history)),
        ("acc", accuracy_chart(history)),
        ("lr", learning_rate_chart(history)),
    ];
    let mut written = Vec::with_capacity(charts.len() * formats.len());
    for (stem, chart) in &charts {
        for &format in formats {
            let path = out_dir.join(format!("{stem}.{}", format.extension()));
            write_figure(chart, &path, format, (width, height))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The `loss`, `acc` and `lr` plots as SVG documents at `width`×`height`, for pages that
/// inline them (`report.html`); `origin` is only named in errors.
pub fn curves_svg(
    history: &[HistoryRow],
    origin: &Path,
    (width, height): (u32, u32),
) -> Result<Vec<(&'static str, String)>, ReportError> {
    if history.is_empty() {
        return Err(ReportError::EmptyHistory {
            path: origin.to_path_buf(),
        });
    }
    [
        ("loss", loss_chart(history)),
        ("acc", accuracy_chart(history)),
        ("lr", learning_rate_chart(history)),
    ]
    .into_iter()
    .map(|(stem, chart)| Ok((stem, render_svg(&chart, origin, (width, height))?)))
    .collect()
}

/// How the value axis is bounded and labelled.
#[derive(Clone, Copy)]
enum ValueAxis {
    Loss,
    AccuracyPercent,
    LearningRate,
}

struct Series {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

impl Series {
    /// Keeps only finite values: a diverged epoch (NaN loss) must not break the whole plot.
    fn new(
        label: &'static str,
        color: RGBColor,
        history: &[HistoryRow],
        value: impl Fn(&HistoryRow) -> Option<f64>,
    ) -> Self {
        let points = history
            .iter()
            .filter_map(|row| value(row).map(|value| (f64::from(row.epoch), value)))
            .filter(|(_, value)| value.is_finite())
            .collect();
        Self {
            label,
            color,
            points,
        }
    }
}

struct LineChart {
    title: &'static str,
    value_description: &'static str,
    axis: ValueAxis,
    legend: Option<SeriesLabelPosition>,
    epochs: (f64, f64),
    series: Vec<Series>,
}

fn epoch_bounds(history: &[HistoryRow]) -> (f64, f64) {
    let epochs = history.iter().map(|row| f64::from(row.epoch));
    let first = epochs.clone().fold(f64::INFINITY, f64::min);
    let last = epochs.fold(f64::NEG_INFINITY, f64::max);
    (first, last)
}

/// EMA series exist only when EMA was on; an all-empty series would still add a legend entry.
fn push_if_present(series: &mut Vec<Series>, candidate: Series) {
    if !candidate.points.is_empty() {
        series.push(candidate);
    }
}

fn loss_chart(history: &[HistoryRow]) -> LineChart {
    let mut series = vec![
        Series::new("train", TRAIN_COLOR, history, |row| Some(row.train_loss)),
        Series::new("val", VAL_COLOR, history, |row| Some(row.val_loss)),
    ];
    push_if_present(
        &mut series,
        Series::new("EMA val", EMA_COLOR, history, |row| row.ema_val_loss),
    );
    LineChart {
        title: "Loss per epoch",
        value_description: "loss",
        axis: ValueAxis::Loss,
        legend: Some(SeriesLabelPosition::UpperRight),
        epochs: epoch_bounds(history),
        series,
    }
}

fn accuracy_chart(history: &[HistoryRow]) -> LineChart {
    let mut series = vec![
        Series::new("train (on un-mixed labels)", TRAIN_COLOR, history, |row| {
            Some(row.train_acc1)
        }),
        Series::new("val ACC1", VAL_COLOR, history, |row| Some(row.val_acc1)),
    ];
    push_if_present(
        &mut series,
        Series::new("EMA val ACC1", EMA_COLOR, history, |row| row.ema_val_acc1),
    );
    series.push(Series::new("val ACC5", TOP5_COLOR, history, |row| {
        Some(row.val_acc5)
    }));
    LineChart {
        title: "Accuracy per epoch",
        value_description: "accuracy %",
        axis: ValueAxis::AccuracyPercent,
        legend: Some(SeriesLabelPosition::LowerRight),
        epochs: epoch_bounds(history),
        series,
    }
}

fn learning_rate_chart(history: &[HistoryRow]) -> LineChart {
    LineChart {
        title: "Learning rate per epoch",
        value_description: "learning rate",
        axis: ValueAxis::LearningRate,
        legend: None,
        epochs: epoch_bounds(history),
        series: vec![Series::new("learning rate", TRAIN_COLOR, history, |row| {
            Some(row.lr)
        })],
    }
}

impl LineChart {
    /// The value range with a margin, never below zero for the non-negative quantities plotted
    /// here, and capped at 100 for accuracies.
    fn value_range(&self) -> Range<f64> {
        let values = self
            .series
            .iter()
            .flat_map(|series| series.points.iter().map(|(_, value)| *value));
        let low = values.clone().fold(f64::INFINITY, f64::min);
        let high = values.fold(f64::NEG_INFINITY, f64::max);
        if !low.is_finite() {
            return 0.0..1.0;
        }
        let span = high - low;
        let magnitude = low.abs().max(high.abs());
        // Values that (nearly) coincide, as in a one-epoch run, would give a range too narrow to
        // label; widen it around them instead.
        let margin = if span > magnitude * 1e-3 {
            span * 0.06
        } else if magnitude > 0.0 {
            magnitude * 0.1
        } else {
            1.0
        };
        let mut bottom = low - margin;
        let mut top = high + margin;
        if low >= 0.0 {
            bottom = bottom.max(0.0);
        }
        if matches!(self.axis, ValueAxis::AccuracyPercent) && high <= 100.0 {
            top = top.min(100.0);
        }
        bottom..top
    }

    /// Epochs padded so markers at the ends are not cut in half; one epoch gets a unit either side.
    fn epoch_range(&self) -> Range<f64> {
        let (first, last) = self.epochs;
        if last > first {
            let margin = (last - first) * 0.02;
            (first - margin)..(last + margin)
        } else {
            (first - 1.0)..(last + 1.0)
        }
    }
}

/// Whole epochs to label: multiples of 1, 2 or 5 × 10ⁿ, at most ten of them, within the run.
fn epoch_ticks(first: f64, last: f64) -> Vec<f64> {
    let span = (last - first).max(0.0);
    let mut step = 1.0;
    for factor in [2.0, 2.5, 2.0].into_iter().cycle() {
        if span / step < 10.0 {
            break;
        }
        step *= factor;
    }
    let first_tick = (first / step).ceil() * step;
    (0..)
        .map(|index| first_tick + f64::from(index) * step)
        .take_while(|tick| *tick <= last)
        .collect()
}

fn format_epoch(value: f64) -> String {
    if (value - value.round()).abs() < 1e-6 {
        format!("{}", value.round())
    } else {
        String::new()
    }
}

impl Figure for LineChart {
    fn draw<Backend: DrawingBackend>(
        &self,
        root: &DrawingArea<Backend, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<Backend::ErrorType>> {
        let (width, height) = root.dim_in_pixel();
        // Sizes are chosen for 900×600 and scale with the smaller relative side.
        let scale = (f64::from(width) / 900.0)
            .min(f64::from(height) / 600.0)
            .clamp(0.5, 4.0);
        let pixels = |size: f64| (size * scale).round().max(1.0);
        root.fill(&WHITE)?;

        let epoch_range = self.epoch_range();
        let value_range = self.value_range();
        let value_decimals = decimals_for(value_range.end - value_range.start);
        let value_label = |value: &f64| match self.axis {
            ValueAxis::LearningRate if *value == 0.0 => "0".to_owned(),
            ValueAxis::LearningRate => format!("{value:.1e}"),
            ValueAxis::Loss | ValueAxis::AccuracyPercent => format!("{value:.value_decimals$}"),
        };

        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FAMILY, pixels(26.0)))
            .margin(pixels(14.0) as u32)
            .x_label_area_size(pixels(58.0) as u32)
            .y_label_area_size(pixels(92.0) as u32)
            .build_cartesian_2d(
                TickedAxis {
                    linear: epoch_range.into(),
                    ticks: epoch_ticks(self.epochs.0, self.epochs.1),
                },
                value_range,
            )?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(self.value_description)
            .y_labels(8)
            .x_label_formatter(&|value| format_epoch(*value))
            .y_label_formatter(&value_label)
            .label_style((FAMILY, pixels(16.0)))
            .axis_desc_style((FAMILY, pixels(19.0)))
            .bold_line_style(GRID_COLOR)
            .light_line_style(WHITE)
            .draw()?;

        let point_count = self.series.iter().map(|series| series.points.len()).max();
        let marker_size = match point_count {
            Some(1) => pixels(5.0) as u32,
            Some(count) if count <= MARKED_EPOCHS_MAX => pixels(3.0) as u32,
            _ => 0,
        };
        let line_width = pixels(2.0) as u32;
        for series in &self.series {
            let style = series.color.filled().stroke_width(line_width);
            let legend_style = series.color.stroke_width(pixels(3.0) as u32);
            let legend_length = pixels(24.0) as i32;
            chart
                .draw_series(
                    LineSeries::new(series.points.iter().copied(), style).point_size(marker_size),
                )?
                .label(series.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + legend_length, y)], legend_style)
                });
        }
        if let Some(position) = &self.legend {
            chart
                .configure_series_labels()
                .position(position.clone())
                .margin(pixels(12.0) as u32)
                .legend_area_size(pixels(30.0) as u32)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.4))
                .label_font((FAMILY, pixels(16.0)))
                .draw()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_labels_only_on_whole_epochs() {
        assert_eq!(format_epoch(3.0), "3");
        assert_eq!(format_epoch(3.5), "");
    }

    #[test]
    fn epoch_ticks_are_whole_and_few() {
        assert_eq!(epoch_ticks(1.0, 1.0), [1.0]);
        assert_eq!(epoch_ticks(1.0, 5.0), [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(epoch_ticks(1.0, 30.0), [5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
        let long = epoch_ticks(1.0, 300.0);
        assert_eq!(long.first(), Some(&50.0));
        assert_eq!(long.len(), 6);
    }

    #[test]
    fn decimals_follow_the_value_span() {
        assert_eq!(decimals_for(80.0), 0);
        assert_eq!(decimals_for(2.0), 1);
        assert_eq!(decimals_for(0.05), 3);
    }
}
