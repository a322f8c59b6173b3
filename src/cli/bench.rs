//! `vilab bench --model NAME`: throughput of a model preset on this machine, without data or an
//! experiment file: forward images/s, training-step images/s, the GFLOP/s they amount to, and
//! the process's peak memory.
//!
//! The measurement is `train::throughput` (the real training step: clipping off, the default
//! AdamW, on random images and one-hot targets); this file prints it. FLOPs come from
//! [`VilConfig::forward_macs`] (S×S products counted in full): 2·MACs per image forward, and a
//! training step counts as 3× the forward, as `benches/model.rs` does.

use clap::Args;
use serde::Serialize;

use super::plan::{Format, print_json};
use super::{EXIT_OK, usage};
use crate::backend::BackendKind;
use crate::model::VilConfig;
use crate::train::precision::Precision;
use crate::train::spec::TrainSpec;
use crate::train::throughput::{BenchSettings, Throughput, measure_on, peak_memory_bytes};

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
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
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
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `vilab bench --format json`.
#[derive(Debug, Serialize)]
struct BenchJson<'a> {
    model: &'a str,
    image_size: usize,
    batch: usize,
    classes: usize,
    precision: Precision,
    backend: BackendKind,
    /// The backends this binary has and how they were built (as `vilab --version` says).
    built_with: &'static str,
    devices: &'a [u32],
    steps: usize,
    warmup: usize,
    /// The timed forward passes.
    forward: RateJson,
    /// The timed training steps (forward, backward, optimiser step).
    train_step: RateJson,
    /// 2 × the forward MACs of one image (S×S products counted in full).
    forward_flops_per_image: u64,
    /// The process's peak resident memory (VmHWM); null where it cannot be read.
    peak_memory_bytes: Option<u64>,
}

/// One kind of timed step.
#[derive(Debug, Serialize)]
struct RateJson {
    /// Wall time of all timed steps.
    seconds: f64,
    images_per_second: f64,
    gflops_per_second: f64,
}

/// Runs `vilab bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    let config =
        super::model::preset_with(&args.model, args.classes, args.image_size).map_err(usage)?;
    if args.batch == 0 || args.steps == 0 {
        return Err(usage("--batch and --steps must be at least 1"));
    }
    let backend = args.backend;
    let spec = TrainSpec {
        batch_size: u32::try_from(args.batch).unwrap_or(u32::MAX),
        precision: args.precision,
        devices: args.devices.clone(),
        ..TrainSpec::default()
    };
    backend.ensure_available()?;
    spec.validate(backend)
        .map_err(|tail| usage(format!("--{tail}")))?;
    let settings = BenchSettings {
        batch: args.batch,
        steps: args.steps,
        warmup: args.warmup,
    };
    let throughput = measure_on(backend, &config, &spec, settings)?;
    if args.format == Format::Json {
        print_json(&bench_json(&config, args, &throughput))?;
    } else {
        report(&config, args, &throughput);
    }
    Ok(EXIT_OK)
}

/// The figures as one document.
fn bench_json<'a>(
    config: &VilConfig,
    args: &'a BenchArgs,
    throughput: &Throughput,
) -> BenchJson<'a> {
    let images = (args.batch * args.steps) as f64;
    let forward_flops = 2 * config.forward_macs();
    let rate = |seconds: f64, flops_per_image: f64| {
        let images_per_second = images / seconds.max(1e-9);
        RateJson {
            seconds,
            images_per_second,
            gflops_per_second: images_per_second * flops_per_image / 1e9,
        }
    };
    BenchJson {
        model: &args.model,
        image_size: config.image_size,
        batch: args.batch,
        classes: config.num_classes,
        precision: args.precision,
        backend: args.backend,
        built_with: crate::backend::BUILT_WITH,
        devices: &args.devices,
        steps: args.steps,
        warmup: args.warmup,
        forward: rate(throughput.forward_seconds, forward_flops as f64),
        train_step: rate(throughput.train_seconds, 3.0 * forward_flops as f64),
        forward_flops_per_image: forward_flops,
        peak_memory_bytes: peak_memory_bytes().ok(),
    }
}

/// Prints the figures, one line each.
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
        args.precision.as_str(),
        args.backend,
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
        Err(error) => println!("peak memory  unknown ({error})"),
    }
    println!("build        {}", crate::backend::BUILT_WITH);
    #[cfg(feature = "wgpu")]
    if args.backend == BackendKind::Wgpu {
        for (ordinal, adapter) in crate::backend::wgpu_adapters().iter().enumerate() {
            println!(
                "wgpu device  {ordinal}: {} ({}, {})",
                adapter.name, adapter.kind, adapter.api
            );
        }
    }
}
