//! The Vision-LSTM classifier (arXiv 2406.04303; VIL_SPEC sections 2-3) for both official
//! layouts: v1 (`VisionLSTM`, one block per `blocks.N`) and v2 (`VisionLSTM2`, a forward and a
//! backward block per `blocks.N`). Patch embedding, learned positional embedding, the stack of
//! alternating-direction blocks, then pooling of the first and last token and a linear head.
//!
//! The two layouts also name their tail norms the other way round, which the fields mirror:
//!
//! | layout | norm on all tokens | norm after pooling |
//! |---|---|---|
//! | v1 (`Single`) | `legacy_norm`: ViL norm, ε 1e-5, optional | `norm`: `nn.LayerNorm`, ε 1e-6 |
//! | v2 (`Pairs`) | `norm`: ViL norm, ε 1e-6 | `legacy_norm`: `nn.LayerNorm`, ε 1e-5, optional |

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use super::block::{Direction, ViLBlock, ViLBlockPair};
use super::config::{BlockLayout, Pooling, VilConfig};
use super::embedding::{PatchEmbed, PositionEmbedding};
use super::init;
use super::layers::VilLayerNorm;

/// The block stack in one of the two official layouts. Checkpoint paths carry no variant name
/// (`blocks.0.layer...`); the loader and exporter skip enum variants when matching.
#[derive(Module, Debug)]
pub enum BlockStack<B: Backend> {
    /// v1: `blocks.N` alternates direction, even N from the top left.
    Single(Vec<ViLBlock<B>>),
    /// v2: `blocks.N.rowwise_from_top_left` then `blocks.N.rowwise_from_bot_right`.
    Pairs(Vec<ViLBlockPair<B>>),
}

impl<B: Backend> BlockStack<B> {
    fn forward(&self, mut tokens: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        match self {
            Self::Single(blocks) => {
                for block in blocks {
                    tokens = block.forward(tokens, grid);
                }
            }
            Self::Pairs(pairs) => {
                for pair in pairs {
                    tokens = pair.forward(tokens, grid);
                }
            }
        }
        tokens
    }

    /// Every block in execution order.
    pub fn blocks(&self) -> Vec<&ViLBlock<B>> {
        match self {
            Self::Single(blocks) => blocks.iter().collect(),
            Self::Pairs(pairs) => pairs
                .iter()
                .flat_map(|pair| [&pair.rowwise_from_top_left, &pair.rowwise_from_bot_right])
                .collect(),
        }
    }
}

/// A Vision-LSTM image classifier.
#[derive(Module, Debug)]
pub struct VisionLstm<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    pub pos_embed: PositionEmbedding<B>,
    pub blocks: BlockStack<B>,
    /// v1: norm after pooling; v2: norm over all tokens (see the module docs).
    pub norm: VilLayerNorm<B>,
    /// v1: norm over all tokens; v2: norm after pooling. Absent without `legacy_norm`.
    pub legacy_norm: Option<VilLayerNorm<B>>,
    pub head: Linear<B>,
    layout: BlockLayout,
    pooling: Pooling,
}

impl VilConfig {
    /// Builds the model with the official initialisation (VIL_SPEC section 3).
    ///
    /// # Panics
    /// If [`VilConfig::validate`] rejects the configuration; validate user input first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionLstm<B> {
        if let Err(message) = self.validate() {
            panic!("invalid ViL configuration: {message}");
        }
        let dim = self.dim;
        let grid = [self.grid_size(), self.grid_size()];
        let blocks = match self.layout {
            BlockLayout::Single => BlockStack::Single(
                (0..self.depth)
                    .map(|index| {
                        let direction = if index % 2 == 0 {
                            Direction::FromTopLeft
                        } else {
                            Direction::FromBottomRight
                        };
                        ViLBlock::new(self, direction, device)
                    })
                    .collect(),
            ),
            BlockLayout::Pairs => BlockStack::Pairs(
                (0..self.depth / 2)
                    .map(|_| ViLBlockPair::new(self, device))
                    .collect(),
            ),
        };
        let head_dim = self.head_dim();
        let (norm, legacy_norm) = match self.layout {
            BlockLayout::Single => (
                VilLayerNorm::direct(head_dim, 1e-6, device),
                self.legacy_norm
                    .then(|| VilLayerNorm::offset(dim, self.bias, 1e-5, device)),
            ),
            BlockLayout::Pairs => (
                VilLayerNorm::offset(dim, self.bias, 1e-6, device),
                self.legacy_norm
                    .then(|| VilLayerNorm::direct(head_dim, 1e-5, device)),
            ),
        };
        let mut head = LinearConfig::new(head_dim, self.num_classes).init(device);
        head.weight = init::truncated_normal([head_dim, self.num_classes], 2e-5, device);
        head.bias = Some(init::zeros([self.num_classes], device));
        VisionLstm {
            patch_embed: PatchEmbed::new(dim, self.in_chans, self.patch_size, device),
            pos_embed: PositionEmbedding::new(grid, dim, device),
            blocks,
            norm,
            legacy_norm,
            head,
            layout: self.layout,
            pooling: self.pooling,
        }
    }
}

impl<B: Backend> VisionLstm<B> {
    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        let [_, classes] = self.head.weight.dims();
        classes
    }

    /// Class logits.
    ///
    /// # Shapes
    /// `[batch, channels, height, width]` → `[batch, classes]`. Height and width must be
    /// multiples of the patch size; a grid other than the configured one uses a bicubically
    /// resized positional embedding, as the official model does.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let features = self.forward_features(images);
        self.head.forward(features)
    }

    /// The pooled and normalised feature vector the head reads.
    ///
    /// # Shapes
    /// `[batch, channels, height, width]` → `[batch, head_dim]`
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let [_, _, height, width] = images.dims();
        let grid = self.patch_embed.grid(height, width);
        let tokens = self.patch_embed.forward(images);
        let tokens = self.pos_embed.forward(tokens, grid);
        let tokens = self.blocks.forward(tokens, grid);
        let (token_norm, pooled_norm) = match self.layout {
            BlockLayout::Single => (self.legacy_norm.as_ref(), Some(&self.norm)),
            BlockLayout::Pairs => (Some(&self.norm), self.legacy_norm.as_ref()),
        };
        // The token norm acts on each token alone, so for bilateral pooling it is enough to
        // normalise the two tokens that are kept.
        let pooled = match self.pooling {
            Pooling::BilateralAvg | Pooling::BilateralFlatten => {
                let [batch, count, dim] = tokens.dims();
                let first = tokens.clone().narrow(1, 0, 1);
                let last = tokens.narrow(1, count - 1, 1);
                let ends = Tensor::cat(vec![first, last], 1);
                let ends = apply_norm(token_norm, ends);
                if self.pooling == Pooling::BilateralAvg {
                    ends.mean_dim(1).reshape([batch, dim])
                } else {
                    ends.reshape([batch, 2 * dim])
                }
            }
            Pooling::Mean => {
                let [batch, _, dim] = tokens.dims();
                apply_norm(token_norm, tokens)
                    .mean_dim(1)
                    .reshape([batch, dim])
            }
        };
        apply_norm(pooled_norm, pooled)
    }
}

fn apply_norm<B: Backend, const D: usize>(
    norm: Option<&VilLayerNorm<B>>,
    input: Tensor<B, D>,
) -> Tensor<B, D> {
    match norm {
        Some(norm) => norm.forward(input),
        None => input,
    }
}
