//! Stage fingerprints, stage keys and why-stale reasons.
//!
//! # What a stage key is made of
//!
//! A stage's output is a pure function of a few things, and its key is the blake3 hash of the
//! canonical JSON (object keys sorted, no white space) of exactly those:
//!
//! | part | example | why |
//! |---|---|---|
//! | `stage` and `format` | `split`, `1` | the stage's code and on-disk format; bumping `format` invalidates old entries |
//! | `vilab` | `0.1.0` | a new release may compute differently |
//! | `spec` | `{"split.seed": 42, ...}` | only the resolved spec fields this stage reads, flattened to dotted leaves |
//! | `inputs` | `{"data.root": {mode, files, bytes, digest}}` | a digest of the input files (see below) |
//! | `upstream` | `{"split": "<key>"}` | keys of the stages whose outputs this one reads |
//!
//! Left out on purpose: the output folder, the experiment's name and file location, the data
//! root's absolute path (only its contents matter), verbosity, job counts and timings. Two
//! experiments that differ only in those share every cache entry.
//!
//! Input digests come in two modes. `fast` (the default) hashes each file's relative path, size
//! and modification time, which needs one `stat` per file; `exact` (`--verify-data`) hashes
//! relative paths and file contents. The modes produce different keys, so switching mode
//! recomputes once.
//!
//! The fingerprint is stored next to the outputs in the cache entry (`fingerprint.json`),
//! together with the per-file listing of each input (not hashed as such: its digest is). When a
//! stage is not cached, the fingerprint of the previous run of the same experiment is compared
//! with the new one and the first difference becomes the reason printed by `plan` and
//! `status`, old ⇒ new, in the spirit of cargo's dirty reasons.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::stage::StageKind;
use crate::integrity::content_key;

/// Digest of one input folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDigest {
    /// `fast` (path, size, mtime) or `exact` (path, contents).
    pub mode: String,
    /// Number of files.
    pub files: u64,
    /// Total size in bytes.
    pub bytes: u64,
    /// blake3 over the per-file records, in path order.
    pub digest: String,
}

/// One file of an input listing: relative path, size and either mtime or content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the input folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub len: u64,
    /// Modification time in nanoseconds (fast mode) or blake3 of the contents (exact mode).
    pub stamp: String,
}

/// Everything a stage key is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Stage kind.
    pub stage: StageKind,
    /// The stage's output format version.
    pub format: u32,
    /// vilab's version.
    pub vilab: String,
    /// The spec fields this stage reads, as dotted leaves.
    pub spec: BTreeMap<String, Value>,
    /// Input folder digests by spec field (`data.root`).
    pub inputs: BTreeMap<String, InputDigest>,
    /// Keys of upstream stages by stage name.
    pub upstream: BTreeMap<String, String>,
}

impl Fingerprint {
    /// The stage key: blake3 of the canonical JSON, in hex.
    pub fn key(&self) -> String {
        let value = serde_json::to_value(self)
            .unwrap_or_else(|error| unreachable!("fingerprints always serialise: {error}"));
        content_key(&value)
    }
}

/// A fingerprint as stored in a cache entry: with its key and the file listings behind the
/// input digests (for "3 files added under data1/Maize").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFingerprint {
    /// The stage key.
    pub key: String,
    /// What was hashed.
    pub fingerprint: Fingerprint,
    /// Per-file listings of the inputs, by spec field.
    #[serde(default)]
    pub input_files: BTreeMap<String, Vec<FileRecord>>,
}

/// The leaves of `resolved` under each dotted prefix in `fields`, keyed by dotted path. Lists
/// are leaves (a changed augmentation list is one change). A field written `-path` is left
/// out again (settings inside a read section that cannot change the outputs).
pub fn spec_slice(resolved: &Value, fields: &[&str]) -> BTreeMap<String, Value> {
    fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    flatten(&format!("{prefix}.{key}"), item, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for field in fields.iter().filter(|field| !field.starts_with('-')) {
        let pointer = format!("/{}", field.replace('.', "/"));
        if let Some(value) = resolved.pointer(&pointer) {
            flatten(field, value, &mut out);
        }
    }
    for excluded in fields.iter().filter_map(|field| field.strip_prefix('-')) {
        out.retain(|key, _| {
            !(key == excluded
                || key.starts_with(excluded) && key.as_bytes().get(excluded.len()) == Some(&b'.'))
        });
    }
    out
}

/// Digest of a file listing, in the listing's (path) order.
pub fn digest_files(mode: &str, files: &[FileRecord]) -> InputDigest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(mode.as_bytes());
    let mut bytes = 0;
    for file in files {
        hasher.update(file.path.as_bytes());
        hasher.update(&[0]);
        hasher.update(&file.len.to_le_bytes());
        hasher.update(file.stamp.as_bytes());
        hasher.update(&[0]);
        bytes += file.len;
    }
    InputDigest {
        mode: mode.to_owned(),
        files: files.len() as u64,
        bytes,
        digest: hasher.finalize().to_hex().to_string(),
    }
}

/// A value as shown in a reason: short, YAML-like.
fn show(value: Option<&Value>) -> String {
    match value {
        None => "unset".into(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => {
            let text = other.to_string();
            if text.chars().count() > 60 {
                let cut: String = text.chars().take(57).collect();
                format!("{cut}...")
            } else {
                text
            }
        }
    }
}

/// Why `new` differs from `old`: the first difference as one phrase, old ⇒ new.
/// `input_names` maps an input field to how the user wrote it (`data.root` ⇒ `data1`).
pub fn dirty_reason(
    old: &StoredFingerprint,
    new: &StoredFingerprint,
    input_names: &BTreeMap<String, String>,
) -> String {
    let (before, after) = (&old.fingerprint, &new.fingerprint);
    if before.vilab != after.vilab {
        return format!("vilab version changed ({} ⇒ {})", before.vilab, after.vilab);
    }
    if before.format != after.format {
        return format!(
            "stage format changed (v{} ⇒ v{})",
            before.format, after.format
        );
    }
    let fields: std::collections::BTreeSet<&String> =
        before.spec.keys().chain(after.spec.keys()).collect();
    for field in fields {
        let (was, now) = (before.spec.get(field), after.spec.get(field));
        if was != now {
            return format!("{field} changed ({} ⇒ {})", show(was), show(now));
        }
    }
    let inputs: std::collections::BTreeSet<&String> =
        before.inputs.keys().chain(after.inputs.keys()).collect();
    for input in inputs {
        let (was, now) = (before.inputs.get(input), after.inputs.get(input));
        if was == now {
            continue;
        }
        let shown_name = input_names
            .get(input.as_str())
            .cloned()
            .unwrap_or_else(|| input.clone());
        match (was, now) {
            (Some(was), Some(now)) if was.mode != now.mode => {
                return format!(
                    "{input} fingerprint mode changed ({} ⇒ {})",
                    was.mode, now.mode
                );
            }
            (Some(_), Some(_)) => {
                let empty = Vec::new();
                let old_files = old.input_files.get(input.as_str()).unwrap_or(&empty);
                let new_files = new.input_files.get(input.as_str()).unwrap_or(&empty);
                return describe_file_changes(&shown_name, old_files, new_files);
            }
            (None, Some(_)) => return format!("{input} added ({shown_name})"),
            (Some(_), None) => return format!("{input} removed"),
            (None, None) => {}
        }
    }
    // Upstream stages in execution order, so the reason names the root cause (split before
    // the stages computed from it).
    let mut upstream: Vec<(&String, &String)> = after.upstream.iter().collect();
    upstream.sort_by_key(|(stage, _)| {
        serde_json::from_value::<StageKind>(Value::String((*stage).clone())).ok()
    });
    for (stage, key) in upstream {
        if before.upstream.get(stage) != Some(key) {
            return format!("upstream {stage} changed");
        }
    }
    "cache entry missing (removed by gc or never computed here)".into()
}

/// "3 files added under data1/Maize, 1 modified under data1/Wheat".
fn describe_file_changes(root: &str, old: &[FileRecord], new: &[FileRecord]) -> String {
    let old_map: BTreeMap<&str, &FileRecord> = old.iter().map(|f| (f.path.as_str(), f)).collect();
    let new_map: BTreeMap<&str, &FileRecord> = new.iter().map(|f| (f.path.as_str(), f)).collect();
    // (change, folder) -> count, in a stable order.
    let mut changes: BTreeMap<(u8, String), usize> = BTreeMap::new();
    let folder = |path: &str| match path.rsplit_once('/') {
        Some((parent, _)) => format!("{root}/{parent}"),
        None => root.to_owned(),
    };
    for (path, record) in &new_map {
        match old_map.get(path) {
            None => *changes.entry((0, folder(path))).or_default() += 1,
            Some(previous) if previous != record => {
                *changes.entry((2, folder(path))).or_default() += 1;
            }
            Some(_) => {}
        }
    }
    for path in old_map.keys() {
        if !new_map.contains_key(path) {
            *changes.entry((1, folder(path))).or_default() += 1;
        }
    }
    if changes.is_empty() {
        return format!("files under {root} changed");
    }
    let total = changes.len();
    let mut parts: Vec<String> = changes
        .into_iter()
        .take(3)
        .map(|((change, folder), count)| {
            let verb = ["added", "removed", "modified"][usize::from(change)];
            let noun = if count == 1 { "file" } else { "files" };
            format!("{count} {noun} {verb} under {folder}")
        })
        .collect();
    if total > 3 {
        parts.push(format!("and changes in {} more folders", total - 3));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(spec: BTreeMap<String, Value>, files: Vec<FileRecord>) -> StoredFingerprint {
        let mut inputs = BTreeMap::new();
        inputs.insert("data.root".to_owned(), digest_files("fast", &files));
        let fingerprint = Fingerprint {
            stage: StageKind::Split,
            format: 1,
            vilab: "0.1.0".into(),
            spec,
            inputs,
            upstream: BTreeMap::new(),
        };
        let mut input_files = BTreeMap::new();
        input_files.insert("data.root".to_owned(), files);
        StoredFingerprint {
            key: fingerprint.key(),
            fingerprint,
            input_files,
        }
    }

    fn file(path: &str, len: u64) -> FileRecord {
        FileRecord {
            path: path.into(),
            len,
            stamp: "1".into(),
        }
    }

    #[test]
    fn slices_flatten_to_dotted_leaves() {
        let resolved = json!({"split": {"seed": 1, "stratify": true}, "data": {"root": "x", "image_size": 28}});
        let slice = spec_slice(&resolved, &["split", "data.image_size"]);
        let keys: Vec<&str> = slice.keys().map(String::as_str).collect();
        assert_eq!(keys, ["data.image_size", "split.seed", "split.stratify"]);
        let slice = spec_slice(&resolved, &["split", "-split.seed"]);
        let keys: Vec<&str> = slice.keys().map(String::as_str).collect();
        assert_eq!(keys, ["split.stratify"]);
    }

    #[test]
    fn reasons_name_the_first_difference() {
        let names = BTreeMap::from([("data.root".to_owned(), "data1".to_owned())]);
        let files = vec![file("Maize/1.png", 10), file("Wheat/1.png", 10)];
        let old = stored(
            BTreeMap::from([("split.seed".into(), json!(42))]),
            files.clone(),
        );
        let new = stored(
            BTreeMap::from([("split.seed".into(), json!(7))]),
            files.clone(),
        );
        assert_ne!(old.key, new.key);
        assert_eq!(
            dirty_reason(&old, &new, &names),
            "split.seed changed (42 ⇒ 7)"
        );

        let mut more = files.clone();
        more.extend([
            file("Maize/2.png", 5),
            file("Maize/3.png", 5),
            file("Maize/4.png", 5),
        ]);
        more.sort_by(|a, b| a.path.cmp(&b.path));
        let new = stored(BTreeMap::from([("split.seed".into(), json!(42))]), more);
        assert_eq!(
            dirty_reason(&old, &new, &names),
            "3 files added under data1/Maize"
        );
    }
}
