//! The experiment file's types: what a person writes in YAML.
//!
//! Every struct denies unknown fields and derives a JSON Schema, so the same definitions drive
//! deserialisation, `vilab schema` (editor completion) and `vilab validate` (all problems at
//! once, with positions). Defaults live here, next to the fields, and appear in the schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::FieldError;

pub use crate::data::mixup::MixupConfig;
pub use crate::data::transforms::Transform;
pub use crate::data::verify::BadImagePolicy;
pub use crate::train::clipping::GradientClip;
pub use crate::train::ema::EmaSpec;
pub use crate::train::precision::{LossScaleSpec, Precision};
pub use crate::train::schedule::Schedule;
pub use crate::train::spec::{OptimizerName, OptimizerSpec, SelectMetric, TrainSpec};

pub use crate::backend::BackendKind;

pub use super::sweep::SweepSpec;

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
    /// Where tensors live: `cpu` (always available), `wgpu` (Vulkan, Metal or DX12 GPUs; in the
    /// default build) or `cuda` (NVIDIA GPUs; binary built with `--features cuda`).
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
    /// Trials to run from this file: `grid`, `list` or `random` values for dotted field paths,
    /// each trial the spec with its values applied above `--set`. Absent: one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSpec>,
}

fn default_seed() -> u64 {
    42
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
    /// Shorter side of the packed copy of every image, in pixels, its aspect kept; at least
    /// `image_size`. Crop transforms (`random_resized_crop`, `center_crop`, `random_crop`) then
    /// cut from these pixels, and whatever size the transforms leave is resized to `image_size`.
    /// Absent: every image is squashed to `image_size`² when packed, before any transform (the
    /// blog recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 4096))]
    pub storage_size: Option<u32>,
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

pub(super) fn default_image_size() -> u32 {
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

/// The Vision-LSTM model: a preset, optionally overridden field by field. The positional
/// embedding is laid out for `data.image_size` and the head for the number of classes.
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
    /// Patch side in pixels; must divide `data.image_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub patch_size: Option<u32>,
    /// Stochastic depth rate, in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub drop_path: Option<f64>,
    /// mLSTM heads; must divide `dim · proj_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub num_heads: Option<u32>,
    /// Inner width of the mLSTM layer as a multiple of `dim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub proj_factor: Option<u32>,
    /// Side of the diagonal blocks of the q/k/v projections; must divide `dim · proj_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub qkv_block_size: Option<u32>,
    /// Kernel length (v1) or side (v2, odd) of the depthwise convolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub conv_kernel_size: Option<u32>,
    /// The depthwise convolution before q and k: `causal1d` (ViL v1, along the token sequence)
    /// or `2d` (ViL v2, a square over the patch grid). Changing it without `conv_kernel_size`
    /// takes that kind's official kernel: 4 for `causal1d`, 3 for `2d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_kind: Option<crate::model::ConvKind>,
    /// How the tokens become one vector for the head: `bilateral_avg` (v1: mean of the first
    /// and last token), `bilateral_flatten` (v2: both, concatenated) or `mean` (all tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<crate::model::Pooling>,
    /// Biases in the projections and layer norms (v1: false, v2: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
}

impl ModelSpec {
    /// The model's hyper-parameters for `num_classes` classes and `image_size`² images; the
    /// error is the tail after `model.` (or names `data.image_size`).
    pub fn vil_config(
        &self,
        num_classes: usize,
        image_size: u32,
    ) -> Result<crate::model::VilConfig, FieldError> {
        let preset_name = match self.name {
            ModelName::Custom => "vil_tiny",
            name => name.as_str(),
        };
        let mut config = crate::model::preset(preset_name)
            .ok_or_else(|| crate::field_error!("name", "unknown preset `{preset_name}`"))?;
        let size = |value: u32| value as usize;
        config.num_classes = num_classes;
        config.image_size = size(image_size);
        if let Some(dim) = self.dim {
            config.dim = size(dim);
        }
        if let Some(depth) = self.depth {
            config.depth = size(depth);
        }
        if let Some(patch_size) = self.patch_size {
            config.patch_size = size(patch_size);
        }
        if let Some(drop_path) = self.drop_path {
            config.drop_path = drop_path;
        }
        if let Some(num_heads) = self.num_heads {
            config.num_heads = size(num_heads);
        }
        if let Some(proj_factor) = self.proj_factor {
            config.proj_factor = size(proj_factor);
        }
        if let Some(qkv_block_size) = self.qkv_block_size {
            config.qkv_block_size = size(qkv_block_size);
        }
        if let Some(kind) = self.conv_kind
            && kind != config.conv_kind
        {
            config.conv_kind = kind;
            config.conv_kernel_size = kind.official_kernel();
        }
        if let Some(conv_kernel_size) = self.conv_kernel_size {
            config.conv_kernel_size = size(conv_kernel_size);
        }
        if let Some(pooling) = self.pooling {
            config.pooling = pooling;
        }
        if let Some(bias) = self.bias {
            config.bias = bias;
        }
        match config.validate() {
            Ok(()) => Ok(config),
            Err(error) if error.field == "image_size" => Err(crate::field_error!(
                "patch_size",
                "must divide data.image_size {image_size} (got {})",
                config.patch_size
            )),
            Err(message) => Err(message),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConvKind;

    fn model(yaml: &str) -> ModelSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn switching_the_convolution_takes_its_official_kernel_unless_one_is_given() {
        let micro = model("name: vil_micro").vil_config(10, 28).unwrap();
        assert_eq!(
            (micro.conv_kind, micro.conv_kernel_size),
            (ConvKind::Causal1d, 4)
        );
        let grid = model("{name: vil_micro, conv_kind: 2d}")
            .vil_config(10, 28)
            .unwrap();
        assert_eq!((grid.conv_kind, grid.conv_kernel_size), (ConvKind::TwoD, 3));
        let wide = model("{name: vil_micro, conv_kind: 2d, conv_kernel_size: 5}");
        assert_eq!(wide.vil_config(10, 28).unwrap().conv_kernel_size, 5);
        // v2 presets already use the 2-D kernel; naming their own kind changes nothing.
        let v2 = model("{name: vil2_tiny, conv_kind: 2d}")
            .vil_config(10, 224)
            .unwrap();
        assert_eq!(v2.conv_kernel_size, 3);
        let back = model("{name: vil2_tiny, conv_kind: causal1d}")
            .vil_config(10, 224)
            .unwrap();
        assert_eq!(
            (back.conv_kind, back.conv_kernel_size),
            (ConvKind::Causal1d, 4)
        );
        let pooled = model("{name: vil_micro, pooling: mean, bias: true}");
        let pooled = pooled.vil_config(10, 28).unwrap();
        assert_eq!(
            (pooled.pooling, pooled.bias),
            (crate::model::Pooling::Mean, true)
        );
        // Everything else is the preset's: only the convolution's taps change the parameters.
        let taps = grid.param_count().total() as i64 - micro.param_count().total() as i64;
        let inner = micro.inner_dim() as i64;
        assert_eq!(taps, micro.depth as i64 * inner * (9 - 4));
    }
}
