//! The compute backends, named once so every stage trains and evaluates on the same types.
//!
//! The CPU backend is burn's ndarray backend in `f32`. Its batched matmul measured ~3× faster
//! than burn's `flex` CPU backend for the mLSTM cell's products on our 2-core machines, and the
//! ViL layer's core runs as a fused kernel on it (`model::fused`), which is what makes CPU
//! training as fast as PyTorch's. With the `cuda` cargo feature, burn's CUDA backend is compiled
//! in as well. Training code is generic over `B: AutodiffBackend`; the stage picks the concrete
//! type here from the spec's `backend` field.

use burn::backend::Autodiff;

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
