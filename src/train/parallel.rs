//! One batch's gradients, computed on one device or split across several (data parallelism).
//!
//! The master weights live on the first device as an inner-backend model (no autodiff). Every
//! other device holds a replica of its own ([`Replicas`]): a copy of the weights and of the
//! optimiser state made once, when training starts or resumes, and kept between steps. Each
//! replica computes the loss on its contiguous slice of the batch and runs its backward pass in
//! its own thread. Its loss is weighted by its share of the batch (`n_r / n`) before the
//! backward pass, so the sum of the replicas' gradients — burn accumulates by summing — is the
//! gradient of the mean loss over the whole batch, exactly what one device computes on the full
//! batch: the gradients are averaged over samples, also when the batch does not divide evenly.
//!
//! The exchange is an all-reduce through the first device: each replica's gradients go there in
//! one transfer through host memory ([`transfer`]; concatenated, as a model has some hundred
//! parameter tensors and a GPU pays a fixed cost per copy), are summed in replica order,
//! unscaled and clipped once, and the result goes back to every replica in one transfer, where
//! its own optimiser applies it as the master's does. Identical kernels on identical inputs keep
//! every replica's weights the master's, bit for bit; a resume copies them afresh from the
//! master's checkpoint. A replica on the master's own device needs no copy at all (a clone of a
//! tensor there shares its buffer), so on the CPU backend data parallelism holds nothing twice.
//!
//! Why not burn-collective: its local all-reduce sums the peers in the order of a `HashMap`
//! (sorted by device id only, so replicas on one device — every CPU replica — are summed in a
//! different order from run to run, and a resumed run would not repeat an uninterrupted one
//! bit for bit), it runs one process-wide server per backend type that two trainings in one
//! process would share, and it builds a websocket stack (axum, tungstenite) for multi-node use we
//! do not have. The reduction here is a few lines, ordered and testable. burn's CUDA backend also
//! has an NCCL all-reduce (`DistributedBackend::all_reduce`); it cannot run without GPUs, so it
//! is not used until it can be tested on them.
//!
//! The replicas' forward and backward passes run concurrently, one thread each. The one random
//! draw of a forward pass, stochastic depth's subset of samples, comes from a stream of the
//! replica's thread seeded from (step seed, replica) (`layers::with_drop_path_seed`), not from
//! burn's process-wide RNG, so every replica's draws are reproducible whatever the thread timing
//! and no replica waits for another.

use std::sync::{Mutex, MutexGuard};

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use burn::module::Module;

use super::checkpoint::host_values;
use super::loss::soft_target_cross_entropy;
use super::optimizer::Optimizer;
use super::params::{flatten_params, require_grad, take_gradients, with_params};
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

/// The data-parallel replicas of a training run; see the module doc.
pub struct Replicas<B: Backend> {
    devices: Vec<B::Device>,
    /// Per replica: its own weights and optimiser, or `None` where it computes with the
    /// master's (the master itself, and any replica on the master's device).
    held: Vec<Option<Held<B>>>,
}

struct Held<B: Backend> {
    model: VisionLstm<B>,
    optimizer: Optimizer<B>,
}

impl<B: Backend> Replicas<B> {
    /// One replica per entry of `devices` (the first holds `master`), each starting from
    /// `master`'s weights and `optimizer`'s state.
    pub fn new(
        master: &VisionLstm<B>,
        optimizer: &Optimizer<B>,
        devices: &[B::Device],
    ) -> Replicas<B> {
        let held = devices
            .iter()
            .enumerate()
            .map(|(replica, device)| {
                (replica > 0 && *device != devices[0]).then(|| Held {
                    model: copy_model(master, device),
                    optimizer: optimizer.map_state(|tensor| transfer(tensor, device)),
                })
            })
            .collect();
        Replicas {
            devices: devices.to_vec(),
            held,
        }
    }

    /// The weights replica `replica` holds of its own (`None` for the master and for replicas
    /// on its device).
    pub fn held_weights(&self, replica: usize) -> Option<&VisionLstm<B>> {
        self.held.get(replica)?.as_ref().map(|held| &held.model)
    }

    /// Forward and backward passes of `batch` over the replicas, `master` being replica 0's
    /// weights; see [`batch_gradients`].
    pub fn gradients<A: AutodiffBackend<InnerBackend = B, Device = B::Device>>(
        &self,
        master: &VisionLstm<B>,
        batch: BatchView<'_>,
        compute: Option<FloatDType>,
        loss_scale: f64,
        step_seed: u64,
    ) -> BatchGradients<B> {
        let models: Vec<&VisionLstm<B>> = self
            .held
            .iter()
            .map(|held| held.as_ref().map_or(master, |held| &held.model))
            .collect();
        replicated_gradients::<A>(
            &models,
            &self.devices,
            batch,
            compute,
            loss_scale,
            step_seed,
        )
    }

    /// Applies one step's prepared gradients (on the first device, as
    /// [`super::trainer::prepare_gradients`] returns them) to every replica: to the master with
    /// `optimizer` (the master's, whose new parameters are returned), and to every replica that
    /// holds weights of its own with that replica's optimiser.
    pub fn step(
        &mut self,
        optimizer: &mut Optimizer<B>,
        lr: f64,
        master: &VisionLstm<B>,
        gradients: Vec<Option<Tensor<B, 1>>>,
    ) -> Vec<Tensor<B, 1>> {
        for (held, device) in self.held.iter_mut().zip(&self.devices) {
            let Some(held) = held else { continue };
            let local = move_together(gradients.clone(), device);
            let params = held.optimizer.step(lr, flatten_params(&held.model), local);
            held.model = with_params(held.model.clone(), params);
        }
        optimizer.step(lr, flatten_params(master), gradients)
    }
}

/// `tensor` on `device`, through host memory when it is elsewhere.
///
/// burn's `to_device` between two devices asks the backend for a server-to-server transfer,
/// which burn 0.21's wgpu backend does not have (it panics) and CUDA's does through NCCL;
/// reading back and uploading works on every backend and needs no NCCL library. A tensor on
/// `device` already is returned as it is.
pub fn transfer<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    device: &B::Device,
) -> Tensor<B, D> {
    if tensor.device() == *device {
        return tensor;
    }
    let dtype = tensor.dtype();
    Tensor::from_data(tensor.into_data(), (device, dtype))
}

/// `model`'s weights on `device` (see [`transfer`]), the parameter ids kept.
fn copy_model<B: Backend>(model: &VisionLstm<B>, device: &B::Device) -> VisionLstm<B> {
    struct Transfer<'a, B: Backend>(&'a B::Device);
    impl<B: Backend> ModuleMapper<B> for Transfer<'_, B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            param.map(|tensor| transfer(tensor, self.0))
        }
    }
    model.clone().map(&mut Transfer(device))
}

/// `tensors` on `device`, moved in one transfer: the present ones concatenated, moved, and cut
/// apart again. Tensors already there stay as they are.
fn move_together<B: Backend>(
    tensors: Vec<Option<Tensor<B, 1>>>,
    device: &B::Device,
) -> Vec<Option<Tensor<B, 1>>> {
    let present: Vec<Tensor<B, 1>> = tensors.iter().flatten().cloned().collect();
    if present.iter().all(|tensor| tensor.device() == *device) {
        return tensors;
    }
    let moved = transfer(Tensor::cat(present, 0), device);
    let mut offset = 0;
    tensors
        .into_iter()
        .map(|slot| {
            slot.map(|tensor| {
                let len = tensor.dims()[0];
                let part = moved.clone().slice(offset..offset + len);
                offset += len;
                part
            })
        })
        .collect()
}

/// Forward and backward passes of `batch` over `devices`, every replica starting from
/// `master`'s weights (copied to its device for this call; training keeps [`Replicas`]
/// instead).
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
    let models = vec![master; devices.len()];
    replicated_gradients::<B>(&models, devices, batch, compute, loss_scale, step_seed)
}

/// Replica `r` computes with `models[r]` on `devices[r]`.
fn replicated_gradients<B: AutodiffBackend>(
    models: &[&VisionLstm<B::InnerBackend>],
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
            models[replica],
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
    weights: &VisionLstm<B::InnerBackend>,
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
    // A no-op where the weights are on `device` already (a replica's own, or the master's).
    let model = require_grad(VisionLstm::<B>::from_inner(copy_model(weights, device)));
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
        let local = move_together(result.gradients, first);
        if gradients.is_empty() {
            gradients = local;
            continue;
        }
        for (total, gradient) in gradients.iter_mut().zip(local) {
            *total = match (total.take(), gradient) {
                (Some(sum), Some(value)) => Some(sum + value),
                (sum, None) => sum,
                (None, value) => value,
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
