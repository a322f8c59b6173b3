//! The experiment file's types: what a person writes in YAML.
//!
//! Every struct denies unknown fields and derives a JSON Schema, so the same definitions drive
//! deserialisation, `vilab schema` (editor completion) and `vilab validate` (all problems at
//! once, with positions). Defaults live here, next to the fields, and appear in the schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::data::mixup::MixupConfig;
pub use crate::data::transforms::Transform;
pub use crate::data::verify::BadImagePolicy;
pub use crate::train::schedule::Schedule;

/// A vilab experiment: data, model and recipe in one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "vilab experiment")]
pub struct ExperimentSpec {
    /// Name of the experiment; runs go to `<out>/<name>/`. One safe path component: letters,
    /// digits, `.`, `_` and `-`, starting with a letter or digit.
    #[schemars(extend("pattern" = "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"))]
    pub name: String,
    /// Global seed: model initialisation, data order, augmentation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where tensors live: `cpu` (always available) or `cuda` (binary built with `--features cuda`).
    #[serde(default)]
    pub backend: BackendKind,
    /// The image folder and how images are read.
    pub data: DataSpec,
    /// Train/validation split of `data.root`.
    #[serde(default)]
    pub split: SplitSpec,
    /// Normalisation statistics.
    #[serde(default)]
    pub stats: StatsSpec,
    /// Image preparation and augmentation.
    #[serde(default)]
    pub augment: AugmentSpec,
    /// The Vision-LSTM model.
    #[serde(default)]
    pub model: ModelSpec,
    /// The training recipe.
    #[serde(default)]
    pub train: TrainSpec,
    /// Evaluation of the trained model.
    #[serde(default)]
    pub evaluate: EvaluateSpec,
    /// Training curves.
    #[serde(default)]
    pub plot: PlotSpec,
}

fn default_seed() -> u64 {
    42
}

/// Compute backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (ndarray), always available.
    #[default]
    Cpu,
    /// burn's CUDA backend; needs a binary built with `--features cuda` and an NVIDIA GPU.
    Cuda,
}

/// The image folder: one sub-folder per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Image folder with one sub-folder per class. Relative paths are relative to the experiment
    /// file (paths given with `--set` or the environment: to the current directory).
    pub root: String,
    /// Side of the square images the model sees, in pixels.
    #[serde(default = "default_image_size")]
    #[schemars(range(min = 8, max = 4096))]
    pub image_size: u32,
    /// A pre-split validation folder (same class sub-folders); replaces the random split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_root: Option<String>,
    /// A held-out test folder (same class sub-folders), evaluated after training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_root: Option<String>,
    /// Unreadable files (truncated, empty, not an image): `skip` them or `fail`.
    #[serde(default)]
    pub on_bad_image: BadImagePolicy,
}

fn default_image_size() -> u32 {
    224
}

/// How `data.root` is divided into training and validation images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Fraction of each class held out for validation, strictly between 0 and 1.
    #[serde(default = "default_val_fraction")]
    #[schemars(extend("exclusiveMinimum" = 0.0, "exclusiveMaximum" = 1.0))]
    pub val_fraction: f64,
    /// Split each class separately, so both sides keep the class proportions.
    #[serde(default = "default_true")]
    pub stratify: bool,
    /// Seed of the split, separate from the global seed so the split can stay fixed.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Also write `data/train|val/<class>/` folders of hard links (copies where links fail).
    #[serde(default)]
    pub materialize: bool,
}

fn default_val_fraction() -> f64 {
    0.3
}

fn default_true() -> bool {
    true
}

impl Default for SplitSpec {
    fn default() -> Self {
        Self {
            val_fraction: default_val_fraction(),
            stratify: true,
            seed: default_seed(),
            materialize: false,
        }
    }
}

/// Per-channel normalisation statistics: computed over the train split unless both are given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsSpec {
    /// Fixed per-channel mean (RGB, in [0, 1]); give together with `std`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<[f64; 3]>,
    /// Fixed per-channel standard deviation (RGB, > 0); give together with `mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<[f64; 3]>,
}

/// Image preparation and augmentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AugmentSpec {
    /// Random augmentations applied in order to each training image on the fly, seeded per
    /// (seed, epoch, image); the result is resized to `data.image_size` and normalised.
    #[serde(default)]
    pub train: Vec<Transform>,
    /// Deterministic preparation of validation images (e.g. resize + center_crop).
    #[serde(default)]
    pub val: Vec<Transform>,
}

/// Model presets; `custom` starts from the `vil_tiny` layout and takes every knob from the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelName {
    /// v1, dim 96, depth 6, patch 4: small images and CPU runs.
    #[default]
    VilMicro,
    /// v1, dim 192, depth 24 (6.1M parameters at 1000 classes).
    VilTiny,
    /// v1, dim 192, depth 29.
    VilTinyplus,
    /// v1, dim 384, depth 24.
    VilSmall,
    /// v1, dim 384, depth 26.
    VilSmallplus,
    /// v1, dim 768, depth 24.
    VilBase,
    /// v2, dim 192, 12 block pairs.
    Vil2Tiny,
    /// v2, dim 384, 12 block pairs.
    Vil2Small,
    /// v2, dim 768, 12 block pairs.
    Vil2Base,
    /// Every knob from this section.
    Custom,
}

impl ModelName {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VilMicro => "vil_micro",
            Self::VilTiny => "vil_tiny",
            Self::VilTinyplus => "vil_tinyplus",
            Self::VilSmall => "vil_small",
            Self::VilSmallplus => "vil_smallplus",
            Self::VilBase => "vil_base",
            Self::Vil2Tiny => "vil2_tiny",
            Self::Vil2Small => "vil2_small",
            Self::Vil2Base => "vil2_base",
            Self::Custom => "custom",
        }
    }
}

/// The Vision-LSTM model: a preset, optionally overridden field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Preset name, or `custom`.
    #[serde(default)]
    pub name: ModelName,
    /// Official PyTorch checkpoint (`.pth`, `.th` or `.safetensors`) to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// Embedding dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4))]
    pub dim: Option<u32>,
    /// Number of blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub depth: Option<u32>,
    /// Patch side in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub patch_size: Option<u32>,
    /// Stochastic depth rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub drop_path: Option<f64>,
}

/// The training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Number of passes over the training split.
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// Images per optimiser step.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// The optimiser.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule, evaluated every step.
    #[serde(default)]
    pub schedule: Schedule,
    /// MixUp / CutMix / label smoothing with timm's semantics; absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<MixupConfig>,
}

fn default_epochs() -> u32 {
    10
}

fn default_batch_size() -> u32 {
    64
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            optimizer: OptimizerSpec::default(),
            schedule: Schedule::default(),
            mixup: None,
        }
    }
}

/// Optimiser kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    /// AdamW with PyTorch's defaults (betas 0.9/0.999, eps 1e-8).
    #[default]
    Adamw,
    /// SGD with momentum.
    Sgd,
}

/// The optimiser and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// `adamw` or `sgd`.
    #[serde(default)]
    pub name: OptimizerName,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    #[schemars(extend("exclusiveMinimum" = 0.0))]
    pub lr: f64,
    /// Decoupled weight decay (not applied to biases, norm scales or the positional embedding).
    #[serde(default = "default_weight_decay")]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
}

fn default_lr() -> f64 {
    1e-3
}

fn default_weight_decay() -> f64 {
    0.05
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            name: OptimizerName::default(),
            lr: default_lr(),
            weight_decay: default_weight_decay(),
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSpec {
    /// The metric runs are ranked by.
    #[serde(default = "default_metric")]
    pub metric: String,
}

fn default_metric() -> String {
    "val_acc1".to_owned()
}

impl Default for EvaluateSpec {
    fn default() -> Self {
        Self {
            metric: default_metric(),
        }
    }
}

/// Output format of the plots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlotFormat {
    /// Raster image.
    Png,
    /// Vector image.
    Svg,
}

/// Training curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    /// Formats to write.
    #[serde(default = "default_formats")]
    pub formats: Vec<PlotFormat>,
    /// Width in pixels.
    #[serde(default = "default_plot_width")]
    #[schemars(range(min = 200, max = 8000))]
    pub width: u32,
    /// Height in pixels.
    #[serde(default = "default_plot_height")]
    #[schemars(range(min = 150, max = 8000))]
    pub height: u32,
}

fn default_formats() -> Vec<PlotFormat> {
    vec![PlotFormat::Png, PlotFormat::Svg]
}

fn default_plot_width() -> u32 {
    900
}

fn default_plot_height() -> u32 {
    600
}

impl Default for PlotSpec {
    fn default() -> Self {
        Self {
            formats: default_formats(),
            width: default_plot_width(),
            height: default_plot_height(),
        }
    }
}
