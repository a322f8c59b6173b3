//! Building blocks shared by the ViL v1 and v2 layers (arXiv 2406.04303, section 3; VIL_SPEC
//! sections 2-3): the ViL layer norm whose scale is stored as a zero-initialised offset, the
//! per-head norm of the mLSTM output, the block-diagonal q/k/v projection, the two depthwise
//! convolutions and stochastic depth.
//!
//! Parameter names and shapes copy the official PyTorch modules (`weight` `[E, 1, k]` for the
//! convolutions, `[E/4, 4, 4]` for the block-diagonal projection, ...), so checkpoints load
//! without reshaping. Activations are kept channels-last (`[batch, tokens, channels]`)
//! throughout: the convolutions are written as shifted multiply-adds on that layout instead of
//! permuting to burn's channels-first convolutions and back.

use burn::module::{Module, Param};
use std::cell::RefCell;

use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::init;

/// Layer norm over the last axis with an optional bias, in either of the two parametrisations
/// the official checkpoints use:
///
/// - offset scale (the ViL `LayerNorm`): `weight` is a zero-initialised δ and the effective scale
///   is 1 + δ;
/// - direct scale (`torch.nn.LayerNorm`): `weight` is the scale itself, initialised to 1.
///
/// The type is deliberately not called `LayerNorm`: burn-store renames `weight`/`bias` of
/// modules with that name to `gamma`/`beta`.
#[derive(Module, Debug)]
pub struct VilLayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    epsilon: f64,
    offset_scale: bool,
}

impl<B: Backend> VilLayerNorm<B> {
    /// The ViL norm: scale 1 + δ with δ = 0, bias 0 when present.
    pub fn offset(dim: usize, bias: bool, epsilon: f64, device: &B::Device) -> Self {
        Self {
            weight: init::zeros([dim], device),
            bias: bias.then(|| init::zeros([dim], device)),
            epsilon,
            offset_scale: true,
        }
    }

    /// `torch.nn.LayerNorm`: scale 1, bias 0.
    pub fn direct(dim: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            weight: init::ones([dim], device),
            bias: Some(init::zeros([dim], device)),
            epsilon,
            offset_scale: false,
        }
    }

    /// Normalises over the last axis.
    ///
    /// # Shapes
    /// `[..., dim]` → `[..., dim]`
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let settings = super::fused::norm::NormSettings {
            epsilon: self.epsilon as f32,
            offset_scale: self.offset_scale,
        };
        let bias = self.bias.as_ref().map(|bias| bias.val());
        let input = match super::fused::norm::layer_norm(input, self.weight.val(), bias, settings) {
            Ok(output) => return output,
            Err(input) => input,
        };
        let normalised = normalise_last_axis(input, self.epsilon);
        let scale = self.scale().unsqueeze::<D>();
        let scaled = normalised * scale;
        match &self.bias {
            Some(bias) => scaled + bias.val().unsqueeze::<D>(),
            None => scaled,
        }
    }

    fn scale(&self) -> Tensor<B, 1> {
        if self.offset_scale {
            self.weight.val() + 1.0
        } else {
            self.weight.val()
        }
    }
}

/// `(x − mean) / √(var + ε)` over the last axis, with the biased variance as PyTorch uses.
fn normalise_last_axis<B: Backend, const D: usize>(
    input: Tensor<B, D>,
    epsilon: f64,
) -> Tensor<B, D> {
    let centred = input.clone() - input.mean_dim(D - 1);
    let variance = (centred.clone() * centred.clone()).mean_dim(D - 1);
    centred / (variance + epsilon).sqrt()
}

/// SiLU, `x / (1 + e^{−x})`: one `exp` pass instead of the exp-log-exp of burn's overflow-safe
/// sigmoid. The exponent is capped at 40 (inputs below −40, where SiLU is below 2e-16 in size),
/// so neither the value nor the squared denominator of its gradient can overflow f32.
pub fn silu<B: Backend, const D: usize>(input: Tensor<B, D>) -> Tensor<B, D> {
    let denominator = input.clone().neg().clamp_max(40.0).exp() + 1.0;
    input / denominator
}

/// Group norm of the mLSTM output with one group per head (the official `MultiHeadLayerNorm`):
/// each token's head vector of width DH is normalised on its own, then scaled by 1 + δ over the
/// full inner width.
#[derive(Module, Debug)]
pub struct MultiHeadLayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    epsilon: f64,
}

impl<B: Backend> MultiHeadLayerNorm<B> {
    pub fn new(inner_dim: usize, bias: bool, device: &B::Device) -> Self {
        Self {
            weight: init::zeros([inner_dim], device),
            bias: bias.then(|| init::zeros([inner_dim], device)),
            epsilon: 1e-5,
        }
    }

    /// Equation L6 of the spec.
    ///
    /// # Shapes
    /// `[batch, heads, tokens, head_dim]` → same
    pub fn forward(&self, input: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, heads, _, head_dim] = input.dims();
        let normalised = normalise_last_axis(input, self.epsilon);
        let scale = (self.weight.val() + 1.0).reshape([1, heads, 1, head_dim]);
        let scaled = normalised * scale;
        match &self.bias {
            Some(bias) => scaled + bias.val().reshape([1, heads, 1, head_dim]),
            None => scaled,
        }
    }
}

/// Block-diagonal linear map (the official `LinearHeadwiseExpand`): the channels are cut into
/// blocks of `block_size` and each block has its own `block_size × block_size` matrix,
/// `y[b·s + o] = Σ_d weight[b, o, d] · x[b·s + d]`.
#[derive(Module, Debug)]
pub struct BlockDiagonalProjection<B: Backend> {
    /// `[blocks, out, in]`, as in PyTorch.
    pub weight: Param<Tensor<B, 3>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> BlockDiagonalProjection<B> {
    /// Weights from N(0, √(2/(5·embedding_dim))) as the ViL layer re-initialises them; bias 0.
    pub fn new(
        inner_dim: usize,
        block_size: usize,
        embedding_dim: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        let blocks = inner_dim / block_size;
        Self {
            weight: init::small_init([blocks, block_size, block_size], embedding_dim, device),
            bias: bias.then(|| init::zeros([inner_dim], device)),
        }
    }

    /// Projects `input` and lays the result out per mLSTM head, the layout the cell multiplies
    /// in. With `transposed` the last two axes are swapped (`[.., head_dim, tokens]`), so that
    /// `q·kᵀ` reads a contiguous key.
    ///
    /// # Shapes
    /// - input: `[blocks, batch·tokens, block]`, from [`split_blocks`]
    /// - returns `[batch, heads, tokens, head_dim]`, or `[batch, heads, head_dim, tokens]`
    pub fn forward_heads(
        &self,
        input: Tensor<B, 3>,
        batch: usize,
        heads: usize,
        transposed: bool,
    ) -> Tensor<B, 4> {
        let [blocks, rows, block_size] = input.dims();
        let tokens = rows / batch;
        let blocks_per_head = blocks / heads;
        let head_dim = blocks_per_head * block_size;
        // [blocks, rows, in] @ [blocks, in, out]
        let output = input.matmul(self.weight.val().swap_dims(1, 2));
        let output = match &self.bias {
            Some(bias) => output + bias.val().reshape([blocks, 1, block_size]),
            None => output,
        };
        let grouped = output.reshape([heads, blocks_per_head, batch, tokens, block_size]);
        if transposed {
            grouped
                .permute([2, 0, 1, 4, 3])
                .reshape([batch, heads, head_dim, tokens])
        } else {
            grouped
                .permute([2, 0, 3, 1, 4])
                .reshape([batch, heads, tokens, head_dim])
        }
    }
}

/// Cuts the channels of `[rows, width]` into `block`-wide blocks, block-major and contiguous:
/// `[width/block, rows, block]`, the input of [`BlockDiagonalProjection::forward_heads`].
pub fn split_blocks<B: Backend>(input: Tensor<B, 2>, block: usize) -> Tensor<B, 3> {
    let [rows, width] = input.dims();
    let blocks = width / block;
    input
        .reshape([rows, blocks, block])
        .swap_dims(0, 1)
        // Materialise once here rather than in every product that reads it.
        .reshape([blocks, rows, block])
}

/// Depthwise 1-D convolution weights with PyTorch's `Conv1d(groups = channels)` layout.
#[derive(Module, Debug)]
pub struct DepthwiseConv1d<B: Backend> {
    /// `[channels, 1, kernel]`
    pub weight: Param<Tensor<B, 3>>,
    pub bias: Param<Tensor<B, 1>>,
}

/// Causal depthwise convolution over the token axis (the official `CausalConv1d`, whose inner
/// `nn.Conv1d` is called `conv`): output t sees inputs t-k+1..=t, zero-padded on the left.
#[derive(Module, Debug)]
pub struct CausalConv1d<B: Backend> {
    pub conv: DepthwiseConv1d<B>,
}

impl<B: Backend> CausalConv1d<B> {
    /// PyTorch default init: U(±1/√kernel) for weight and bias.
    pub fn new(channels: usize, kernel: usize, device: &B::Device) -> Self {
        Self {
            conv: DepthwiseConv1d {
                weight: init::conv_default([channels, 1, kernel], kernel, device),
                bias: init::conv_default([channels], kernel, device),
            },
        }
    }

    /// Equation L2 (v1) of the spec, before the SiLU.
    ///
    /// # Shapes
    /// `[batch, tokens, channels]` → same
    pub fn forward(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, tokens, channels] = input.dims();
        let [_, _, kernel] = self.conv.weight.dims();
        let device = input.device();
        // [channels, 1, kernel] → [kernel, channels], one row per tap; the last tap multiplies
        // the current token, tap j the token kernel−1−j steps back.
        let taps = self
            .conv
            .weight
            .val()
            .reshape([channels, kernel])
            .transpose();
        let tap = |index: usize| taps.clone().narrow(0, index, 1).reshape([1, 1, channels]);
        let bias = self.conv.bias.val().reshape([1, 1, channels]);
        let mut output = input.clone() * tap(kernel - 1) + bias;
        if kernel > 1 {
            let zeros = Tensor::zeros([batch, kernel - 1, channels], &device);
            let padded = Tensor::cat(vec![zeros, input], 1);
            for index in 0..kernel - 1 {
                output = output + padded.clone().narrow(1, index, tokens) * tap(index);
            }
        }
        output
    }
}

/// Depthwise 2-D convolution over the patch grid with "same" padding (the official
/// `SequenceConv2d`, a `Conv2d(groups = channels)` applied to the token sequence reshaped to a
/// row-major grid).
#[derive(Module, Debug)]
pub struct DepthwiseConv2d<B: Backend> {
    /// `[channels, 1, kernel, kernel]`
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> DepthwiseConv2d<B> {
    /// PyTorch default init: U(±1/kernel) (fan-in kernel²) for weight and bias.
    pub fn new(channels: usize, kernel: usize, device: &B::Device) -> Self {
        let fan_in = kernel * kernel;
        Self {
            weight: init::conv_default([channels, 1, kernel, kernel], fan_in, device),
            bias: init::conv_default([channels], fan_in, device),
        }
    }

    /// Equation L2 (v2) of the spec, before the SiLU.
    ///
    /// # Shapes
    /// `[batch, height·width, channels]` → same
    pub fn forward(&self, input: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        let [batch, tokens, channels] = input.dims();
        let [height, width] = grid;
        let [_, _, kernel, _] = self.weight.dims();
        let pad = kernel / 2;
        let device = input.device();
        let image = input.reshape([batch, height, width, channels]);
        // [channels, 1, k, k] → [k·k, channels], one row per tap in row-major order.
        let taps = self
            .weight
            .val()
            .reshape([channels, kernel * kernel])
            .transpose();
        let tap = |row: usize, column: usize| {
            taps.clone()
                .narrow(0, row * kernel + column, 1)
                .reshape([1, 1, 1, channels])
        };
        let bias = self.bias.val().reshape([1, 1, 1, channels]);
        let mut output = image.clone() * tap(pad, pad) + bias;
        if pad > 0 {
            let rows = Tensor::zeros([batch, pad, width, channels], &device);
            let padded = Tensor::cat(vec![rows.clone(), image, rows], 1);
            let columns = Tensor::zeros([batch, height + 2 * pad, pad, channels], &device);
            let padded = Tensor::cat(vec![columns.clone(), padded, columns], 2);
            for row in 0..kernel {
                for column in 0..kernel {
                    if (row, column) == (pad, pad) {
                        continue;
                    }
                    let window = padded.clone().slice([
                        0..batch,
                        row..row + height,
                        column..column + width,
                        0..channels,
                    ]);
                    output = output + window * tap(row, column);
                }
            }
        }
        output.reshape([batch, tokens, channels])
    }
}

/// Stochastic depth around a residual branch: `x + branch(x)` for every sample in inference, and
/// in training the branch runs on a random subset of ⌊batch·(1-rate)⌋ samples (at least one)
/// whose residual is scaled by batch/kept, as the official kappamodules `DropPath` does; the
/// dropped samples pass through unchanged and cost nothing.
///
/// "Training" means the backend records gradients (`B::ad_enabled`), the same rule burn's
/// `Dropout` follows: a model moved to the inner backend with `.valid()` never drops.
///
/// The subset is drawn on the host from this thread's stream when one is set
/// ([`with_drop_path_seed`]), so replicas on several threads draw independently, reproducibly
/// and without a lock; otherwise from the backend's process-wide RNG.
pub fn drop_path<B: Backend>(
    input: Tensor<B, 3>,
    rate: f64,
    branch: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    let device = input.device();
    if rate <= 0.0 || !B::ad_enabled(&device) {
        return input.clone() + branch(input);
    }
    let [batch, _, _] = input.dims();
    let kept = ((batch as f64 * (1.0 - rate)).floor() as usize).max(1);
    if kept == batch {
        return input.clone() + branch(input);
    }
    let indices = match host_subset(batch, kept) {
        Some(chosen) => Tensor::<B, 1, Int>::from_data(TensorData::new(chosen, [kept]), &device),
        None => Tensor::<B, 1>::random([batch], Distribution::Default, &device)
            .argsort(0)
            .narrow(0, 0, kept),
    };
    let residual = branch(input.clone().select(0, indices.clone())) * (batch as f64 / kept as f64);
    input.select_assign(0, indices, residual, IndexingUpdateOp::Add)
}

thread_local! {
    /// This thread's stochastic-depth stream, while [`with_drop_path_seed`] runs.
    static DROP_PATH_STREAM: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// Runs `work` (a training forward pass) with this thread's stochastic depth drawn from a stream
/// seeded by `seed`: the same seed makes the same draws, layer after layer, on any backend and
/// whatever other threads do at the same time (data-parallel replicas run their forward passes
/// concurrently, each with its own seed).
pub fn with_drop_path_seed<R>(seed: u64, work: impl FnOnce() -> R) -> R {
    let outer =
        DROP_PATH_STREAM.with(|stream| stream.replace(Some(ChaCha8Rng::seed_from_u64(seed))));
    let result = work();
    DROP_PATH_STREAM.with(|stream| stream.replace(outer));
    result
}

/// `kept` distinct sample indices out of `batch`, from this thread's stream; `None` when no
/// stream is set.
fn host_subset(batch: usize, kept: usize) -> Option<Vec<i64>> {
    DROP_PATH_STREAM.with(|stream| {
        let mut stream = stream.borrow_mut();
        let rng = stream.as_mut()?;
        Some(
            sample(rng, batch, kept)
                .into_iter()
                .map(|index| index as i64)
                .collect(),
        )
    })
}
