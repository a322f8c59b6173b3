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
    let classes = class_folders(root)?;
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_root = root.join(class);
        let before = files.len();
        collect_class_files(root, &class_root, label, &mut files)?;
        if files.len() == before {
            return Err(DataError::EmptyClass { path: class_root });
        }
    }
    files.sort_by(|left, right| left.rel_path.cmp(&right.rel_path));
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

/// Appends every non-hidden file below `class_root` to `files`.
fn collect_class_files(
    root: &Path,
    class_root: &Path,
    label: usize,
    files: &mut Vec<ScannedFile>,
) -> Result<(), DataError> {
    for entry in walk_visible(class_root) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                // A dangling link is an unreadable file, not a broken folder: list it so that
                // verification reports it (and the skip policy applies) instead of aborting.
                match error.path().filter(|path| is_dangling_link(path)) {
                    Some(path) => files.push(ScannedFile {
                        rel_path: relative_path(root, path)?,
                        class: label,
                        len: 0,
                        mtime_ns: 0,
                    }),
                    None => return Err(walk_error(class_root, &error)),
                }
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let metadata = entry
            .metadata()
            .map_err(|error| walk_error(class_root, &error))?;
        files.push(ScannedFile {
            rel_path: relative_path(root, path)?,
            class: label,
            len: metadata.len(),
            mtime_ns: modification_time_ns(&metadata),
        });
    }
    Ok(())
}

/// Whether `path` is a symbolic link whose target does not exist.
fn is_dangling_link(path: &Path) -> bool {
    let is_link = fs_err::symlink_metadata(path).is_ok_and(|metadata| metadata.is_symlink());
    is_link
        && fs_err::metadata(path).is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound)
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

/// A walkdir error as a [`DataError`] naming the entry at fault (or the class folder).
fn walk_error(class_root: &Path, error: &walkdir::Error) -> DataError {
    let path = error.path().unwrap_or(class_root).to_path_buf();
    let message = if let Some(ancestor) = error.loop_ancestor() {
        format!("symbolic link loop (points back to {})", ancestor.display())
    } else if let Some(io) = error.io_error() {
        innermost_message(io)
    } else {
        error.to_string()
    };
    DataError::Walk { path, message }
}
