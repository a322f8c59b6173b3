//! The compute backends, named once so every stage trains and evaluates on the same types.
//!
//! The CPU backend is burn's ndarray backend in `f32`. Its batched matmul measured ~3× faster
//! than burn's `flex` CPU backend for the mLSTM cell's products on our 2-core machines, and the
//! ViL layer's core runs as a fused kernel on it (`model::fused`), which is what makes CPU
//! training as fast as PyTorch's. With the `cuda` cargo feature, burn's CUDA backend is compiled
//! in as well. Training code is generic over `B: AutodiffBackend`; the stage picks the concrete
//! type here from the spec's `backend` field.

use burn::backend::Autodiff;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CPU backend for inference and validation.
pub type Cpu = burn::backend::NdArray<f32>;

/// The CPU backend with gradients, for training.
pub type CpuTrain = Autodiff<Cpu>;

/// The CPU device (the ndarray backend has exactly one).
pub fn cpu_device() -> burn::backend::ndarray::NdArrayDevice {
    burn::backend::ndarray::NdArrayDevice::Cpu
}

/// The CUDA backend (`--features cuda`), `f32` by default; half precision is chosen per device
/// at run time (`train.precision`).
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;

/// The CUDA backend with gradients.
#[cfg(feature = "cuda")]
pub type CudaTrain = Autodiff<Cuda>;

/// The CUDA device with ordinal `index`.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> burn::backend::cuda::CudaDevice {
    burn::backend::cuda::CudaDevice::new(index)
}

/// Whether this binary was built with the CUDA backend.
pub const CUDA_AVAILABLE: bool = cfg!(feature = "cuda");

/// The backends this binary has, and how its GPU backends were built (`vilab --version`,
/// `vilab bench`).
#[cfg(feature = "cuda")]
pub const BUILT_WITH: &str = "backends: cpu, cuda (fusion, autotune)";
/// The backends this binary has, and how its GPU backends were built (`vilab --version`,
/// `vilab bench`).
#[cfg(not(feature = "cuda"))]
pub const BUILT_WITH: &str = "backends: cpu";

/// Compute backend.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (ndarray), always available.
    #[default]
    Cpu,
    /// burn's CUDA backend; needs a binary built with `--features cuda` and an NVIDIA GPU.
    Cuda,
}

/// A backend the spec or the command line asks for that this binary was built without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "backend: {kind} needs a vilab built with `cargo build --release --features {kind}` (this one has only the CPU backend)"
)]
pub struct BackendUnavailable {
    /// The backend asked for.
    pub kind: BackendKind,
}

impl BackendKind {
    /// The name in the experiment file and the cargo feature that builds it in.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this binary can run on the backend.
    pub fn ensure_available(self) -> Result<(), BackendUnavailable> {
        match self {
            Self::Cuda if !CUDA_AVAILABLE => Err(BackendUnavailable { kind: self }),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}
