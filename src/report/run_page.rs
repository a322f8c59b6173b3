//! `report.html` of a run folder: one page with everything the run produced.
//!
//! The page is read together from the folder's files only — `run.json` or `pending.json`,
//! `spec.yaml`, the train stage's history (or `live/` while training runs), the evaluate stage's
//! scores, per-class reports and heat-maps, the augment stage's preview — so it can be written
//! again at any time (`vilab runs --html` does, for folders made before it existed). The runner
//! writes it when a run ends or fails; the train stage refreshes it after every epoch, and while
//! the run is going the page reloads itself.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::html::{Cell, Page, escape};
use super::{ReportError, curves::curves_svg};
use crate::files::human_bytes;
use crate::metrics::{EvalMetrics, HistoryRow, read_history};
use crate::pipeline::StageKind;
use crate::pipeline::layout::{
    LIVE_DIR, PendingRun, RUN_LOCK, RunDir, RunRecord, RunState, read_record,
};

/// How often a page of a running training reloads itself, in seconds.
const REFRESH_SECONDS: u32 = 15;
/// The most files the page lists.
const MAX_FILES: usize = 400;
/// Size of the inlined curve plots.
const CURVE_SIZE: (u32, u32) = (600, 380);

/// Writes `report.html` into the run folder (atomically) and returns its path.
pub fn write_run_page(folder: &RunDir) -> Result<PathBuf, ReportError> {
    let page = run_page(folder)?;
    let path = folder.report_html();
    crate::files::write_atomic(&path, page.as_bytes())?;
    Ok(path)
}

/// The page of a run folder.
pub fn run_page(folder: &RunDir) -> Result<String, ReportError> {
    let record = read_record(folder.path());
    let pending = folder.read_pending();
    let state = folder.state();
    let live = folder.read_live_status();
    let name = record
        .as_ref()
        .map(|record| record.name.clone())
        .or_else(|| {
            folder
                .path()
                .parent()
                .and_then(Path::file_name)
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let run_id = record
        .as_ref()
        .map(|record| record.run_id.clone())
        .or_else(|| {
            folder
                .path()
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut page = Page::new(&format!("{name} · run {run_id}"));
    let running = state == Some(RunState::Running);
    if running {
        page.refresh_every(REFRESH_SECONDS);
    }

    let state_name = state.map_or("unknown", RunState::as_str);
    let mut status = format!(
        "<p>State: <b class=\"state-{state_name}\">{state_name}</b>",
        state_name = escape(state_name)
    );
    if let (true, Some(live)) = (running, &live) {
        let _ = write!(status, " — {}", escape(&live.describe()));
    }
    if let Some(failure) = pending
        .as_ref()
        .and_then(|pending| pending.failure.as_ref())
        && state != Some(RunState::Running)
    {
        let _ = write!(
            status,
            " — <span class=\"error\">{}: {}</span>",
            escape(failure.stage.name()),
            escape(&failure.error)
        );
    } else if state == Some(RunState::Interrupted)
        && let Some(live) = &live
    {
        let _ = write!(status, " — reached {}", escape(&live.describe()));
    }
    status.push_str("</p>");
    page.raw(&status);

    let history = read_run_history(folder);
    let evaluation = read_evaluation(folder);
    page.raw(&badges(&evaluation, &history, record.as_ref()));

    let mut navigation = vec![("curves", "Curves")];
    page.section("curves", "Curves");
    match &history {
        Some((rows, origin)) if !rows.is_empty() => {
            let charts = curves_svg(rows, origin, CURVE_SIZE)?;
            page.raw("<div class=\"figures\">");
            for (stem, svg) in &charts {
                page.svg_figure(svg, &format!("{stem} per epoch"));
            }
            page.raw("</div>");
            if origin.starts_with(folder.live()) {
                page.note("From live/history.csv: the epochs finished so far.");
            }
        }
        _ => page.note("No epoch has finished yet, so there are no curves."),
    }

    if let Some(evaluation) = &evaluation {
        navigation.push(("evaluation", "Evaluation"));
        evaluation_section(&mut page, folder, evaluation);
    }

    let preview = folder.stage(StageKind::Augment).join("preview.png");
    if let Ok(bytes) = std::fs::read(&preview) {
        navigation.push(("augmentation", "Augmentation"));
        page.section("augmentation", "Augmentation preview");
        page.png_figure(
            &bytes,
            "training samples as the loader makes them (augment/preview.png)",
        );
    }

    navigation.push(("stages", "Stages"));
    stages_section(&mut page, record.as_ref(), pending.as_ref());

    navigation.push(("spec", "Spec"));
    page.section("spec", "Resolved spec");
    match std::fs::read_to_string(folder.spec()) {
        Ok(text) => page.raw(&format!(
            "<details><summary>spec.yaml ({} lines)</summary><pre>{}</pre></details>",
            text.lines().count(),
            escape(&text)
        )),
        Err(_) => page.note("spec.yaml is not there yet."),
    }

    navigation.push(("files", "Files"));
    files_section(&mut page, folder);

    let subtitle = match &record {
        Some(record) => format!(
            "{} on {} · backend {} · seed {} · vilab {}{}",
            record.finished_at,
            record.host,
            record.backend,
            record.seed,
            record.vilab,
            record
                .git_commit
                .as_ref()
                .map(|commit| format!(" · commit {commit}"))
                .unwrap_or_default()
        ),
        None => pending
            .as_ref()
            .map(|pending| format!("started {}", pending.started_at))
            .unwrap_or_default(),
    };
    Ok(page.finish(&subtitle, &navigation))
}

/// The training history: the train stage's when it finished, else the live one.
fn read_run_history(folder: &RunDir) -> Option<(Vec<HistoryRow>, PathBuf)> {
    [folder.history(), folder.live_history()]
        .into_iter()
        .find(|path| path.is_file())
        .and_then(|path| read_history(&path).ok().map(|rows| (rows, path)))
}

fn read_evaluation(folder: &RunDir) -> Option<EvalMetrics> {
    let bytes = std::fs::read(folder.metrics()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The headline numbers as boxes at the top.
fn badges(
    evaluation: &Option<EvalMetrics>,
    history: &Option<(Vec<HistoryRow>, PathBuf)>,
    record: Option<&RunRecord>,
) -> String {
    let mut boxes: Vec<(String, String)> = Vec::new();
    let scores = |weights: &str| {
        evaluation
            .as_ref()
            .and_then(|evaluation| evaluation.get(weights))
            .and_then(|splits| splits.get("val"))
    };
    if let Some(best) = scores("best") {
        boxes.push(("val ACC1".into(), format!("{:.2}%", best.acc1)));
        boxes.push(("val ACC5".into(), format!("{:.2}%", best.acc5)));
        boxes.push(("val macro F1".into(), format!("{:.4}", best.macro_f1)));
    } else if let Some(best) = history.as_ref().and_then(|(rows, _)| {
        rows.iter()
            .map(|row| row.val_acc1)
            .filter(|value| value.is_finite())
            .reduce(f64::max)
    }) {
        boxes.push(("best val ACC1 so far".into(), format!("{best:.2}%")));
    }
    if let Some(ema) = scores("ema") {
        boxes.push(("EMA val ACC1".into(), format!("{:.2}%", ema.acc1)));
    }
    if let Some((rows, _)) = history {
        boxes.push(("epochs".into(), rows.len().to_string()));
    }
    if let Some(record) = record {
        // What computing the run took, whichever invocations did it (a re-run that reused
        // everything took no time itself).
        let seconds: f64 = record
            .stages
            .iter()
            .map(|stage| {
                stage
                    .computed
                    .as_ref()
                    .map_or(stage.seconds, |done| done.seconds)
            })
            .sum();
        boxes.push((
            "compute time".into(),
            crate::train::live::human_duration(seconds),
        ));
    }
    let mut html = String::from("<div class=\"badges\">");
    for (label, value) in boxes {
        let _ = write!(
            html,
            "<div class=\"badge\">{}<b>{}</b></div>",
            escape(&label),
            escape(&value)
        );
    }
    html.push_str("</div>");
    html
}

/// Scores per weights and split, and for each pair its per-class report and heat-map.
fn evaluation_section(page: &mut Page, folder: &RunDir, evaluation: &EvalMetrics) {
    page.section("evaluation", "Evaluation");
    let header: Vec<String> = [
        "weights", "split", "ACC1 %", "ACC5 %", "loss", "macro F1", "images", "epoch",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut rows = Vec::new();
    for (weights, splits) in evaluation {
        for (split, scores) in splits {
            rows.push(vec![
                weights.clone(),
                split.clone(),
                format!("{:.2}", scores.acc1),
                format!("{:.2}", scores.acc5),
                format!("{:.4}", scores.loss),
                format!("{:.4}", scores.macro_f1),
                scores.images.to_string(),
                scores.epoch.to_string(),
            ]);
        }
    }
    page.table(&header, &rows);
    let evaluate = folder.stage(StageKind::Evaluate);
    for (weights, splits) in evaluation {
        for split in splits.keys() {
            // The best weights on the validation split sit at the top of the stage's folder.
            let prefix = if weights == "best" && split == "val" {
                String::new()
            } else {
                format!("{weights}_{split}/")
            };
            let title = format!("{weights} weights on the {split} split");
            let open = prefix.is_empty();
            page.raw(&format!(
                "<details{}><summary>{}: per-class report and confusion matrix</summary>",
                if open { " open" } else { "" },
                escape(&title)
            ));
            let report = evaluate.join(format!("{prefix}classification_report.csv"));
            match read_csv(&report) {
                Some((header, rows)) => {
                    page.subsection(&format!("Per-class report ({title})"));
                    page.table(&header, &rows);
                }
                None => page.note(&format!("{} is missing.", report.display())),
            }
            if let Ok(png) = std::fs::read(evaluate.join(format!("{prefix}confusion_matrix.png"))) {
                page.png_figure(
                    &png,
                    &format!("confusion matrix, {title} (rows: true class, columns: predicted)"),
                );
            }
            page.raw("</details>");
        }
    }
}

/// A CSV file as header and rows of text.
fn read_csv(path: &Path) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let mut reader = csv::Reader::from_path(path).ok()?;
    let header = reader
        .headers()
        .ok()?
        .iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let rows = reader
        .records()
        .map(|record| record.map(|record| record.iter().map(shorten_number).collect()))
        .collect::<Result<Vec<Vec<String>>, _>>()
        .ok()?;
    Some((header, rows))
}

/// A decimal with many digits (`0.8333333333333334`) to four; anything else as it is.
fn shorten_number(cell: &str) -> String {
    match cell.parse::<f64>() {
        Ok(value) if cell.contains('.') && cell.len() > 6 => format!("{value:.4}"),
        _ => cell.to_owned(),
    }
}

/// Each stage: its key, whether this invocation computed or reused it, its time and summary.
fn stages_section(page: &mut Page, record: Option<&RunRecord>, pending: Option<&PendingRun>) {
    page.section("stages", "Stages and cache");
    let header: Vec<String> = ["stage", "key", "this run", "seconds", "computed", "summary"]
        .map(str::to_owned)
        .to_vec();
    let rows: Vec<Vec<Cell>> = match (record, pending) {
        // A folder being run again shows that invocation's plan, not the earlier record.
        (_, Some(pending)) => pending
            .stages
            .iter()
            .map(|stage| {
                let finished = record
                    .and_then(|record| record.stages.iter().find(|done| done.key == stage.key));
                let state = match (&pending.failure, finished) {
                    (Some(failure), _) if failure.stage == stage.stage => "stopped here",
                    (_, Some(_)) => "cached",
                    _ => "pending",
                };
                vec![
                    Cell::text(stage.stage.name()),
                    Cell::html(format!(
                        "<span class=\"mono\">{}</span>",
                        escape(&stage.key[..12.min(stage.key.len())])
                    )),
                    Cell::text(state),
                    Cell::text(""),
                    Cell::text(""),
                    Cell::text(""),
                ]
            })
            .collect(),
        (Some(record), None) => record
            .stages
            .iter()
            .map(|stage| {
                let computed = stage.computed.as_ref();
                vec![
                    Cell::text(stage.stage.name()),
                    Cell::html(format!(
                        "<span class=\"mono\">{}</span>",
                        escape(&stage.key[..12.min(stage.key.len())])
                    )),
                    Cell::text(match stage.state {
                        crate::pipeline::layout::StageOutcome::Computed => "computed",
                        crate::pipeline::layout::StageOutcome::Reused => "reused from the cache",
                    }),
                    Cell::text(&format!("{:.1}", stage.seconds)),
                    Cell::text(
                        &computed
                            .map(|computed| {
                                format!("{} in {:.1} s", computed.finished_at, computed.seconds)
                            })
                            .unwrap_or_else(|| "by another run".to_owned()),
                    ),
                    Cell::text(
                        computed
                            .map(|computed| computed.summary.as_str())
                            .unwrap_or(stage.summary.as_str()),
                    ),
                ]
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    if rows.is_empty() {
        page.note("No stage has been recorded.");
    } else {
        page.cells(&header, &rows);
    }
}

/// Every file of the run (through the stage links), linked.
fn files_section(page: &mut Page, folder: &RunDir) {
    page.section("files", "Files");
    let mut rows = Vec::new();
    let mut more = 0_usize;
    let walker = walkdir::WalkDir::new(folder.path())
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let name = entry.file_name().to_string_lossy();
            entry.depth() == 0 || !(name.starts_with('.') || name == RUN_LOCK)
        });
    for entry in walker.flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(folder.path()) else {
            continue;
        };
        let relative = relative.to_string_lossy().replace('\\', "/");
        if relative == crate::pipeline::layout::REPORT_HTML
            || relative.starts_with(&format!("{LIVE_DIR}/")) && !folder.pending().exists()
        {
            continue;
        }
        if rows.len() == MAX_FILES {
            more += 1;
            continue;
        }
        let size = entry.metadata().map(|meta| meta.len()).unwrap_or(0);
        rows.push(vec![
            Cell::link(&relative, &relative),
            Cell::text(&human_bytes(size)),
        ]);
    }
    page.cells(&["file".to_owned(), "size".to_owned()], &rows);
    if more > 0 {
        page.note(&format!("… and {more} more files."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_with_nothing_yet_still_gives_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("exp").join("0123456789ab");
        std::fs::create_dir_all(&run).unwrap();
        let page = run_page(&RunDir::new(&run)).unwrap();
        assert!(page.contains("exp · run 0123456789ab"), "{page}");
        assert!(page.contains("No epoch has finished yet"));
        assert!(page.contains("<b class=\"state-unknown\">unknown</b>"));
    }
}
