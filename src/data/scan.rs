//! Finding the classes and files of an image folder laid out one sub-folder per class.
//!
//! This is the layout torchvision's `ImageFolder` reads: `root/<class>/**/<image>`. A class is a
//! first-level sub-folder of the root; its label is its position among the class names sorted
//! byte-wise, so labels do not depend on the locale or on the order the file system lists entries.
//! Files are collected recursively below each class folder. Names starting with `.` (`.DS_Store`,
//! `.thumbnails/`) are ignored, and so are loose files directly in the root (a README, say).
//!
//! Scanning reads metadata only: whether a file really is an image is decided later by decoding it
//! (see `verify`). Nothing under the root is ever written.

use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use walkdir::WalkDir;

use crate::data::error::{DataError, innermost_message, io_error};

/// The classes of an image folder and every candidate image file in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderScan {
    /// Class folder names, sorted byte-wise; a label is an index into this list.
    pub classes: Vec<String>,
    /// Every non-hidden file under a class folder, sorted by `rel_path`.
    pub files: Vec<ScannedFile>,
}

/// One file found under a class folder, with what the fast data fingerprint needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedFile {
    /// Path relative to the scanned root, components joined with `/` on every platform.
    pub rel_path: String,
    /// Label: index into [`FolderScan::classes`].
    pub class: usize,
    /// Size in bytes.
    pub len: u64,
    /// Modification time in nanoseconds since the Unix epoch (negative before it).
    pub mtime_ns: i128,
}

impl ScannedFile {
    /// The file's path under `root`.
    pub fn path_under(&self, root: &Path) -> PathBuf {
        root.join(&self.rel_path)
    }
}

/// Lists the classes and files of the image folder at `root`.
///
/// Symbolic links are followed (a class folder may link to a dataset elsewhere); a link loop is
/// reported as an error naming the path rather than walked forever.
///
/// # Errors
/// Each names the folder at fault: `root` missing, not a directory or unreadable; no class folders;
/// a class folder without any non-hidden file; a name that is not UTF-8 (it could not be written
/// into a manifest faithfully); a link loop or unreadable entry below a class folder.
pub fn scan_image_folder(root: &Path) -> Result<FolderScan, DataError> {
    use rayon::prelude::*;
    let classes = class_folders(root)?;
    // Classes are walked in parallel; the first problem in class order is the one reported.
    let per_class: Vec<Result<Vec<ScannedFile>, DataError>> = classes
        .par_iter()
        .enumerate()
        .map(|(label, class)| {
            let class_root = root.join(class);
            let files = collect_class_files(root, &class_root, label)?;
            if files.is_empty() {
                return Err(DataError::EmptyClass { path: class_root });
            }
            Ok(files)
        })
        .collect();
    let mut files = Vec::new();
    for class_files in per_class {
        files.append(&mut class_files?);
    }
    files.par_sort_unstable_by(|left, right| left.rel_path.cmp(&right.rel_path));
    Ok(FolderScan { classes, files })
}

/// Whether a file or folder name is hidden by the Unix convention.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The sorted names of the non-hidden sub-folders of `root`.
fn class_folders(root: &Path) -> Result<Vec<String>, DataError> {
    let metadata = match fs_err::metadata(root) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::Missing {
                path: root.to_path_buf(),
            });
        }
        Err(error) => return Err(io_error(root)(error)),
    };
    if !metadata.is_dir() {
        return Err(DataError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut classes = Vec::new();
    for entry in fs_err::read_dir(root).map_err(io_error(root))? {
        let entry = entry.map_err(io_error(root))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(DataError::NonUtf8Name { path });
        };
        if is_hidden(&name) {
            continue;
        }
        // `metadata` follows symbolic links, so a linked class folder counts as a folder.
        if fs_err::metadata(&path).map_err(io_error(&path))?.is_dir() {
            classes.push(name);
        }
    }
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            path: root.to_path_buf(),
        });
    }
    classes.sort_unstable();
    Ok(classes)
}

/// Everything below `root` in name order, links followed, hidden entries (and what is below
/// them) left out: how class folders and `vilab predict`'s folders are read.
pub fn walk_visible(root: &Path) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> {
    WalkDir::new(root)
        .follow_links(true)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| !entry.file_name().to_str().is_some_and(is_hidden))
}

/// Every visible file under `class_root`, labelled `label`, in no particular order.
///
/// Written on `std::fs::read_dir` rather than walkdir because the `stat` per file is nearly all
/// the cost of a cached run's data check: a regular file's metadata is read relative to its
/// open folder (`DirEntry::metadata`, no path lookup from the root), the entries of each
/// folder are stat-ed in parallel on rayon's pool, and sub-folders (like classes) are walked in
/// parallel, so listing, stat-ing and allocating all scale with cores (a million files: see the
/// README's performance section). Symbolic links are followed, a dangling one is kept as an
/// empty file (decoding reports it later), and a link back to a folder being walked is an
/// error, as with walkdir. Problems are reported in name order, whatever the threads' timing.
fn collect_class_files(
    root: &Path,
    class_root: &Path,
    label: usize,
) -> Result<Vec<ScannedFile>, DataError> {
    // The scanned root counts as an ancestor too: a link from a class folder back to it would
    // walk every class again.
    let mut ancestors = Vec::new();
    for folder in [root, class_root] {
        let metadata = std::fs::metadata(folder).map_err(walk_io(folder))?;
        ancestors.push((folder_id(&metadata), folder.to_path_buf()));
    }
    let prefix = format!("{}/", relative_path(root, class_root)?);
    walk_folder(&prefix, class_root, label, &ancestors)
}

/// What an entry of a folder is, its metadata read.
enum Entry {
    File(ScannedFile),
    Folder(std::fs::Metadata),
    Other,
}

/// (device, inode) of a folder, to recognise it again through a link.
fn folder_id(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

fn walk_io(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |error| DataError::Walk {
        path: path.to_path_buf(),
        message: innermost_message(&error),
    }
}

/// Walks `folder`, whose path relative to the scanned root is `prefix` (ending in `/`) and whose
/// ancestors (itself included) are `ancestors`.
fn walk_folder(
    prefix: &str,
    folder: &Path,
    label: usize,
    ancestors: &[((u64, u64), PathBuf)],
) -> Result<Vec<ScannedFile>, DataError> {
    use rayon::prelude::*;
    // Each entry with its name, which must be UTF-8 (relative paths are strings).
    let mut entries: Vec<(String, std::fs::DirEntry)> = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(walk_io(folder))? {
        let entry = entry.map_err(walk_io(folder))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| DataError::NonUtf8Name { path: entry.path() })?;
        if !is_hidden(&name) {
            entries.push((name, entry));
        }
    }
    // Sorted, so the first problem reported does not depend on the file system's order.
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let read: Vec<Result<Entry, DataError>> = entries
        .par_iter()
        .map(|(name, entry)| read_entry(prefix, name, entry, label))
        .collect();
    let mut files = Vec::new();
    // (prefix, path, ancestors) of each sub-folder, walked once this folder's files are in.
    let mut folders = Vec::new();
    for ((name, entry), read) in entries.iter().zip(read) {
        match read? {
            Entry::File(file) => files.push(file),
            Entry::Folder(metadata) => {
                let path = entry.path();
                let id = folder_id(&metadata);
                if let Some((_, ancestor)) = ancestors.iter().find(|(seen, _)| *seen == id) {
                    return Err(DataError::Walk {
                        message: format!(
                            "symbolic link loop (points back to {})",
                            ancestor.display()
                        ),
                        path,
                    });
                }
                let mut inner_ancestors = ancestors.to_vec();
                inner_ancestors.push((id, path.clone()));
                folders.push((format!("{prefix}{name}/"), path, inner_ancestors));
            }
            Entry::Other => {}
        }
    }
    let walked: Vec<Result<Vec<ScannedFile>, DataError>> = folders
        .par_iter()
        .map(|(inner, path, inner_ancestors)| walk_folder(inner, path, label, inner_ancestors))
        .collect();
    for folder_files in walked {
        files.append(&mut folder_files?);
    }
    Ok(files)
}

/// Reads one folder entry: a file with its size and time, a folder to descend into, or
/// something else (a socket, a fifo) to skip.
fn read_entry(
    prefix: &str,
    name: &str,
    entry: &std::fs::DirEntry,
    label: usize,
) -> Result<Entry, DataError> {
    let failed = |error: std::io::Error| walk_io(&entry.path())(error);
    let file_type = entry.file_type().map_err(failed)?;
    let metadata = if file_type.is_symlink() {
        match std::fs::metadata(entry.path()) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Entry::File(ScannedFile {
                    rel_path: format!("{prefix}{name}"),
                    class: label,
                    len: 0,
                    mtime_ns: 0,
                }));
            }
            Err(error) => return Err(failed(error)),
        }
    } else if file_type.is_file() || file_type.is_dir() {
        entry.metadata().map_err(failed)?
    } else {
        return Ok(Entry::Other);
    };
    if metadata.is_dir() {
        Ok(Entry::Folder(metadata))
    } else if metadata.is_file() {
        Ok(Entry::File(ScannedFile {
            rel_path: format!("{prefix}{name}"),
            class: label,
            len: metadata.len(),
            mtime_ns: modification_time_ns(&metadata),
        }))
    } else {
        Ok(Entry::Other)
    }
}

/// `path` relative to `root`, with `/` separators; errors on names that are not UTF-8.
fn relative_path(root: &Path, path: &Path) -> Result<String, DataError> {
    let relative = path.strip_prefix(root).map_err(|_| DataError::Invalid {
        path: path.to_path_buf(),
        message: format!("not under the scanned folder {}", root.display()),
    })?;
    let mut parts = Vec::new();
    for component in relative.components() {
        if let Component::Normal(part) = component {
            let Some(part) = part.to_str() else {
                return Err(DataError::NonUtf8Name {
                    path: path.to_path_buf(),
                });
            };
            parts.push(part);
        }
    }
    Ok(parts.join("/"))
}

fn modification_time_ns(metadata: &std::fs::Metadata) -> i128 {
    // A file system without modification times yields 0, which still fingerprints consistently.
    match metadata.modified() {
        Ok(time) => match time.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        },
        Err(_) => 0,
    }
}
