//! Official PyTorch weights in and out: [`load_pretrained`] reads a state dict (`.pth`/`.pt`/`.th`
//! pickle, or `.safetensors`) with the official parameter names into a [`VisionLstm`], and
//! [`save_official_safetensors`] writes a model back under those names.
//!
//! Reading goes through burn-store (its PyTorch pickle reader and safetensors store); the only
//! work done here is deciding what to do with each tensor before burn-store applies it:
//!
//! - a state dict nested under `state_dict` (the official `.th` files) is unwrapped, and the
//!   renames the official hub applies to its v1 checkpoints (`xlstm.` prefixes, `head.0/1`) are
//!   applied too;
//! - every tensor must exist on both sides with the same shape, compared in PyTorch layout, except
//!   that a head with another class count is left freshly initialised, and a positional
//!   embedding learned on another grid is resized bicubically (as the official
//!   `load_state_dict` does);
//! - anything else is an error naming the parameter and both shapes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::ParamId;
use burn::tensor::{Element, Tensor, TensorData, backend::Backend};
use burn_store::pytorch::PytorchReader;
use burn_store::{
    ApplyError, BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    SafetensorsStore, TensorSnapshot,
};

use super::embedding::resize_bicubic;
use super::vil::VisionLstm;

const HEAD_WEIGHT: &str = "head.weight";
const HEAD_BIAS: &str = "head.bias";
const POS_EMBED: &str = "pos_embed.embed";
/// How many names an error lists before summarising the rest.
const LISTED_NAMES: usize = 8;

/// Failure to read, match or write a checkpoint; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    #[error("{path}: cannot read checkpoint")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unknown checkpoint format (expected .pth, .pt, .th or .safetensors)")]
    UnsupportedFormat { path: PathBuf },
    #[error("{path}: cannot parse checkpoint: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{path}: parameter `{parameter}` has shape {found:?} in the checkpoint but the model \
         expects {expected:?}"
    )]
    ShapeMismatch {
        path: PathBuf,
        parameter: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "{path}: checkpoint lacks {} parameter(s) the model needs: {} (is the preset's layout, \
         bias or legacy_norm setting the one the checkpoint was trained with?)",
        parameters.len(), NameList(parameters)
    )]
    Missing {
        path: PathBuf,
        parameters: Vec<String>,
    },
    #[error(
        "{path}: checkpoint has {} parameter(s) the model does not: {} (is the preset's layout, \
         bias or legacy_norm setting the one the checkpoint was trained with?)",
        parameters.len(), NameList(parameters)
    )]
    Unexpected {
        path: PathBuf,
        parameters: Vec<String>,
    },
    #[error("{path}: cannot load parameter `{parameter}`: {message}")]
    Apply {
        path: PathBuf,
        parameter: String,
        message: String,
    },
    #[error("{path}: cannot write checkpoint: {message}")]
    Write { path: PathBuf, message: String },
}

/// Comma-separated names, the first few of them.
struct NameList<'a>(&'a [String]);

impl fmt::Display for NameList<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self
            .0
            .iter()
            .take(LISTED_NAMES)
            .map(String::as_str)
            .collect();
        write!(formatter, "{}", shown.join(", "))?;
        if self.0.len() > LISTED_NAMES {
            write!(formatter, ", … ({} more)", self.0.len() - LISTED_NAMES)?;
        }
        Ok(())
    }
}

/// What [`load_pretrained`] changed on the way in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors copied from the checkpoint (a resized positional embedding counts).
    pub loaded: usize,
    /// `Some((checkpoint classes, model classes))` when the head was left freshly initialised
    /// because the class counts differ.
    pub head_reinitialized: Option<(usize, usize)>,
    /// `Some((checkpoint grid, model grid))` when the positional embedding was resized.
    pub pos_embed_resized: Option<([usize; 2], [usize; 2])>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "loaded {} tensors", self.loaded)?;
        if let Some((from, to)) = self.head_reinitialized {
            write!(
                formatter,
                "; head re-initialised for {to} classes (checkpoint has {from})"
            )?;
        }
        if let Some((from, to)) = self.pos_embed_resized {
            write!(
                formatter,
                "; positional embedding resized bicubically from {}x{} to {}x{}",
                from[0], from[1], to[0], to[1]
            )?;
        }
        Ok(())
    }
}

/// Loads official-layout weights into `model`, which must already have the target architecture
/// (its head and positional grid decide what gets re-initialised or resized).
pub fn load_pretrained<B: Backend>(
    mut model: VisionLstm<B>,
    path: &Path,
    device: &B::Device,
) -> Result<(VisionLstm<B>, LoadReport), PretrainedError> {
    fs_err::metadata(path).map_err(|source| PretrainedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let checkpoint = read_checkpoint(path)?;
    let expected: BTreeMap<String, Vec<usize>> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|snapshot| (snapshot.full_path(), snapshot.shape.to_vec()))
        .collect();

    let missing: Vec<String> = expected
        .keys()
        .filter(|name| !checkpoint.contains_key(*name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(PretrainedError::Missing {
            path: path.to_path_buf(),
            parameters: missing,
        });
    }
    let unexpected: Vec<String> = checkpoint
        .keys()
        .filter(|name| !expected.contains_key(*name))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(PretrainedError::Unexpected {
            path: path.to_path_buf(),
            parameters: unexpected,
        });
    }

    let mut report = LoadReport {
        loaded: 0,
        head_reinitialized: None,
        pos_embed_resized: None,
    };
    let mut snapshots = Vec::with_capacity(checkpoint.len());
    for (name, snapshot) in &checkpoint {
        let wanted = &expected[name];
        let found = snapshot.shape.to_vec();
        if &found == wanted {
            snapshots.push(converted::<B>(snapshot, name, path)?);
            continue;
        }
        let same_except_first = found.len() == wanted.len() && found[1..] == wanted[1..];
        match name.as_str() {
            // A head for another class count: keep the model's fresh head.
            HEAD_WEIGHT | HEAD_BIAS if same_except_first => {
                report.head_reinitialized = Some((found[0], wanted[0]));
            }
            POS_EMBED if found.len() == 4 && found[0] == 1 && found[3] == wanted[3] => {
                let data = tensor_data::<B>(snapshot, name, path)?;
                let embed = Tensor::<B, 4>::from_data(data, device);
                let resized = resize_bicubic(embed, [wanted[1], wanted[2]]);
                snapshots.push(named_snapshot(resized.into_data(), name));
                report.pos_embed_resized = Some(([found[1], found[2]], [wanted[1], wanted[2]]));
            }
            _ => {
                return Err(PretrainedError::ShapeMismatch {
                    path: path.to_path_buf(),
                    parameter: name.clone(),
                    expected: wanted.clone(),
                    found,
                });
            }
        }
    }

    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if let Some(error) = result.errors.first() {
        let parameter = match error {
            ApplyError::ShapeMismatch { path, .. }
            | ApplyError::DTypeMismatch { path, .. }
            | ApplyError::AdapterError { path, .. }
            | ApplyError::LoadError { path, .. } => path.clone(),
        };
        return Err(PretrainedError::Apply {
            path: path.to_path_buf(),
            parameter,
            message: error.to_string(),
        });
    }
    report.loaded = result.applied.len();
    Ok((model, report))
}

/// Writes `model` as a safetensors state dict with the official names and PyTorch layouts
/// (linear weights `[out, in]`), overwriting `path`.
pub fn save_official_safetensors<B: Backend>(
    model: &VisionLstm<B>,
    path: &Path,
) -> Result<(), PretrainedError> {
    let mut store = SafetensorsStore::from_file(path)
        .skip_enum_variants(true)
        .with_to_adapter(BurnToPyTorchAdapter)
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|error| PretrainedError::Write {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
}

/// All tensors of the file, keyed by official parameter name, in PyTorch layout.
fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>, PretrainedError> {
    let parse_error = |message: String| PretrainedError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    let tensors: BTreeMap<String, TensorSnapshot> = match extension.as_deref() {
        Some("safetensors") => {
            let mut store = SafetensorsStore::from_file(path);
            store
                .get_all_snapshots()
                .map_err(|error| parse_error(error.to_string()))?
                .clone()
        }
        Some("pth" | "pt" | "th") => PytorchReader::new(path)
            .map_err(|error| parse_error(error.to_string()))?
            .into_tensors()
            .into_iter()
            .collect(),
        _ => {
            return Err(PretrainedError::UnsupportedFormat {
                path: path.to_path_buf(),
            });
        }
    };
    Ok(official_names(tensors))
}

/// Unwraps a `state_dict` nesting and applies the renames the official hub applies to its v1
/// checkpoints (which were saved from the training code's module tree).
fn official_names(tensors: BTreeMap<String, TensorSnapshot>) -> BTreeMap<String, TensorSnapshot> {
    const NESTED: &str = "state_dict.";
    let nested = tensors.keys().any(|name| name.starts_with(NESTED));
    tensors
        .into_iter()
        .filter_map(|(name, snapshot)| {
            let name = if nested {
                name.strip_prefix(NESTED)?.to_string()
            } else {
                name
            };
            let name = name
                .replace(".xlstm.", ".layer.")
                .replace(".xlstm_norm.", ".norm.");
            let name = match name.strip_prefix("xlstm.") {
                Some(rest) => rest.to_string(),
                None => name,
            };
            let name = if let Some(rest) = name.strip_prefix("head.0.") {
                format!("norm.{rest}")
            } else if let Some(rest) = name.strip_prefix("head.1.") {
                format!("head.{rest}")
            } else {
                name
            };
            Some((name, snapshot))
        })
        .collect()
}

fn tensor_data<B: Backend>(
    snapshot: &TensorSnapshot,
    name: &str,
    path: &Path,
) -> Result<TensorData, PretrainedError> {
    snapshot
        .to_data()
        .map(|data| data.convert_dtype(B::FloatElem::dtype()))
        .map_err(|error| PretrainedError::Apply {
            path: path.to_path_buf(),
            parameter: name.to_string(),
            message: error.to_string(),
        })
}

/// The tensor in the backend's float type (checkpoints may be stored in half precision) under
/// its official name.
fn converted<B: Backend>(
    snapshot: &TensorSnapshot,
    name: &str,
    path: &Path,
) -> Result<TensorSnapshot, PretrainedError> {
    Ok(named_snapshot(
        tensor_data::<B>(snapshot, name, path)?,
        name,
    ))
}

fn named_snapshot(data: TensorData, name: &str) -> TensorSnapshot {
    let path = name.split('.').map(str::to_string).collect();
    TensorSnapshot::from_data(data, path, Vec::new(), ParamId::new())
}
