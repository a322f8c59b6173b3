//! Vision-LSTM (ViL, arXiv 2406.04303) in burn: every official v1/v2 variant with parameter names
//! that match the official PyTorch checkpoints, plus our small `vil_micro`.
//!
//! - `config`: [`VilConfig`], presets, validation, analytic parameter count and MACs
//! - `init`: the official initialisers
//! - `layers`: ViL layer norms, block-diagonal projection, depthwise convolutions, DropPath
//! - `mlstm`: the stabilised parallel mLSTM cell and its gates
//! - `chunkwise`: the same cell in chunks, O(S·chunk) memory, chosen above a measured length
//! - `fused`: the layer core (L2-L7) as one hand-written CPU kernel with its own backward pass
//! - `block`: the mLSTM layer and the (paired) pre-norm residual blocks
//! - `embedding`: patch embedding, learned positional embedding, bicubic resize
//! - `vil`: [`VisionLstm`], the classifier
//! - `pretrained`: loading official weights and exporting them again

pub mod block;
pub mod chunkwise;
pub mod config;
pub mod embedding;
pub mod fused;
mod init;
pub mod layers;
pub mod mlstm;
pub mod pretrained;
pub mod vil;

pub use block::{Direction, ViLBlock, ViLBlockPair, ViLLayer};
pub use config::{BlockLayout, ConvKind, PRESET_NAMES, ParamCount, Pooling, VilConfig, preset};
pub use fused::Kernels;
pub use pretrained::{LoadReport, PretrainedError, load_pretrained, save_official_safetensors};
pub use vil::{BlockStack, VisionLstm};
