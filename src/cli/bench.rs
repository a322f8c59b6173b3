//! `vilab bench --model NAME`: throughput of a model preset on this machine, without data or an
//! experiment file: forward images/s, training-step images/s, the GFLOP/s they amount to, and
//! the process's peak memory.
//!
//! The training step is the real one: [`crate::train::parallel::batch_gradients`] (forward and
//! backward, split across `--devices`) followed by [`crate::train::trainer::update_step`]
//! (clipping off, the default AdamW), on random images and one-hot targets. FLOPs come from
//! [`VilConfig::forward_macs`] (S×S products counted in full): 2·MACs per image forward, and a
//! training step counts as 3× the forward, as `benches/model.rs` does.

use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{EXIT_OK, EXIT_USAGE};
use crate::model::{VilConfig, VisionLstm};
use crate::spec::types::{BackendKind, TrainSpec};
use crate::train::optimizer::Optimizer;
use crate::train::parallel::{BatchView, backend_rng_lock, batch_gradients};
use crate::train::params::{ParamLayout, flatten_params, materialize, with_params};
use crate::train::precision::{LossScaler, Precision, cast_params, configure_device};
use crate::train::trainer::update_step;

/// Arguments of `vilab bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Preset name: vil_micro, vil_tiny, vil_tinyplus, vil_small, vil_smallplus, vil_base,
    /// vil2_tiny, vil2_small, vil2_base.
    #[arg(long)]
    pub model: String,
    /// Side of the square input image (default: the preset's, 224 or 28 for vil_micro).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Images per step (split across the devices).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Compute precision; half precision needs `--backend cuda`.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Device ordinals, comma-separated; on the CPU backend each one is a replica on its own
    /// thread, as in training.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub devices: Vec<u32>,
    /// Timed steps of each kind.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps of each kind before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Number of classes of the head.
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    /// Compute backend; `cuda` needs a vilab built with `--features cuda`.
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
}

/// `--precision` values (the YAML names of `train.precision`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
    F16,
}

impl From<PrecisionArg> for Precision {
    fn from(value: PrecisionArg) -> Self {
        match value {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F16 => Precision::F16,
        }
    }
}

/// `--backend` values (the YAML names of `backend`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Cpu,
    Cuda,
}

impl BackendArg {
    fn name(self) -> &'static str {
        match self {
            BackendArg::Cpu => "cpu",
            BackendArg::Cuda => "cuda",
        }
    }
}

/// What was measured.
struct Throughput {
    forward_seconds: f64,
    train_seconds: f64,
}

/// Runs `vilab bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    let config = match super::model::preset_with(&args.model, args.classes, args.image_size) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(EXIT_USAGE);
        }
    };
    if args.batch == 0 || args.steps == 0 {
        eprintln!("error: --batch and --steps must be at least 1");
        return Ok(EXIT_USAGE);
    }
    let backend = match args.backend {
        BackendArg::Cpu => BackendKind::Cpu,
        BackendArg::Cuda => BackendKind::Cuda,
    };
    let spec = TrainSpec {
        batch_size: u32::try_from(args.batch).unwrap_or(u32::MAX),
        precision: args.precision.into(),
        devices: args.devices.clone(),
        ..TrainSpec::default()
    };
    if let Err(tail) = spec.validate(backend) {
        eprintln!("error: --{tail}");
        return Ok(EXIT_USAGE);
    }
    let throughput = match backend {
        BackendKind::Cpu => {
            let devices = vec![crate::backend::cpu_device(); spec.devices.len()];
            measure::<crate::backend::CpuTrain>(&config, &spec, &devices, args)?
        }
        BackendKind::Cuda => measure_on_cuda(&config, &spec, args)?,
    };
    report(&config, args, &throughput);
    Ok(EXIT_OK)
}

#[cfg(feature = "cuda")]
fn measure_on_cuda(
    config: &VilConfig,
    spec: &TrainSpec,
    args: &BenchArgs,
) -> anyhow::Result<Throughput> {
    let devices: Vec<_> = spec
        .devices
        .iter()
        .map(|&ordinal| crate::backend::cuda_device(ordinal as usize))
        .collect();
    measure::<crate::backend::CudaTrain>(config, spec, &devices, args)
}

#[cfg(not(feature = "cuda"))]
fn measure_on_cuda(
    _config: &VilConfig,
    _spec: &TrainSpec,
    _args: &BenchArgs,
) -> anyhow::Result<Throughput> {
    anyhow::bail!("--backend cuda needs a vilab built with `--features cuda`")
}

/// Times `warmup + steps` forward passes, then as many training steps.
fn measure<B: AutodiffBackend>(
    config: &VilConfig,
    spec: &TrainSpec,
    devices: &[B::Device],
    args: &BenchArgs,
) -> anyhow::Result<Throughput> {
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
    let mut step = |master: VisionLstm<B::InnerBackend>, seed: u64| {
        let scale = scaler.map_or(1.0, |scaler| scaler.scale);
        let result = batch_gradients::<B>(&master, devices, view, compute, scale, seed);
        let params = update_step(
            &mut optimizer,
            scaler.as_mut(),
            spec.clip_grad,
            spec.optimizer.lr,
            flatten_params(&master),
            result.gradients,
            result.loss.is_finite(),
        );
        match params {
            Some(params) => with_params(master, params),
            // A step skipped for a loss-scale overflow still did its forward and backward.
            None => master,
        }
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

fn report(config: &VilConfig, args: &BenchArgs, throughput: &Throughput) {
    let images = (args.batch * args.steps) as f64;
    let forward_flops = 2.0 * config.forward_macs() as f64;
    let forward_rate = images / throughput.forward_seconds.max(1e-9);
    let train_rate = images / throughput.train_seconds.max(1e-9);
    let devices: Vec<String> = args.devices.iter().map(u32::to_string).collect();
    println!(
        "{} at {}×{}, batch {}, {} classes, {} on {} device {}; {} timed steps after {} warm-up",
        args.model,
        config.image_size,
        config.image_size,
        args.batch,
        config.num_classes,
        Precision::from(args.precision).as_str(),
        args.backend.name(),
        devices.join(","),
        args.steps,
        args.warmup
    );
    println!(
        "forward      {forward_rate:>10.1} images/s  {:>8.2} GFLOP/s",
        forward_rate * forward_flops / 1e9
    );
    println!(
        "train step   {train_rate:>10.1} images/s  {:>8.2} GFLOP/s",
        train_rate * 3.0 * forward_flops / 1e9
    );
    println!(
        "model        {:>10.3} GFLOP per image forward (2 × {:.3} GMACs)",
        forward_flops / 1e9,
        config.forward_macs() as f64 / 1e9
    );
    match peak_memory_bytes() {
        Ok(bytes) => println!(
            "peak memory  {:>10.1} MiB (VmHWM)",
            bytes as f64 / (1u64 << 20) as f64
        ),
        Err(error) => println!("peak memory  unknown ({error:#})"),
    }
}

/// The resident-set high-water mark of this process (Linux `/proc/self/status`, `VmHWM`).
fn peak_memory_bytes() -> anyhow::Result<u64> {
    let status = fs_err::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .context("/proc/self/status has no VmHWM line")?;
    let kibibytes: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("/proc/self/status: VmHWM `{}`", line.trim()))?;
    Ok(kibibytes * 1024)
}
