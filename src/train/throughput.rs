//! Throughput of a model preset on this machine, without data or an experiment file
//! (`vilab bench`): forward images/s and training-step images/s on random images.
//!
//! The training step is the real one: [`Replicas::gradients`] (forward and backward, split
//! across the devices) followed by [`prepare_gradients`] (clipping as the spec says) and every
//! replica's optimiser, on random images and one-hot targets, so what is timed is what training
//! runs.

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::optimizer::Optimizer;
use super::parallel::{BatchView, Replicas, backend_rng_lock};
use super::params::{ParamLayout, flatten_params, materialize, with_params};
use super::precision::{LossScaler, Precision, PrecisionError, cast_params, configure_device};
use super::spec::TrainSpec;
use super::trainer::prepare_gradients;
use crate::backend::{BackendKind, BackendUnavailable};
use crate::model::{VilConfig, VisionLstm};

/// Why a throughput could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The binary lacks the backend.
    #[error(transparent)]
    Backend(#[from] BackendUnavailable),
    /// The precision cannot run on the backend.
    #[error(transparent)]
    Precision(#[from] PrecisionError),
    /// A device named in `devices` does not exist.
    #[error("{0}")]
    Device(String),
}

/// [`measure`] on the devices `spec.devices` names of a backend.
pub fn measure_on(
    backend: BackendKind,
    config: &VilConfig,
    spec: &TrainSpec,
    settings: BenchSettings,
) -> Result<Throughput, BenchError> {
    backend.ensure_available()?;
    match backend {
        BackendKind::Cpu => {
            let devices = vec![crate::backend::cpu_device(); spec.devices.len()];
            Ok(measure::<crate::backend::CpuTrain>(
                config, spec, &devices, settings,
            )?)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let devices: Vec<_> = spec
                .devices
                .iter()
                .map(|&ordinal| crate::backend::cuda_device(ordinal as usize))
                .collect();
            Ok(measure::<crate::backend::CudaTrain>(
                config, spec, &devices, settings,
            )?)
        }
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => Err(BackendUnavailable { kind: backend }.into()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let devices: Vec<_> = crate::backend::wgpu_devices(&spec.devices)
                .map_err(|error| BenchError::Device(error.to_string()))?
                .into_iter()
                .map(|adapter| adapter.device)
                .collect();
            Ok(measure::<crate::backend::WgpuTrain>(
                config, spec, &devices, settings,
            )?)
        }
        #[cfg(not(feature = "wgpu"))]
        BackendKind::Wgpu => Err(BackendUnavailable { kind: backend }.into()),
    }
}

/// How much to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchSettings {
    /// Images per step (split across the devices).
    pub batch: usize,
    /// Timed steps of each kind.
    pub steps: usize,
    /// Untimed steps of each kind before the timed ones.
    pub warmup: usize,
}

/// What was measured: wall time of the timed steps of each kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Seconds of the timed forward passes.
    pub forward_seconds: f64,
    /// Seconds of the timed training steps.
    pub train_seconds: f64,
}

/// Times `warmup + steps` forward passes, then as many training steps.
pub fn measure<B: AutodiffBackend>(
    config: &VilConfig,
    spec: &TrainSpec,
    devices: &[B::Device],
    args: BenchSettings,
) -> Result<Throughput, PrecisionError> {
    let first = &devices[0];
    for device in devices {
        configure_device::<B>(device, spec.precision)?;
    }
    let mut master: VisionLstm<B::InnerBackend> = {
        let _rng = backend_rng_lock();
        <B::InnerBackend as Backend>::seed(first, 0);
        let master = config.init(first);
        materialize(&master);
        master
    };
    let compute = spec.precision.half_dtype();
    if compute.is_some() {
        master = cast_params(master, burn::tensor::FloatDType::F32);
    }
    let (images, targets) = random_batch(config, args.batch);
    let size = config.image_size;

    let forward = |model: &VisionLstm<B::InnerBackend>| {
        let input = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(images.clone(), [args.batch, config.in_chans, size, size]),
            first,
        );
        let logits = match compute {
            Some(half) => cast_params(model.clone(), half)
                .forward(input.cast(half))
                .cast(burn::tensor::FloatDType::F32),
            None => model.forward(input),
        };
        // Reading the result back waits for the device to finish.
        logits.into_data()
    };
    for _ in 0..args.warmup {
        forward(&master);
    }
    let clock = Instant::now();
    for _ in 0..args.steps {
        forward(&master);
    }
    let forward_seconds = clock.elapsed().as_secs_f64();

    let layout = ParamLayout::of(&master);
    let mut optimizer = Optimizer::new(&spec.optimizer, &layout);
    let mut scaler = (spec.precision == Precision::F16).then(|| LossScaler::new(spec.loss_scale));
    let view = BatchView {
        images: &images,
        targets: &targets,
        n: args.batch,
        height: size,
        width: size,
        classes: config.num_classes,
    };
    let mut replicas = Replicas::new(&master, &optimizer, devices);
    let mut step = |master: VisionLstm<B::InnerBackend>, seed: u64| {
        let scale = scaler.map_or(1.0, |scaler| scaler.scale);
        let result = replicas.gradients::<B>(&master, view, compute, scale, seed);
        let Some(gradients) = prepare_gradients(
            scaler.as_mut(),
            spec.clip_grad,
            result.gradients,
            result.loss.is_finite(),
        ) else {
            // A step skipped for a loss-scale overflow still did its forward and backward.
            return master;
        };
        let params = replicas.step(&mut optimizer, spec.optimizer.lr, &master, gradients);
        with_params(master, params)
    };
    for seed in 0..args.warmup {
        master = step(master, seed as u64);
    }
    let clock = Instant::now();
    for seed in args.warmup..args.warmup + args.steps {
        master = step(master, seed as u64);
    }
    // Every step reads its loss back, but the last update may still be running on the device.
    if let Some(tensor) = flatten_params(&master).pop() {
        tensor.into_data();
    }
    let train_seconds = clock.elapsed().as_secs_f64();
    Ok(Throughput {
        forward_seconds,
        train_seconds,
    })
}

/// Normally distributed images (already "normalised") and one-hot targets of random classes.
fn random_batch(config: &VilConfig, batch: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let pixels = batch * config.in_chans * config.image_size * config.image_size;
    let images = (0..pixels)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect();
    let mut targets = vec![0.0; batch * config.num_classes];
    for row in targets.chunks_mut(config.num_classes) {
        row[rng.random_range(0..config.num_classes)] = 1.0;
    }
    (images, targets)
}

/// The resident-set high-water mark of this process (Linux `/proc/self/status`, `VmHWM`).
pub fn peak_memory_bytes() -> Result<u64, String> {
    let status = fs_err::read_to_string("/proc/self/status").map_err(|error| error.to_string())?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .ok_or("/proc/self/status has no VmHWM line")?;
    let kibibytes: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| format!("/proc/self/status: VmHWM `{}`", line.trim()))?;
    Ok(kibibytes * 1024)
}
