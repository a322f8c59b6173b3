//! Forward, forward+backward and whole-training-step throughput of ViL on the CPU backend (burn
//! NdArray f32), for `vil_tiny` at 224² (batch 16) and `vil_micro` at 28² (batch 64). The
//! training step is the one training runs: forward and backward (`batch_gradients`, softmax
//! cross-entropy), global-norm clipping at 1.0 and AdamW (`update_step`).
//!
//! Run by hand: `cargo bench --bench model` (add `-- micro` or `-- tiny` to pick one model).
//!
//! `-- parallel` times data parallelism: one step's forward and backward passes
//! (`batch_gradients`) of `vil_micro` with stochastic depth 0.1, on one replica of 32 images
//! with one thread, and on two replicas of 32 images with one thread each (two in all), and
//! prints the ratio of the two step times: 2.0 when the replicas take turns, 1.0 when they run
//! side by side, as replicas on separate GPUs would.
//! Criterion reports images/s; after each case the bench also prints the achieved GFLOP/s over
//! all measured iterations, from `VilConfig::forward_macs` (full S×S convention): FLOPs = 2·MACs
//! per image forward, and forward+backward is counted as 3× the forward.

// A benchmark stops at a broken fixture; the no-unwrap rule is for the library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend as BackendTrait;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vilab::model::{VilConfig, preset};
use vilab::train::clipping::GradientClip;
use vilab::train::optimizer::Optimizer;
use vilab::train::parallel::{BatchView, batch_gradients};
use vilab::train::params::{ParamLayout, flatten_params, with_params};
use vilab::train::spec::OptimizerSpec;
use vilab::train::trainer::update_step;

type Backend = NdArray<f32>;
type Training = Autodiff<Backend>;

struct Case {
    preset: &'static str,
    batch: usize,
}

const CASES: [Case; 2] = [
    Case {
        preset: "vil_micro",
        batch: 64,
    },
    Case {
        preset: "vil_tiny",
        batch: 16,
    },
];

/// Times `run` through criterion and prints the GFLOP/s it achieved.
fn measure(
    criterion: &mut Criterion,
    name: &str,
    batch: usize,
    flops_per_iteration: f64,
    mut run: impl FnMut(),
) {
    let total_time = Cell::new(Duration::ZERO);
    let total_iterations = Cell::new(0u64);
    let mut group = criterion.benchmark_group(name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function(format!("batch {batch}"), |bencher| {
        bencher.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                run();
            }
            let elapsed = start.elapsed();
            total_time.set(total_time.get() + elapsed);
            total_iterations.set(total_iterations.get() + iterations);
            elapsed
        });
    });
    group.finish();
    if total_iterations.get() == 0 {
        // Filtered out on the command line.
        return;
    }
    let seconds = total_time.get().as_secs_f64() / total_iterations.get() as f64;
    println!(
        "{name}: {:.1} images/s, {:.2} GFLOP/s ({:.2} GFLOP per iteration)",
        batch as f64 / seconds,
        flops_per_iteration / seconds / 1e9,
        flops_per_iteration / 1e9
    );
}

fn images<B: BackendTrait>(config: &VilConfig, batch: usize) -> Tensor<B, 4> {
    let size = config.image_size;
    Tensor::random(
        [batch, config.in_chans, size, size],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    )
}

/// Random images and one-hot targets (sample i of class i mod classes), as plain values.
fn batch_values(config: &VilConfig, batch: usize) -> (Vec<f32>, Vec<f32>) {
    let images: Vec<f32> = images::<Backend>(config, batch)
        .into_data()
        .into_vec()
        .expect("f32 images");
    let mut targets = vec![0.0f32; batch * config.num_classes];
    for (sample, row) in targets.chunks_mut(config.num_classes).enumerate() {
        row[sample % config.num_classes] = 1.0;
    }
    (images, targets)
}

fn bench_models(criterion: &mut Criterion) {
    vilab::backend::keep_freed_memory();
    for case in CASES {
        let Some(config) = preset(case.preset) else {
            continue;
        };
        let forward_flops = 2.0 * config.forward_macs() as f64 * case.batch as f64;

        let model = config.init::<Backend>(&Default::default());
        let input = images::<Backend>(&config, case.batch);
        measure(
            criterion,
            &format!("{} forward", case.preset),
            case.batch,
            forward_flops,
            || {
                black_box(model.forward(input.clone()).into_data());
            },
        );

        let model = config.init::<Training>(&Default::default());
        let input = images::<Training>(&config, case.batch);
        measure(
            criterion,
            &format!("{} forward+backward", case.preset),
            case.batch,
            3.0 * forward_flops,
            || {
                let loss = model.forward(input.clone()).mean();
                black_box(loss.backward());
            },
        );

        let (images, targets) = batch_values(&config, case.batch);
        let view = BatchView {
            images: &images,
            targets: &targets,
            n: case.batch,
            height: config.image_size,
            width: config.image_size,
            classes: config.num_classes,
        };
        let devices = [Default::default()];
        let mut master = Some(config.init::<Backend>(&Default::default()));
        let layout = ParamLayout::of(master.as_ref().expect("a model"));
        let optimizer_spec = OptimizerSpec::default();
        let mut optimizer = Optimizer::<Backend>::new(&optimizer_spec, &layout);
        let mut seed = 0;
        measure(
            criterion,
            &format!("{} train step", case.preset),
            case.batch,
            3.0 * forward_flops,
            || {
                let model = master.take().expect("the model between steps");
                seed += 1;
                let result = batch_gradients::<Training>(&model, &devices, view, None, 1.0, seed);
                let params = update_step(
                    &mut optimizer,
                    None,
                    Some(GradientClip::Norm(1.0)),
                    optimizer_spec.lr,
                    flatten_params(&model),
                    result.gradients,
                    result.loss.is_finite(),
                )
                .expect("a finite f32 step");
                master = Some(with_params(model, params));
            },
        );
    }
}

/// Seconds per step of `batch_gradients` for `replicas` CPU replicas of 32 images each, called
/// from a pool of `replicas` threads (one per replica).
fn bench_replicas(criterion: &mut Criterion, replicas: usize) -> Option<f64> {
    let config = preset("vil_micro")?.with_drop_path(0.1);
    let per_replica = 32;
    let batch = per_replica * replicas;
    let master = config.init::<Backend>(&Default::default());
    let size = config.image_size;
    let (images, targets) = batch_values(&config, batch);
    let view = BatchView {
        images: &images,
        targets: &targets,
        n: batch,
        height: size,
        width: size,
        classes: config.num_classes,
    };
    let devices = vec![Default::default(); replicas];
    let forward_flops = 2.0 * config.forward_macs() as f64 * batch as f64;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(replicas)
        .build()
        .expect("a thread pool");
    let step = Cell::new(0u64);
    let clock = Cell::new((Duration::ZERO, 0u64));
    measure(
        criterion,
        &format!("vil_micro data parallel, {replicas} replica(s) of {per_replica}"),
        batch,
        3.0 * forward_flops,
        || {
            let start = Instant::now();
            step.set(step.get() + 1);
            let seed = step.get();
            black_box(
                pool.install(|| {
                    batch_gradients::<Training>(&master, &devices, view, None, 1.0, seed)
                }),
            );
            let (time, count) = clock.get();
            clock.set((time + start.elapsed(), count + 1));
        },
    );
    let (time, count) = clock.get();
    (count > 0).then(|| time.as_secs_f64() / count as f64)
}

fn bench_parallel(criterion: &mut Criterion) {
    vilab::backend::keep_freed_memory();
    let one = bench_replicas(criterion, 1);
    let two = bench_replicas(criterion, 2);
    if let (Some(one), Some(two)) = (one, two) {
        println!(
            "data parallel: a step of 2 replicas takes {:.2}× a step of 1 (same images per replica)",
            two / one
        );
    }
}

criterion_group!(benches, bench_models, bench_parallel);
criterion_main!(benches);
