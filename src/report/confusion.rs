//! The confusion matrix as a labelled heat-map: true classes down the side, predicted classes
//! along the bottom, each cell shaded by its share of the true class.
//!
//! Shading by row share rather than raw count keeps small classes readable when the data is
//! imbalanced; the raw counts are printed in the cells while there are at most
//! [`COUNTS_SHOWN_MAX`] classes. The image size follows from the class count and the longest
//! class name, so the caller picks no size; names too long for the margin are shortened in the
//! middle, where folder names that share a prefix or suffix still differ.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontDesc, FontTransform};

use super::figure::{Figure, write_figure};
use super::font::{self, FAMILY};
use super::{ImageFormat, ReportError};
use crate::metrics::report::ConfusionMatrix;

/// Up to this many classes each cell shows its count; beyond, cells get too small for digits.
pub const COUNTS_SHOWN_MAX: usize = 30;

const SUBTITLE: &str =
    "rows: true class · columns: predicted class · shade: share of the true class";
const EMPTY_SHADE: RGBColor = RGBColor(247, 251, 255);
const FULL_SHADE: RGBColor = RGBColor(8, 48, 107);
const FRAME_COLOR: RGBColor = RGBColor(160, 160, 160);
const MARGIN: i32 = 16;
const COLOR_BAR_GAP: i32 = 24;
const COLOR_BAR_WIDTH: i32 = 18;

/// Draws the heat-map of `matrix` (rows true, columns predicted) to `path` and returns the
/// image size it chose, in pixels.
pub fn write_confusion_heatmap(
    matrix: &ConfusionMatrix,
    class_names: &[String],
    title: &str,
    path: &Path,
    format: ImageFormat,
) -> Result<(u32, u32), ReportError> {
    if class_names.len() != matrix.class_count() {
        return Err(ReportError::ClassNameCount {
            path: path.to_path_buf(),
            name_count: class_names.len(),
            class_count: matrix.class_count(),
        });
    }
    if !font::ensure_registered() {
        return Err(ReportError::Font {
            path: path.to_path_buf(),
        });
    }
    let heatmap =
        Heatmap::lay_out(matrix, class_names, title).map_err(|error| ReportError::Draw {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
    let size = heatmap.size();
    write_figure(&heatmap, path, format, size)?;
    Ok(size)
}

/// `name` cut to at most `max_chars` characters, keeping its start and end.
fn shorten(name: &str, max_chars: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= max_chars {
        return name.to_owned();
    }
    let head = (max_chars - 1) / 2;
    let tail = max_chars - 1 - head;
    let mut short: String = chars[..head].iter().collect();
    short.push('…');
    short.extend(&chars[chars.len() - tail..]);
    short
}

/// Linear blend from the empty to the full shade; `share` is in 0..=1.
fn shade(share: f64) -> RGBColor {
    let blend = |empty: u8, full: u8| {
        (f64::from(empty) + (f64::from(full) - f64::from(empty)) * share.clamp(0.0, 1.0)).round()
            as u8
    };
    RGBColor(
        blend(EMPTY_SHADE.0, FULL_SHADE.0),
        blend(EMPTY_SHADE.1, FULL_SHADE.1),
        blend(EMPTY_SHADE.2, FULL_SHADE.2),
    )
}

/// Every position and size of the picture, fixed before drawing because the image size
/// depends on them.
struct Heatmap {
    title: String,
    labels: Vec<String>,
    counts: Vec<Vec<u64>>,
    label_size: f64,
    count_size: f64,
    cell: i32,
    matrix_left: i32,
    matrix_top: i32,
    rotate_column_labels: bool,
    column_label_height: i32,
    width: i32,
    height: i32,
}

const TITLE_SIZE: f64 = 22.0;
const SUBTITLE_SIZE: f64 = 13.0;
const AXIS_TITLE_SIZE: f64 = 16.0;

fn text_width(text: &str, size: f64) -> Result<i32, plotters::style::FontError> {
    let (width, _) =
        FontDesc::new(FontFamily::from(FAMILY), size, FontStyle::Normal).box_size(text)?;
    Ok(width as i32)
}

impl Heatmap {
    fn lay_out(
        matrix: &ConfusionMatrix,
        class_names: &[String],
        title: &str,
    ) -> Result<Self, plotters::style::FontError> {
        let class_count = class_names.len().max(1) as i32;
        let few_classes = class_names.len() <= COUNTS_SHOWN_MAX;
        let (label_size, cell, max_chars) = if few_classes {
            (15.0, (720 / class_count).clamp(30, 64), 28)
        } else {
            (11.0, (1000 / class_count).clamp(12, 24), 20)
        };
        let labels: Vec<String> = class_names
            .iter()
            .map(|name| shorten(name, max_chars))
            .collect();
        let mut label_width = 0;
        for label in &labels {
            label_width = label_width.max(text_width(label, label_size)?);
        }
        let rotate_column_labels = label_width > cell - 6;
        let column_label_height = if rotate_column_labels {
            label_width + 8
        } else {
            label_size as i32 + 10
        };

        let largest_count = matrix.counts.iter().flatten().copied().max().unwrap_or(0);
        let widest_count = text_width(&largest_count.to_string(), label_size)?;
        let count_size =
            label_size * (f64::from(cell - 8) / f64::from(widest_count.max(1))).min(1.0);

        let axis_title_band = AXIS_TITLE_SIZE as i32 + 12;
        let matrix_left = MARGIN + axis_title_band + label_width + 8;
        let matrix_top = MARGIN + TITLE_SIZE as i32 + SUBTITLE_SIZE as i32 + 30;
        let matrix_side = cell * class_count;
        let color_bar_labels = text_width("100%", label_size)?;
        let drawing_width = matrix_left
            + matrix_side
            + COLOR_BAR_GAP
            + COLOR_BAR_WIDTH
            + 8
            + color_bar_labels
            + MARGIN;
        let heading_width =
            text_width(title, TITLE_SIZE)?.max(text_width(SUBTITLE, SUBTITLE_SIZE)?) + 2 * MARGIN;
        let height = matrix_top + matrix_side + column_label_height + axis_title_band + MARGIN;
        Ok(Self {
            title: title.to_owned(),
            labels,
            counts: matrix.counts.clone(),
            label_size,
            count_size,
            cell,
            matrix_left,
            matrix_top,
            rotate_column_labels,
            column_label_height,
            width: drawing_width.max(heading_width),
            height,
        })
    }

    fn size(&self) -> (u32, u32) {
        (self.width as u32, self.height as u32)
    }

    fn show_counts(&self) -> bool {
        self.labels.len() <= COUNTS_SHOWN_MAX
    }
}

impl Figure for Heatmap {
    fn draw<Backend: DrawingBackend>(
        &self,
        root: &DrawingArea<Backend, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<Backend::ErrorType>> {
        root.fill(&WHITE)?;
        let centered = Pos::new(HPos::Center, VPos::Center);
        let font = |size: f64| FontDesc::new(FontFamily::from(FAMILY), size, FontStyle::Normal);
        let class_count = self.labels.len() as i32;
        let matrix_side = self.cell * class_count;
        let matrix_right = self.matrix_left + matrix_side;
        let matrix_bottom = self.matrix_top + matrix_side;
        let matrix_center_x = self.matrix_left + matrix_side / 2;
        let matrix_center_y = self.matrix_top + matrix_side / 2;

        let heading_center = self.width / 2;
        root.draw(&Text::new(
            self.title.clone(),
            (heading_center, MARGIN + TITLE_SIZE as i32 / 2),
            font(TITLE_SIZE).color(&BLACK).pos(centered),
        ))?;
        root.draw(&Text::new(
            SUBTITLE,
            (heading_center, MARGIN + TITLE_SIZE as i32 + 12),
            font(SUBTITLE_SIZE).color(&BLACK.mix(0.75)).pos(centered),
        ))?;

        for (row, counts) in self.counts.iter().enumerate() {
            let support: u64 = counts.iter().sum();
            for (column, &count) in counts.iter().enumerate() {
                let share = if support == 0 {
                    0.0
                } else {
                    count as f64 / support as f64
                };
                let left = self.matrix_left + column as i32 * self.cell;
                let top = self.matrix_top + row as i32 * self.cell;
                root.draw(&Rectangle::new(
                    [(left, top), (left + self.cell, top + self.cell)],
                    shade(share).filled(),
                ))?;
                if self.show_counts() {
                    // Zeros in grey let the non-zero cells stand out.
                    let ink = if share > 0.5 {
                        WHITE.to_rgba()
                    } else if count == 0 {
                        BLACK.mix(0.35)
                    } else {
                        BLACK.to_rgba()
                    };
                    root.draw(&Text::new(
                        count.to_string(),
                        (left + self.cell / 2, top + self.cell / 2),
                        font(self.count_size).color(&ink).pos(centered),
                    ))?;
                }
            }
        }
        root.draw(&Rectangle::new(
            [
                (self.matrix_left, self.matrix_top),
                (matrix_right, matrix_bottom),
            ],
            FRAME_COLOR.stroke_width(1),
        ))?;

        let row_label_style = font(self.label_size)
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        let column_label_style = if self.rotate_column_labels {
            // Rotated a quarter turn anticlockwise, the label's end sits under its column.
            font(self.label_size)
                .transform(FontTransform::Rotate270)
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center))
        } else {
            font(self.label_size)
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top))
        };
        for (index, label) in self.labels.iter().enumerate() {
            let middle = index as i32 * self.cell + self.cell / 2;
            root.draw(&Text::new(
                label.clone(),
                (self.matrix_left - 8, self.matrix_top + middle),
                row_label_style.clone(),
            ))?;
            root.draw(&Text::new(
                label.clone(),
                (self.matrix_left + middle, matrix_bottom + 6),
                column_label_style.clone(),
            ))?;
        }

        let axis_title_style = font(AXIS_TITLE_SIZE).color(&BLACK);
        root.draw(&Text::new(
            "predicted class",
            (
                matrix_center_x,
                matrix_bottom + self.column_label_height + AXIS_TITLE_SIZE as i32 / 2 + 8,
            ),
            axis_title_style.clone().pos(centered),
        ))?;
        root.draw(&Text::new(
            "true class",
            (MARGIN + AXIS_TITLE_SIZE as i32 / 2, matrix_center_y),
            font(AXIS_TITLE_SIZE)
                .transform(FontTransform::Rotate270)
                .color(&BLACK)
                .pos(centered),
        ))?;

        let bar_left = matrix_right + COLOR_BAR_GAP;
        let bar_right = bar_left + COLOR_BAR_WIDTH;
        let steps = matrix_side.max(1);
        for step in 0..steps {
            let share = 1.0 - f64::from(step) / f64::from(steps);
            let top = self.matrix_top + step;
            root.draw(&Rectangle::new(
                [(bar_left, top), (bar_right, top + 1)],
                shade(share).filled(),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(bar_left, self.matrix_top), (bar_right, matrix_bottom)],
            FRAME_COLOR.stroke_width(1),
        ))?;
        let bar_label_style = font(self.label_size)
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (text, y) in [
            ("100%", self.matrix_top),
            ("50%", matrix_center_y),
            ("0%", matrix_bottom),
        ] {
            root.draw(&Text::new(
                text,
                (bar_right + 6, y),
                bar_label_style.clone(),
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_keeps_both_ends() {
        assert_eq!(shorten("short", 10), "short");
        let short = shorten("Tomato___Spider_mites_Two_spotted", 12);
        assert_eq!(short.chars().count(), 12);
        assert_eq!(short, "Tomat…potted");
    }

    #[test]
    fn shade_runs_from_empty_to_full() {
        assert_eq!(shade(0.0), EMPTY_SHADE);
        assert_eq!(shade(1.0), FULL_SHADE);
        assert!(shade(0.5).0 < EMPTY_SHADE.0 && shade(0.5).0 > FULL_SHADE.0);
    }
}
