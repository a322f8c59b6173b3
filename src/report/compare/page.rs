//! The comparison as one self-contained HTML page (`vilab compare --html FILE`, and the part of
//! a sweep's `summary.html` that compares its finished trials): the tables of the markdown form
//! — parameters that differ, metrics with deltas, per-class F1 deltas — and the overlaid curves
//! inline, with each run linked to its own `report.html`.

use std::path::{Component, Path, PathBuf};

use super::plots::compare_curves_svg;
use super::{Comparison, RunResults};
use crate::pipeline::layout::REPORT_HTML;
use crate::report::ReportError;
use crate::report::html::{Page, link, markdown};

/// The page of `comparison` over `runs`, to be saved in the folder `page_dir` (links to the
/// runs' pages are relative to it).
pub fn compare_page(
    comparison: &Comparison,
    runs: &[RunResults],
    page_dir: &Path,
) -> Result<String, ReportError> {
    let mut page = Page::new(&format!("Comparison of {} runs", runs.len()));
    page.raw(&compare_sections(comparison, runs, page_dir)?);
    Ok(page.finish(
        &format!("baseline: {}", comparison.runs[comparison.baseline]),
        &[("runs", "Runs"), ("curves", "Curves"), ("tables", "Tables")],
    ))
}

/// The sections of the comparison, for a page of its own or inside another.
pub fn compare_sections(
    comparison: &Comparison,
    runs: &[RunResults],
    page_dir: &Path,
) -> Result<String, ReportError> {
    let mut page = Page::new("");
    page.section("runs", "Runs");
    let mut list = String::from("<ul>");
    for run in runs {
        let target = relative_path(page_dir, &run.dir.join(REPORT_HTML));
        list.push_str(&format!(
            "<li>{} <span class=\"note\">({})</span></li>",
            link(&run.label, &target),
            crate::report::html::escape(&run.dir.display().to_string())
        ));
    }
    list.push_str("</ul>");
    page.raw(&list);
    page.section("curves", "Curves");
    if runs.iter().any(|run| !run.history.is_empty()) {
        let svg = compare_curves_svg(runs, page_dir)?;
        page.svg_figure(
            &svg,
            "validation ACC1, training loss and validation loss per epoch",
        );
    } else {
        page.note("No run has a training history, so there are no curves.");
    }
    page.raw("<div id=\"tables\"></div>");
    // The markdown form's `##` headings become this page's sections.
    page.raw(&markdown(&comparison.to_markdown()));
    Ok(page.body())
}

/// `to` as a path relative to the folder `from` (both made absolute first), with `/`.
pub fn relative_path(from: &Path, to: &Path) -> String {
    let absolute = |path: &Path| -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| {
            // A file not written yet: its folder canonicalised, its name kept.
            match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => std::fs::canonicalize(parent)
                    .map(|parent| parent.join(name))
                    .unwrap_or_else(|_| path.to_path_buf()),
                _ => path.to_path_buf(),
            }
        })
    };
    let (from, to) = (absolute(from), absolute(to));
    let from: Vec<Component<'_>> = from.components().collect();
    let to_parts: Vec<Component<'_>> = to.components().collect();
    let shared = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<String> = vec!["..".to_owned(); from.len() - shared];
    parts.extend(
        to_parts[shared..]
            .iter()
            .map(|part| part.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_and_descend() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("out/exp/run1");
        let b = dir.path().join("pages");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(
            relative_path(&b, &a.join("report.html")),
            "../out/exp/run1/report.html"
        );
        assert_eq!(relative_path(&a, &a.join("x.csv")), "x.csv");
    }
}
