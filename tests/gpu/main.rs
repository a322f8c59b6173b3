//! The GPU code path, run on burn's wgpu backend (kernel fusion and autotune on, as with CUDA):
//! on a GPU where there is one, and in CI on Mesa's software Vulkan driver, lavapipe
//! (`apt-get install mesa-vulkan-drivers`). wgpu compiles the same CubeCL kernels and the same
//! fusion as burn's CUDA backend (to WGSL instead of CUDA C++), so this group exercises what a
//! CUDA run does with vilab's own code: the generic ViL layer (no fused CPU kernel), autodiff
//! through fused kernels, device handling, AMP casts and loss scaling, checkpoints, evaluation,
//! and data parallelism over two devices (a second wgpu device opened on the same adapter: its
//! own queue, memory and kernels, as a second GPU has).
//!
//! Every comparison is against the CPU backend on the same weights and inputs. Tolerances are
//! absolute, scaled by the reference's largest magnitude when that exceeds 1:
//! `max |wgpu − cpu| ≤ tolerance · max(1, max |cpu|)`. The GPU sums in another order (tiled
//! matmuls, tree reductions) and rounds `exp` and `log` differently, so each value differs by a
//! few ulps per reduction; through the mLSTM's exponentials and normaliser that stays below
//! 3e-7 in outputs and 1e-6 in gradients on lavapipe (the `eprintln!` lines print each). The
//! tolerances, 1e-4 for outputs and 1e-3 for gradients, leave room for GPUs whose `exp` is less
//! exact (CUDA's fast-math intrinsics are within 2 ulps), and sit far below what a wrong kernel
//! gives: burn 0.21's fusion miscomputes `x − x.swap_dims(2, 3)` by O(1)
//! (`mlstm::transpose_vector` is the workaround these tests hold in place).
//!
//! Kernels are compiled once per process (~0.4 s each on lavapipe), so everything but the
//! end-to-end run shares this one test process. Without a Vulkan device the tests say they
//! skipped, unless `VILAB_REQUIRE_VULKAN=1` (set by `.ci/run`) makes that a failure.

#![cfg(feature = "wgpu")]
// Tests stop at the first broken expectation; the no-unwrap rule is for the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unused_imports)]
#[path = "../suite/common.rs"]
mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use burn::backend::wgpu::WgpuDevice;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use vilab::backend::{Cpu, CpuTrain, Wgpu, WgpuTrain, cpu_device};
use vilab::model::mlstm::parallel_stabilized;
use vilab::model::{VilConfig, VisionLstm};
use vilab::spec::types::OptimizerSpec;
use vilab::train::checkpoint::host_values;
use vilab::train::optimizer::Optimizer;
use vilab::train::parallel::{BatchView, Replicas, backend_rng_lock, batch_gradients};
use vilab::train::params::{ParamLayout, flatten_params, materialize, with_params};
use vilab::train::precision::{LossScaleSpec, LossScaler, Precision, configure_device};
use vilab::train::trainer::prepare_gradients;

const OUTPUT_TOLERANCE: f32 = 1e-4;
const GRADIENT_TOLERANCE: f32 = 1e-3;

/// The first wgpu adapter (`train.devices: [0]`), or `None` (the test skips) when there is none
/// and `VILAB_REQUIRE_VULKAN` is not `1`.
fn first_adapter() -> Option<WgpuDevice> {
    let adapters = vilab::backend::wgpu_adapters();
    let Some(first) = adapters.first() else {
        assert!(
            std::env::var("VILAB_REQUIRE_VULKAN").as_deref() != Ok("1"),
            "VILAB_REQUIRE_VULKAN=1 but wgpu finds no Vulkan device (apt-get install mesa-vulkan-drivers)"
        );
        eprintln!("skipped: no wgpu adapter (VILAB_REQUIRE_VULKAN=1 makes this a failure)");
        return None;
    };
    eprintln!(
        "wgpu adapter: {} ({}, {})",
        first.name, first.kind, first.api
    );
    Some(first.device.clone())
}

/// The f32 device of the in-process tests: the default device, a device id of its own, so the
/// f16 test can give the first adapter's id the half type (a device's default float type is
/// fixed at its first tensor).
fn f32_device() -> Option<WgpuDevice> {
    first_adapter().map(|_| WgpuDevice::DefaultDevice)
}

/// `max |actual − expected| / max(1, max |expected|)`.
fn scaled_difference(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    let largest = expected
        .iter()
        .fold(1.0_f32, |top, value| top.max(value.abs()));
    let worst = actual
        .iter()
        .zip(expected)
        .fold(0.0_f32, |worst, (a, b)| worst.max((a - b).abs()));
    if actual.iter().any(|value| !value.is_finite()) {
        return f32::INFINITY;
    }
    worst / largest
}

fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 values")
}

fn random(count: usize, low: f32, high: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..count).map(|_| rng.random_range(low..high)).collect()
}

/// One evaluation of the parallel mLSTM cell (the form GPU backends run at every length; see
/// `chunkwise::GPU_CHUNKWISE_MIN_TOKENS`) with gradients: `[output, d query, d key, d value,
/// d input gate, d forget gate]` of the loss `Σ weights · output`.
fn cell<B: burn::tensor::backend::AutodiffBackend>(
    inputs: &[Vec<f32>; 6],
    tokens: usize,
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let (batch, heads, head_dim) = (2, 2, 8);
    let vector = |data: &Vec<f32>| {
        Tensor::<B, 4>::from_data(
            TensorData::new(data.clone(), [batch, heads, tokens, head_dim]),
            device,
        )
        .require_grad()
    };
    let scalar = |data: &Vec<f32>| {
        Tensor::<B, 4>::from_data(
            TensorData::new(data.clone(), [batch, heads, tokens, 1]),
            device,
        )
        .require_grad()
    };
    let (query, key, value) = (vector(&inputs[0]), vector(&inputs[1]), vector(&inputs[2]));
    let (input_gate, forget_gate) = (scalar(&inputs[3]), scalar(&inputs[4]));
    let weights = Tensor::<B, 4>::from_data(
        TensorData::new(inputs[5].clone(), [batch, heads, tokens, head_dim]),
        device,
    );
    let (q, k, v, i, f) = (
        query.clone(),
        key.clone(),
        value.clone(),
        input_gate.clone(),
        forget_gate.clone(),
    );
    let output = parallel_stabilized(q, k, v, i, f);
    let gradients = (output.clone() * weights).sum().backward();
    let mut all = vec![values(output.inner())];
    for tensor in [query, key, value, input_gate, forget_gate] {
        all.push(values(tensor.grad(&gradients).expect("a gradient")));
    }
    all
}

#[test]
fn the_mlstm_cell_matches_the_cpu_in_outputs_and_gradients() {
    let Some(device) = f32_device() else { return };
    let names = [
        "output",
        "d query",
        "d key",
        "d value",
        "d input gate",
        "d forget gate",
    ];
    // Odd and even token counts (the fusion defect needs an even one), up to vil_tiny's 196.
    for tokens in [7, 16, 49, 196] {
        let mut rng = ChaCha8Rng::seed_from_u64(tokens as u64);
        let (vectors, scalars) = (2 * 2 * tokens * 8, 2 * 2 * tokens);
        let inputs = [
            random(vectors, -1.5, 1.5, &mut rng),
            random(vectors, -1.5, 1.5, &mut rng),
            random(vectors, -2.0, 2.0, &mut rng),
            random(scalars, -6.0, 0.0, &mut rng),
            random(scalars, -4.0, 6.0, &mut rng),
            random(vectors, -1.0, 1.0, &mut rng),
        ];
        let expected = cell::<CpuTrain>(&inputs, tokens, &cpu_device());
        let actual = cell::<WgpuTrain>(&inputs, tokens, &device);
        for (index, name) in names.iter().enumerate() {
            let difference = scaled_difference(&actual[index], &expected[index]);
            let tolerance = if index == 0 {
                OUTPUT_TOLERANCE
            } else {
                GRADIENT_TOLERANCE
            };
            eprintln!("{tokens} tokens: {name} differs by {difference:e}");
            assert!(
                difference <= tolerance,
                "{tokens} tokens: {name} differs by {difference} (tolerance {tolerance})"
            );
        }
    }
}

const CLASSES: usize = 5;
const SIDE: usize = 16;

/// A two-layer ViL at 16² with 4² patches (16 tokens: an even count).
fn tiny_config() -> VilConfig {
    VilConfig::new(16, 2)
        .with_patch_size(4)
        .with_image_size(SIDE)
        .with_num_classes(CLASSES)
}

/// The tiny model initialised on the CPU (seeded), and the same weights on `device`.
fn tiny_models<B: Backend>(device: &B::Device) -> (VisionLstm<Cpu>, VisionLstm<B>) {
    let cpu = {
        let _rng = backend_rng_lock();
        Cpu::seed(&cpu_device(), 5);
        let model = tiny_config().init::<Cpu>(&cpu_device());
        materialize(&model);
        model
    };
    let gpu = {
        let _rng = backend_rng_lock();
        let model = tiny_config().init::<B>(device);
        materialize(&model);
        model
    };
    let weights = flatten_params(&cpu)
        .into_iter()
        .map(|tensor| {
            let values = host_values(tensor);
            let len = values.len();
            Tensor::<B, 1>::from_data(
                TensorData::new(values, [len]),
                (device, burn::tensor::DType::F32),
            )
        })
        .collect();
    (cpu.clone(), with_params(gpu, weights))
}

/// `n` random images and soft targets that are not one-hot (as after MixUp).
fn batch(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images = random(n * 3 * SIDE * SIDE, -2.0, 2.0, &mut rng);
    let mut targets = Vec::with_capacity(n * CLASSES);
    for sample in 0..n {
        let mut row = [0.05_f32; CLASSES];
        row[sample % CLASSES] = 0.8;
        targets.extend_from_slice(&row);
    }
    (images, targets)
}

fn view<'a>(images: &'a [f32], targets: &'a [f32], n: usize) -> BatchView<'a> {
    BatchView {
        images,
        targets,
        n,
        height: SIDE,
        width: SIDE,
        classes: CLASSES,
    }
}

fn flat<B: Backend>(tensors: Vec<Option<Tensor<B, 1>>>) -> Vec<f32> {
    tensors
        .into_iter()
        .flat_map(|tensor| host_values(tensor.expect("every parameter has a gradient")))
        .collect()
}

#[test]
fn the_model_gives_the_cpu_logits_loss_and_gradients_on_one_device_and_on_two() {
    let Some(device) = f32_device() else { return };
    let (cpu, gpu) = tiny_models::<Wgpu>(&device);
    let n = 7;
    let (images, targets) = batch(n, 1);
    let expected = batch_gradients::<CpuTrain>(
        &cpu,
        &[cpu_device()],
        view(&images, &targets, n),
        None,
        1.0,
        1,
    );
    let expected_gradients = flat(expected.gradients);
    // Two replicas, 4 and 3 samples weighted by their share of the batch: on the one device,
    // and on two devices (the second replica's gradients come to the first in one transfer).
    for devices in [
        vec![device.clone()],
        vec![device.clone(), device.clone()],
        vec![device.clone(), second_device()],
    ] {
        let actual =
            batch_gradients::<WgpuTrain>(&gpu, &devices, view(&images, &targets, n), None, 1.0, 1);
        let replicas = devices.len();
        let logits = scaled_difference(&actual.logits, &expected.logits);
        let loss = ((actual.loss - expected.loss).abs() / expected.loss.abs().max(1.0)) as f32;
        let gradients = scaled_difference(&flat(actual.gradients), &expected_gradients);
        eprintln!(
            "{replicas} replica(s): logits {logits:e}, loss {loss:e}, gradients {gradients:e}"
        );
        assert!(
            logits <= OUTPUT_TOLERANCE,
            "{replicas}: logits differ by {logits}"
        );
        assert!(
            loss <= OUTPUT_TOLERANCE,
            "{replicas}: loss differs by {loss}"
        );
        assert!(
            gradients <= GRADIENT_TOLERANCE,
            "{replicas}: gradients differ by {gradients}"
        );
    }
}

/// A second wgpu device on the first adapter: a device of its own (queue, memory, compiled
/// kernels), as a second GPU is to the first, made once per process.
fn second_device() -> WgpuDevice {
    static SECOND: std::sync::OnceLock<WgpuDevice> = std::sync::OnceLock::new();
    SECOND
        .get_or_init(|| {
            let backends = wgpu::Backends::VULKAN;
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            let adapter = pollster::block_on(instance.enumerate_adapters(backends))
                .into_iter()
                .next()
                .expect("the adapter the first device is on");
            let (device, queue) = pollster::block_on(
                adapter.request_device(&wgpu::DeviceDescriptor {
                    required_features: adapter
                        .features()
                        .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
                    required_limits: adapter.limits(),
                    memory_hints: wgpu::MemoryHints::MemoryUsage,
                    ..Default::default()
                }),
            )
            .expect("a second device on the adapter");
            burn::backend::wgpu::init_device(
                burn::backend::wgpu::WgpuSetup {
                    instance,
                    adapter,
                    device,
                    queue,
                    backend: wgpu::Backend::Vulkan,
                },
                burn::backend::wgpu::RuntimeOptions::default(),
            )
        })
        .clone()
}

/// `steps` AdamW steps (lr 1e-3, clipping at norm 1) on fixed batches over `devices`, as
/// training runs them (persistent replicas); the master's parameters after each step. After
/// every step, each replica on a device other than the first must hold exactly the master's
/// weights.
fn train_steps<B: burn::tensor::backend::AutodiffBackend>(
    mut model: VisionLstm<B::InnerBackend>,
    devices: &[B::Device],
    steps: usize,
    mut scaler: Option<&mut LossScaler>,
) -> Vec<Vec<f32>> {
    let spec = OptimizerSpec::default();
    let mut optimizer = Optimizer::new(&spec, &ParamLayout::of(&model));
    let mut replicas = Replicas::new(&model, &optimizer, devices);
    let compute = scaler.as_ref().map(|_| burn::tensor::FloatDType::F16);
    let mut after = Vec::new();
    for step in 0..steps {
        let (images, targets) = batch(8, 100 + step as u64);
        let scale = scaler.as_ref().map_or(1.0, |scaler| scaler.scale);
        let result = replicas.gradients::<B>(
            &model,
            view(&images, &targets, 8),
            compute,
            scale,
            step as u64,
        );
        if let Some(gradients) = prepare_gradients(
            scaler.as_deref_mut(),
            Some(vilab::train::clipping::GradientClip::Norm(1.0)),
            result.gradients,
            result.loss.is_finite(),
        ) {
            let params = replicas.step(&mut optimizer, 1e-3, &model, gradients);
            model = with_params(model, params);
        }
        let master: Vec<f32> = flatten_params(&model)
            .into_iter()
            .flat_map(host_values)
            .collect();
        for (replica, device) in devices.iter().enumerate().skip(1) {
            let held = replicas.held_weights(replica);
            assert_eq!(held.is_some(), *device != devices[0], "replica {replica}");
            if let Some(held) = held {
                let values: Vec<f32> = flatten_params(held)
                    .into_iter()
                    .flat_map(host_values)
                    .collect();
                assert!(
                    values == master,
                    "step {}: replica {replica}'s weights are not the master's",
                    step + 1
                );
            }
        }
        after.push(master);
    }
    after
}

#[test]
fn f32_training_steps_follow_the_cpu_on_one_device_and_on_two() {
    let Some(device) = f32_device() else { return };
    let (cpu, gpu) = tiny_models::<Wgpu>(&device);
    let start: Vec<f32> = flatten_params(&cpu)
        .into_iter()
        .flat_map(host_values)
        .collect();
    let expected = train_steps::<CpuTrain>(cpu, &[cpu_device()], 4, None);
    // Two devices: each replica keeps its own weights and optimiser between steps.
    for devices in [vec![device.clone()], vec![device.clone(), second_device()]] {
        let replicas = devices.len();
        let actual = train_steps::<WgpuTrain>(gpu.clone(), &devices, 4, None);
        for (step, (actual, expected)) in actual.iter().zip(&expected).enumerate() {
            let moved = scaled_difference(expected, &start);
            let difference = scaled_difference(actual, expected);
            eprintln!(
                "f32, {replicas} device(s), step {}: moved {moved:e}, differs by {difference:e}",
                step + 1
            );
            // AdamW moves a weight by up to lr per step whatever its gradient's size, so a
            // gradient component that is rounding noise on one backend could move its weight as
            // far as a real one; the weights must still agree to a hundredth of one step
            // (measured: ~3e-8).
            assert!(
                moved >= 1e-4,
                "step {}: the weights barely moved ({moved})",
                step + 1
            );
            assert!(
                difference <= 1e-5,
                "{replicas} device(s), step {}: weights differ by {difference}",
                step + 1
            );
        }
    }
}

#[test]
fn f16_training_skips_an_overflowing_step_then_learns_like_f32() {
    let Some(device) = first_adapter() else {
        return;
    };
    configure_device::<WgpuTrain>(&device, Precision::F16).expect("lavapipe has shaderFloat16");
    let (cpu, gpu) = tiny_models::<Wgpu>(&device);
    let gpu = vilab::train::precision::cast_params(gpu, burn::tensor::FloatDType::F32);
    // A first scale of 2^40 overflows f16 (max 65504) in the backward pass: that step is
    // skipped and the scale falls to 2^10, where the next steps are applied.
    let mut scaler = LossScaler::new(LossScaleSpec {
        initial: 2f64.powi(40),
        backoff_factor: 2f64.powi(-30),
        ..LossScaleSpec::default()
    });
    let start: Vec<f32> = flatten_params(&cpu)
        .into_iter()
        .flat_map(host_values)
        .collect();
    let half = train_steps::<WgpuTrain>(gpu, std::slice::from_ref(&device), 5, Some(&mut scaler));
    assert_eq!(
        scaler.skipped_steps, 1,
        "the 2^40 step must overflow and be skipped"
    );
    assert_eq!(scaler.scale, 1024.0);
    assert_eq!(
        half[0], start,
        "a skipped step leaves the weights as they were"
    );
    let single = train_steps::<CpuTrain>(cpu, &[cpu_device()], 4, None);
    // Four applied steps against four f32 steps on the CPU (on batches 1..4 vs 0..3 it would
    // differ; so compare the movement): f16 rounds activations to 11 bits, so the weights agree
    // to a few hundredths of a step, not to f32's precision.
    let moved_half = scaled_difference(&half[4], &start);
    let moved_single = scaled_difference(&single[3], &start);
    eprintln!("f16 moved {moved_half:e}, f32 moved {moved_single:e}");
    assert!(half[4].iter().all(|value| value.is_finite()));
    assert!(
        (moved_half - moved_single).abs() <= 0.25 * moved_single,
        "f16 moved the weights by {moved_half}, f32 by {moved_single}"
    );
}

/// `experiments/quickstart.yaml`, reduced: a 32-wide, 2-layer ViL for 2 epochs on wgpu,
/// with a checkpoint every 3 steps.
const QUICKSTART_OVERRIDES: [&str; 10] = [
    "--set",
    "backend=wgpu",
    "--set",
    "train.epochs=2",
    "--set",
    "model.dim=32",
    "--set",
    "model.depth=2",
    "--set",
    "train.checkpoint_every={steps: 3}",
];

#[test]
fn the_quickstart_trains_on_the_gpu_is_interrupted_and_resumes() {
    if first_adapter().is_none() {
        return;
    }
    let workspace = common::Workspace::with_data1();
    let experiment =
        std::fs::read_to_string(common::repo_root().join("experiments/quickstart.yaml"))
            .expect("quickstart.yaml")
            .replace("root: ../data1", "root: data");
    workspace.write("quickstart.yaml", experiment);
    let args: Vec<&str> = [
        &["run", "quickstart.yaml", "--out", "out"][..],
        &QUICKSTART_OVERRIDES,
    ]
    .concat();

    // Ctrl-C once the first epoch is done: the step finishes, a checkpoint is saved, exit 130.
    let interrupted = interrupt_after(&workspace, &args, "train    epoch 1/2");
    interrupted.assert_code(130).assert_no_panic();
    assert!(
        interrupted.stderr.contains("wgpu device 0:"),
        "{}",
        interrupted.stderr
    );

    let resumed = common::wait(
        common::spawn(workspace.command(&args)),
        Duration::from_secs(1200),
    );
    resumed.assert_code(0).assert_no_panic();
    assert!(
        resumed.stderr.contains("resuming at epoch"),
        "did not resume:\n{}",
        resumed.stderr
    );
    let run = workspace.path().join(resumed.last_stdout_line());
    let metrics: Value = serde_json::from_slice(
        &std::fs::read(run.join("train/metrics.json")).expect("train/metrics.json"),
    )
    .expect("metrics.json");
    let acc1 = metrics["final"]["val_acc1"].as_f64().expect("val_acc1");
    eprintln!("quickstart on wgpu, 2 epochs: val ACC1 {acc1}%");
    assert!(
        acc1 >= 30.0,
        "val ACC1 {acc1}% (chance is 10%)\n{metrics:#}"
    );
    let history = std::fs::read_to_string(run.join("train/history.csv")).expect("history.csv");
    assert_eq!(history.lines().count(), 3, "{history}");
    // The evaluate stage runs the best weights, trained on the GPU, on the CPU backend: the
    // same predictions as training's own validation pass on the GPU.
    let evaluation: Value = serde_json::from_slice(
        &std::fs::read(run.join("evaluate/metrics.json")).expect("evaluate/metrics.json"),
    )
    .expect("evaluate metrics");
    let on_cpu = evaluation["best"]["val"]["acc1"]
        .as_f64()
        .expect("best val acc1");
    let on_gpu = metrics["best"]["val_acc1"].as_f64().expect("best val_acc1");
    eprintln!("best weights: val ACC1 {on_gpu}% on wgpu, {on_cpu}% on the CPU");
    assert!(
        (on_cpu - on_gpu).abs() <= 0.34,
        "val ACC1 {on_gpu}% on wgpu but {on_cpu}% on the CPU (300 images: one is 0.33%)"
    );
}

/// How long one `vilab` process on lavapipe may take: kernels are compiled afresh in every
/// process (~0.4 s each), so the first epoch alone takes minutes there.
const GPU_PROCESS_TIMEOUT: Duration = Duration::from_secs(1200);

/// Runs `vilab args` in `workspace` and sends SIGINT once a stderr line starts with `line`;
/// what the process printed, after it ended.
fn interrupt_after(workspace: &common::Workspace, args: &[&str], line: &str) -> common::Output {
    let mut child = workspace
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vilab");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).ok();
        text
    });
    let deadline = Instant::now() + GPU_PROCESS_TIMEOUT;
    let mut seen = Vec::new();
    let mut sent = false;
    for next in std::io::BufReader::new(stderr).lines() {
        let Ok(next) = next else { break };
        if !sent && next.starts_with(line) {
            let status = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill(1)");
            assert!(status.success());
            sent = true;
        }
        seen.push(next);
        if Instant::now() > deadline {
            child.kill().ok();
            panic!(
                "vilab ran past {GPU_PROCESS_TIMEOUT:?}:\n{}",
                seen.join("\n")
            );
        }
    }
    let status = common::wait_until_done(&mut child, GPU_PROCESS_TIMEOUT);
    assert!(sent, "no line `{line}`:\n{}", seen.join("\n"));
    common::Output {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: seen.join("\n"),
    }
}
