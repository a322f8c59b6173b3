//! `input · weight + bias` on the CPU backend as one autodiff operation whose three products
//! (forward, input gradient, weight gradient) are split over the rayon threads.
//!
//! burn-ndarray runs a 2-D matmul as a single `matrixmultiply` call on one thread (it threads
//! only over batch dimensions, and only with its `multi-threads` feature, whose GEMM threads
//! ignore rayon's pool), so the up- and down-projections of every ViL layer — about 60% of the
//! model's arithmetic — kept one core busy while the other waited. Here each product is cut into
//! blocks of [`CHUNK`] rows or columns of its output, whichever dimension is longer, and the
//! blocks run as rayon tasks. The cut depends on the shapes alone, never on the thread count, and
//! every output element is one block's sequential sum, so results are the same bits on one thread
//! or sixteen (which bit-identical resume relies on).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rayon::prelude::*;

use super::{
    Kernels, TrackedTensor, from_primitive, ndarray_tensor, placeholder, primitive, values,
};
use crate::backend::{Cpu, CpuTrain};

/// Rows (or columns) of the output per task: large enough that the packing of the shared
/// operand costs a few percent of the block's arithmetic, small enough that a `[192, 768]`
/// weight gradient still makes a dozen tasks.
const CHUNK: usize = 64;

/// `input [rows, in] · weight [in, out] (+ bias [out])`, burn's `Linear` layout. The CPU backend
/// (with or without autodiff) gets the threaded products; other backends, and
/// `VILAB_KERNELS=generic`, the burn ops.
pub fn linear<B: Backend>(
    input: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let [rows, _] = input.dims();
    let [_, columns] = weight.dims();
    if Kernels::from_environment() == Kernels::Fused {
        let id = std::any::TypeId::of::<B>();
        if id == std::any::TypeId::of::<Cpu>() {
            let input = primitive::<B, NdArrayTensor, 2>(input);
            let weight = primitive::<B, NdArrayTensor, 2>(weight);
            let bias = bias.map(primitive::<B, NdArrayTensor, 1>);
            let output = forward(&input, &weight, bias.as_ref());
            return from_primitive::<B, NdArrayTensor, 2>(output, [rows, columns]);
        }
        if id == std::any::TypeId::of::<CpuTrain>() {
            let input = primitive::<B, TrackedTensor, 2>(input);
            let weight = primitive::<B, TrackedTensor, 2>(weight);
            let bias = bias.map(primitive::<B, TrackedTensor, 1>);
            let output = training(input, weight, bias);
            return from_primitive::<B, TrackedTensor, 2>(output, [rows, columns]);
        }
    }
    let output = input.matmul(weight);
    match bias {
        Some(bias) => output + bias.unsqueeze::<2>(),
        None => output,
    }
}

/// A strided read-only matrix view: values, row stride, column stride.
type View<'a> = (&'a [f32], usize, usize);

/// A raw output pointer that the tasks of [`parallel_gemm`] share; each writes its own block.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);
impl SharedOutput {
    /// The pointer, through a method so that closures capture the whole `Sync` wrapper.
    fn pointer(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the tasks of `parallel_gemm` write disjoint blocks of the output, and the output slice
// outlives them (rayon's `for_each` returns only when every task has finished).
unsafe impl Send for SharedOutput {}
// SAFETY: as for `Send`: shared only among tasks that write disjoint blocks.
unsafe impl Sync for SharedOutput {}

/// `output = left [m, k] · right [k, n]` into a contiguous row-major `[m, n]` output, in blocks of
/// [`CHUNK`] output rows (when `m ≥ n`) or columns, one rayon task per block.
pub(super) fn parallel_gemm(
    [m, k, n]: [usize; 3],
    (left, left_rows, left_columns): View,
    (right, right_rows, right_columns): View,
    output: &mut [f32],
) {
    assert_eq!(output.len(), m * n, "the output is m × n");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        output.fill(0.0);
        return;
    }
    let last = |rows: usize, columns: usize, row_count: usize, column_count: usize| {
        (row_count - 1) * rows + (column_count - 1) * columns
    };
    assert!(last(left_rows, left_columns, m, k) < left.len());
    assert!(last(right_rows, right_columns, k, n) < right.len());
    let by_rows = m >= n;
    let blocks = if by_rows { m } else { n }.div_ceil(CHUNK);
    let shared = SharedOutput(output.as_mut_ptr());
    (0..blocks).into_par_iter().for_each(|block| {
        let start = block * CHUNK;
        let (rows, columns, left_offset, right_offset, output_offset) = if by_rows {
            let rows = CHUNK.min(m - start);
            (rows, n, start * left_rows, 0, start * n)
        } else {
            let columns = CHUNK.min(n - start);
            (m, columns, 0, start * right_columns, start)
        };
        // SAFETY: the asserts above bound every element of `left` and `right` that the full
        // product reads, and a block reads a subset; the block's output elements (its rows or
        // columns of the `m × n` output) lie inside `output` and no other block writes them.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                columns,
                1.0,
                left.as_ptr().add(left_offset),
                left_rows as isize,
                left_columns as isize,
                right.as_ptr().add(right_offset),
                right_rows as isize,
                right_columns as isize,
                0.0,
                shared.pointer().add(output_offset),
                n as isize,
                1,
            );
        }
    });
}

fn dims2(tensor: &NdArrayTensor) -> [usize; 2] {
    use burn::tensor::TensorMetadata;
    let shape = tensor.shape();
    [shape[0], shape[1]]
}

/// The forward product with the bias added.
fn forward(
    input: &NdArrayTensor,
    weight: &NdArrayTensor,
    bias: Option<&NdArrayTensor>,
) -> NdArrayTensor {
    let [rows, depth] = dims2(input);
    let [_, columns] = dims2(weight);
    let mut output = vec![0.0; rows * columns];
    parallel_gemm(
        [rows, depth, columns],
        (&values(input), depth, 1),
        (&values(weight), columns, 1),
        &mut output,
    );
    if let Some(bias) = bias {
        let bias = values(bias);
        output.par_chunks_mut(CHUNK * columns).for_each(|block| {
            for row in block.chunks_exact_mut(columns) {
                for (value, addend) in row.iter_mut().zip(bias.iter()) {
                    *value += addend;
                }
            }
        });
    }
    ndarray_tensor(output, vec![rows, columns])
}

/// What the backward step keeps: the input (for the weight gradient) and the weight (for the
/// input gradient); ndarray tensors share their buffers when cloned.
#[derive(Clone, Debug)]
struct LinearState {
    input: NdArrayTensor,
    weight: NdArrayTensor,
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Cpu, 3> for LinearBackward {
    type State = LinearState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let LinearState { input, weight } = ops.state;
        let [rows, depth] = dims2(&input);
        let [_, columns] = dims2(&weight);
        let output_gradient = grads.consume::<Cpu>(&ops.node);
        let output_gradient = values(&output_gradient);
        let [input_parent, weight_parent, bias_parent] = ops.parents;
        if let Some(node) = input_parent {
            // dX = dY · Wᵀ
            let mut gradient = vec![0.0; rows * depth];
            parallel_gemm(
                [rows, columns, depth],
                (&output_gradient, columns, 1),
                (&values(&weight), 1, columns),
                &mut gradient,
            );
            grads.register::<Cpu>(node.id, ndarray_tensor(gradient, vec![rows, depth]));
        }
        if let Some(node) = weight_parent {
            // dW = Xᵀ · dY
            let mut gradient = vec![0.0; depth * columns];
            parallel_gemm(
                [depth, rows, columns],
                (&values(&input), 1, depth),
                (&output_gradient, columns, 1),
                &mut gradient,
            );
            grads.register::<Cpu>(node.id, ndarray_tensor(gradient, vec![depth, columns]));
        }
        if let Some(node) = bias_parent {
            // db = Σ_rows dY, in row order.
            let mut gradient = vec![0.0; columns];
            for row in output_gradient.chunks_exact(columns) {
                for (sum, value) in gradient.iter_mut().zip(row) {
                    *sum += value;
                }
            }
            grads.register::<Cpu>(node.id, ndarray_tensor(gradient, vec![columns]));
        }
    }
}

fn training(
    input: TrackedTensor,
    weight: TrackedTensor,
    bias: Option<TrackedTensor>,
) -> TrackedTensor {
    let bias_node = match &bias {
        Some(bias) => bias.node.clone(),
        None => placeholder().node,
    };
    let nodes = [input.node.clone(), weight.node.clone(), bias_node];
    let output = forward(
        &input.primitive,
        &weight.primitive,
        bias.as_ref().map(|bias| &bias.primitive),
    );
    match LinearBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = LinearState {
                input: input.primitive,
                weight: weight.primitive,
            };
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
