//! Content integrity: manifests that record the size and blake3 of every file of a folder
//! (cache entries, checkpoints) and the cheap check against them, plus the canonical JSON and
//! short ids that stage keys, run ids and trial ids are hashed from.
//!
//! A manifest is written after every other file of its folder, so a file whose inode changed
//! later than the manifest's has been modified since and is hashed again; an untouched folder
//! costs one `stat` per file to check (the cache's notes in `pipeline::cache` say more).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::files::write_json;

/// Why a folder does not match its manifest; every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// A file the manifest lists is not there.
    #[error("{}: missing", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file has another size than the manifest says.
    #[error("{}: size {len} bytes, manifest says {expected}", path.display())]
    Size {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The manifest's size.
        expected: u64,
    },
    /// A file's contents no longer have the manifest's hash.
    #[error("{}: contents changed since written (blake3 differs from the manifest)", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A file (or the manifest) could not be read.
    #[error("{}: unreadable: {message}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The manifest is not a manifest.
    #[error("{}: invalid: {message}", path.display())]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl IntegrityError {
    /// The file that failed.
    pub fn path(&self) -> &Path {
        match self {
            Self::Missing { path }
            | Self::Size { path, .. }
            | Self::Changed { path }
            | Self::Unreadable { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }

    /// What failed, as one word: `missing`, `size`, `changed`, `unreadable` or `invalid`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing",
            Self::Size { .. } => "size",
            Self::Changed { .. } => "changed",
            Self::Unreadable { .. } => "unreadable",
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// JSON with object keys sorted at every level and no white space: a stable hash input.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(key, item)| (key, sorted(item))).collect();
                let mut out = serde_json::Map::new();
                for (key, item) in ordered {
                    out.insert(key.clone(), item);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// blake3 of `value`'s canonical JSON, in hex (64 digits).
pub fn content_key(value: &Value) -> String {
    blake3::hash(canonical_json(value).as_bytes())
        .to_hex()
        .to_string()
}

/// The first `length` hex digits of [`content_key`]: run ids, sweep ids and trial ids.
pub fn short_id(value: &Value, length: usize) -> String {
    let mut key = content_key(value);
    key.truncate(length);
    key
}

/// The entry's integrity manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One file of an entry's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the entry, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub len: u64,
    /// blake3 of the contents.
    pub blake3: String,
}

/// Size and hash of every file of an entry (except the manifest itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Files in path order.
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// Total size of the entry's files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|file| file.len).sum()
    }
}

/// Reads the manifest of `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, IntegrityError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|error| IntegrityError::Unreadable {
        message: error.to_string(),
        path: path.clone(),
    })?;
    serde_json::from_slice(&text).map_err(|error| IntegrityError::Invalid {
        message: error.to_string(),
        path,
    })
}

/// How much of a folder [`check_manifest`] hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thoroughness {
    /// Only files whose inode changed after the manifest was written (cheap: one `stat` per
    /// file when nothing was touched).
    ChangedFiles,
    /// Every file.
    EveryFile,
}

/// When a file's inode last changed (contents, size or metadata), in nanoseconds.
fn changed_at(metadata: &std::fs::Metadata) -> i128 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec())
    }
    #[cfg(not(unix))]
    {
        metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(i128::MAX, |elapsed| elapsed.as_nanos() as i128)
    }
}

/// The state of a file's inode: equal stamps mean it was not written, truncated, linked or
/// renamed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    inode: u64,
    changed_at: i128,
    len: u64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            inode,
            changed_at: changed_at(metadata),
            len: metadata.len(),
        }
    }
}

/// Checks the files of `dir` against its `manifest.json` (written by [`write_manifest`]):
/// each must be there with its size, and, as `thoroughness` says, have its blake3. The error
/// names the first file that fails.
pub fn check_manifest(dir: &Path, thoroughness: Thoroughness) -> Result<(), IntegrityError> {
    check_files(dir, thoroughness, &BTreeMap::new()).map(drop)
}

/// [`check_manifest`], taking files whose inode is in the state `vouched` records for them as
/// unchanged; returns the stamps of the files it hashed and found intact.
pub fn check_files(
    dir: &Path,
    thoroughness: Thoroughness,
    vouched: &BTreeMap<String, FileStamp>,
) -> Result<Vec<(String, FileStamp)>, IntegrityError> {
    let manifest = read_manifest(dir)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let written_at = std::fs::metadata(&manifest_path)
        .map(|metadata| changed_at(&metadata))
        .map_err(|error| IntegrityError::Unreadable {
            message: error.to_string(),
            path: manifest_path.clone(),
        })?;
    let mut to_hash = Vec::new();
    for file in &manifest.files {
        let path = dir.join(&file.path);
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => metadata,
            _ => return Err(IntegrityError::Missing { path }),
        };
        if metadata.len() != file.len {
            return Err(IntegrityError::Size {
                len: metadata.len(),
                expected: file.len,
                path,
            });
        }
        let stamp = FileStamp::of(&metadata);
        let unchanged =
            changed_at(&metadata) <= written_at || vouched.get(&file.path) == Some(&stamp);
        if thoroughness == Thoroughness::EveryFile || !unchanged {
            to_hash.push((path, file, stamp));
        }
    }
    to_hash
        .into_par_iter()
        .map(|(path, file, stamp)| {
            let hash = hash_file(&path).map_err(|error| IntegrityError::Unreadable {
                message: error.to_string(),
                path: path.clone(),
            })?;
            if hash == file.blake3 {
                Ok((file.path.clone(), stamp))
            } else {
                Err(IntegrityError::Changed { path })
            }
        })
        .collect()
}

/// Hashes (and syncs) every file under `dir` and writes `dir/manifest.json`, synced. Write it
/// last: [`check_manifest`] takes files changed after it for modified.
pub fn write_manifest(dir: &Path) -> std::io::Result<Manifest> {
    let manifest = build_manifest(dir)?;
    write_json(&dir.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest)
}

/// blake3 of a file's contents, in hex.
pub fn hash_file(path: &Path) -> Result<String, std::io::Error> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(fs_err::File::open(path)?)
        .map_err(|error| {
            std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
        })?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Hashes (and syncs) every file under `dir` except the manifest.
fn build_manifest(dir: &Path) -> std::io::Result<Manifest> {
    let mut paths = Vec::new();
    for item in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let item =
            item.map_err(|error| std::io::Error::other(format!("{}: {error}", dir.display())))?;
        if !item.file_type().is_file() {
            continue;
        }
        let relative = item
            .path()
            .strip_prefix(dir)
            .map_err(|error| std::io::Error::other(error.to_string()))?
            .to_string_lossy()
            .replace('\\', "/");
        if relative != MANIFEST_FILE {
            paths.push(relative);
        }
    }
    let files = paths
        .into_par_iter()
        .map(|relative| {
            let path = dir.join(&relative);
            let file = fs_err::File::open(&path)?;
            file.sync_all()?;
            let len = file.metadata()?.len();
            Ok(ManifestFile {
                blake3: hash_file(&path)?,
                path: relative,
                len,
            })
        })
        .collect::<Result<Vec<_>, std::io::Error>>()?;
    Ok(Manifest { files })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": 2}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":2,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn short_ids_are_prefixes_of_the_content_key() {
        let value = json!({"b": 1, "a": 2});
        let key = content_key(&value);
        assert_eq!(key.len(), 64);
        assert_eq!(short_id(&value, 12), key[..12]);
        assert_eq!(
            content_key(&json!({"a": 2, "b": 1})),
            key,
            "key order does not matter"
        );
    }
}
