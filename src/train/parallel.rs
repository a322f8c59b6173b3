//! One batch's gradients, computed on one device or split across several (data parallelism).
//!
//! The master weights live on the first device as an inner-backend model (no autodiff). For
//! each step every replica gets a fresh trainable copy of them on its device (the broadcast),
//! computes the loss on its contiguous slice of the batch, and runs its backward pass in its own
//! thread. Each replica's loss is weighted by its share of the batch (`n_r / n`) before the
//! backward pass, so the sum of the replicas' gradients — burn accumulates by summing — is the
//! gradient of the mean loss over the whole batch, exactly what one device computes on the full
//! batch: the gradients are averaged over samples, also when the batch does not divide evenly.
//! The summed gradients come back to the first device for one optimiser step.
//!
//! The replicas' forward and backward passes run concurrently, one thread each. The one random
//! draw of a forward pass, stochastic depth's subset of samples, comes from a stream of the
//! replica's thread seeded from (step seed, replica) (`layers::with_drop_path_seed`), not from
//! burn's process-wide RNG, so every replica's draws are reproducible whatever the thread timing
//! and no replica waits for another.

use std::sync::{Mutex, MutexGuard};

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use burn::module::Module;

use super::checkpoint::host_values;
use super::loss::soft_target_cross_entropy;
use super::params::{require_grad, take_gradients};
use super::precision::cast_params;
use crate::model::VisionLstm;
use crate::model::layers::with_drop_path_seed;

/// One batch as the loader hands it over, on the host.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// `[n, 3, height, width]` normalised images.
    pub images: &'a [f32],
    /// `[n, classes]` soft targets.
    pub targets: &'a [f32],
    /// Samples.
    pub n: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Classes.
    pub classes: usize,
}

/// What a batch's forward and backward passes produced.
#[derive(Debug, Clone)]
pub struct BatchGradients<B: Backend> {
    /// Gradient of `loss_scale ×` the mean loss, per parameter in layout order, on the first
    /// device.
    pub gradients: Vec<Option<Tensor<B, 1>>>,
    /// The mean soft-target loss over the batch (unscaled).
    pub loss: f64,
    /// `[n, classes]` logits, row-major, in batch order.
    pub logits: Vec<f32>,
}

/// How the batch is cut: `(start, len)` of each replica's slice, sizes differing by at most one.
pub fn replica_slices(n: usize, replicas: usize) -> Vec<(usize, usize)> {
    let replicas = replicas.max(1);
    let base = n / replicas;
    let extra = n % replicas;
    let mut start = 0;
    (0..replicas)
        .map(|replica| {
            let len = base + usize::from(replica < extra);
            let slice = (start, len);
            start += len;
            slice
        })
        .collect()
}

static BACKEND_RNG: Mutex<()> = Mutex::new(());

/// Serialises every use of the backend's process-wide RNG that must be reproducible: hold it
/// from `Backend::seed` until the draws are done (model initialisation; a training forward pass
/// outside `with_drop_path_seed`), so no other thread's draws interleave.
pub fn backend_rng_lock() -> MutexGuard<'static, ()> {
    // A poisoned lock only means another thread panicked while holding it; that panic is
    // reported on its own, and the RNG is re-seeded by the next holder anyway.
    BACKEND_RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The seed of replica `replica`'s forward pass at a step whose seed is `step_seed`.
fn replica_seed(step_seed: u64, replica: usize) -> u64 {
    step_seed ^ (replica as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Forward and backward passes of `batch` over `devices` (the first holds `master`).
///
/// `compute` is the half type of mixed precision (`None` for f32); `loss_scale` multiplies the
/// loss before the backward pass (1 without loss scaling); `step_seed` seeds stochastic depth.
pub fn batch_gradients<B: AutodiffBackend>(
    master: &VisionLstm<B::InnerBackend>,
    devices: &[B::Device],
    batch: BatchView<'_>,
    compute: Option<FloatDType>,
    loss_scale: f64,
    step_seed: u64,
) -> BatchGradients<B::InnerBackend> {
    let slices: Vec<(usize, usize)> = replica_slices(batch.n, devices.len())
        .into_iter()
        .filter(|&(_, len)| len > 0)
        .collect();
    let run = |replica: usize, device: &B::Device, (start, len): (usize, usize)| {
        let weight = len as f64 / batch.n as f64;
        let replica_batch = SliceBatch {
            images: &batch.images[start * pixels_per_image(&batch)..]
                [..len * pixels_per_image(&batch)],
            targets: &batch.targets[start * batch.classes..][..len * batch.classes],
            len,
            batch,
        };
        replica_pass::<B>(
            master,
            device,
            replica_batch,
            compute,
            weight * loss_scale,
            replica_seed(step_seed, replica),
        )
    };
    let results: Vec<ReplicaResult<B::InnerBackend>> = if slices.len() == 1 {
        vec![run(0, &devices[0], slices[0])]
    } else {
        // Each replica's host-side work (all of it on the CPU backend) gets its own share of the
        // caller's threads, so replicas do not queue for one pool: on the CPU the results are
        // the same bits for any thread count (`model_fused` tests that), only the speed changes.
        let threads = (rayon::current_num_threads() / slices.len()).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = slices
                .iter()
                .enumerate()
                .map(|(replica, &slice)| {
                    let device = &devices[replica];
                    let run = &run;
                    scope.spawn(move || {
                        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                            Ok(pool) => pool.install(|| run(replica, device, slice)),
                            // No thread to spare: the global pool, shared.
                            Err(_) => run(replica, device, slice),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle.join() {
                    Ok(result) => result,
                    Err(payload) => std::panic::resume_unwind(payload),
                })
                .collect()
        })
    };
    combine(results, &slices, batch.n, &devices[0])
}

fn pixels_per_image(batch: &BatchView<'_>) -> usize {
    3 * batch.height * batch.width
}

struct SliceBatch<'a> {
    images: &'a [f32],
    targets: &'a [f32],
    len: usize,
    batch: BatchView<'a>,
}

struct ReplicaResult<B: Backend> {
    gradients: Vec<Option<Tensor<B, 1>>>,
    loss: f64,
    logits: Vec<f32>,
}

fn replica_pass<B: AutodiffBackend>(
    master: &VisionLstm<B::InnerBackend>,
    device: &B::Device,
    slice: SliceBatch<'_>,
    compute: Option<FloatDType>,
    loss_weight: f64,
    seed: u64,
) -> ReplicaResult<B::InnerBackend> {
    let BatchView {
        height,
        width,
        classes,
        ..
    } = slice.batch;
    let model = require_grad(VisionLstm::<B>::from_inner(master.clone().fork(device)));
    let images = Tensor::<B, 4>::from_data(
        TensorData::new(slice.images.to_vec(), [slice.len, 3, height, width]),
        (device, DType::F32),
    );
    let targets = Tensor::<B, 2>::from_data(
        TensorData::new(slice.targets.to_vec(), [slice.len, classes]),
        (device, DType::F32),
    );
    // Stochastic depth draws from this thread's own stream: replicas run their forward passes
    // at the same time, each with its seed.
    let logits = with_drop_path_seed(seed, || match compute {
        Some(half) => cast_params(model.clone(), half)
            .forward(images.cast(half))
            .cast(FloatDType::F32),
        None => model.forward(images),
    });
    let loss = soft_target_cross_entropy(logits.clone(), targets);
    let mut gradients = loss.clone().mul_scalar(loss_weight).backward();
    let taken = take_gradients(&model, &mut gradients);
    let loss_value = host_values(loss.inner())
        .first()
        .copied()
        .unwrap_or(f32::NAN);
    let logits = logits.inner().into_data().convert::<f32>();
    ReplicaResult {
        gradients: taken,
        loss: f64::from(loss_value),
        logits: logits.into_vec::<f32>().unwrap_or_default(),
    }
}

/// Sums the replicas' gradients on `first` (in replica order, so the result does not depend on
/// thread timing) and joins their losses and logits.
fn combine<B: Backend>(
    results: Vec<ReplicaResult<B>>,
    slices: &[(usize, usize)],
    n: usize,
    first: &B::Device,
) -> BatchGradients<B> {
    let mut loss = 0.0;
    let mut logits = Vec::new();
    let mut gradients: Vec<Option<Tensor<B, 1>>> = Vec::new();
    for (result, &(_, len)) in results.into_iter().zip(slices) {
        loss += result.loss * len as f64 / n as f64;
        logits.extend(result.logits);
        if gradients.is_empty() {
            gradients = result
                .gradients
                .into_iter()
                .map(|gradient| gradient.map(|value| value.to_device(first)))
                .collect();
            continue;
        }
        for (total, gradient) in gradients.iter_mut().zip(result.gradients) {
            *total = match (total.take(), gradient) {
                (Some(sum), Some(value)) => Some(sum + value.to_device(first)),
                (Some(sum), None) => Some(sum),
                (None, value) => value.map(|value| value.to_device(first)),
            };
        }
    }
    BatchGradients {
        gradients,
        loss,
        logits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_batch_with_sizes_differing_by_at_most_one() {
        assert_eq!(replica_slices(8, 2), vec![(0, 4), (4, 4)]);
        assert_eq!(replica_slices(7, 3), vec![(0, 3), (3, 2), (5, 2)]);
        assert_eq!(replica_slices(1, 2), vec![(0, 1), (1, 0)]);
        assert_eq!(replica_slices(5, 1), vec![(0, 5)]);
    }
}
