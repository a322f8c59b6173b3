//! Single training steps on a tiny Vision-LSTM on the CPU backend: data-parallel gradients equal
//! single-device gradients, f16 loss scaling skips an overflowing step and lowers the scale, and
//! the per-step seeding makes stochastic depth reproducible.

use burn::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vilab::backend::{Cpu, CpuTrain, cpu_device};
use vilab::model::{VilConfig, VisionLstm};
use vilab::spec::types::OptimizerSpec;
use vilab::train::checkpoint::{device_tensor, host_values};
use vilab::train::optimizer::Optimizer;
use vilab::train::parallel::{BatchView, Replicas, backend_rng_lock, batch_gradients};
use vilab::train::params::{ParamLayout, flatten_params, materialize};
use vilab::train::precision::{LossScaleSpec, LossScaler};
use vilab::train::trainer::update_step;

const CLASSES: usize = 3;
const SIDE: usize = 8;

fn tiny_config(drop_path: f64) -> VilConfig {
    VilConfig::new(16, 2)
        .with_patch_size(4)
        .with_image_size(SIDE)
        .with_num_classes(CLASSES)
        .with_drop_path(drop_path)
}

fn tiny_model(drop_path: f64) -> VisionLstm<Cpu> {
    let _rng = backend_rng_lock();
    <Cpu as burn::tensor::backend::Backend>::seed(&cpu_device(), 7);
    let model = tiny_config(drop_path).init::<Cpu>(&cpu_device());
    materialize(&model);
    model
}

/// `n` random images and soft targets that are not one-hot (as after MixUp).
fn batch(n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let images = (0..n * 3 * SIDE * SIDE)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let mut targets = Vec::with_capacity(n * CLASSES);
    for sample in 0..n {
        let mut row = [0.05_f32; CLASSES];
        row[sample % CLASSES] = 0.9;
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

fn gradient_values(gradients: &[Option<Tensor<Cpu, 1>>]) -> Vec<Vec<f32>> {
    gradients
        .iter()
        .map(|gradient| gradient.clone().map(host_values).unwrap_or_default())
        .collect()
}

#[test]
fn data_parallel_gradients_equal_single_device_gradients() {
    let model = tiny_model(0.0);
    // 7 samples: two replicas get 4 and 3, three replicas 3, 2 and 2, so the averaging must
    // weight replicas by their share of the batch.
    let n = 7;
    let (images, targets) = batch(n);
    let single = batch_gradients::<CpuTrain>(
        &model,
        &[cpu_device()],
        view(&images, &targets, n),
        None,
        1.0,
        1,
    );
    let reference = gradient_values(&single.gradients);
    assert!(reference.iter().all(|values| !values.is_empty()));
    for replicas in [2, 3] {
        let devices = vec![cpu_device(); replicas];
        // Replicas on the master's device compute with its weights: nothing is copied.
        let layout = ParamLayout::of(&model);
        let kept = Replicas::new(
            &model,
            &Optimizer::new(&OptimizerSpec::default(), &layout),
            &devices,
        );
        assert!((0..replicas).all(|replica| kept.held_weights(replica).is_none()));
        let parallel =
            batch_gradients::<CpuTrain>(&model, &devices, view(&images, &targets, n), None, 1.0, 1);
        assert!(
            (parallel.loss - single.loss).abs() < 1e-6,
            "{replicas} replicas: loss {} vs {}",
            parallel.loss,
            single.loss
        );
        assert_eq!(parallel.logits.len(), n * CLASSES);
        let mut largest = 0.0_f32;
        for (parallel, single) in gradient_values(&parallel.gradients).iter().zip(&reference) {
            assert_eq!(parallel.len(), single.len());
            for (a, b) in parallel.iter().zip(single) {
                largest = largest.max((a - b).abs());
            }
        }
        assert!(
            largest <= 1e-5,
            "{replicas} replicas: gradients differ by up to {largest}"
        );
    }
}

#[test]
fn an_overflowing_f16_step_is_skipped_and_the_scale_lowered() {
    let model = tiny_model(0.0);
    let layout = ParamLayout::of(&model);
    let (images, targets) = batch(4);
    let scale = 1024.0;
    let scaled = batch_gradients::<CpuTrain>(
        &model,
        &[cpu_device()],
        view(&images, &targets, 4),
        None,
        scale,
        1,
    );
    let params = flatten_params(&model);
    let before: Vec<Vec<f32>> = params.iter().cloned().map(host_values).collect();
    let mut scaler = LossScaler::new(LossScaleSpec {
        initial: scale,
        ..LossScaleSpec::default()
    });
    let mut optimizer = Optimizer::<Cpu>::new(&OptimizerSpec::default(), &layout);

    // An f16 backward pass that overflowed leaves an inf in some gradient.
    let mut overflowed = scaled.gradients.clone();
    let mut values = host_values(overflowed[0].take().expect("a gradient"));
    values[0] = f32::INFINITY;
    overflowed[0] = Some(device_tensor::<Cpu>(values, &cpu_device()));
    let skipped = update_step(
        &mut optimizer,
        Some(&mut scaler),
        None,
        1e-3,
        params.clone(),
        overflowed,
        true,
    );
    assert!(skipped.is_none(), "an overflowing step must not be applied");
    assert_eq!(scaler.scale, scale / 2.0);
    assert_eq!(scaler.skipped_steps, 1);
    assert_eq!(optimizer.steps(), 0);
    let unchanged: Vec<Vec<f32>> = params.iter().cloned().map(host_values).collect();
    assert_eq!(unchanged, before);

    // A finite step is applied after unscaling: the same update as unscaled gradients give.
    let rescaled = batch_gradients::<CpuTrain>(
        &model,
        &[cpu_device()],
        view(&images, &targets, 4),
        None,
        scaler.scale,
        1,
    );
    let applied = update_step(
        &mut optimizer,
        Some(&mut scaler),
        None,
        1e-3,
        params.clone(),
        rescaled.gradients,
        true,
    )
    .expect("a finite step is applied");
    let plain = batch_gradients::<CpuTrain>(
        &model,
        &[cpu_device()],
        view(&images, &targets, 4),
        None,
        1.0,
        1,
    );
    let mut reference_optimizer = Optimizer::<Cpu>::new(&OptimizerSpec::default(), &layout);
    let reference = update_step(
        &mut reference_optimizer,
        None,
        None,
        1e-3,
        params,
        plain.gradients,
        true,
    )
    .expect("applied");
    for (a, b) in applied.into_iter().zip(reference) {
        for (x, y) in host_values(a).iter().zip(host_values(b)) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
    }
    assert_eq!(scaler.good_steps, 1);
}

#[test]
fn stochastic_depth_is_reproducible_per_step_seed() {
    let model = tiny_model(0.5);
    let (images, targets) = batch(6);
    let run = |seed| {
        gradient_values(
            &batch_gradients::<CpuTrain>(
                &model,
                &[cpu_device()],
                view(&images, &targets, 6),
                None,
                1.0,
                seed,
            )
            .gradients,
        )
    };
    let first = run(3);
    assert_eq!(first, run(3), "same step seed, same dropped samples");
    assert_ne!(first, run(4), "another step seed drops other samples");
}
