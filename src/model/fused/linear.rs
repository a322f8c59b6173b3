//! `input · weight + bias` on the CPU backend as one autodiff operation whose three products
//! (forward, input gradient, weight gradient) are split over the rayon threads.
//!
//! burn-ndarray runs a 2-D matmul as a single `matrixmultiply` call on one thread (it threads
//! only over batch dimensions, and only with its `multi-threads` feature, whose GEMM threads
//! ignore rayon's pool), so the up- and down-projections of every ViL layer — about 60% of the
//! model's arithmetic — kept one core busy while the other waited. Here each product is cut along
//! the longer dimension of its output into two tasks per thread, and the tasks run on rayon.
//!
//! Each task is one call of the `gemm` crate on the calling thread (its AVX-512 kernels: on
//! `vil_tiny`'s projection shapes, 115–160 GFLOP/s on one core here against 80–125 for
//! `matrixmultiply`, which burn-ndarray uses). Every task packs the operand it shares with the
//! others, so the tasks are as few as balance allows: cut into fixed 64-row blocks instead, a
//! `vil_tiny` up-projection packed its weight 49 times (packing was 12.8% of a `vil_tiny` step
//! before this cut, 4.3% after).
//!
//! The results are the same bits on one thread or sixteen (which bit-identical resume relies on):
//! `gemm` splits the depth into blocks whose size depends only on the depth and the cache sizes,
//! never on how many rows or columns a task holds; it sums each output element over a depth block
//! in one chain of fused multiply-adds and adds the blocks' sums in order. The cuts only choose
//! which task computes an element, not the order of its sum (`tests/suite/model_fused_ops.rs`
//! checks 1, 2 and 3 threads).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rayon::prelude::*;

use super::{
    Kernels, TrackedTensor, affine_operation, from_primitive, matrix_shape, ndarray_tensor,
    primitive, values,
};
use crate::backend::{Cpu, CpuTrain};

/// The unit of the cut: tasks take whole multiples of this many rows (or columns).
const CHUNK: usize = 64;

/// Tasks per rayon thread: two, so that a thread held up elsewhere leaves work to steal.
const TASKS_PER_THREAD: usize = 2;

/// `input [.., in] · weight [in, out] (+ bias [out])` over the last axis of `input`, burn's
/// `Linear` layout. The CPU backend (with or without autodiff) gets the threaded products, with
/// the leading axes read as rows (no reshape, which would copy); other backends, and
/// `VILAB_KERNELS=generic`, the burn ops.
pub fn linear<B: Backend, const D: usize>(
    input: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let mut dims = input.dims();
    let [_, columns] = weight.dims();
    dims[D - 1] = columns;
    if Kernels::from_environment() == Kernels::Fused {
        let id = std::any::TypeId::of::<B>();
        if id == std::any::TypeId::of::<Cpu>() {
            let input = primitive::<B, NdArrayTensor, D>(input);
            let weight = primitive::<B, NdArrayTensor, 2>(weight);
            let bias = bias.map(primitive::<B, NdArrayTensor, 1>);
            let output = forward(&input, &weight, bias.as_ref());
            return from_primitive::<B, NdArrayTensor, D>(output, dims);
        }
        if id == std::any::TypeId::of::<CpuTrain>() {
            let input = primitive::<B, TrackedTensor, D>(input);
            let weight = primitive::<B, TrackedTensor, 2>(weight);
            let bias = bias.map(primitive::<B, TrackedTensor, 1>);
            let output = training(input, weight, bias);
            return from_primitive::<B, TrackedTensor, D>(output, dims);
        }
    }
    // A 2-D product, as before the rank was generic (a reshape is free on the GPU backends).
    let output = input.flatten::<2>(0, D - 2).matmul(weight);
    let output = match bias {
        Some(bias) => output + bias.unsqueeze::<2>(),
        None => output,
    };
    output.reshape(dims)
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

/// `left [m, k] · right [k, n]` as a new contiguous row-major `[m, n]` buffer, cut into
/// [`TASKS_PER_THREAD`] blocks of output rows (when `m ≥ n`) or columns per thread, each a
/// multiple of [`CHUNK`] long (the last one excepted), one rayon task per block.
///
/// The buffer is not zeroed first: gemm is told not to read its destination (its first depth
/// block stores, the later ones add to what the first stored), so each element is written by
/// the task that owns it. Zeroing it was a serial memset of up to 10 MB per product on the
/// calling thread while the other threads waited.
pub(super) fn parallel_gemm(
    [m, k, n]: [usize; 3],
    (left, left_rows, left_columns): View,
    (right, right_rows, right_columns): View,
) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut output: Vec<f32> = Vec::with_capacity(m * n);
    let last = |rows: usize, columns: usize, row_count: usize, column_count: usize| {
        (row_count - 1) * rows + (column_count - 1) * columns
    };
    assert!(last(left_rows, left_columns, m, k) < left.len());
    assert!(last(right_rows, right_columns, k, n) < right.len());
    let by_rows = m >= n;
    let long = if by_rows { m } else { n };
    let units = long.div_ceil(CHUNK);
    let tasks = units.min(TASKS_PER_THREAD * rayon::current_num_threads());
    let block_length = units.div_ceil(tasks) * CHUNK;
    let blocks = long.div_ceil(block_length);
    let shared = SharedOutput(output.as_mut_ptr());
    (0..blocks).into_par_iter().for_each(|block| {
        let start = block * block_length;
        let (rows, columns, left_offset, right_offset, output_offset) = if by_rows {
            let rows = block_length.min(m - start);
            (rows, n, start * left_rows, 0, start * n)
        } else {
            let columns = block_length.min(n - start);
            (m, columns, 0, start * right_columns, start)
        };
        // SAFETY: the asserts above bound every element of `left` and `right` that the full
        // product reads, and a block reads a subset; the block's output elements (its rows or
        // columns of the `m × n` output) lie inside `output` and no other block writes them.
        unsafe {
            // gemm computes `dst = α·dst + β·lhs·rhs` (dst not read here), column strides first.
            gemm::gemm(
                rows,
                columns,
                k,
                shared.pointer().add(output_offset),
                1,
                n as isize,
                false,
                left.as_ptr().add(left_offset),
                left_columns as isize,
                left_rows as isize,
                right.as_ptr().add(right_offset),
                right_columns as isize,
                right_rows as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    // SAFETY: the blocks cover every row (or every column) of the `m × n` output, and gemm,
    // told not to read its destination, wrote each of their elements.
    unsafe { output.set_len(m * n) };
    output
}

/// The forward product with the bias added, shaped as `input` with its last axis `out` wide.
fn forward(
    input: &NdArrayTensor,
    weight: &NdArrayTensor,
    bias: Option<&NdArrayTensor>,
) -> NdArrayTensor {
    let (mut shape, [rows, depth]) = matrix_shape(input);
    let (_, [_, columns]) = matrix_shape(weight);
    let mut output = parallel_gemm(
        [rows, depth, columns],
        (&values(input), depth, 1),
        (&values(weight), columns, 1),
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
    if let Some(last) = shape.last_mut() {
        *last = columns;
    }
    ndarray_tensor(output, shape)
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
        let (input_shape, [rows, depth]) = matrix_shape(&input);
        let (_, [_, columns]) = matrix_shape(&weight);
        let output_gradient = grads.consume::<Cpu>(&ops.node);
        let output_gradient = values(&output_gradient);
        let [input_parent, weight_parent, bias_parent] = ops.parents;
        if let Some(node) = input_parent {
            // dX = dY · Wᵀ
            let gradient = parallel_gemm(
                [rows, columns, depth],
                (&output_gradient, columns, 1),
                (&values(&weight), 1, columns),
            );
            grads.register::<Cpu>(node.id, ndarray_tensor(gradient, input_shape));
        }
        if let Some(node) = weight_parent {
            // dW = Xᵀ · dY
            let gradient = parallel_gemm(
                [depth, rows, columns],
                (&values(&input), 1, depth),
                (&output_gradient, columns, 1),
            );
            grads.register::<Cpu>(node.id, ndarray_tensor(gradient, vec![depth, columns]));
        }
        if let Some(node) = bias_parent {
            // db = Σ_rows dY: per block of CHUNK rows in parallel, then the blocks in order
            // (the same bits for any thread count).
            let partial: Vec<Vec<f32>> = output_gradient
                .par_chunks(CHUNK * columns)
                .map(|block| {
                    let mut sum = vec![0.0; columns];
                    for row in block.chunks_exact(columns) {
                        for (sum, value) in sum.iter_mut().zip(row) {
                            *sum += value;
                        }
                    }
                    sum
                })
                .collect();
            let mut gradient = vec![0.0; columns];
            for block in &partial {
                for (sum, value) in gradient.iter_mut().zip(block) {
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
    affine_operation(
        LinearBackward,
        input,
        weight,
        bias,
        |input, weight, bias| (forward(input, weight, bias), ()),
        |input, weight, ()| LinearState { input, weight },
    )
}
