//! Mixed precision: the forward and backward passes in bf16 or f16, master weights, gradients
//! and optimiser state in f32, and dynamic loss scaling for f16.
//!
//! burn 0.21 carries a dtype per tensor and lets a device's default float type be chosen once,
//! before its first tensor (`set_default_dtypes`). For half precision the loop therefore sets
//! the device's default to the half type, so every tensor the model creates internally (padding,
//! masks, zeros) is half as well, and keeps its own master weights in f32 by creating and
//! casting them explicitly. Each step casts the f32 parameters to half inside the autodiff graph
//! ([`cast_params`]), so the backward pass casts the gradients back and they arrive in f32 on the
//! master weights; the loss is computed on logits cast to f32. This is PyTorch's autocast with
//! fp32 master weights, done by casting every parameter rather than per operation.
//!
//! f16 has 5 exponent bits: small gradients underflow to zero unless the loss is scaled up
//! before the backward pass. [`LossScaler`] is `torch.cuda.amp.GradScaler`'s dynamic scaling:
//! the gradients are divided by the scale, a step whose gradients hold an inf or NaN is skipped
//! and the scale multiplied by `backoff_factor`, and after `growth_interval` good steps in a row
//! the scale is multiplied by `growth_factor`. bf16 has f32's exponent range and needs none.
//!
//! The CPU backend (ndarray) has no half-precision kernels, so bf16 and f16 need `backend: cuda`
//! or `wgpu` (f16 only where the adapter has `shaderFloat16`; no wgpu device has bf16);
//! the loss-scaling logic itself is backend-independent and tested on the CPU.

use crate::field::FieldError;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Element, FloatDType, Tensor, set_default_dtypes};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Float type of the forward and backward passes (`train.precision`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bfloat16 compute, f32 master weights (CUDA only).
    Bf16,
    /// float16 compute with dynamic loss scaling, f32 master weights (CUDA only).
    F16,
}

impl Precision {
    /// The half type of the compute, or `None` for f32.
    pub fn half_dtype(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

/// Dynamic loss scaling for f16 (`train.loss_scale`); the defaults are `GradScaler`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LossScaleSpec {
    /// Scale of the first step.
    #[serde(default = "default_initial")]
    #[schemars(extend("exclusiveMinimum" = 0.0))]
    pub initial: f64,
    /// Multiplier after `growth_interval` steps in a row without overflow (> 1).
    #[serde(default = "default_growth_factor")]
    #[schemars(extend("exclusiveMinimum" = 1.0))]
    pub growth_factor: f64,
    /// Multiplier after an overflowing step, in (0, 1).
    #[serde(default = "default_backoff_factor")]
    #[schemars(extend("exclusiveMinimum" = 0.0, "exclusiveMaximum" = 1.0))]
    pub backoff_factor: f64,
    /// Good steps in a row before the scale grows.
    #[serde(default = "default_growth_interval")]
    #[schemars(range(min = 1))]
    pub growth_interval: u32,
}

fn default_initial() -> f64 {
    65536.0
}

fn default_growth_factor() -> f64 {
    2.0
}

fn default_backoff_factor() -> f64 {
    0.5
}

fn default_growth_interval() -> u32 {
    2000
}

impl Default for LossScaleSpec {
    fn default() -> Self {
        LossScaleSpec {
            initial: default_initial(),
            growth_factor: default_growth_factor(),
            backoff_factor: default_backoff_factor(),
            growth_interval: default_growth_interval(),
        }
    }
}

impl LossScaleSpec {
    /// Checks the factors; the error is the tail after `train.loss_scale.`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(self.initial > 0.0 && self.initial.is_finite()) {
            return Err(crate::field_error!(
                "initial",
                "must be > 0 (got {})",
                self.initial
            ));
        }
        if !(self.growth_factor > 1.0 && self.growth_factor.is_finite()) {
            return Err(crate::field_error!(
                "growth_factor",
                "must be > 1 (got {})",
                self.growth_factor
            ));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return Err(crate::field_error!(
                "backoff_factor",
                "must be in (0, 1) (got {})",
                self.backoff_factor
            ));
        }
        if self.growth_interval == 0 {
            return Err(FieldError::new("growth_interval", "must be ≥ 1 (got 0)"));
        }
        Ok(())
    }
}

/// The state of dynamic loss scaling, saved in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// Current scale.
    pub scale: f64,
    /// Good steps since the last change of scale.
    pub good_steps: u32,
    /// Steps skipped for overflow so far.
    pub skipped_steps: u64,
    spec: LossScaleSpec,
}

impl LossScaler {
    /// A scaler at `spec.initial`.
    pub fn new(spec: LossScaleSpec) -> LossScaler {
        LossScaler {
            scale: spec.initial,
            good_steps: 0,
            skipped_steps: 0,
            spec,
        }
    }

    /// Records whether this step's unscaled gradients were all finite and returns whether the
    /// optimiser may apply them.
    pub fn update(&mut self, gradients_finite: bool) -> bool {
        if gradients_finite {
            self.good_steps += 1;
            if self.good_steps >= self.spec.growth_interval {
                let grown = self.scale * self.spec.growth_factor;
                // GradScaler keeps the scale when growing would overflow f32.
                if grown.is_finite() && grown <= f64::from(f32::MAX) {
                    self.scale = grown;
                }
                self.good_steps = 0;
            }
            true
        } else {
            self.scale *= self.spec.backoff_factor;
            self.good_steps = 0;
            self.skipped_steps += 1;
            false
        }
    }
}

/// Why a precision cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrecisionError {
    /// The backend has no kernels for the half type.
    #[error(
        "train.precision: {precision} needs a backend with half-precision kernels; the {backend} backend has none (use backend: cuda or wgpu, or precision: f32)"
    )]
    Unsupported {
        /// The requested precision.
        precision: &'static str,
        /// The backend's name.
        backend: String,
    },
    /// The device was already used with another default float type in this process.
    #[error(
        "train.precision: {precision} cannot be set up, the device was already used in this process with another float type ({message})"
    )]
    AlreadyInitialised {
        /// The requested precision.
        precision: &'static str,
        /// burn's message.
        message: String,
    },
}

/// Prepares `device` for `precision`: for half precision, makes the half type the device's
/// default float type. Must run before the first tensor is created on the device.
///
/// # Errors
/// The backend has no half kernels, or the device already has another default.
pub fn configure_device<B: Backend>(
    device: &B::Device,
    precision: Precision,
) -> Result<(), PrecisionError> {
    let Some(half) = precision.half_dtype() else {
        return Ok(());
    };
    let dtype = DType::from(half);
    if !B::supports_dtype(device, dtype) {
        return Err(PrecisionError::Unsupported {
            precision: precision.as_str(),
            backend: B::name(device),
        });
    }
    // Set first, and look only when that fails: reading the settings of a device that has none
    // yet makes burn record the defaults (f32), after which they can no longer be changed.
    match set_default_dtypes::<B>(device, half, <B::IntElem as Element>::dtype()) {
        Ok(()) => Ok(()),
        Err(_) if burn::tensor::get_device_settings::<B>(device).float_dtype == half => Ok(()),
        Err(error) => Err(PrecisionError::AlreadyInitialised {
            precision: precision.as_str(),
            message: error.to_string(),
        }),
    }
}

/// Casts every float parameter of `module` to `dtype` (inside the autodiff graph when the
/// backend records one, so gradients flow back to the original parameters in their own type).
pub fn cast_params<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl<B: Backend> ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let dtype = self.0;
            param.map(|tensor| tensor.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::backend::NdArray;

    fn spec(growth_interval: u32) -> LossScaleSpec {
        LossScaleSpec {
            growth_interval,
            ..LossScaleSpec::default()
        }
    }

    #[test]
    fn overflow_skips_the_step_and_halves_the_scale() {
        let mut scaler = LossScaler::new(spec(3));
        assert!(scaler.update(true));
        assert!(!scaler.update(false));
        assert_eq!(scaler.scale, 32768.0);
        assert_eq!(scaler.good_steps, 0);
        assert_eq!(scaler.skipped_steps, 1);
    }

    #[test]
    fn the_scale_grows_after_the_interval_of_good_steps() {
        let mut scaler = LossScaler::new(spec(3));
        for _ in 0..2 {
            assert!(scaler.update(true));
        }
        assert_eq!(scaler.scale, 65536.0);
        assert!(scaler.update(true));
        assert_eq!(scaler.scale, 131072.0);
        assert_eq!(scaler.good_steps, 0);
    }

    #[test]
    fn the_cpu_backend_refuses_half_precision_with_a_clear_message() {
        let error =
            configure_device::<NdArray<f32>>(&Default::default(), Precision::Bf16).unwrap_err();
        assert!(error.to_string().contains("backend: cuda"), "{error}");
        assert!(configure_device::<NdArray<f32>>(&Default::default(), Precision::F32).is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let bad = LossScaleSpec {
            backoff_factor: 1.0,
            ..LossScaleSpec::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "backoff_factor: must be in (0, 1) (got 1)"
        );
    }
}
