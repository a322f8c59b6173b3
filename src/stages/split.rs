//! The `split` stage: which images exist, which are usable, and which are train or validation.
//!
//! Outputs: `classes.json` (sorted class names; a label is an index), `train.csv`, `val.csv`
//! and, with `data.test_root`, `test.csv` (path relative to the split's folder, class, label),
//! `skipped.csv` (unreadable files and why), `split.json` (which folder each split reads, counts
//! per class) and, with `split.materialize`, `data/<split>/<class>/...` hard links.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{StageContext, StageError, write_json};
use crate::data::manifest::{ManifestRow, SkippedRow, write_manifest, write_skipped};
use crate::data::split::split_indices;
use crate::data::verify::{BadImagePolicy, verify_images};
use crate::pipeline::plan::ScannedInput;

/// The split stage's record of its classes and counts.
pub const SPLIT_FILE: &str = "split.json";

/// `split.json`: where each split's images are, and how many per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// Class names in label order.
    pub classes: Vec<String>,
    /// For each split, the spec field of the folder its paths are relative to.
    pub roots: BTreeMap<String, String>,
    /// For each split, images per class in label order.
    pub counts: BTreeMap<String, Vec<usize>>,
    /// Files left out as unreadable.
    pub skipped: usize,
}

impl SplitSummary {
    /// Total images of a split.
    pub fn total(&self, split: &str) -> usize {
        self.counts
            .get(split)
            .map_or(0, |counts| counts.iter().sum())
    }
}

/// The usable images of one scanned folder as manifest rows, plus its unreadable files.
fn usable_rows(
    input: &ScannedInput,
    classes: &[String],
    policy: BadImagePolicy,
    context: &StageContext<'_>,
) -> Result<(Vec<ManifestRow>, Vec<SkippedRow>), StageError> {
    let scan = &input.scan;
    if input.field != "data.root" && scan.classes != classes {
        let extra: Vec<&String> = scan
            .classes
            .iter()
            .filter(|c| !classes.contains(c))
            .collect();
        let missing: Vec<&String> = classes
            .iter()
            .filter(|c| !scan.classes.contains(c))
            .collect();
        return Err(StageError::Invalid(format!(
            "{}: class folders differ from data.root's ({}{}{})",
            input.path.display(),
            if extra.is_empty() {
                String::new()
            } else {
                format!("only here: {}", join(&extra))
            },
            if !extra.is_empty() && !missing.is_empty() {
                "; "
            } else {
                ""
            },
            if missing.is_empty() {
                String::new()
            } else {
                format!("missing here: {}", join(&missing))
            },
        )));
    }
    let bar = context
        .reporter
        .bar(scan.files.len() as u64, "split", "checking images");
    let results = verify_images(&input.path, &scan.files);
    bar.finish_and_clear();
    let mut rows = Vec::with_capacity(scan.files.len());
    let mut skipped = Vec::new();
    for (file, result) in scan.files.iter().zip(results) {
        match result {
            Ok(()) => rows.push(ManifestRow {
                path: file.rel_path.clone(),
                class: classes[file.class].clone(),
                label: file.class,
            }),
            Err(reason) => {
                if policy == BadImagePolicy::Fail {
                    return Err(StageError::Invalid(format!(
                        "{}: {reason} (data.on_bad_image is fail)",
                        file.path_under(&input.path).display()
                    )));
                }
                tracing::warn!(
                    "skipping {}: {reason}",
                    file.path_under(&input.path).display()
                );
                skipped.push(SkippedRow {
                    path: format!("{}/{}", input.written.trim_end_matches('/'), file.rel_path),
                    reason: reason.to_string(),
                });
            }
        }
    }
    let mut per_class = vec![0usize; classes.len()];
    for row in &rows {
        per_class[row.label] += 1;
    }
    if let Some(empty) = per_class.iter().position(|&count| count == 0) {
        return Err(StageError::Invalid(format!(
            "{}: no readable images in class folder `{}`",
            input.path.join(&classes[empty]).display(),
            classes[empty]
        )));
    }
    Ok((rows, skipped))
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|name| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts(rows: &[ManifestRow], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for row in rows {
        counts[row.label] += 1;
    }
    counts
}

/// Runs the stage.
pub fn run(context: &StageContext<'_>, out: &Path) -> Result<String, StageError> {
    let spec = &context.spec.spec;
    let plan = context.plan;
    let root = plan
        .input("data.root")
        .ok_or_else(|| StageError::Invalid("data.root was not scanned".into()))?;
    let classes = root.scan.classes.clone();
    if classes.len() < 2 {
        return Err(StageError::Invalid(format!(
            "{}: only one class folder (`{}`); classification needs at least two",
            root.path.display(),
            classes.join("")
        )));
    }
    let policy = spec.data.on_bad_image;
    let (all_rows, mut skipped) = usable_rows(root, &classes, policy, context)?;

    let mut roots = BTreeMap::new();
    let mut splits: Vec<(&str, Vec<ManifestRow>)> = Vec::new();
    if let Some(val) = plan.input("data.val_root") {
        let (val_rows, val_skipped) = usable_rows(val, &classes, policy, context)?;
        skipped.extend(val_skipped);
        roots.insert("train".to_owned(), "data.root".to_owned());
        roots.insert("val".to_owned(), "data.val_root".to_owned());
        splits.push(("train", all_rows));
        splits.push(("val", val_rows));
    } else {
        let labels: Vec<usize> = all_rows.iter().map(|row| row.label).collect();
        let (train, val) = split_indices(
            &labels,
            classes.len(),
            spec.split.val_fraction,
            spec.split.stratify,
            spec.split.seed,
        );
        let pick = |indices: &[usize]| indices.iter().map(|&i| all_rows[i].clone()).collect();
        roots.insert("train".to_owned(), "data.root".to_owned());
        roots.insert("val".to_owned(), "data.root".to_owned());
        splits.push(("train", pick(&train)));
        splits.push(("val", pick(&val)));
    }
    if let Some(test) = plan.input("data.test_root") {
        let (test_rows, test_skipped) = usable_rows(test, &classes, policy, context)?;
        skipped.extend(test_skipped);
        roots.insert("test".to_owned(), "data.test_root".to_owned());
        splits.push(("test", test_rows));
    }
    for (name, rows) in &splits {
        if rows.is_empty() {
            return Err(StageError::Invalid(format!(
                "{}: the {name} split is empty (too few images for split.val_fraction {})",
                root.path.display(),
                spec.split.val_fraction
            )));
        }
    }

    write_json(&out.join("classes.json"), &classes)?;
    for (name, rows) in &splits {
        write_manifest(&out.join(format!("{name}.csv")), rows)?;
    }
    write_skipped(&out.join("skipped.csv"), &skipped)?;
    if spec.split.materialize {
        for (name, rows) in &splits {
            let field = &roots[*name];
            let source_root = &plan
                .input(field)
                .ok_or_else(|| StageError::Invalid(format!("{field} was not scanned")))?
                .path;
            materialize(source_root, rows, &out.join("data").join(name))?;
        }
    }
    let summary = SplitSummary {
        classes: classes.clone(),
        roots,
        counts: splits
            .iter()
            .map(|(name, rows)| ((*name).to_owned(), counts(rows, classes.len())))
            .collect(),
        skipped: skipped.len(),
    };
    write_json(&out.join(SPLIT_FILE), &summary)?;
    if !skipped.is_empty() {
        context.reporter.note(&format!(
            "{} unreadable file(s) skipped; see skipped.csv",
            skipped.len()
        ));
    }
    let mut parts: Vec<String> = splits
        .iter()
        .map(|(name, rows)| format!("{} {name}", rows.len()))
        .collect();
    parts.push(format!("{} classes", classes.len()));
    if !skipped.is_empty() {
        parts.push(format!("{} skipped", skipped.len()));
    }
    Ok(parts.join(", "))
}

/// `out/<class>/<file>` as hard links to the images (copies where linking fails, e.g. across
/// file systems). The data root is only read.
fn materialize(source_root: &Path, rows: &[ManifestRow], out: &Path) -> Result<(), StageError> {
    for row in rows {
        let source = source_root.join(&row.path);
        let target = out.join(&row.path);
        if let Some(parent) = target.parent() {
            fs_err::create_dir_all(parent)?;
        }
        if std::fs::hard_link(&source, &target).is_err() {
            fs_err::copy(&source, &target)?;
        }
    }
    Ok(())
}
