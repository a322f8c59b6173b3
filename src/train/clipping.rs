//! Gradient clipping over the flat gradient list: by the global norm of all gradients together
//! (`torch.nn.utils.clip_grad_norm_`) or element-wise by value (`clip_grad_value_`).
//!
//! burn's own `GradientClipping::Norm` rescales each tensor by its own norm, which changes the
//! direction of the update; the recipe (and timm) scale all gradients by one factor. With loss
//! scaling the loop unscales first, so `max` is in the units of the true gradient (the blog's
//! template clipped the scaled gradients, a bug).

use crate::field::FieldError;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How gradients are clipped (`train.clip_grad`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GradientClip {
    /// Scale all gradients by `min(1, max / (‖g‖ + 1e-6))`, ‖g‖ the L2 norm over every
    /// parameter's gradient together.
    Norm(f64),
    /// Clamp every gradient element to `[-max, max]`.
    Value(f64),
}

impl GradientClip {
    /// Checks the threshold; the error is the tail after `train.clip_grad.`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let (name, value) = match self {
            GradientClip::Norm(value) => ("norm", *value),
            GradientClip::Value(value) => ("value", *value),
        };
        if value > 0.0 && value.is_finite() {
            Ok(())
        } else {
            Err(crate::field_error!("{name}", "must be > 0 (got {value})"))
        }
    }

    /// Clips `gradients` in place.
    pub fn apply<B: Backend>(&self, gradients: &mut [Option<Tensor<B, 1>>]) {
        match *self {
            GradientClip::Norm(max_norm) => {
                clip_by_global_norm(gradients, max_norm);
            }
            GradientClip::Value(max) => {
                for gradient in gradients.iter_mut() {
                    if let Some(value) = gradient.take() {
                        *gradient = Some(value.clamp(-max, max));
                    }
                }
            }
        }
    }
}

/// The squared L2 norm over every gradient, as a one-element tensor (still on the device).
pub fn squared_norm<B: Backend>(gradients: &[Option<Tensor<B, 1>>]) -> Option<Tensor<B, 1>> {
    let parts: Vec<Tensor<B, 1>> = gradients
        .iter()
        .flatten()
        .map(|gradient| gradient.clone().square().sum())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(Tensor::cat(parts, 0).sum())
    }
}

/// The global L2 norm over every gradient (0 without gradients).
pub fn global_norm<B: Backend>(gradients: &[Option<Tensor<B, 1>>]) -> f64 {
    squared_norm(gradients)
        .map(|squared| scalar(squared.sqrt()))
        .unwrap_or(0.0)
}

/// Scales every gradient so that the global norm is at most `max_norm` (PyTorch's factor
/// `max_norm / (norm + 1e-6)`, clamped to 1); returns the norm before clipping.
pub fn clip_by_global_norm<B: Backend>(
    gradients: &mut [Option<Tensor<B, 1>>],
    max_norm: f64,
) -> f64 {
    let norm = global_norm(gradients);
    let factor = max_norm / (norm + 1e-6);
    // A factor of exactly 1 would leave the values unchanged; skipping it saves a pass. A
    // non-finite norm makes the factor 0 or NaN: PyTorch then propagates NaN, and so do we.
    if factor < 1.0 || factor.is_nan() {
        for gradient in gradients.iter_mut() {
            if let Some(value) = gradient.take() {
                *gradient = Some(value.mul_scalar(factor));
            }
        }
    }
    norm
}

/// A one-element tensor's value as `f64`, whatever the tensor's float type.
pub(crate) fn scalar<B: Backend>(tensor: Tensor<B, 1>) -> f64 {
    let data = tensor.into_data().convert::<f64>();
    data.to_vec::<f64>()
        .ok()
        .and_then(|values| values.first().copied())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn tensor(values: &[f32]) -> Option<Tensor<B, 1>> {
        Some(Tensor::from_floats(values, &Default::default()))
    }

    fn values(gradients: &[Option<Tensor<B, 1>>]) -> Vec<Vec<f32>> {
        gradients
            .iter()
            .map(|gradient| match gradient {
                Some(value) => value.to_data().to_vec().unwrap(),
                None => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn global_norm_clipping_equals_the_hand_computation() {
        // ‖(3, 4)‖ = 5 and ‖(12)‖ = 12, so the global norm is √(25 + 144) = 13; per-tensor
        // clipping (burn's) would scale the two tensors by different factors.
        let mut gradients = vec![tensor(&[3.0, 4.0]), None, tensor(&[12.0])];
        let norm = clip_by_global_norm(&mut gradients, 6.5);
        assert!((norm - 13.0).abs() < 1e-6);
        let factor = 6.5 / (13.0 + 1e-6);
        let expected = [
            vec![3.0 * factor, 4.0 * factor],
            vec![],
            vec![12.0 * factor],
        ];
        for (actual, expected) in values(&gradients).iter().zip(&expected) {
            for (a, e) in actual.iter().zip(expected) {
                assert!((f64::from(*a) - e).abs() < 1e-6, "{a} vs {e}");
            }
        }
        assert!((global_norm(&gradients) - 6.5).abs() < 1e-5);
    }

    #[test]
    fn a_norm_under_the_limit_leaves_gradients_unchanged() {
        let mut gradients = vec![tensor(&[0.3, -0.4])];
        let norm = clip_by_global_norm(&mut gradients, 1.0);
        assert!((norm - 0.5).abs() < 1e-6);
        assert_eq!(values(&gradients), vec![vec![0.3, -0.4]]);
    }

    #[test]
    fn value_clipping_clamps_each_element() {
        let mut gradients = vec![tensor(&[-3.0, 0.5, 2.0]), None];
        GradientClip::Value(1.0).apply(&mut gradients);
        assert_eq!(values(&gradients), vec![vec![-1.0, 0.5, 1.0], vec![]]);
    }

    #[test]
    fn parses_and_validates() {
        let clip: GradientClip = serde_json::from_str(r#"{"norm": 5.0}"#).unwrap();
        assert_eq!(clip, GradientClip::Norm(5.0));
        assert_eq!(
            GradientClip::Value(0.0).validate().unwrap_err().to_string(),
            "value: must be > 0 (got 0)"
        );
    }
}
