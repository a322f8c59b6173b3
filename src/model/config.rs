//! Model hyper-parameters: the [`VilConfig`] every ViL variant is built from, the named presets
//! (the official v1/v2 hub models plus our small `vil_micro`), validation, and the analytic
//! parameter count and forward MACs used by `vilab model info` and the benchmarks.
//!
//! The arithmetic mirrors the module layout in `vil.rs`/`block.rs` term by term, so a test can
//! demand that [`VilConfig::param_count`] equals the initialised module's `num_params()`, and the
//! official counts (arXiv 2406.04303 training logs) pin both down.

use crate::field::FieldError;
use burn::config::Config;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the token sequence is reduced to one feature vector before the head.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the first and the last token (ViL v1).
    BilateralAvg,
    /// Concatenation of the first and the last token, so the head sees twice the width (ViL v2).
    BilateralFlatten,
    /// Mean over all tokens (not used by the official models).
    Mean,
}

/// The depthwise convolution applied to the mLSTM branch before q and k.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConvKind {
    /// Causal 1-D convolution over the token sequence (ViL v1), left-padded by `kernel - 1`.
    Causal1d,
    /// `kernel × kernel` convolution over the patch grid with "same" padding (ViL v2).
    #[serde(rename = "2d")]
    TwoD,
}

impl ConvKind {
    /// The kernel the official models use with this kind: 4 taps for v1's causal convolution;
    /// 3×3 for v2, whose `VisionLSTM2` never forwards its kernel argument.
    pub fn official_kernel(self) -> usize {
        match self {
            ConvKind::Causal1d => 4,
            ConvKind::TwoD => 3,
        }
    }
}

/// How blocks are grouped, which decides the parameter names of a checkpoint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BlockLayout {
    /// `blocks.N` is one block; even N runs from the top left, odd N from the bottom right (v1).
    /// The token-level norm is `legacy_norm` and the pooled norm is `norm`.
    Single,
    /// `blocks.N.rowwise_from_top_left` then `blocks.N.rowwise_from_bot_right` (v2).
    /// The token-level norm is `norm` and the pooled norm is `legacy_norm`.
    Pairs,
}

/// Hyper-parameters of a Vision-LSTM classifier.
#[derive(Config, Debug, PartialEq)]
pub struct VilConfig {
    /// Embedding width D.
    pub dim: usize,
    /// Number of (sub-)blocks; for [`BlockLayout::Pairs`] this counts both directions, so it is
    /// twice the official `depth` (24 for `vil2_tiny`) and must be even.
    pub depth: usize,
    /// Number of output classes.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Side of the square patches.
    #[config(default = 16)]
    pub patch_size: usize,
    /// Image channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Side of the square input image the positional embedding is laid out for.
    #[config(default = 224)]
    pub image_size: usize,
    #[config(default = "Pooling::BilateralAvg")]
    pub pooling: Pooling,
    #[config(default = "ConvKind::Causal1d")]
    pub conv_kind: ConvKind,
    /// Kernel length (1-D) or side (2-D) of the depthwise convolution.
    #[config(default = 4)]
    pub conv_kernel_size: usize,
    /// Inner width E = `proj_factor` · D.
    #[config(default = 2)]
    pub proj_factor: usize,
    /// Side of the diagonal blocks of the q/k/v projections.
    #[config(default = 4)]
    pub qkv_block_size: usize,
    /// mLSTM heads NH; the head width is E / NH.
    #[config(default = 4)]
    pub num_heads: usize,
    /// Stochastic-depth rate, the same for every block.
    #[config(default = 0.0)]
    pub drop_path: f64,
    /// Biases in the projections and in the ViL layer norms (false in v1, true in v2).
    #[config(default = false)]
    pub bias: bool,
    /// Keep the extra tail norm the official checkpoints were trained with.
    #[config(default = true)]
    pub legacy_norm: bool,
    #[config(default = "BlockLayout::Single")]
    pub layout: BlockLayout,
}

/// Names accepted by [`preset`].
pub const PRESET_NAMES: &[&str] = &[
    "vil_tiny",
    "vil_tinyplus",
    "vil_small",
    "vil_smallplus",
    "vil_base",
    "vil2_tiny",
    "vil2_small",
    "vil2_base",
    "vil_micro",
];

/// The configuration of a named model at 224² and 1000 classes (`vil_micro`: 28²).
///
/// Drop-path rates follow the official ImageNet recipes (tiny 0, small 0.05, base 0.2).
pub fn preset(name: &str) -> Option<VilConfig> {
    let v1 = |dim, depth, drop_path| VilConfig::new(dim, depth).with_drop_path(drop_path);
    let v2 = |dim, drop_path| {
        VilConfig::new(dim, 24)
            .with_pooling(Pooling::BilateralFlatten)
            .with_conv_kind(ConvKind::TwoD)
            .with_conv_kernel_size(ConvKind::TwoD.official_kernel())
            .with_bias(true)
            .with_layout(BlockLayout::Pairs)
            .with_drop_path(drop_path)
    };
    let config = match name {
        "vil_tiny" => v1(192, 24, 0.0),
        "vil_tinyplus" => v1(192, 29, 0.0),
        "vil_small" => v1(384, 24, 0.05),
        "vil_smallplus" => v1(384, 26, 0.05),
        "vil_base" => v1(768, 24, 0.2),
        "vil2_tiny" => v2(192, 0.0),
        "vil2_small" => v2(384, 0.05),
        "vil2_base" => v2(768, 0.2),
        "vil_micro" => VilConfig::new(96, 6).with_patch_size(4).with_image_size(28),
        _ => return None,
    };
    Some(config)
}

/// Parameter count per component, as `vilab model info` prints it.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCount {
    pub patch_embed: u64,
    pub pos_embed: u64,
    /// All blocks, including their pre-norms.
    pub blocks: u64,
    /// The two tail norms (`norm` and `legacy_norm`).
    pub norms: u64,
    pub head: u64,
}

impl ParamCount {
    pub fn total(&self) -> u64 {
        self.patch_embed + self.pos_embed + self.blocks + self.norms + self.head
    }
}

impl VilConfig {
    /// Inner width E of the mLSTM layer.
    pub fn inner_dim(&self) -> usize {
        self.proj_factor * self.dim
    }

    /// Patches per image side.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image.
    pub fn num_tokens(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Width of the pooled feature the head reads.
    pub fn head_dim(&self) -> usize {
        match self.pooling {
            Pooling::BilateralFlatten => 2 * self.dim,
            Pooling::BilateralAvg | Pooling::Mean => self.dim,
        }
    }

    /// Checks that the model can be built; the message names the offending field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let positive = [
            ("dim", self.dim),
            ("depth", self.depth),
            ("num_classes", self.num_classes),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("image_size", self.image_size),
            ("conv_kernel_size", self.conv_kernel_size),
            ("proj_factor", self.proj_factor),
            ("qkv_block_size", self.qkv_block_size),
            ("num_heads", self.num_heads),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(crate::field_error!("{field}", "must be > 0 (got 0)"));
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(crate::field_error!(
                "image_size",
                "must be divisible by patch_size {} (got {})",
                self.patch_size,
                self.image_size
            ));
        }
        let inner = self.inner_dim();
        if !inner.is_multiple_of(self.num_heads) {
            return Err(crate::field_error!(
                "num_heads",
                "must divide the inner width dim*proj_factor = {inner} (got {})",
                self.num_heads
            ));
        }
        if !inner.is_multiple_of(self.qkv_block_size) {
            return Err(crate::field_error!(
                "qkv_block_size",
                "must divide the inner width dim*proj_factor = {inner} (got {})",
                self.qkv_block_size
            ));
        }
        if self.layout == BlockLayout::Pairs && !self.depth.is_multiple_of(2) {
            return Err(crate::field_error!(
                "depth",
                "must be even for the paired (v2) layout, it counts both directions (got {})",
                self.depth
            ));
        }
        if self.conv_kind == ConvKind::TwoD && self.conv_kernel_size.is_multiple_of(2) {
            return Err(crate::field_error!(
                "conv_kernel_size",
                "must be odd for 2d convolutions (got {})",
                self.conv_kernel_size
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(crate::field_error!(
                "drop_path",
                "must be in [0, 1) (got {})",
                self.drop_path
            ));
        }
        Ok(())
    }

    /// Number of scalar parameters, per component, without building the model.
    pub fn param_count(&self) -> ParamCount {
        let d = self.dim as u64;
        let e = self.inner_dim() as u64;
        let heads = self.num_heads as u64;
        let block = self.qkv_block_size as u64;
        let kernel = self.conv_kernel_size as u64;
        let bias = u64::from(self.bias);
        let conv_taps = match self.conv_kind {
            ConvKind::Causal1d => kernel,
            ConvKind::TwoD => kernel * kernel,
        };
        let per_block = (d + bias * d) // pre-norm
            + (d * 2 * e + bias * 2 * e) // proj_up
            + 3 * (e * block + bias * e) // q, k, v block-diagonal projections
            + (e * conv_taps + e) // depthwise conv, always with bias
            + 2 * (3 * e * heads + heads) // input and forget gates
            + (e + bias * e) // multi-head norm
            + e // learnable skip
            + (e * d + bias * d); // proj_down
        let head_dim = self.head_dim() as u64;
        let token_norm = d + bias * d;
        let pooled_norm = 2 * head_dim;
        let norms = match self.layout {
            BlockLayout::Single => u64::from(self.legacy_norm) * token_norm + pooled_norm,
            BlockLayout::Pairs => token_norm + u64::from(self.legacy_norm) * pooled_norm,
        };
        let channels = self.in_chans as u64;
        let patch = self.patch_size as u64;
        ParamCount {
            patch_embed: d * channels * patch * patch + d,
            pos_embed: self.num_tokens() as u64 * d,
            blocks: self.depth as u64 * per_block,
            norms,
            head: head_dim * self.num_classes as u64 + self.num_classes as u64,
        }
    }

    /// Multiply-accumulates of one forward pass for one image.
    ///
    /// Counts the patch embedding, every projection (up, q/k/v, gates, down), the depthwise
    /// convolution, both S×S products of the parallel mLSTM cell (q·kᵀ and C·v) at their
    /// **full** S×S size, and the head. Norms, activations, gating and the S×S element-wise work
    /// are not counted. The paper's FLOP figures (1.5/5.1/18.6 G for v2 T/S/B) match counting
    /// only the causal lower triangle of the S×S products instead; this count is higher
    /// (1.86 G for `vil2_tiny`). FLOPs = 2 × MACs; a backward pass costs about twice the forward.
    pub fn forward_macs(&self) -> u64 {
        let d = self.dim as u64;
        let e = self.inner_dim() as u64;
        let s = self.num_tokens() as u64;
        let heads = self.num_heads as u64;
        let kernel = self.conv_kernel_size as u64;
        let conv_taps = match self.conv_kind {
            ConvKind::Causal1d => kernel,
            ConvKind::TwoD => kernel * kernel,
        };
        let patch_area = (self.patch_size * self.patch_size) as u64;
        let patch_embed = s * d * self.in_chans as u64 * patch_area;
        let per_block = s * d * 2 * e // proj_up
            + s * e * conv_taps // depthwise conv
            + 3 * s * e * self.qkv_block_size as u64 // q, k, v
            + 2 * s * 3 * e * heads // gates
            + 2 * s * s * e // q·kᵀ and C·v, full S×S
            + s * e * d; // proj_down
        let head = self.head_dim() as u64 * self.num_classes as u64;
        patch_embed + self.depth as u64 * per_block + head
    }
}
