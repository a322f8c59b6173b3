//! The fused CPU path of the ViL layer: [`kernel`] does the arithmetic, this module hands it
//! burn tensors and, for training, registers it as one autodiff operation whose backward pass is
//! the kernel's hand-derived one.
//!
//! The model is generic over `B: Backend`, and Rust has no specialisation, so the fused path is
//! chosen by comparing `TypeId`s: when `B` is the CPU backend (or it with autodiff), the
//! primitives are downcast to their concrete types, which costs nothing at run time. Every other
//! backend (CUDA) keeps the generic composition of burn ops, where fusion is the compiler's job.
//!
//! `VILAB_KERNELS=generic` in the environment switches the fused path off for the whole process
//! (to compare speed or results); [`ViLLayer::forward_with`] picks a path for one call.

pub mod kernel;
pub mod linear;
pub mod norm;

use std::any::{Any, TypeId};
use std::sync::{Arc, OnceLock};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};

use self::kernel::{CoreParams, CoreShape, SampleActivations};
use crate::backend::{Cpu, CpuTrain};

/// Which implementation of the layer core to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// The fused kernel where the backend has one, the generic ops elsewhere.
    Fused,
    /// Always the generic composition of burn ops.
    Generic,
}

impl Kernels {
    /// The process-wide choice: `VILAB_KERNELS=generic` selects [`Kernels::Generic`].
    pub fn from_environment() -> Self {
        static CHOICE: OnceLock<Kernels> = OnceLock::new();
        *CHOICE.get_or_init(|| match std::env::var("VILAB_KERNELS") {
            Ok(value) if value.eq_ignore_ascii_case("generic") => Kernels::Generic,
            _ => Kernels::Fused,
        })
    }
}

/// Sequence length from which the generic layer with the chunkwise cell trains faster than the
/// fused kernel, whose cell is the O(S²) parallel form. Measured with `vilab bench --model
/// vil_micro --image-size N` (patch 4), train images/s fused / generic-chunkwise: 784 tokens
/// 3.3 / 2.5, 3136 tokens 0.1 / 0.4; the time ratio grows like S^1.2, which crosses 1 near 1,000.
pub const MAX_TOKENS: usize = 1024;

/// Whether backend `B` has the fused kernel.
pub fn available<B: Backend>() -> bool {
    let id = TypeId::of::<B>();
    id == TypeId::of::<Cpu>() || id == TypeId::of::<CpuTrain>()
}

/// The tensors of one layer that the core reads, as `B` tensors.
pub struct CoreInputs<B: Backend> {
    /// The up-projection output `[batch, tokens, 2E]`, rows in input (physical) order.
    pub up: Tensor<B, 3>,
    /// Parameters in the order of [`PARAMETER_NAMES`]; absent optional biases are `None`.
    pub parameters: [Option<Tensor<B, 1>>; PARAMETER_COUNT],
}

/// Number of parameter slots of the core.
pub const PARAMETER_COUNT: usize = 15;

/// The parameter slots, in order (flattened to 1-D).
pub const PARAMETER_NAMES: [&str; PARAMETER_COUNT] = [
    "conv.weight",
    "conv.bias",
    "q_proj.weight",
    "k_proj.weight",
    "v_proj.weight",
    "q_proj.bias",
    "k_proj.bias",
    "v_proj.bias",
    "igate.weight",
    "igate.bias",
    "fgate.weight",
    "fgate.bias",
    "outnorm.weight",
    "outnorm.bias",
    "learnable_skip",
];

/// Runs the fused core if `B` has it: returns the core output `[batch, tokens, E]` in physical
/// row order, or gives the inputs back for the generic path.
pub fn layer_core<B: Backend>(
    shape: CoreShape,
    inputs: CoreInputs<B>,
) -> Result<Tensor<B, 3>, CoreInputs<B>> {
    let id = TypeId::of::<B>();
    let dims = [shape.batch, shape.tokens, shape.inner];
    if id == TypeId::of::<Cpu>() {
        let up = primitive::<B, NdArrayTensor, 3>(inputs.up);
        let parameters = inputs
            .parameters
            .map(|parameter| parameter.map(primitive::<B, NdArrayTensor, 1>));
        let output = inference(shape, &up, &parameters);
        return Ok(from_primitive::<B, NdArrayTensor, 3>(output, dims));
    }
    if id == TypeId::of::<CpuTrain>() {
        let up = primitive::<B, TrackedTensor, 3>(inputs.up);
        let parameters = inputs
            .parameters
            .map(|parameter| parameter.map(primitive::<B, TrackedTensor, 1>));
        let output = training(shape, up, parameters);
        return Ok(from_primitive::<B, TrackedTensor, 3>(output, dims));
    }
    Err(inputs)
}

/// The concrete primitive of a `B` tensor, where the caller has checked that `B`'s primitive is
/// `Concrete`.
fn primitive<B: Backend, Concrete: 'static, const D: usize>(tensor: Tensor<B, D>) -> Concrete {
    let boxed: Box<dyn Any> = Box::new(tensor.into_primitive().tensor());
    match boxed.downcast::<Concrete>() {
        Ok(concrete) => *concrete,
        Err(_) => unreachable!("the backend type was checked by TypeId"),
    }
}

fn from_primitive<B: Backend, Concrete: 'static, const D: usize>(
    concrete: Concrete,
    shape: [usize; D],
) -> Tensor<B, D> {
    let boxed: Box<dyn Any> = Box::new(concrete);
    match boxed.downcast::<B::FloatTensorPrimitive>() {
        Ok(primitive) => {
            let tensor = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(*primitive));
            debug_assert_eq!(tensor.dims(), shape);
            tensor
        }
        Err(_) => unreachable!("the backend type was checked by TypeId"),
    }
}

/// The values of an ndarray tensor in row-major order (no copy when it is contiguous).
fn values(tensor: &NdArrayTensor) -> std::borrow::Cow<'_, [f32]> {
    match tensor {
        NdArrayTensor::F32(storage) => {
            let view = storage.view();
            match view.to_slice() {
                Some(slice) => std::borrow::Cow::Borrowed(slice),
                None => std::borrow::Cow::Owned(view.iter().copied().collect()),
            }
        }
        other => unreachable!("the CPU backend is f32, got {:?}", other.dtype()),
    }
}

fn ndarray_tensor(values: Vec<f32>, shape: Vec<usize>) -> NdArrayTensor {
    NdArrayTensor::from_data(TensorData::new(values, shape))
}

/// A new buffer of `length` values cut into `piece`-long pieces (the last may be shorter), each
/// zeroed and then filled by `fill(index, piece)` on the rayon task that owns it; returns the
/// buffer and what `fill` returned for each piece, in order. Zeroing the whole buffer up front
/// (`vec![0.0; length]`) was a serial memset, with its page faults, of up to 10 MB per call on
/// the calling thread while the other threads waited; here each task zeroes the piece it is
/// about to write, in parallel and into its own cache.
fn zeroed_pieces<R: Send>(
    length: usize,
    piece: usize,
    fill: impl Fn(usize, &mut [f32]) -> R + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    use rayon::prelude::*;
    let mut buffer: Vec<f32> = Vec::with_capacity(length);
    let results = buffer.spare_capacity_mut()[..length]
        .par_chunks_mut(piece.max(1))
        .enumerate()
        .map(|(index, slots)| {
            for slot in slots.iter_mut() {
                slot.write(0.0);
            }
            // SAFETY: every element of `slots` was initialised just above, and
            // `MaybeUninit<f32>` has the layout of `f32`.
            let values =
                unsafe { &mut *(slots as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            fill(index, values)
        })
        .collect();
    // SAFETY: the pieces cover the first `length` elements, and each was initialised above (had a
    // task panicked, the panic would have propagated before this line).
    unsafe { buffer.set_len(length) };
    (buffer, results)
}

/// A tensor's shape, and that shape read as a matrix: `[rows, last axis]`, the leading axes
/// folded into the rows. The fused operations take any rank this way, because a burn reshape on
/// the ndarray backend copies the tensor (burn-ndarray 0.21 turns the reshaped view into a new
/// shared array), which cost ~4% of a `vil_tiny` training step.
fn matrix_shape(tensor: &NdArrayTensor) -> (Vec<usize>, [usize; 2]) {
    let shape = tensor.shape().to_vec();
    let width = shape.last().copied().unwrap_or(1);
    let rows = shape.iter().product::<usize>() / width.max(1);
    (shape, [rows, width])
}

/// Parameter values owned, so they can travel into the backward step.
#[derive(Clone, Debug)]
struct OwnedParameters {
    values: [Option<Vec<f32>>; PARAMETER_COUNT],
}

impl OwnedParameters {
    fn borrowed(&self) -> CoreParams<'_> {
        let required = |index: usize| self.values[index].as_deref().unwrap_or(&[]);
        let optional = |index: usize| self.values[index].as_deref();
        CoreParams {
            conv_weight: required(0),
            conv_bias: required(1),
            query_weight: required(2),
            key_weight: required(3),
            value_weight: required(4),
            query_bias: optional(5),
            key_bias: optional(6),
            value_bias: optional(7),
            input_gate_weight: required(8),
            input_gate_bias: required(9),
            forget_gate_weight: required(10),
            forget_gate_bias: required(11),
            norm_weight: required(12),
            norm_bias: optional(13),
            skip: required(14),
        }
    }
}

fn owned(parameters: &[Option<NdArrayTensor>; PARAMETER_COUNT]) -> OwnedParameters {
    OwnedParameters {
        values: std::array::from_fn(|index| {
            parameters[index]
                .as_ref()
                .map(|tensor| values(tensor).into_owned())
        }),
    }
}

fn inference(
    shape: CoreShape,
    up: &NdArrayTensor,
    parameters: &[Option<NdArrayTensor>; PARAMETER_COUNT],
) -> NdArrayTensor {
    let parameters = owned(parameters);
    let (output, _) = kernel::forward(&shape, &parameters.borrowed(), &values(up), false);
    ndarray_tensor(output, shape.output_dims())
}

/// What the backward step keeps from the forward pass.
#[derive(Clone, Debug)]
struct CoreState {
    shape: CoreShape,
    parameters: Arc<OwnedParameters>,
    /// The up-projection output (an ndarray tensor shares its buffer when cloned).
    up: NdArrayTensor,
    activations: Arc<Vec<SampleActivations>>,
}

/// The autodiff step of the fused core: parents are `up` and the parameter slots.
#[derive(Debug)]
struct CoreBackward;

const PARENT_COUNT: usize = PARAMETER_COUNT + 1;

impl Backward<Cpu, PARENT_COUNT> for CoreBackward {
    type State = CoreState;

    fn backward(
        self,
        ops: Ops<Self::State, PARENT_COUNT>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let state = ops.state;
        let shape = state.shape;
        let output_gradient = grads.consume::<Cpu>(&ops.node);
        let (up_gradient, gradients) = kernel::backward(
            &shape,
            &state.parameters.borrowed(),
            &values(&state.up),
            &state.activations,
            &values(&output_gradient),
        );
        let parameter_gradients = gradients.into_fields();
        let [up_parent, parameter_parents @ ..] = ops.parents;
        if let Some(node) = up_parent {
            let dims = vec![shape.batch, shape.tokens, 2 * shape.inner];
            grads.register::<Cpu>(node.id, ndarray_tensor(up_gradient, dims));
        }
        for (parent, gradient) in parameter_parents.into_iter().zip(parameter_gradients) {
            if let Some(node) = parent {
                let length = gradient.len();
                grads.register::<Cpu>(node.id, ndarray_tensor(gradient, vec![length]));
            }
        }
    }
}

type TrackedTensor = <CpuTrain as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// What stands for an absent optional parameter (a bias) in an operation's fixed-size parent
/// list: an untracked empty constant, which receives no gradient.
fn placeholder() -> TrackedTensor {
    TrackedTensor::new(ndarray_tensor(Vec::new(), vec![0]))
}

/// An operation on `(input, weight, optional bias)` in the autodiff graph, as the fused linear
/// and norm are: `forward` computes the output (and what else the backward step needs) from the
/// inner tensors, and `keep` builds the backward step's state from the input, the weight and
/// that extra, only when a gradient is wanted. An absent bias stands as a [`placeholder`].
fn affine_operation<Op, Extra>(
    operation: Op,
    input: TrackedTensor,
    weight: TrackedTensor,
    bias: Option<TrackedTensor>,
    forward: impl FnOnce(
        &NdArrayTensor,
        &NdArrayTensor,
        Option<&NdArrayTensor>,
    ) -> (NdArrayTensor, Extra),
    keep: impl FnOnce(NdArrayTensor, NdArrayTensor, Extra) -> Op::State,
) -> TrackedTensor
where
    Op: Backward<Cpu, 3>,
{
    let bias_node = match &bias {
        Some(bias) => bias.node.clone(),
        None => placeholder().node,
    };
    let nodes = [input.node.clone(), weight.node.clone(), bias_node];
    let (output, extra) = forward(
        &input.primitive,
        &weight.primitive,
        bias.as_ref().map(|bias| &bias.primitive),
    );
    match operation
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            prep.finish(keep(input.primitive, weight.primitive, extra), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

fn training(
    shape: CoreShape,
    up: TrackedTensor,
    parameters: [Option<TrackedTensor>; PARAMETER_COUNT],
) -> TrackedTensor {
    let mut nodes = vec![up.node.clone()];
    nodes.extend(parameters.iter().map(|parameter| match parameter {
        Some(tensor) => tensor.node.clone(),
        None => placeholder().node,
    }));
    let nodes: [_; PARENT_COUNT] = match nodes.try_into() {
        Ok(nodes) => nodes,
        Err(_) => unreachable!("one node per parent"),
    };
    let inner_parameters: [Option<NdArrayTensor>; PARAMETER_COUNT] =
        parameters.map(|parameter| parameter.map(|tensor| tensor.primitive));
    let owned_parameters = owned(&inner_parameters);
    let up_values = values(&up.primitive);
    let prepared = CoreBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful();
    match prepared {
        OpsKind::Tracked(prep) => {
            let (output, activations) =
                kernel::forward(&shape, &owned_parameters.borrowed(), &up_values, true);
            let state = CoreState {
                shape,
                parameters: Arc::new(owned_parameters),
                up: up.primitive.clone(),
                activations: Arc::new(activations),
            };
            prep.finish(state, ndarray_tensor(output, shape.output_dims()))
        }
        OpsKind::UnTracked(prep) => {
            let (output, _) =
                kernel::forward(&shape, &owned_parameters.borrowed(), &up_values, false);
            prep.finish(ndarray_tensor(output, shape.output_dims()))
        }
    }
}
