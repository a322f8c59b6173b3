//! File-system helpers every writer of vilab shares: atomic replacement of files and links,
//! the one naming scheme for temporary files, JSON written durably, deletion by rename, and
//! clean-up of what killed writers left behind.
//!
//! # Temporary names
//!
//! A file or folder being written beside its final place is named `.<name>.<pid>.<suffix>`
//! ([`temp_path`]): hidden, so listings skip it, and carrying the writer's process id, so a
//! later writer can tell a leftover of a dead process ([`remove_stale_temporaries`]) from a
//! concurrent writer's file. The suffix says what it is: `tmp` (being written), `link` (a
//! symbolic link being placed), `old.tmp` (being deleted).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// `.<name>.<pid>.<suffix>` beside `path` (see the module notes).
pub fn temp_path(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{suffix}", std::process::id()))
}

/// Writes `bytes` beside `path`, syncs them, and renames the file into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path, "tmp");
    let written = write_synced(&tmp, bytes).and_then(|()| fs_err::rename(&tmp, path));
    if written.is_err() {
        // Nothing half-written stays behind, least of all on a full disk.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `value` as pretty JSON with a trailing newline.
pub fn json_bytes<T: Serialize>(path: &Path, value: &T) -> std::io::Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(value)
        .map_err(|error| std::io::Error::other(format!("{}: {error}", path.display())))?;
    text.push(b'\n');
    Ok(text)
}

/// Writes `value` to `path` as pretty JSON with a trailing newline, synced (in place: for
/// files inside a folder that is itself renamed into place, or beside a manifest).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_synced(path, &json_bytes(path, value)?)
}

/// [`write_json`], replacing `path` atomically ([`write_atomic`]).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_atomic(path, &json_bytes(path, value)?)
}

/// Why a file could not be published at its destination.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The destination exists and replacing it was not asked for.
    #[error("{}: already exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    /// A file system failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Fails with [`PublishError::Exists`] when `path` exists and `force` is off.
pub fn ensure_free(path: &Path, force: bool) -> Result<(), PublishError> {
    if !force && path.symlink_metadata().is_ok() {
        return Err(PublishError::Exists(path.to_path_buf()));
    }
    Ok(())
}

/// Moves the finished file `tmp` to `path`. Without `force` an existing `path` is left alone
/// (a hard link publishes without ever replacing, where the file system has them) and the
/// temporary file is removed.
pub fn publish(tmp: &Path, path: &Path, force: bool) -> Result<(), PublishError> {
    if !force {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => {
                fs_err::remove_file(tmp)?;
                return Ok(());
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(tmp);
                return Err(PublishError::Exists(path.to_path_buf()));
            }
            Err(_) if path.symlink_metadata().is_ok() => {
                let _ = std::fs::remove_file(tmp);
                return Err(PublishError::Exists(path.to_path_buf()));
            }
            Err(_) => {}
        }
    }
    fs_err::rename(tmp, path)?;
    Ok(())
}

/// Where a command's text output goes: standard output, or a file written beside its
/// destination ([`temp_path`]) and published ([`publish`]) only once it is complete, so a
/// failure never leaves half a file where the result belongs.
pub struct Output {
    writer: Box<dyn std::io::Write>,
    /// `(temporary, final)` paths when writing to a file.
    file: Option<(PathBuf, PathBuf)>,
}

impl Output {
    /// Standard output for `None`; else a temporary file beside `path`, which must not exist
    /// unless `force` (its folder is created).
    pub fn open(path: Option<&Path>, force: bool) -> Result<Self, PublishError> {
        let Some(path) = path else {
            return Ok(Self {
                writer: Box::new(std::io::stdout().lock()),
                file: None,
            });
        };
        ensure_free(path, force)?;
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fs_err::create_dir_all(parent)?;
        }
        let tmp = temp_path(path, "tmp");
        let file = fs_err::File::create(&tmp)?;
        Ok(Self {
            writer: Box::new(std::io::BufWriter::new(file)),
            file: Some((tmp, path.to_path_buf())),
        })
    }

    /// What is being written, for messages: `stdout` or the temporary file.
    pub fn destination(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| "stdout".to_owned(), |(tmp, _)| tmp.display().to_string())
    }

    /// Flushes and, for a file, publishes it at its destination.
    pub fn finish(mut self, force: bool) -> Result<(), PublishError> {
        self.writer.flush()?;
        drop(self.writer);
        if let Some((tmp, path)) = &self.file {
            publish(tmp, path, force)?;
        }
        Ok(())
    }

    /// Drops what was written (a file's temporary copy is removed).
    pub fn abandon(self) {
        drop(self.writer);
        if let Some((tmp, _)) = &self.file {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl std::io::Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.writer.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// Writes `bytes` to `path` and syncs them (in place; see [`write_atomic`] for replacing).
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs_err::File::create(path)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()
}

/// Points the symbolic link `link` at `target`, replacing an existing link atomically.
pub fn link_atomic(target: &Path, link: &Path) -> std::io::Result<()> {
    if std::fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(());
    }
    let tmp = temp_path(link, "link");
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &tmp).map_err(|error| {
        std::io::Error::new(error.kind(), format!("{}: {error}", tmp.display()))
    })?;
    #[cfg(not(unix))]
    return Err(std::io::Error::other(
        "run folders need symbolic links (Unix)",
    ));
    fs_err::rename(&tmp, link)
}

/// Flushes a folder's entries (a rename into it) where the platform allows it.
pub fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Deletes the folder `dir` by renaming it to `trash` (on the same file system) and deleting
/// that, so a deletion cut short never leaves `dir` half-emptied. Nothing happens when `dir` is
/// not there (another process removed it).
pub fn remove_dir_via(dir: &Path, trash: &Path) -> std::io::Result<()> {
    match fs_err::rename(dir, trash) {
        Ok(()) => fs_err::remove_dir_all(trash),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Removes a file; one that is not there counts as removed. The error names the path.
pub fn remove_file_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(std::io::Error::new(
            error.kind(),
            format!("{}: {error}", path.display()),
        )),
        _ => Ok(()),
    }
}

/// Removes what writers killed mid-way left in `dir`: the `.<name>.<pid>.tmp` files of
/// [`write_atomic`] and `.<name>.<pid>.link` links of [`link_atomic`] whose process is gone.
/// Those of live processes (a concurrent writer of the same folder) are left alone. Best
/// effort: a leftover that cannot be removed is harmless, since nothing reads it.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let name = item.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_prefix('.').and_then(|rest| {
            rest.strip_suffix(".tmp")
                .or_else(|| rest.strip_suffix(".link"))
        }) else {
            continue;
        };
        let Some(pid) = stem
            .rsplit_once('.')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(item.path());
        }
    }
}

/// Whether a process with this id exists (one we may not signal counts).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Nanoseconds since the Unix epoch, for folder names that must not repeat.
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}

/// Now, as RFC 3339 to the second (the timestamps of run and sweep records).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// This machine's name, as records of who wrote a file give it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Total size of the files below `path` (0 where it cannot be read).
pub fn folder_bytes(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|item| item.file_type().is_file())
        .filter_map(|item| item.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_dead_writers_are_removed_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("reaped");
        let alive = std::process::id();
        let names = [
            format!(".plot.{dead}.link"),
            format!(".spec.yaml.{dead}.tmp"),
            format!(".run.json.{alive}.tmp"),
            ".notes.tmp".to_owned(),
            "results.1.tmp".to_owned(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        remove_stale_temporaries(dir.path());
        let left: Vec<bool> = names
            .iter()
            .map(|name| dir.path().join(name).exists())
            .collect();
        assert_eq!(left, [false, false, true, true, true], "{names:?}");
    }

    #[test]
    fn temporary_names_are_hidden_and_carry_the_process_id() {
        let path = Path::new("runs").join("run.json");
        assert_eq!(
            temp_path(&path, "tmp"),
            Path::new("runs").join(format!(".run.json.{}.tmp", std::process::id()))
        );
    }
}
