//! Layer norm over the last axis on the CPU backend as one autodiff operation: one pass over the
//! rows forward and one backward, in blocks of rows over the rayon threads.
//!
//! As burn operations the norm is eight passes forward (mean, centre, square, mean, add, root,
//! divide, scale, shift), each allocating its output, and about twice that backward, all on one
//! thread; every ViL block runs one, so `vil_micro` spent a sixth of its training step there.
//! The arithmetic is the generic version's (`layers::VilLayerNorm`: biased variance, the centred
//! value divided by `√(var + ε)`), so the two agree to float rounding. The parameter gradients
//! are summed per block of [`ROWS`] rows and the blocks in order, so the result does not depend
//! on the thread count.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rayon::prelude::*;

use super::{
    Kernels, TrackedTensor, affine_operation, from_primitive, matrix_shape, ndarray_tensor,
    primitive, values,
};
use crate::backend::{Cpu, CpuTrain};

/// Rows per task (and per partial sum of the parameter gradients).
const ROWS: usize = 64;

/// The norm's settings: ε, and whether the stored weight is an offset from a scale of 1.
#[derive(Clone, Copy, Debug)]
pub struct NormSettings {
    pub epsilon: f32,
    pub offset_scale: bool,
}

/// `(x − mean) / √(var + ε) · scale (+ bias)` over the last axis of `input` on the CPU backend,
/// or gives the input back for the generic path.
pub fn layer_norm<B: Backend, const D: usize>(
    input: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    settings: NormSettings,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if Kernels::from_environment() == Kernels::Generic {
        return Err(input);
    }
    let id = std::any::TypeId::of::<B>();
    let dims = input.dims();
    if id == std::any::TypeId::of::<Cpu>() {
        let input = primitive::<B, NdArrayTensor, D>(input);
        let weight = primitive::<B, NdArrayTensor, 1>(weight);
        let bias = bias.map(primitive::<B, NdArrayTensor, 1>);
        let (output, _) = forward(settings, &input, &weight, bias.as_ref());
        return Ok(from_primitive::<B, NdArrayTensor, D>(output, dims));
    }
    if id == std::any::TypeId::of::<CpuTrain>() {
        let input = primitive::<B, TrackedTensor, D>(input);
        let weight = primitive::<B, TrackedTensor, 1>(weight);
        let bias = bias.map(primitive::<B, TrackedTensor, 1>);
        let output = training(settings, input, weight, bias);
        return Ok(from_primitive::<B, TrackedTensor, D>(output, dims));
    }
    Err(input)
}

fn scale(settings: NormSettings, weight: &[f32]) -> Vec<f32> {
    let offset = if settings.offset_scale { 1.0 } else { 0.0 };
    weight.iter().map(|value| value + offset).collect()
}

/// The output (shaped as the input) and, per row, `√(var + ε)`.
fn forward(
    settings: NormSettings,
    input: &NdArrayTensor,
    weight: &NdArrayTensor,
    bias: Option<&NdArrayTensor>,
) -> (NdArrayTensor, Vec<f32>) {
    let (shape, [rows, width]) = matrix_shape(input);
    let input = values(input);
    let scale = scale(settings, &values(weight));
    let bias = bias.map(|bias| values(bias).into_owned());
    let mut output = vec![0.0; input.len()];
    let mut deviations = vec![0.0; rows];
    output
        .par_chunks_mut(ROWS * width)
        .zip(deviations.par_chunks_mut(ROWS))
        .zip(input.par_chunks(ROWS * width))
        .for_each(|((output, deviations), input)| {
            for ((output, deviation), row) in output
                .chunks_exact_mut(width)
                .zip(deviations.iter_mut())
                .zip(input.chunks_exact(width))
            {
                let mean = row.iter().sum::<f32>() / width as f32;
                let variance =
                    row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / width as f32;
                *deviation = (variance + settings.epsilon).sqrt();
                for (channel, (value, x)) in output.iter_mut().zip(row).enumerate() {
                    let scaled = (x - mean) / *deviation * scale[channel];
                    *value = match &bias {
                        Some(bias) => scaled + bias[channel],
                        None => scaled,
                    };
                }
            }
        });
    (ndarray_tensor(output, shape), deviations)
}

/// One block's `Σ dy·x̂` and `Σ dy` per channel.
type Sums = (Vec<f32>, Vec<f32>);

#[derive(Clone, Debug)]
struct NormState {
    settings: NormSettings,
    input: NdArrayTensor,
    weight: NdArrayTensor,
    deviations: Vec<f32>,
}

#[derive(Debug)]
struct NormBackward;

impl Backward<Cpu, 3> for NormBackward {
    type State = NormState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let NormState {
            settings,
            input,
            weight,
            deviations,
        } = ops.state;
        let (input_shape, [_, width]) = matrix_shape(&input);
        let output_gradient = grads.consume::<Cpu>(&ops.node);
        let output_gradient = values(&output_gradient);
        let input = values(&input);
        let scale = scale(settings, &values(&weight));
        let mut input_gradient = vec![0.0; input.len()];
        // Per block of rows: Σ dy·x̂ and Σ dy, then summed block by block in order.
        let partial: Vec<Sums> = input_gradient
            .par_chunks_mut(ROWS * width)
            .zip(input.par_chunks(ROWS * width))
            .zip(output_gradient.par_chunks(ROWS * width))
            .zip(deviations.par_chunks(ROWS))
            .map(|(((input_gradient, input), output_gradient), deviations)| {
                let mut weight_sum = vec![0.0; width];
                let mut bias_sum = vec![0.0; width];
                let mut normalised = vec![0.0; width];
                let mut scaled_gradient = vec![0.0; width];
                for (((input_gradient, row), gradient), deviation) in input_gradient
                    .chunks_exact_mut(width)
                    .zip(input.chunks_exact(width))
                    .zip(output_gradient.chunks_exact(width))
                    .zip(deviations)
                {
                    let mean = row.iter().sum::<f32>() / width as f32;
                    for channel in 0..width {
                        normalised[channel] = (row[channel] - mean) / deviation;
                        scaled_gradient[channel] = gradient[channel] * scale[channel];
                        weight_sum[channel] += gradient[channel] * normalised[channel];
                        bias_sum[channel] += gradient[channel];
                    }
                    let gradient_mean = scaled_gradient.iter().sum::<f32>() / width as f32;
                    let projection_mean = scaled_gradient
                        .iter()
                        .zip(&normalised)
                        .map(|(g, n)| g * n)
                        .sum::<f32>()
                        / width as f32;
                    for channel in 0..width {
                        input_gradient[channel] = (scaled_gradient[channel]
                            - gradient_mean
                            - normalised[channel] * projection_mean)
                            / deviation;
                    }
                }
                (weight_sum, bias_sum)
            })
            .collect();
        let [input_parent, weight_parent, bias_parent] = ops.parents;
        if let Some(node) = input_parent {
            grads.register::<Cpu>(node.id, ndarray_tensor(input_gradient, input_shape));
        }
        let total = |pick: fn(&Sums) -> &Vec<f32>| {
            let mut sum = vec![0.0; width];
            for block in &partial {
                for (sum, value) in sum.iter_mut().zip(pick(block)) {
                    *sum += value;
                }
            }
            sum
        };
        if let Some(node) = weight_parent {
            grads.register::<Cpu>(
                node.id,
                ndarray_tensor(total(|block| &block.0), vec![width]),
            );
        }
        if let Some(node) = bias_parent {
            grads.register::<Cpu>(
                node.id,
                ndarray_tensor(total(|block| &block.1), vec![width]),
            );
        }
    }
}

fn training(
    settings: NormSettings,
    input: TrackedTensor,
    weight: TrackedTensor,
    bias: Option<TrackedTensor>,
) -> TrackedTensor {
    affine_operation(
        NormBackward,
        input,
        weight,
        bias,
        |input, weight, bias| forward(settings, input, weight, bias),
        |input, weight, deviations| NormState {
            settings,
            input,
            weight,
            deviations,
        },
    )
}
