//! Plots of several runs at once: overlaid training curves (`vilab compare --plot`) and a
//! sweep's ranking metric against each parameter it varied (`summary.png`).
//!
//! Both use the bundled font and the in-memory renderers of the `figure` module, so they
//! look the same on every machine. Parameter axes are laid out from the values themselves: a
//! tick at each value when there are few, a logarithmic axis for positive numbers spanning more
//! than a decade and a half (learning rates), and evenly spaced categories for anything that is
//! not a number (optimiser names, lists).

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use super::RunResults;
use crate::metrics::HistoryRow;
use crate::report::figure::{Figure, TickedAxis, decimals_for, render_svg, write_figure};
use crate::report::font::FAMILY;
use crate::report::{ImageFormat, ReportError};
use crate::spec::sweep::show_value;

/// Colours of the runs, in order (matplotlib's tab10), repeated past ten runs.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);
/// Up to this many distinct values each gets its own tick.
const TICKS_PER_VALUE_MAX: usize = 8;
/// Up to this many epochs every point is marked.
const MARKED_EPOCHS_MAX: usize = 60;

fn format_of(path: &Path) -> ImageFormat {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some(extension) if extension.eq_ignore_ascii_case("svg") => ImageFormat::Svg,
        _ => ImageFormat::Png,
    }
}

/// `range` widened by a share of its span (or by one unit when it is a single point).
fn padded(low: f64, high: f64, share: f64) -> Range<f64> {
    if !(low.is_finite() && high.is_finite()) {
        return 0.0..1.0;
    }
    if high > low {
        let margin = (high - low) * share;
        (low - margin)..(high + margin)
    } else {
        let margin = if low == 0.0 { 1.0 } else { low.abs() * 0.1 };
        (low - margin)..(high + margin)
    }
}

/// About `count` evenly spaced ticks inside `range`.
fn even_ticks(range: &Range<f64>, count: usize) -> Vec<f64> {
    let step = (range.end - range.start) / (count as f64 + 1.0);
    (1..=count)
        .map(|index| range.start + step * index as f64)
        .collect()
}

/// One line of a curve panel: a run's values per epoch.
struct Curve {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One panel of the comparison: a quantity per epoch for every run.
struct CurvePanel {
    title: &'static str,
    curves: Vec<Curve>,
}

impl CurvePanel {
    fn new(title: &'static str, runs: &[RunResults], value: fn(&HistoryRow) -> f64) -> Self {
        let curves = runs
            .iter()
            .enumerate()
            .map(|(index, run)| Curve {
                label: run.label.clone(),
                color: PALETTE[index % PALETTE.len()],
                points: run
                    .history
                    .iter()
                    .map(|row| (f64::from(row.epoch), value(row)))
                    .filter(|(_, value)| value.is_finite())
                    .collect(),
            })
            .collect();
        Self { title, curves }
    }

    fn draw<Backend: DrawingBackend>(
        &self,
        area: &DrawingArea<Backend, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<Backend::ErrorType>> {
        let points = || self.curves.iter().flat_map(|curve| curve.points.iter());
        let (first, last) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
        let (low, high) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
        let epochs = padded(first, last, 0.03);
        let values = padded(low, high, 0.08);
        let epoch_ticks: Vec<f64> = {
            let (start, end) = (epochs.start.ceil() as i64, epochs.end.floor() as i64);
            let step = ((end - start) / 8).max(1);
            (start..=end)
                .step_by(usize::try_from(step).unwrap_or(1))
                .map(|epoch| epoch as f64)
                .filter(|epoch| *epoch >= 1.0)
                .collect()
        };
        let decimals = decimals_for(values.end - values.start);
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(70)
            .build_cartesian_2d(
                TickedAxis {
                    linear: epochs.into(),
                    ticks: epoch_ticks,
                },
                values,
            )?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|value| format!("{value:.0}"))
            .y_label_formatter(&|value| format!("{value:.decimals$}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .bold_line_style(GRID_COLOR)
            .light_line_style(WHITE)
            .draw()?;
        let longest = self.curves.iter().map(|c| c.points.len()).max();
        let marker = match longest {
            Some(count) if count <= MARKED_EPOCHS_MAX => 3,
            _ => 0,
        };
        for curve in &self.curves {
            let color = curve.color;
            chart
                .draw_series(
                    LineSeries::new(curve.points.iter().copied(), color.filled().stroke_width(2))
                        .point_size(marker),
                )?
                .label(curve.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FAMILY, 13))
            .draw()?;
        Ok(())
    }
}

struct CompareFigure {
    panels: Vec<CurvePanel>,
}

impl Figure for CompareFigure {
    fn draw<Backend: DrawingBackend>(
        &self,
        root: &DrawingArea<Backend, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<Backend::ErrorType>> {
        root.fill(&WHITE)?;
        let areas = root.split_evenly((1, self.panels.len()));
        for (panel, area) in self.panels.iter().zip(&areas) {
            panel.draw(area)?;
        }
        Ok(())
    }
}

/// Validation ACC1, training loss and validation loss of every run per epoch, side by side, in
/// PNG (or SVG when `path` ends in `.svg`).
pub fn write_compare_curves(runs: &[RunResults], path: &Path) -> Result<(), ReportError> {
    let figure = compare_figure(runs, path)?;
    write_figure(&figure, path, format_of(path), COMPARE_SIZE)
}

/// The overlaid curves of [`write_compare_curves`] as an SVG document, for pages that inline
/// them; `origin` is only named in errors.
pub fn compare_curves_svg(runs: &[RunResults], origin: &Path) -> Result<String, ReportError> {
    render_svg(&compare_figure(runs, origin)?, origin, COMPARE_SIZE)
}

const COMPARE_SIZE: (u32, u32) = (1500, 480);

fn compare_figure(runs: &[RunResults], path: &Path) -> Result<CompareFigure, ReportError> {
    if runs.iter().all(|run| run.history.is_empty()) {
        return Err(ReportError::EmptyHistory {
            path: path.to_path_buf(),
        });
    }
    Ok(CompareFigure {
        panels: vec![
            CurvePanel::new("val ACC1 %", runs, |row| row.val_acc1),
            CurvePanel::new("train loss", runs, |row| row.train_loss),
            CurvePanel::new("val loss", runs, |row| row.val_loss),
        ],
    })
}

/// The trials' metric against the values of one varied parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterPoints {
    /// The dotted path of the parameter.
    pub path: String,
    /// (the trial's value of the parameter, the trial's metric).
    pub points: Vec<(Value, f64)>,
}

/// How a parameter's values are placed along x.
enum Placement {
    Linear,
    Logarithmic,
    /// Distinct values in order of appearance, at 0, 1, 2, ...
    Categories(Vec<String>),
}

impl Placement {
    fn of(points: &[(Value, f64)]) -> Self {
        let numbers: Option<Vec<f64>> = points.iter().map(|(value, _)| value.as_f64()).collect();
        match numbers {
            Some(numbers) if !numbers.is_empty() => {
                let low = numbers.iter().copied().fold(f64::INFINITY, f64::min);
                let high = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if low > 0.0 && high / low >= 30.0 {
                    Placement::Logarithmic
                } else {
                    Placement::Linear
                }
            }
            _ => {
                let mut names: Vec<String> = Vec::new();
                for (value, _) in points {
                    let name = show_value(value);
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                Placement::Categories(names)
            }
        }
    }

    fn x(&self, value: &Value) -> f64 {
        match self {
            Placement::Linear => value.as_f64().unwrap_or(0.0),
            Placement::Logarithmic => value.as_f64().unwrap_or(1.0).log10(),
            Placement::Categories(names) => {
                let name = show_value(value);
                names.iter().position(|n| *n == name).unwrap_or(0) as f64
            }
        }
    }

    fn label(&self, x: f64) -> String {
        match self {
            Placement::Linear => {
                let text = format!("{x:.6}");
                text.trim_end_matches('0').trim_end_matches('.').to_owned()
            }
            Placement::Logarithmic => format!("{:.2e}", 10f64.powf(x)),
            Placement::Categories(names) => names
                .get(x.round() as usize)
                .filter(|_| (x - x.round()).abs() < 1e-6)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

struct SummaryFigure {
    metric: String,
    parameters: Vec<ParameterPoints>,
}

impl SummaryFigure {
    fn columns(&self) -> usize {
        self.parameters.len().clamp(1, 3)
    }

    fn rows(&self) -> usize {
        self.parameters.len().div_ceil(self.columns()).max(1)
    }
}

impl Figure for SummaryFigure {
    fn draw<Backend: DrawingBackend>(
        &self,
        root: &DrawingArea<Backend, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<Backend::ErrorType>> {
        root.fill(&WHITE)?;
        let areas = root.split_evenly((self.rows(), self.columns()));
        let metric_values = || {
            self.parameters
                .iter()
                .flat_map(|parameter| parameter.points.iter().map(|(_, metric)| *metric))
        };
        let low = metric_values().fold(f64::INFINITY, f64::min);
        let high = metric_values().fold(f64::NEG_INFINITY, f64::max);
        let values = padded(low, high, 0.1);
        let decimals = decimals_for(values.end - values.start);
        for (parameter, area) in self.parameters.iter().zip(&areas) {
            let placement = Placement::of(&parameter.points);
            let xs: Vec<f64> = parameter
                .points
                .iter()
                .map(|(value, _)| placement.x(value))
                .collect();
            let (first, last) = xs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                    (a.min(*x), b.max(*x))
                });
            let range = match placement {
                Placement::Categories(_) => (first - 0.5)..(last + 0.5),
                _ => padded(first, last, 0.08),
            };
            let mut distinct = xs.clone();
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            let ticks = if distinct.len() <= TICKS_PER_VALUE_MAX {
                distinct
            } else {
                even_ticks(&range, 5)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(&parameter.path, (FAMILY, 20))
                .margin(14)
                .x_label_area_size(42)
                .y_label_area_size(64)
                .build_cartesian_2d(
                    TickedAxis {
                        linear: range.into(),
                        ticks,
                    },
                    values.clone(),
                )?;
            chart
                .configure_mesh()
                .y_desc(self.metric.as_str())
                .x_label_formatter(&|x| placement.label(*x))
                .y_label_formatter(&|value| format!("{value:.decimals$}"))
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 15))
                .bold_line_style(GRID_COLOR)
                .light_line_style(WHITE)
                .draw()?;
            chart.draw_series(parameter.points.iter().zip(&xs).map(|((_, metric), x)| {
                Circle::new((*x, *metric), 5, PALETTE[0].mix(0.8).filled())
            }))?;
        }
        Ok(())
    }
}

/// `summary.png`: one panel per varied parameter, the metric of every finished trial against
/// the trial's value of that parameter.
pub fn write_summary_plot(
    parameters: &[ParameterPoints],
    metric: &str,
    path: &Path,
) -> Result<(), ReportError> {
    let (figure, size) = summary_figure(parameters, metric, path)?;
    write_figure(&figure, path, format_of(path), size)
}

/// The plot of [`write_summary_plot`] as an SVG document, for pages that inline it; `origin`
/// is only named in errors.
pub fn summary_plot_svg(
    parameters: &[ParameterPoints],
    metric: &str,
    origin: &Path,
) -> Result<String, ReportError> {
    let (figure, size) = summary_figure(parameters, metric, origin)?;
    render_svg(&figure, origin, size)
}

fn summary_figure(
    parameters: &[ParameterPoints],
    metric: &str,
    path: &Path,
) -> Result<(SummaryFigure, (u32, u32)), ReportError> {
    let parameters: Vec<ParameterPoints> = parameters
        .iter()
        .map(|parameter| ParameterPoints {
            path: parameter.path.clone(),
            points: parameter
                .points
                .iter()
                .filter(|(_, metric)| metric.is_finite())
                .cloned()
                .collect(),
        })
        .filter(|parameter| !parameter.points.is_empty())
        .collect();
    if parameters.is_empty() {
        return Err(ReportError::EmptyHistory {
            path: path.to_path_buf(),
        });
    }
    let figure = SummaryFigure {
        metric: metric.to_owned(),
        parameters,
    };
    let size = (480 * figure.columns() as u32, 380 * figure.rows() as u32);
    Ok((figure, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn axes_follow_the_values() {
        let rates = [(json!(1e-4), 1.0), (json!(1e-2), 2.0)];
        assert!(matches!(Placement::of(&rates), Placement::Logarithmic));
        let depths = [(json!(2), 1.0), (json!(4), 2.0)];
        let linear = Placement::of(&depths);
        assert!(matches!(linear, Placement::Linear));
        assert_eq!(linear.label(4.0), "4");
        let names = [
            (json!("adamw"), 1.0),
            (json!("sgd"), 2.0),
            (json!("adamw"), 3.0),
        ];
        let categories = Placement::of(&names);
        assert_eq!(categories.x(&json!("sgd")), 1.0);
        assert_eq!(categories.label(1.0), "sgd");
        assert_eq!(categories.label(0.5), "");
    }

    #[test]
    fn summary_plot_is_a_png_with_one_panel_per_parameter() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("summary.png");
        let parameters = [
            ParameterPoints {
                path: "train.optimizer.lr".into(),
                points: vec![(json!(0.001), 40.0), (json!(0.0003), 35.5)],
            },
            ParameterPoints {
                path: "model.depth".into(),
                points: vec![(json!(2), 40.0), (json!(4), f64::NAN)],
            },
        ];
        write_summary_plot(&parameters, "best val ACC1 %", &path).unwrap();
        let image = image::open(&path).unwrap();
        assert_eq!((image.width(), image.height()), (960, 380));
        assert!(write_summary_plot(&[], "x", &path).is_err());
    }
}
