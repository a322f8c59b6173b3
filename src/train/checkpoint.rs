//! Checkpoints on disk: the resumable training state, and the exported weights of the `best` and
//! `last` checkpoints.
//!
//! # Resumable state
//!
//! ```text
//! <resume_dir>/                         outside the cache's tmp/ folder, so it survives a crash
//!     ckpt-<global step, 12 digits>/    one complete checkpoint; the highest number wins
//!         state.safetensors             f32 tensors: model.<path>, ema.<path>, best.<path>,
//!                                       optimizer.first.<i>, optimizer.second.<i>
//!         state.json                    counters, meters, loss scaler, best so far (floats as
//!                                       exact decimal strings)
//!         history.csv                   the finished epochs
//!         manifest.json                 size and blake3 of the three files above
//!     .ckpt-<...>.<pid>.tmp/            being written; ignored and removed
//!     damaged-ckpt-<...>.<nanos>/       a checkpoint that failed its check, set aside
//! ```
//!
//! A checkpoint folder is written under a temporary name, its files synced and hashed into its
//! manifest, and renamed into place, so a `ckpt-*` folder is always complete. The newest two
//! are kept (older ones are removed only after the new one exists): before resuming, a
//! checkpoint is hashed against its manifest ([`usable_checkpoint`]), and one whose files were
//! truncated or edited afterwards is set aside with a warning naming the file, so training
//! resumes from the one before it, or from the start — never from damaged state. Everything a
//! resumed run needs is in a checkpoint: the RNG streams are all derived from (seed, epoch,
//! step) rather than carried as state, so resuming from an older checkpoint gives the same
//! result, only later.
//!
//! Training writes one after every epoch, one when Ctrl-C or SIGTERM stops it mid-epoch, and,
//! with `train.checkpoint_every` ([`CheckpointEvery`]: `{steps: N}` or `{minutes: M}`), one
//! mid-epoch whenever that much work has been done since the last one, so a `kill -9` loses at
//! most that much. A mid-epoch checkpoint holds the same state as the interrupt's (the epoch's
//! progress and meters included), is named by its global step like any other, and takes part
//! in the same rotation: still at most two are on disk.
//!
//! The tensors use the safetensors layout (an 8-byte header length, a JSON header, raw
//! little-endian data) written here directly, without metadata, so identical states give
//! identical bytes.
//!
//! # Exported weights
//!
//! `best/` and `last/` hold `model.safetensors` with the official ViL parameter names and PyTorch
//! layouts (readable by `model.pretrained` and by PyTorch), plus `config.json` saying how to
//! rebuild and feed the model. They too carry only the `format: pt` metadata entry: burn-store's
//! default metadata is a hash map whose order changes from process to process.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::field::FieldError;
use crate::files::{remove_dir_via, sync_dir, temp_path};
use crate::integrity::{MANIFEST_FILE, Thoroughness, check_manifest, write_manifest};
use crate::model::VisionLstm;

pub use crate::inference::{CheckpointConfig, EXPORTED_CONFIG, EXPORTED_WEIGHTS, ValScores};

/// A failure to read or write a checkpoint; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The file is not what we wrote.
    #[error("{path}: {message}", path = path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn format_error(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Named f32 tensors on the host, in order.
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Writes `tensors` as a safetensors file (no metadata).
pub fn write_tensors(path: &Path, tensors: &NamedTensors) -> Result<(), CheckpointError> {
    let mut header = Map::new();
    let mut offset = 0_usize;
    for (name, shape, values) in tensors {
        let end = offset + values.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(header))
        .map_err(|error| format_error(path, error.to_string()))?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for (_, _, values) in tensors {
        for value in values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    let mut file = fs_err::File::create(path)?;
    std::io::Write::write_all(&mut file, &bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Reads a file written by [`write_tensors`] (any safetensors file of F32 tensors).
pub fn read_tensors(path: &Path) -> Result<NamedTensors, CheckpointError> {
    let bytes = fs_err::read(path)?;
    let header_len = bytes
        .get(..8)
        .and_then(|head| head.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| format_error(path, "truncated before the header"))?;
    let header_end = usize::try_from(header_len)
        .ok()
        .and_then(|len| len.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format_error(path, "header longer than the file"))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|error| format_error(path, format!("bad header: {error}")))?;
    let data = &bytes[header_end..];
    let mut tensors = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format_error(path, format!("tensor `{name}`: {what}"));
        if info.get("dtype").and_then(Value::as_str) != Some("F32") {
            return Err(bad("not F32"));
        }
        let shape: Vec<usize> = info
            .get("shape")
            .cloned()
            .and_then(|shape| serde_json::from_value(shape).ok())
            .ok_or_else(|| bad("bad shape"))?;
        let [start, end]: [usize; 2] = info
            .get("data_offsets")
            .cloned()
            .and_then(|offsets| serde_json::from_value(offsets).ok())
            .ok_or_else(|| bad("bad data_offsets"))?;
        let numel: usize = shape.iter().product();
        if end < start || end > data.len() || end - start != numel * 4 {
            return Err(bad("data_offsets do not match the shape or the file"));
        }
        let values = data[start..end]
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        tensors.push((name, shape, values));
    }
    Ok(tensors)
}

/// A 1-D tensor's values on the host, as f32.
pub fn host_values<B: Backend>(tensor: Tensor<B, 1>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// A 1-D f32 tensor on `device`, whatever the device's default float type.
pub fn device_tensor<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), (device, DType::F32))
}

/// How often training saves a resumable checkpoint inside an epoch (`train.checkpoint_every`),
/// on top of the one after every epoch: the most work a `kill -9` can lose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointEvery {
    /// After this many optimiser steps since the last checkpoint (≥ 1).
    Steps(#[schemars(range(min = 1))] u64),
    /// Once this many minutes of wall time have passed since the last checkpoint (> 0; looked
    /// at after every step, so a checkpoint waits for the step that crosses the mark).
    Minutes(#[schemars(extend("exclusiveMinimum" = 0.0))] f64),
}

impl CheckpointEvery {
    /// Checks the interval; the error is the tail after `train.checkpoint_every.`.
    pub fn validate(&self) -> Result<(), FieldError> {
        match *self {
            CheckpointEvery::Steps(0) => Err(FieldError::new("steps", "must be ≥ 1 (got 0)")),
            CheckpointEvery::Steps(_) => Ok(()),
            CheckpointEvery::Minutes(minutes) if minutes > 0.0 && minutes.is_finite() => Ok(()),
            CheckpointEvery::Minutes(minutes) => Err(crate::field_error!(
                "minutes",
                "must be > 0 (got {minutes})"
            )),
        }
    }
}

/// Decides after each step whether [`CheckpointEvery`] asks for a checkpoint now: counts the
/// steps and the wall time since the last checkpoint written (mid-epoch or at an epoch's end).
#[derive(Debug, Clone)]
pub struct CheckpointCadence {
    every: Option<CheckpointEvery>,
    steps: u64,
    since: Instant,
}

impl CheckpointCadence {
    /// Starts counting at `now` (the start of training, or of a resumed run).
    pub fn new(every: Option<CheckpointEvery>, now: Instant) -> Self {
        Self {
            every,
            steps: 0,
            since: now,
        }
    }

    /// Counts one finished step at `now`; `true` when a checkpoint is due (never without an
    /// interval).
    pub fn step_done(&mut self, now: Instant) -> bool {
        self.steps += 1;
        match self.every {
            None => false,
            Some(CheckpointEvery::Steps(steps)) => self.steps >= steps,
            Some(CheckpointEvery::Minutes(minutes)) => {
                now.saturating_duration_since(self.since).as_secs_f64() >= minutes * 60.0
            }
        }
    }

    /// A checkpoint was written at `now`: the interval starts again.
    pub fn saved(&mut self, now: Instant) {
        self.steps = 0;
        self.since = now;
    }
}

/// How many checkpoints [`write_checkpoint`] keeps: the newest, and one to fall back on when
/// the newest turns out damaged.
const KEPT_CHECKPOINTS: usize = 2;

/// The complete checkpoints in `resume_dir` (`ckpt-*` with a manifest), oldest first.
pub fn checkpoints(resume_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(resume_dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with("ckpt-"))
        })
        .map(|entry| entry.path())
        .filter(|path| path.join(MANIFEST_FILE).is_file())
        .collect();
    found.sort();
    found
}

/// The path of the newest complete checkpoint in `resume_dir`, if any (not verified; see
/// [`usable_checkpoint`]).
pub fn latest_checkpoint(resume_dir: &Path) -> Option<PathBuf> {
    checkpoints(resume_dir).pop()
}

/// The newest checkpoint in `resume_dir` whose files all match their manifest, if any. Each
/// newer one that does not (truncated, edited, or written without a manifest) is renamed to
/// `damaged-<name>.<nanos>` and reported with a warning naming the file, so it is neither
/// loaded nor tried again.
pub fn usable_checkpoint(resume_dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    for checkpoint in checkpoints(resume_dir).into_iter().rev() {
        // A checkpoint is read whole to resume, so hashing it whole costs about as much again.
        let Err(reason) = check_manifest(&checkpoint, Thoroughness::EveryFile) else {
            return Ok(Some(checkpoint));
        };
        let name = checkpoint
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let aside = resume_dir.join(format!("damaged-{name}.{nanos}"));
        fs_err::rename(&checkpoint, &aside)?;
        tracing::warn!(
            "damaged checkpoint {}: {reason}; set aside as {}, resuming from an earlier \
             checkpoint or from the start",
            checkpoint.display(),
            aside.display()
        );
    }
    Ok(None)
}

/// Writes a checkpoint folder for `global_step` atomically with `write` (plus its manifest),
/// then removes all but the newest [`KEPT_CHECKPOINTS`] and leftovers of interrupted writes.
pub fn write_checkpoint(
    resume_dir: &Path,
    global_step: u64,
    write: impl FnOnce(&Path) -> Result<(), CheckpointError>,
) -> Result<PathBuf, CheckpointError> {
    fs_err::create_dir_all(resume_dir)?;
    let name = format!("ckpt-{global_step:012}");
    let tmp = temp_path(&resume_dir.join(&name), "tmp");
    if tmp.exists() {
        fs_err::remove_dir_all(&tmp)?;
    }
    fs_err::create_dir_all(&tmp)?;
    let written = write(&tmp).and_then(|()| Ok(write_manifest(&tmp).map(drop)?));
    if let Err(error) = written {
        // A full disk must not stay fuller by the half-written checkpoint (best effort: the
        // next write removes leftovers too).
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(error);
    }
    let target = resume_dir.join(&name);
    if target.exists() {
        // The same step saved twice (an interrupt right after an epoch ended): same contents.
        remove_checkpoint(&target)?;
    }
    fs_err::rename(&tmp, &target)?;
    sync_dir(resume_dir);
    let mut complete = checkpoints(resume_dir);
    complete.truncate(complete.len().saturating_sub(KEPT_CHECKPOINTS));
    for stale in complete {
        remove_checkpoint(&stale)?;
    }
    for entry in fs_err::read_dir(resume_dir)?.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        // `ckpt-*` without a manifest: written by an older vilab, never usable.
        let incomplete =
            file_name.starts_with("ckpt-") && !entry.path().join(MANIFEST_FILE).is_file();
        let stale_tmp = file_name.starts_with(".ckpt-") && file_name.ends_with(".tmp");
        if incomplete || stale_tmp {
            fs_err::remove_dir_all(entry.path())?;
        }
    }
    Ok(target)
}

/// Deletes a checkpoint folder so that a kill midway never leaves a `ckpt-*` with its manifest
/// but not all its files: it is renamed to a `.ckpt-*.tmp` name first, which the next
/// [`write_checkpoint`] removes if this one does not get to.
fn remove_checkpoint(checkpoint: &Path) -> Result<(), CheckpointError> {
    remove_dir_via(checkpoint, &temp_path(checkpoint, "old.tmp"))?;
    Ok(())
}

/// Writes `value` as pretty JSON with a trailing newline, synced.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    Ok(crate::files::write_json(path, value)?)
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let text = fs_err::read(path)?;
    serde_json::from_slice(&text).map_err(|error| format_error(path, error.to_string()))
}

/// Writes `model` as `<dir>/model.safetensors` (official names, PyTorch layouts) and `config`
/// as `<dir>/config.json`, replacing `dir` atomically.
pub fn export_checkpoint<B: Backend>(
    dir: &Path,
    model: &VisionLstm<B>,
    config: &CheckpointConfig,
) -> Result<(), CheckpointError> {
    let tmp = temp_path(dir, "tmp");
    if tmp.exists() {
        fs_err::remove_dir_all(&tmp)?;
    }
    fs_err::create_dir_all(&tmp)?;
    let weights = tmp.join(EXPORTED_WEIGHTS);
    let mut store = SafetensorsStore::from_file(&weights)
        .skip_enum_variants(true)
        .with_to_adapter(BurnToPyTorchAdapter)
        .clear_metadata()
        .metadata("format", "pt")
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|error| format_error(&weights, error.to_string()))?;
    write_json(&tmp.join(EXPORTED_CONFIG), config)?;
    if dir.exists() {
        fs_err::remove_dir_all(dir)?;
    }
    fs_err::rename(&tmp, dir)?;
    Ok(())
}

/// `f64` fields that survive a JSON round trip bit for bit: written as Rust's shortest
/// round-trip decimal string and parsed with the correctly rounded standard parser
/// (serde_json's default float parser may be off by one unit in the last place).
pub mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises `value` as a decimal string.
    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    /// Parses a string written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tensors_round_trip_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        let tensors: NamedTensors = vec![
            (
                "model.a".into(),
                vec![2, 2],
                vec![1.0, -0.0, f32::MIN_POSITIVE, 3.5],
            ),
            ("optimizer.first.0".into(), vec![3], vec![0.1, 0.2, 1e-30]),
            ("empty".into(), vec![0], vec![]),
        ];
        write_tensors(&path, &tensors).unwrap();
        let read = read_tensors(&path).unwrap();
        assert_eq!(read.len(), 3);
        for ((name, shape, values), (read_name, read_shape, read_values)) in
            tensors.iter().zip(&read)
        {
            assert_eq!((name, shape), (read_name, read_shape));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(values), bits(read_values));
        }
        let again = dir.path().join("again.safetensors");
        write_tensors(&again, &read).unwrap();
        assert_eq!(fs_err::read(&path).unwrap(), fs_err::read(&again).unwrap());
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        write_tensors(&path, &vec![("a".into(), vec![4], vec![1.0; 4])]).unwrap();
        let bytes = fs_err::read(&path).unwrap();
        fs_err::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let error = read_tensors(&path).unwrap_err().to_string();
        assert!(error.contains("state.safetensors"), "{error}");
    }

    fn names(folder: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_newest_two_complete_checkpoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let resume = dir.path().join("resume");
        let write = |step: u64| {
            write_checkpoint(&resume, step, |folder| {
                write_json(&folder.join("state.json"), &step)
            })
            .unwrap()
        };
        write(3);
        write(7);
        // A leftover of a killed writer is ignored and cleaned up.
        fs_err::create_dir_all(resume.join(".ckpt-000000000009.1.tmp")).unwrap();
        let newest = write(12);
        assert_eq!(latest_checkpoint(&resume), Some(newest.clone()));
        assert_eq!(usable_checkpoint(&resume).unwrap(), Some(newest.clone()));
        assert_eq!(
            names(&resume),
            vec![
                "ckpt-000000000007".to_owned(),
                "ckpt-000000000012".to_owned()
            ]
        );
        let step: u64 = read_json(&newest.join("state.json")).unwrap();
        assert_eq!(step, 12);
        assert!(names(&newest).contains(&MANIFEST_FILE.to_owned()));
    }

    #[test]
    fn a_damaged_checkpoint_is_set_aside_for_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let resume = dir.path().join("resume");
        let write = |step: u64| {
            write_checkpoint(&resume, step, |folder| {
                write_tensors(
                    &folder.join("state.safetensors"),
                    &vec![("model.a".into(), vec![4], vec![step as f32; 4])],
                )?;
                write_json(&folder.join("state.json"), &step)
            })
            .unwrap()
        };
        let older = write(5);
        let newest = write(10);
        // Same size, other bytes: only the hash tells.
        let tensors = newest.join("state.safetensors");
        let mut bytes = fs_err::read(&tensors).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs_err::write(&tensors, &bytes).unwrap();
        assert_eq!(usable_checkpoint(&resume).unwrap(), Some(older.clone()));
        assert!(!newest.exists());
        let names = names(&resume);
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names[1].starts_with("damaged-ckpt-000000000010."),
            "{names:?}"
        );

        // Truncated: the only checkpoint left is damaged too, so training starts over.
        let state = older.join("state.json");
        let text = fs_err::read(&state).unwrap();
        fs_err::write(&state, &text[..text.len() - 1]).unwrap();
        assert_eq!(usable_checkpoint(&resume).unwrap(), None);
        assert_eq!(latest_checkpoint(&resume), None);
    }

    #[test]
    fn a_step_interval_counts_steps_since_the_last_checkpoint() {
        let start = Instant::now();
        let mut cadence = CheckpointCadence::new(Some(CheckpointEvery::Steps(3)), start);
        let due: Vec<bool> = (0..7).map(|_| cadence.step_done(start)).collect();
        // Not saved when due (the epoch's own checkpoint follows): still due.
        assert_eq!(due, [false, false, true, true, true, true, true]);
        cadence.saved(start);
        let due: Vec<bool> = (0..3).map(|_| cadence.step_done(start)).collect();
        assert_eq!(due, [false, false, true]);

        let mut every_step = CheckpointCadence::new(Some(CheckpointEvery::Steps(1)), start);
        assert!(every_step.step_done(start));
        let mut never = CheckpointCadence::new(None, start);
        assert!((0..1000).all(|_| !never.step_done(start + Duration::from_secs(1 << 20))));
    }

    #[test]
    fn a_minute_interval_counts_wall_time_since_the_last_checkpoint() {
        let start = Instant::now();
        let mut cadence = CheckpointCadence::new(Some(CheckpointEvery::Minutes(0.5)), start);
        assert!(!cadence.step_done(start + Duration::from_secs(29)));
        assert!(cadence.step_done(start + Duration::from_secs(30)));
        let later = start + Duration::from_secs(31);
        cadence.saved(later);
        assert!(!cadence.step_done(later + Duration::from_secs(29)));
        assert!(cadence.step_done(later + Duration::from_secs(45)));
        // A tiny interval: every step is due.
        let mut tiny = CheckpointCadence::new(Some(CheckpointEvery::Minutes(1e-9)), start);
        assert!(tiny.step_done(start + Duration::from_micros(1)));
        // A huge one never overflows.
        let mut huge = CheckpointCadence::new(Some(CheckpointEvery::Minutes(1e300)), start);
        assert!(!huge.step_done(start + Duration::from_secs(1 << 40)));
    }

    #[test]
    fn intervals_are_validated_naming_the_field() {
        assert!(CheckpointEvery::Steps(1).validate().is_ok());
        assert!(CheckpointEvery::Minutes(0.0001).validate().is_ok());
        let error = |every: CheckpointEvery| every.validate().unwrap_err().to_string();
        assert_eq!(
            error(CheckpointEvery::Steps(0)),
            "steps: must be ≥ 1 (got 0)"
        );
        assert_eq!(
            error(CheckpointEvery::Minutes(0.0)),
            "minutes: must be > 0 (got 0)"
        );
        assert_eq!(
            error(CheckpointEvery::Minutes(-2.5)),
            "minutes: must be > 0 (got -2.5)"
        );
        assert_eq!(
            error(CheckpointEvery::Minutes(f64::NAN)),
            "minutes: must be > 0 (got NaN)"
        );
    }

    #[test]
    fn intervals_read_as_tagged_mappings() {
        // The spec reaches serde as JSON values (figment merges the YAML layers first).
        let read = |text: &str| serde_json::from_str::<CheckpointEvery>(text);
        assert_eq!(
            read(r#"{"steps": 500}"#).unwrap(),
            CheckpointEvery::Steps(500)
        );
        assert_eq!(
            read(r#"{"minutes": 2.5}"#).unwrap(),
            CheckpointEvery::Minutes(2.5)
        );
        assert!(read(r#"{"seconds": 5}"#).is_err());
        assert!(read(r#"{"steps": -1}"#).is_err());
        let written = serde_json::to_string(&CheckpointEvery::Steps(2)).unwrap();
        assert_eq!(written, r#"{"steps":2}"#);
    }

    #[test]
    fn exact_floats_survive_json() {
        #[derive(Serialize, Deserialize)]
        struct Holder(#[serde(with = "exact_f64")] f64);
        for value in [0.1 + 0.2, 1e-300, 123_456.789_012_345_67, f64::INFINITY] {
            let text = serde_json::to_string(&Holder(value)).unwrap();
            let back: Holder = serde_json::from_str(&text).unwrap();
            assert_eq!(back.0.to_bits(), value.to_bits());
        }
    }
}
