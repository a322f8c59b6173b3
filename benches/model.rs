//! Forward and forward+backward throughput of ViL on the CPU backend (burn NdArray f32), for
//! `vil_tiny` at 224² (batch 16) and `vil_micro` at 28² (batch 64).
//!
//! Run by hand: `cargo bench --bench model` (add `-- micro` or `-- tiny` to pick one model).
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

fn bench_models(criterion: &mut Criterion) {
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
    }
}

criterion_group!(benches, bench_models);
criterion_main!(benches);
