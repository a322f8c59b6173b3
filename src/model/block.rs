//! The ViL block (arXiv 2406.04303, section 3, figure 2; VIL_SPEC section 3): a pre-norm
//! residual block (B1) around the mLSTM layer (L1-L8), which reads the token sequence either from
//! the top-left patch or, by flipping the token axis, from the bottom-right one.
//!
//! Field names follow the official `ViLLayer`/`ViLBlock`/`ViLBlockPair` so that
//! `blocks.N.layer.proj_up.weight` and friends load one to one. The only layout difference
//! between v1 and v2 inside a layer is the convolution's name: `conv1d.conv.*` for the causal 1-D
//! kernel and `conv.*` for the 2-D one.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use super::config::{ConvKind, VilConfig};
use super::fused::kernel::{Convolution, CoreShape};
use super::fused::{self, CoreInputs, Kernels};
use super::init;
use super::layers::{
    BlockDiagonalProjection, CausalConv1d, DepthwiseConv2d, VilLayerNorm, drop_path, silu,
    split_blocks,
};
use super::mlstm::MatrixLstmCell;

/// The order in which a block reads the row-major patch sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Token 0 is the top-left patch (`rowwise_from_top_left`).
    FromTopLeft,
    /// The token axis is flipped, so token 0 is the bottom-right patch
    /// (`rowwise_from_bot_right`); equivalent to rotating the grid by 180°.
    FromBottomRight,
}

/// The mLSTM layer of one block (the official `ViLLayer`).
#[derive(Module, Debug)]
pub struct ViLLayer<B: Backend> {
    /// D → 2E: the first half feeds the mLSTM branch, the second is the output gate z.
    pub proj_up: Linear<B>,
    pub q_proj: BlockDiagonalProjection<B>,
    pub k_proj: BlockDiagonalProjection<B>,
    pub v_proj: BlockDiagonalProjection<B>,
    /// The causal 1-D convolution (v1 naming); `None` when the layer convolves in 2-D.
    pub conv1d: Option<CausalConv1d<B>>,
    /// The 2-D convolution over the patch grid (v2 naming); `None` for the causal 1-D kind.
    pub conv: Option<DepthwiseConv2d<B>>,
    pub mlstm_cell: MatrixLstmCell<B>,
    /// Per-channel weight s of the convolved branch added to the cell output (L7), init 1.
    pub learnable_skip: Param<Tensor<B, 1>>,
    /// E → D.
    pub proj_down: Linear<B>,
    direction: Direction,
}

impl<B: Backend> ViLLayer<B> {
    pub fn new(config: &VilConfig, direction: Direction, device: &B::Device) -> Self {
        let dim = config.dim;
        let inner = config.inner_dim();
        let bias = config.bias;
        let mut proj_up = LinearConfig::new(dim, 2 * inner)
            .with_bias(bias)
            .init(device);
        proj_up.weight = init::small_init([dim, 2 * inner], dim, device);
        proj_up.bias = bias.then(|| init::zeros([2 * inner], device));
        let mut proj_down = LinearConfig::new(inner, dim).with_bias(bias).init(device);
        proj_down.weight = init::wang_init([inner, dim], dim, 1, device);
        proj_down.bias = bias.then(|| init::zeros([dim], device));
        let projection =
            || BlockDiagonalProjection::new(inner, config.qkv_block_size, dim, bias, device);
        let (conv1d, conv) = match config.conv_kind {
            ConvKind::Causal1d => (
                Some(CausalConv1d::new(inner, config.conv_kernel_size, device)),
                None,
            ),
            ConvKind::TwoD => (
                None,
                Some(DepthwiseConv2d::new(inner, config.conv_kernel_size, device)),
            ),
        };
        Self {
            proj_up,
            q_proj: projection(),
            k_proj: projection(),
            v_proj: projection(),
            conv1d,
            conv,
            mlstm_cell: MatrixLstmCell::new(inner, config.num_heads, bias, device),
            learnable_skip: init::ones([inner], device),
            proj_down,
            direction,
        }
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Equations L1-L8 of the spec.
    ///
    /// # Shapes
    /// `[batch, tokens, dim]` → same; `grid` is the `[height, width]` of the patch grid the
    /// tokens were flattened from (row-major), used by the 2-D convolution.
    pub fn forward(&self, input: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        self.forward_with(input, grid, Kernels::from_environment())
    }

    /// [`Self::forward`] with an explicit choice of implementation for L2-L7.
    pub fn forward_with(
        &self,
        input: Tensor<B, 3>,
        grid: [usize; 2],
        kernels: Kernels,
    ) -> Tensor<B, 3> {
        let [_, tokens, _] = input.dims();
        if kernels == Kernels::Fused && fused::available::<B>() && tokens < fused::MAX_TOKENS {
            return self.forward_fused(input, grid);
        }
        self.forward_generic(input, grid)
    }

    /// L1 and L8 as burn products around the fused core, which reads the rows in reverse for
    /// a bottom-right layer instead of flipping them.
    fn forward_fused(&self, input: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        let [batch, tokens, _] = input.dims();
        let [_, doubled] = self.proj_up.weight.dims();
        let inner = doubled / 2;
        let up = fused_linear(&self.proj_up, input);
        let [blocks, block, _] = self.q_proj.weight.dims();
        let (convolution, conv_weight, conv_bias) = match (&self.conv1d, &self.conv) {
            (Some(conv), _) => {
                let [_, _, kernel] = conv.conv.weight.dims();
                (
                    Convolution::Causal { kernel },
                    conv.conv.weight.val().reshape([inner * kernel]),
                    conv.conv.bias.val(),
                )
            }
            (None, Some(conv)) => {
                let [_, _, kernel, _] = conv.weight.dims();
                let [height, width] = grid;
                (
                    Convolution::Grid {
                        kernel,
                        height,
                        width,
                    },
                    conv.weight.val().reshape([inner * kernel * kernel]),
                    conv.bias.val(),
                )
            }
            // A layer without convolution is an identity tap of width one.
            (None, None) => (
                Convolution::Causal { kernel: 1 },
                Tensor::ones([inner], &up.device()),
                Tensor::zeros([inner], &up.device()),
            ),
        };
        let shape = CoreShape {
            batch,
            tokens,
            inner,
            heads: self.mlstm_cell.num_heads(),
            block,
            convolution,
            reverse: self.direction == Direction::FromBottomRight,
        };
        debug_assert_eq!(blocks * block, inner);
        let matrix = |weight: &Param<Tensor<B, 3>>| weight.val().reshape([inner * block]);
        let bias = |bias: &Option<Param<Tensor<B, 1>>>| bias.as_ref().map(|bias| bias.val());
        let cell = &self.mlstm_cell;
        let gate = |linear: &Linear<B>| {
            let [input, heads] = linear.weight.dims();
            linear.weight.val().reshape([input * heads])
        };
        let gate_bias = |linear: &Linear<B>| match &linear.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros(linear.weight.dims()[1..].to_vec(), &up.device()),
        };
        let inputs = CoreInputs {
            parameters: [
                Some(conv_weight),
                Some(conv_bias),
                Some(matrix(&self.q_proj.weight)),
                Some(matrix(&self.k_proj.weight)),
                Some(matrix(&self.v_proj.weight)),
                bias(&self.q_proj.bias),
                bias(&self.k_proj.bias),
                bias(&self.v_proj.bias),
                Some(gate(&cell.igate)),
                Some(gate_bias(&cell.igate)),
                Some(gate(&cell.fgate)),
                Some(gate_bias(&cell.fgate)),
                Some(cell.outnorm.weight.val()),
                bias(&cell.outnorm.bias),
                Some(self.learnable_skip.val()),
            ],
            up,
        };
        match fused::layer_core(shape, inputs) {
            Ok(hidden) => fused_linear(&self.proj_down, hidden),
            Err(_) => unreachable!("the caller checked that the backend has the fused core"),
        }
    }

    /// L1-L8 as a composition of burn operations, for every backend.
    fn forward_generic(&self, input: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        let [batch, tokens, dim] = input.dims();
        let rows = batch * tokens;
        let input = match self.direction {
            Direction::FromTopLeft => input,
            Direction::FromBottomRight => input.flip([1]),
        };
        let input = input.reshape([rows, dim]);
        let [_, doubled] = self.proj_up.weight.dims();
        let inner = doubled / 2;

        // L1: the two halves as separate products, so neither is a strided view of the other.
        let branch = linear_columns(&self.proj_up, input.clone(), 0, inner);
        let output_gate = linear_columns(&self.proj_up, input, inner, inner);

        // L2
        let sequence = branch.clone().reshape([batch, tokens, inner]);
        let convolved = match (&self.conv1d, &self.conv) {
            (Some(conv), _) => conv.forward(sequence),
            (None, Some(conv)) => conv.forward(sequence, grid),
            (None, None) => sequence,
        };
        let convolved = silu(convolved).reshape([rows, inner]);

        // L3: q and k read the convolved branch, v the raw one; all three come out per head.
        let [blocks, _, _] = self.q_proj.weight.dims();
        let block = inner / blocks;
        let heads = self.mlstm_cell.num_heads();
        let convolved_blocks = split_blocks(convolved.clone(), block);
        let query = self
            .q_proj
            .forward_heads(convolved_blocks.clone(), batch, heads, false);
        let key_transposed = self
            .k_proj
            .forward_heads(convolved_blocks, batch, heads, true);
        let value = self
            .v_proj
            .forward_heads(split_blocks(branch, block), batch, heads, false);

        // L4-L6
        let hidden = self.mlstm_cell.forward(query, key_transposed, value);

        // L7, L8
        let skip = self.learnable_skip.val().unsqueeze::<2>();
        let hidden = (hidden + convolved * skip) * silu(output_gate);
        let output = self.proj_down.forward(hidden).reshape([batch, tokens, dim]);
        match self.direction {
            Direction::FromTopLeft => output,
            Direction::FromBottomRight => output.flip([1]),
        }
    }
}

/// A burn `Linear` on `[batch, tokens, in]` through [`fused::linear::linear`] (threaded on the
/// CPU).
fn fused_linear<B: Backend>(linear: &Linear<B>, input: Tensor<B, 3>) -> Tensor<B, 3> {
    fused::linear::linear(
        input,
        linear.weight.val(),
        linear.bias.as_ref().map(|bias| bias.val()),
    )
}

/// `input · W[:, start..start+width] (+ b[start..start+width])` for a burn `Linear`.
fn linear_columns<B: Backend>(
    linear: &Linear<B>,
    input: Tensor<B, 2>,
    start: usize,
    width: usize,
) -> Tensor<B, 2> {
    let output = input.matmul(linear.weight.val().narrow(1, start, width));
    match &linear.bias {
        Some(bias) => output + bias.val().narrow(0, start, width).unsqueeze::<2>(),
        None => output,
    }
}

/// Pre-norm residual block (the official `ViLBlock`): B1, `x + DropPath(layer(norm(x)))`.
#[derive(Module, Debug)]
pub struct ViLBlock<B: Backend> {
    pub norm: VilLayerNorm<B>,
    pub layer: ViLLayer<B>,
    drop_path: f64,
}

impl<B: Backend> ViLBlock<B> {
    pub fn new(config: &VilConfig, direction: Direction, device: &B::Device) -> Self {
        Self {
            norm: VilLayerNorm::offset(config.dim, config.bias, 1e-5, device),
            layer: ViLLayer::new(config, direction, device),
            drop_path: config.drop_path,
        }
    }

    /// # Shapes
    /// `[batch, tokens, dim]` → same
    pub fn forward(&self, input: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        drop_path(input, self.drop_path, |residual| {
            self.layer.forward(self.norm.forward(residual), grid)
        })
    }
}

/// Two blocks reading the sequence in opposite directions (the official v2 `ViLBlockPair`).
#[derive(Module, Debug)]
pub struct ViLBlockPair<B: Backend> {
    pub rowwise_from_top_left: ViLBlock<B>,
    pub rowwise_from_bot_right: ViLBlock<B>,
}

impl<B: Backend> ViLBlockPair<B> {
    pub fn new(config: &VilConfig, device: &B::Device) -> Self {
        Self {
            rowwise_from_top_left: ViLBlock::new(config, Direction::FromTopLeft, device),
            rowwise_from_bot_right: ViLBlock::new(config, Direction::FromBottomRight, device),
        }
    }

    /// # Shapes
    /// `[batch, tokens, dim]` → same
    pub fn forward(&self, input: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        let forward = self.rowwise_from_top_left.forward(input, grid);
        self.rowwise_from_bot_right.forward(forward, grid)
    }
}
