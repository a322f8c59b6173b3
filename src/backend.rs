//! The compute backends, named once so every stage trains and evaluates on the same types.
//!
//! The CPU backend is burn's ndarray backend in `f32`. Its batched matmul measured ~3× faster
//! than burn's `flex` CPU backend for the mLSTM cell's products on our 2-core machines, and the
//! ViL layer's core runs as a fused kernel on it (`model::fused`), which is what makes CPU
//! training as fast as PyTorch's. The `wgpu` cargo feature (on by default) compiles in burn's
//! wgpu backend (Vulkan, Metal, DX12 GPUs), the `cuda` feature burn's CUDA backend; both with
//! kernel fusion and autotuned matmul. Training code is generic over `B: AutodiffBackend`; the stage picks the concrete
//! type here from the spec's `backend` field.

use burn::backend::Autodiff;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Keeps freed memory in the process instead of handing it back to the kernel after every
/// tensor: glibc's malloc serves blocks above a (dynamic) threshold with their own `mmap` and
/// trims the heap's top whenever 128 KiB are free there, so the CPU backend, which allocates a
/// fresh buffer of up to tens of MiB for nearly every tensor operation, paid a page fault and a
/// page clear for each 4 KiB of each of them: `vilab bench --model vil_micro` spent 17% of its
/// time in the kernel (4.0 s of 23 s on 2 cores), and its forward pass ran at half speed.
/// Blocks up to 32 MiB (glibc's ceiling for the setting) now come from the heap and the heap
/// is never trimmed, so a step reuses the previous step's pages; the peak resident memory is the
/// same (the buffers are the same size, they are only kept). Called once, first thing in `main`
/// and in the benchmarks; a no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 32 << 20;
        // SAFETY: `mallopt` only changes the allocator's tuning parameters; it is safe to call at
        // any time, from any thread, and a refused value leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_TOP_PAD, THRESHOLD);
        }
    }
}

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

/// The wgpu backend (`--features wgpu`, on by default): Vulkan on Linux and Windows, Metal on
/// macOS, with burn's kernel fusion and autotuned matmul. `f32` by default; `f16` is chosen per
/// device at run time where the adapter has `shaderFloat16`.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;

/// The wgpu backend with gradients.
#[cfg(feature = "wgpu")]
pub type WgpuTrain = Autodiff<Wgpu>;

#[cfg(feature = "wgpu")]
pub use wgpu_adapters::{WgpuAdapter, WgpuDeviceError, wgpu_adapters, wgpu_devices};

/// Whether this binary was built with the CUDA backend.
pub const CUDA_AVAILABLE: bool = cfg!(feature = "cuda");

/// Whether this binary was built with the wgpu backend.
pub const WGPU_AVAILABLE: bool = cfg!(feature = "wgpu");

macro_rules! built_with {
    ($backends:literal) => {
        /// The backends this binary has, and how its GPU backends were built (`vilab bench`).
        pub const BUILT_WITH: &str = concat!("backends: ", $backends);
        /// `vilab --version`: the crate version and [`BUILT_WITH`].
        pub const VERSION: &str =
            concat!(env!("CARGO_PKG_VERSION"), " (backends: ", $backends, ")");
    };
}

#[cfg(all(feature = "cuda", feature = "wgpu"))]
built_with!("cpu, cuda, wgpu (fusion, autotune)");
#[cfg(all(feature = "cuda", not(feature = "wgpu")))]
built_with!("cpu, cuda (fusion, autotune)");
#[cfg(all(not(feature = "cuda"), feature = "wgpu"))]
built_with!("cpu, wgpu (fusion, autotune)");
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
built_with!("cpu");

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
    /// burn's wgpu backend: any Vulkan, Metal or DX12 device (AMD, Intel, Apple, NVIDIA, or
    /// Mesa's software lavapipe); needs a binary built with the `wgpu` feature (the default).
    Wgpu,
}

/// A backend the spec or the command line asks for that this binary was built without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "backend: {kind} needs a vilab built with `cargo build --release --features {kind}` (this one has {BUILT_WITH})"
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
            Self::Wgpu => "wgpu",
        }
    }

    /// Whether this binary can run on the backend.
    pub fn ensure_available(self) -> Result<(), BackendUnavailable> {
        match self {
            Self::Cuda if !CUDA_AVAILABLE => Err(BackendUnavailable { kind: self }),
            Self::Wgpu if !WGPU_AVAILABLE => Err(BackendUnavailable { kind: self }),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(feature = "wgpu")]
mod wgpu_adapters {
    //! The wgpu adapters of this machine, numbered the way `train.devices` names them.
    //!
    //! burn addresses a wgpu device by kind and index (`DiscreteGpu(0)`, `IntegratedGpu(1)`,
    //! `Cpu`) and panics inside its runtime when none matches. vilab numbers the adapters of the
    //! platform's graphics API (Vulkan, or Metal on macOS) discrete GPUs first, then integrated,
    //! virtual and software (CPU) adapters, so `devices: [0]` is the best device of the machine,
    //! and checks an ordinal against that list before burn sees it.

    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};

    /// One adapter: the burn device that selects it and what the driver calls it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct WgpuAdapter {
        /// The device to pass to burn.
        pub device: WgpuDevice,
        /// The adapter's name (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA H200`).
        pub name: String,
        /// discrete, integrated, virtual or cpu.
        pub kind: &'static str,
        /// The graphics API it runs through.
        pub api: String,
    }

    /// A `train.devices` ordinal that names no wgpu adapter.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum WgpuDeviceError {
        /// The machine has no adapter at all.
        #[error(
            "backend: wgpu found no {api} adapter on this machine (install a GPU driver, or Mesa's software one: apt-get install mesa-vulkan-drivers)"
        )]
        NoAdapter {
            /// The graphics API searched.
            api: String,
        },
        /// The ordinal is past the end of the list.
        #[error(
            "train.devices: wgpu device {ordinal} does not exist; this machine has {available}"
        )]
        NoSuchDevice {
            /// The ordinal asked for.
            ordinal: usize,
            /// The adapters there are, numbered.
            available: String,
        },
    }

    /// The adapters of the platform's graphics API, in `train.devices` order.
    pub fn wgpu_adapters() -> Vec<WgpuAdapter> {
        let backend = AutoGraphicsApi::backend();
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: backend.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let infos: Vec<wgpu::AdapterInfo> =
            pollster::block_on(instance.enumerate_adapters(backend.into()))
                .iter()
                .map(wgpu::Adapter::get_info)
                .collect();
        let mut adapters = Vec::new();
        for (rank, kind) in [
            (wgpu::DeviceType::DiscreteGpu, "discrete"),
            (wgpu::DeviceType::IntegratedGpu, "integrated"),
            (wgpu::DeviceType::VirtualGpu, "virtual"),
            (wgpu::DeviceType::Cpu, "cpu"),
        ]
        .into_iter()
        .enumerate()
        {
            let of_kind = infos.iter().filter(|info| info.device_type == kind.0);
            for (index, info) in of_kind.enumerate() {
                let device = match rank {
                    0 => WgpuDevice::DiscreteGpu(index),
                    1 => WgpuDevice::IntegratedGpu(index),
                    2 => WgpuDevice::VirtualGpu(index),
                    // burn selects only the first software adapter.
                    _ if index > 0 => continue,
                    _ => WgpuDevice::Cpu,
                };
                adapters.push(WgpuAdapter {
                    device,
                    name: info.name.clone(),
                    kind: kind.1,
                    api: format!("{:?}", info.backend),
                });
            }
        }
        adapters
    }

    /// The burn devices for `train.devices` ordinals, checked against [`wgpu_adapters`].
    pub fn wgpu_devices(ordinals: &[u32]) -> Result<Vec<WgpuAdapter>, WgpuDeviceError> {
        let adapters = wgpu_adapters();
        if adapters.is_empty() {
            return Err(WgpuDeviceError::NoAdapter {
                api: format!("{:?}", AutoGraphicsApi::backend()),
            });
        }
        ordinals
            .iter()
            .map(|&ordinal| {
                adapters.get(ordinal as usize).cloned().ok_or_else(|| {
                    WgpuDeviceError::NoSuchDevice {
                        ordinal: ordinal as usize,
                        available: adapters
                            .iter()
                            .enumerate()
                            .map(|(index, adapter)| format!("{index}: {}", adapter.name))
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                })
            })
            .collect()
    }
}
