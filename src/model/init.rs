//! Parameter initialisers of the official ViL code (VIL_SPEC section 3), in one place so each
//! module's constructor reads as the table in the spec: "small init", "wang init", truncated
//! normals, PyTorch's default convolution init and the gate-bias schedules.

use burn::module::{Initializer, Param};
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};

/// N(0, √(2 / (5·dim))): "small init" of Nguyen & Salazar (2019), used for `proj_up` and the
/// q/k/v projections with the *embedding* width `dim`, not the inner width.
pub(crate) fn small_init<B: Backend, const D: usize>(
    shape: [usize; D],
    dim: usize,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    normal(shape, (2.0 / (5.0 * dim as f64)).sqrt(), device)
}

/// N(0, 2 / (num_blocks·√dim)): "wang init" of `proj_down`; the official default passes
/// `num_blocks = 1`.
pub(crate) fn wang_init<B: Backend, const D: usize>(
    shape: [usize; D],
    dim: usize,
    num_blocks: usize,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    normal(shape, 2.0 / num_blocks as f64 / (dim as f64).sqrt(), device)
}

pub(crate) fn normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::Normal { mean: 0.0, std }.init(shape, device)
}

/// PyTorch's `trunc_normal_(std)`: a normal cut at the *absolute* bounds ±2. With the standard
/// deviations used here (0.02 and 2e-5) the cut lies 100σ or more out, so clamping the rare
/// outlier is indistinguishable from resampling it.
pub(crate) fn truncated_normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let tensor = Tensor::<B, D>::random(shape, Distribution::Normal(0.0, std), device);
    Param::from_tensor(tensor.clamp(-2.0, 2.0))
}

/// U(±bound) with PyTorch's default convolution bound 1/√fan_in, for weight and bias alike.
pub(crate) fn conv_default<B: Backend, const D: usize>(
    shape: [usize; D],
    fan_in: usize,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
    .init(shape, device)
}

/// Xavier-uniform over a weight viewed as `[fan_out, fan_in]`.
pub(crate) fn xavier_uniform<B: Backend, const D: usize>(
    shape: [usize; D],
    fan_in: usize,
    fan_out: usize,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
    .init(shape, device)
}

pub(crate) fn zeros<B: Backend, const D: usize>(
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::Zeros.init(shape, device)
}

pub(crate) fn ones<B: Backend, const D: usize>(
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Initializer::Ones.init(shape, device)
}

/// `count` values evenly spaced from `start` to `end` inclusive (the forget-gate bias schedule).
pub(crate) fn linspace<B: Backend>(
    start: f64,
    end: f64,
    count: usize,
    device: &B::Device,
) -> Param<Tensor<B, 1>> {
    let step = if count > 1 {
        (end - start) / (count - 1) as f64
    } else {
        0.0
    };
    let values: Vec<f32> = (0..count)
        .map(|index| (start + step * index as f64) as f32)
        .collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, [count]), device))
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::linspace;

    #[test]
    fn forget_gate_bias_schedule_spans_three_to_six() {
        let values: Vec<f32> = linspace::<NdArray>(3.0, 6.0, 4, &Default::default())
            .val()
            .into_data()
            .to_vec()
            .expect("f32");
        assert_eq!(values, vec![3.0, 4.0, 5.0, 6.0]);
        let single: Vec<f32> = linspace::<NdArray>(3.0, 6.0, 1, &Default::default())
            .val()
            .into_data()
            .to_vec()
            .expect("f32");
        assert_eq!(single, vec![3.0]);
    }
}
