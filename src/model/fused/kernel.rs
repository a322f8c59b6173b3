//! The core of one ViL layer (equations L2–L7 of VIL_SPEC: convolution, SiLU, block-diagonal
//! q/k/v, gates, the stabilised parallel mLSTM, the per-head norm, the learnable skip and the
//! output gate) as one forward and one hand-derived backward pass over plain `f32` slices.
//!
//! Written as burn ops, this part of the layer is ~60 small tensor operations forward and twice
//! that backward, each a pass over memory with a fresh allocation, which on the ndarray backend
//! costs far more than the arithmetic. Here every sample is one task (rayon over the batch), the
//! matrix products (four per head, the gates and their gradients) go to the `gemm` crate (with
//! its AVX-512 kernels; on these small products it made a `vil_tiny` step a few percent faster
//! than `matrixmultiply`, which packs both operands on every call), and everything else is a
//! loop over data that is already in cache.
//!
//! Those loops run over equally long slices (no indexing inside, no branches but selects, sums
//! over [`LANES`] partial sums instead of one chain), so that they compile to vector code: written
//! as indexed scalar loops they took ~39% of a `vil_tiny` training step. The per-sample passes are
//! compiled three times, portable, for AVX2 and for AVX-512, and the widest the processor has is
//! chosen at run time. All three perform the same IEEE operations in the same order (Rust never
//! fuses a multiply and an add on its own), so they give the same bits; a test holds them to it.
//!
//! The arithmetic follows the generic burn version in `mlstm.rs`/`layers.rs`/`block.rs` operation
//! by operation (same stabiliser, same TwoSum rounding term, same capped SiLU, the gradient of
//! `max` going to the first maximal element), so both agree to float rounding; the tests in
//! `tests/suite/model_fused.rs` hold them to that.
//!
//! Token order: a layer that reads the sequence from the bottom right flips it before and after
//! (`block.rs`). Everything here works on the *logical* sequence and maps logical token `t` to
//! row `S−1−t` when `reverse` is set, so no flipped copy is ever made.

/// ε of the per-head norm (the official `MultiHeadLayerNorm`).
const NORM_EPSILON: f32 = 1e-5;
/// ε added to the normaliser, M7.
const NORMALISER_EPSILON: f32 = 1e-6;
/// Lower bound of the stabiliser in `exp(−m)`, as in `mlstm.rs`.
const STABILISER_FLOOR: f32 = -60.0;
/// SiLU's exponent cap, as in `layers::silu`.
const SILU_EXPONENT_CAP: f32 = 40.0;

/// The convolution in front of q and k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convolution {
    /// Causal depthwise 1-D over the token axis (v1), `kernel` taps.
    Causal { kernel: usize },
    /// Depthwise 2-D over the row-major `height × width` patch grid, "same" padding (v2).
    Grid {
        kernel: usize,
        height: usize,
        width: usize,
    },
}

impl Convolution {
    /// Weights per channel.
    pub fn taps(&self) -> usize {
        match *self {
            Self::Causal { kernel } => kernel,
            Self::Grid { kernel, .. } => kernel * kernel,
        }
    }

    /// Calls `visit(tap, source_token)` for every tap of output token `token` whose source lies
    /// inside the sequence (the zero padding contributes nothing).
    #[inline(always)]
    fn for_each_source(&self, token: usize, mut visit: impl FnMut(usize, usize)) {
        match *self {
            Self::Causal { kernel } => {
                // Tap j reads the token kernel−1−j steps back.
                for tap in 0..kernel {
                    if let Some(source) = (token + tap).checked_sub(kernel - 1) {
                        visit(tap, source);
                    }
                }
            }
            Self::Grid {
                kernel,
                height,
                width,
            } => {
                let pad = kernel / 2;
                let (row, column) = (token / width, token % width);
                for tap_row in 0..kernel {
                    let Some(source_row) = (row + tap_row).checked_sub(pad) else {
                        continue;
                    };
                    if source_row >= height {
                        continue;
                    }
                    for tap_column in 0..kernel {
                        let Some(source_column) = (column + tap_column).checked_sub(pad) else {
                            continue;
                        };
                        if source_column >= width {
                            continue;
                        }
                        visit(
                            tap_row * kernel + tap_column,
                            source_row * width + source_column,
                        );
                    }
                }
            }
        }
    }
}

/// Sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreShape {
    pub batch: usize,
    pub tokens: usize,
    /// E, the inner width (twice the embedding width in ViL).
    pub inner: usize,
    pub heads: usize,
    /// Width of the blocks of the block-diagonal q/k/v projections.
    pub block: usize,
    pub convolution: Convolution,
    /// Read the sequence from its last row (a `FromBottomRight` layer).
    pub reverse: bool,
}

impl CoreShape {
    /// The shape of the core's output, `[batch, tokens, E]`.
    pub fn output_dims(&self) -> Vec<usize> {
        vec![self.batch, self.tokens, self.inner]
    }

    fn head_dim(&self) -> usize {
        self.inner / self.heads
    }

    /// The row of `up`/the output that holds logical token `token`.
    #[inline]
    fn row(&self, token: usize) -> usize {
        if self.reverse {
            self.tokens - 1 - token
        } else {
            token
        }
    }
}

/// The layer's parameters inside the core, with the official layouts:
/// convolution `[E, taps]`, block-diagonal `[E/block, out, in]`, gates `[3E, heads]` (rows: q, k,
/// v) plus `[heads]`, norm and skip `[E]`.
#[derive(Clone, Copy, Debug)]
pub struct CoreParams<'a> {
    pub conv_weight: &'a [f32],
    pub conv_bias: &'a [f32],
    pub query_weight: &'a [f32],
    pub key_weight: &'a [f32],
    pub value_weight: &'a [f32],
    pub query_bias: Option<&'a [f32]>,
    pub key_bias: Option<&'a [f32]>,
    pub value_bias: Option<&'a [f32]>,
    pub input_gate_weight: &'a [f32],
    pub input_gate_bias: &'a [f32],
    pub forget_gate_weight: &'a [f32],
    pub forget_gate_bias: &'a [f32],
    pub norm_weight: &'a [f32],
    pub norm_bias: Option<&'a [f32]>,
    pub skip: &'a [f32],
}

/// Gradients of [`CoreParams`], same layouts; the optional biases are empty when absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoreGradients {
    pub conv_weight: Vec<f32>,
    pub conv_bias: Vec<f32>,
    pub query_weight: Vec<f32>,
    pub key_weight: Vec<f32>,
    pub value_weight: Vec<f32>,
    pub query_bias: Vec<f32>,
    pub key_bias: Vec<f32>,
    pub value_bias: Vec<f32>,
    pub input_gate_weight: Vec<f32>,
    pub input_gate_bias: Vec<f32>,
    pub forget_gate_weight: Vec<f32>,
    pub forget_gate_bias: Vec<f32>,
    pub norm_weight: Vec<f32>,
    pub norm_bias: Vec<f32>,
    pub skip: Vec<f32>,
}

impl CoreGradients {
    fn zeros(shape: &CoreShape, params: &CoreParams) -> Self {
        let sized = |present: bool, length: usize| vec![0.0; if present { length } else { 0 }];
        Self {
            conv_weight: vec![0.0; params.conv_weight.len()],
            conv_bias: vec![0.0; shape.inner],
            query_weight: vec![0.0; params.query_weight.len()],
            key_weight: vec![0.0; params.key_weight.len()],
            value_weight: vec![0.0; params.value_weight.len()],
            query_bias: sized(params.query_bias.is_some(), shape.inner),
            key_bias: sized(params.key_bias.is_some(), shape.inner),
            value_bias: sized(params.value_bias.is_some(), shape.inner),
            input_gate_weight: vec![0.0; params.input_gate_weight.len()],
            input_gate_bias: vec![0.0; shape.heads],
            forget_gate_weight: vec![0.0; params.forget_gate_weight.len()],
            forget_gate_bias: vec![0.0; shape.heads],
            norm_weight: vec![0.0; shape.inner],
            norm_bias: sized(params.norm_bias.is_some(), shape.inner),
            skip: vec![0.0; shape.inner],
        }
    }

    /// The gradients in the order of the parameter slots (`fused::PARAMETER_NAMES`), which is
    /// the order of [`CoreGradients::fields_mut`].
    pub fn into_fields(mut self) -> [Vec<f32>; 15] {
        self.fields_mut().map(std::mem::take)
    }

    fn fields_mut(&mut self) -> [&mut Vec<f32>; 15] {
        [
            &mut self.conv_weight,
            &mut self.conv_bias,
            &mut self.query_weight,
            &mut self.key_weight,
            &mut self.value_weight,
            &mut self.query_bias,
            &mut self.key_bias,
            &mut self.value_bias,
            &mut self.input_gate_weight,
            &mut self.input_gate_bias,
            &mut self.forget_gate_weight,
            &mut self.forget_gate_bias,
            &mut self.norm_weight,
            &mut self.norm_bias,
            &mut self.skip,
        ]
    }

    fn add(mut self, mut other: Self) -> Self {
        for (mine, theirs) in self.fields_mut().into_iter().zip(other.fields_mut()) {
            for (value, addend) in mine.iter_mut().zip(theirs.iter()) {
                *value += addend;
            }
        }
        self
    }
}

/// What the backward pass needs from the forward pass of one sample, in logical token order.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleActivations {
    /// Convolution output before the SiLU, and the SiLU factors of it and of the output gate,
    /// `[S, E]` each.
    conv: Vec<f32>,
    conv_factor: Vec<f32>,
    gate_factor: Vec<f32>,
    /// `[q ‖ k ‖ v]` per token, `[S, 3E]`.
    qkv: Vec<f32>,
    /// Gate pre-activations, `[S, 2H]`: input gates then forget gates.
    gates: Vec<f32>,
    /// Per head `[H, S]`: cumulative log forget gate F, its rounding error and the normaliser
    /// n + ε. (The decay matrix and its row maxima are recomputed, which is cheaper than keeping
    /// S² values per head.)
    cumulative: Vec<f32>,
    rounding: Vec<f32>,
    normaliser: Vec<f32>,
    /// Cell output before the per-head norm, `[S, E]`.
    hidden: Vec<f32>,
    /// Per token and head `[S, H]`: mean and 1/σ of the norm.
    norm_mean: Vec<f32>,
    norm_inverse_std: Vec<f32>,
}

/// The forward pass. `up` is the up-projection output `[B, S, 2E]` (the mLSTM branch, then the
/// output gate z); returns the core output `[B, S, E]` (before the down-projection) and, when
/// `keep` is set, what the backward pass needs.
pub fn forward(
    shape: &CoreShape,
    params: &CoreParams,
    up: &[f32],
    keep: bool,
) -> (Vec<f32>, Vec<SampleActivations>) {
    let sample_size = shape.tokens * shape.inner;
    assert_eq!(
        up.len(),
        shape.batch * 2 * sample_size,
        "up has the wrong size"
    );
    let layouts = Layouts::new(shape, params);
    let (forward_sample, _) = passes();
    let (output, activations) =
        super::zeroed_pieces(shape.batch * sample_size, sample_size, |sample, output| {
            let up = &up[sample * 2 * sample_size..(sample + 1) * 2 * sample_size];
            // SAFETY: `passes` picks a build this processor supports.
            let activations = unsafe { forward_sample(shape, params, &layouts, up, output) };
            keep.then_some(activations)
        });
    (output, activations.into_iter().flatten().collect())
}

/// The backward pass: from the gradient of the core output `[B, S, E]`, the gradient of `up`
/// `[B, S, 2E]` and of every parameter (summed over the batch).
pub fn backward(
    shape: &CoreShape,
    params: &CoreParams,
    up: &[f32],
    activations: &[SampleActivations],
    output_gradient: &[f32],
) -> (Vec<f32>, CoreGradients) {
    let sample_size = shape.tokens * shape.inner;
    assert_eq!(
        activations.len(),
        shape.batch,
        "one activation set per sample"
    );
    assert_eq!(output_gradient.len(), shape.batch * sample_size);
    let layouts = Layouts::new(shape, params);
    // One gradient set per sample, summed in sample order afterwards: the result is then the
    // same bits whatever the thread count or work stealing, which bit-identical resume (and
    // equal results from differently sized machines) depends on.
    let (_, backward_sample) = passes();
    let (up_gradient, per_sample) = super::zeroed_pieces(
        shape.batch * 2 * sample_size,
        2 * sample_size,
        |sample, up_gradient| {
            let mut gradients = CoreGradients::zeros(shape, params);
            let range = sample * 2 * sample_size..(sample + 1) * 2 * sample_size;
            // SAFETY: `passes` picks a build this processor supports.
            unsafe {
                backward_sample(
                    shape,
                    params,
                    &layouts,
                    &up[range],
                    &activations[sample],
                    &output_gradient[sample * sample_size..(sample + 1) * sample_size],
                    up_gradient,
                    &mut gradients,
                );
            }
            gradients
        },
    );
    let gradients = per_sample
        .into_iter()
        .reduce(CoreGradients::add)
        .unwrap_or_else(|| CoreGradients::zeros(shape, params));
    (up_gradient, gradients)
}

/// The factor `r = 1 / (1 + e^{min(−x, 40)})` of the capped SiLU of `layers::silu`, which is
/// `x·r`; kept from the forward pass, it gives the derivative without another `exp`.
#[inline(always)]
fn silu_factor(input: f32) -> f32 {
    1.0 / (exp((-input).min(SILU_EXPONENT_CAP)) + 1.0)
}

/// Derivative of the capped SiLU at `input` from its [`silu_factor`] `r`, as autodiff takes it
/// through the formula: `r + x·r·(1 − r)`, the second term only where the cap is not active.
#[inline(always)]
fn silu_derivative(input: f32, factor: f32) -> f32 {
    if -input < SILU_EXPONENT_CAP {
        factor + input * factor * (1.0 - factor)
    } else {
        factor
    }
}

/// The parameters in the layouts the per-sample passes read, made once per call (not per sample).
struct Layouts {
    /// Both gates' weights as `[2H, 3E]` rows (see [`transposed_gate_weights`]).
    gate_weights: Vec<f32>,
    /// Both gates' biases, `[2H]`: input gates, then forget gates.
    gate_bias: Vec<f32>,
    /// The convolution weights as `[taps, E]` rows (see [`transposed_taps`]).
    tap_weights: Vec<f32>,
    /// The per-head norm's scale and shift per channel (see [`norm_affine`]).
    norm_scale: Vec<f32>,
    norm_shift: Vec<f32>,
}

impl Layouts {
    fn new(shape: &CoreShape, params: &CoreParams) -> Self {
        let (norm_scale, norm_shift) = norm_affine(params, shape.inner);
        Self {
            gate_weights: transposed_gate_weights(shape, params),
            gate_bias: params
                .input_gate_bias
                .iter()
                .chain(params.forget_gate_bias)
                .copied()
                .collect(),
            tap_weights: transposed_taps(shape, params),
            norm_scale,
            norm_shift,
        }
    }
}

/// Both gates' weights as `[2H, 3E]` rows (input gates, then forget gates), so that the gate products read
/// them as one matrix.
fn transposed_gate_weights(shape: &CoreShape, params: &CoreParams) -> Vec<f32> {
    let heads = shape.heads;
    let width = 3 * shape.inner;
    let mut transposed = vec![0.0; 2 * heads * width];
    for (gate, row) in transposed.chunks_exact_mut(width).enumerate() {
        let (weight, head) = if gate < heads {
            (params.input_gate_weight, gate)
        } else {
            (params.forget_gate_weight, gate - heads)
        };
        for (feature, value) in row.iter_mut().enumerate() {
            *value = weight[feature * heads + head];
        }
    }
    transposed
}

/// The convolution weights as `[taps, E]` rows, so that each tap is a contiguous pass over the
/// channels.
fn transposed_taps(shape: &CoreShape, params: &CoreParams) -> Vec<f32> {
    let taps = shape.convolution.taps();
    let mut transposed = vec![0.0; taps * shape.inner];
    for (tap, row) in transposed.chunks_exact_mut(shape.inner).enumerate() {
        for (channel, value) in row.iter_mut().enumerate() {
            *value = params.conv_weight[channel * taps + tap];
        }
    }
    transposed
}

/// Partial sums per reduction: sixteen independent chains (one AVX-512 register, two AVX2 ones),
/// so that a sum is neither one long chain of dependent additions nor bound to a vector width;
/// every build and processor sums in the same order, so all give the same bits.
const LANES: usize = 16;

/// `Σ a_i b_i` with [`LANES`] partial sums, so that the loop vectorises.
#[inline(always)]
fn dot(left: &[f32], right: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let left_chunks = left.chunks_exact(LANES);
    let right_chunks = right.chunks_exact(LANES);
    let tail: f32 = left_chunks
        .remainder()
        .iter()
        .zip(right_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in left_chunks.zip(right_chunks) {
        for lane in 0..LANES {
            lanes[lane] += a[lane] * b[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a_i` with the same partial sums as [`dot`], so that `sum_lanes` of a product row and
/// `dot` of its two factors give the same bits (the forward pass sums C = P ⊙ D', the backward
/// pass forms the same sum from P and D').
#[inline(always)]
fn sum_lanes(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for lane in 0..LANES {
            lanes[lane] += chunk[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The largest of `values` (NaNs ignored) and the index of its first occurrence, where the
/// gradient of `max` goes; `(−∞, 0)` when there is none. The maximum is taken over [`LANES`]
/// lanes (a maximum does not round, so the order does not matter), then the first chunk that
/// holds it is searched.
#[inline(always)]
fn first_maximum(values: &[f32]) -> (f32, usize) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let mut maximum = f32::NEG_INFINITY;
    for &value in chunks.remainder() {
        if value > maximum {
            maximum = value;
        }
    }
    for chunk in chunks {
        for lane in 0..LANES {
            if chunk[lane] > lanes[lane] {
                lanes[lane] = chunk[lane];
            }
        }
    }
    for lane in lanes {
        if lane > maximum {
            maximum = lane;
        }
    }
    let mut start = 0;
    for chunk in values.chunks(LANES) {
        let found = chunk
            .iter()
            .fold(false, |found, &value| found | (value == maximum));
        if found {
            let offset = chunk.iter().position(|&value| value == maximum);
            return (maximum, start + offset.unwrap_or(0));
        }
        start += chunk.len();
    }
    (maximum, 0)
}

/// `e^x` to within 2 ulp of libm's `expf`, written so that a loop of it vectorises: libm's
/// `expf` is a call per element, and the decay matrix and the SiLU factors take over 200,000 of
/// them per `vil_tiny` sample and layer forward, 6–7% of a training step.
/// `x = n·ln 2 + r` with |r| ≤ ln 2 / 2, `e^r` by its Taylor series to r⁷ (relative error below
/// 1e-8 there), then `2^n` put into the exponent bits. Below −87.3, where `e^x` leaves the normal
/// range, the result is 0 (libm's would be a subnormal or 0); above 88 it is `e^88` (the callers
/// pass values ≤ 40); NaN stays NaN.
#[inline(always)]
fn exp(input: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HIGH is exact for the n that occur (|n| ≤ 128).
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = input.clamp(-87.3, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n as an integer from the low bits of `shifted` (an `as` conversion saturates, with branches
    // that keep the loop from vectorising).
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    let scale = f32::from_bits(exponent << 23);
    if input < -87.3 { 0.0 } else { p * scale }
}

/// `log σ(x)` without overflow.
#[inline]
fn log_sigmoid(input: f32) -> f32 {
    -((-input.abs()).exp().ln_1p()) + input.min(0.0)
}

/// `σ(x)`.
#[inline]
fn sigmoid(input: f32) -> f32 {
    1.0 / (1.0 + (-input).exp())
}

/// `C = α·A·B + β·C` on strided row-major views (the `gemm` crate, on the calling thread).
#[allow(clippy::too_many_arguments)]
fn gemm(
    [rows, depth, columns]: [usize; 3],
    alpha: f32,
    (left, left_row_stride, left_column_stride): (&[f32], usize, usize),
    (right, right_row_stride, right_column_stride): (&[f32], usize, usize),
    beta: f32,
    (output, output_row_stride, output_column_stride): (&mut [f32], usize, usize),
) {
    let last = |row_stride: usize, column_stride: usize, row_count: usize, column_count: usize| {
        (row_count - 1) * row_stride + (column_count - 1) * column_stride
    };
    if rows == 0 || columns == 0 {
        return;
    }
    assert!(depth == 0 || last(left_row_stride, left_column_stride, rows, depth) < left.len());
    assert!(
        depth == 0 || last(right_row_stride, right_column_stride, depth, columns) < right.len()
    );
    assert!(last(output_row_stride, output_column_stride, rows, columns) < output.len());
    // SAFETY: the asserts above keep every index the product touches inside the three slices,
    // and `output` is borrowed mutably, so it cannot alias the inputs.
    unsafe {
        // gemm computes `dst = α·dst + β·lhs·rhs` (reading dst only when asked), column strides
        // first.
        gemm::gemm(
            rows,
            columns,
            depth,
            output.as_mut_ptr(),
            output_column_stride as isize,
            output_row_stride as isize,
            beta != 0.0,
            left.as_ptr(),
            left_column_stride as isize,
            left_row_stride as isize,
            right.as_ptr(),
            right_column_stride as isize,
            right_row_stride as isize,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Rows per block of the triangular products below.
const TRIANGLE_BLOCK: usize = 32;

/// `output = α·left·right` computed by blocks of `TRIANGLE_BLOCK` output rows, where `block`
/// says, for the rows starting at `start`, which part of the depth axis contributes and how
/// many output columns are needed; a triangular operand or output then costs about half.
fn gemm_row_blocks(
    tokens: usize,
    alpha: f32,
    (left, left_row_stride, left_column_stride): (&[f32], usize, usize),
    (right, right_row_stride, right_column_stride): (&[f32], usize, usize),
    (output, output_row_stride, output_column_stride): (&mut [f32], usize, usize),
    block: impl Fn(usize, usize) -> (std::ops::Range<usize>, usize),
) {
    for start in (0..tokens).step_by(TRIANGLE_BLOCK) {
        let rows = TRIANGLE_BLOCK.min(tokens - start);
        let (depth, columns) = block(start, rows);
        gemm(
            [rows, depth.len(), columns],
            alpha,
            (
                &left[start * left_row_stride + depth.start * left_column_stride..],
                left_row_stride,
                left_column_stride,
            ),
            (
                &right[depth.start * right_row_stride..],
                right_row_stride,
                right_column_stride,
            ),
            0.0,
            (
                &mut output[start * output_row_stride..],
                output_row_stride,
                output_column_stride,
            ),
        );
    }
}

/// `output = α·left·right` where only the lower triangle of the `tokens × tokens` output is
/// needed (the causal part of M3–M5): each block of rows stops at the block's last column.
/// Entries right of that are left as they were.
fn gemm_lower_output(
    [tokens, depth]: [usize; 2],
    alpha: f32,
    left: (&[f32], usize, usize),
    right: (&[f32], usize, usize),
    output: (&mut [f32], usize, usize),
) {
    gemm_row_blocks(tokens, alpha, left, right, output, |start, rows| {
        (0..depth, start + rows)
    });
}

/// `output = α·L·right` for a lower-triangular `tokens × tokens` L (zero above the diagonal):
/// each block of rows reads L's columns only up to the block's end.
fn gemm_lower_left(
    [tokens, columns]: [usize; 2],
    alpha: f32,
    lower: (&[f32], usize, usize),
    right: (&[f32], usize, usize),
    output: (&mut [f32], usize, usize),
) {
    gemm_row_blocks(tokens, alpha, lower, right, output, |start, rows| {
        (0..start + rows, columns)
    });
}

/// `output = α·U·right` for an upper-triangular `tokens × tokens` U (the transpose of a lower
/// one, given as a strided view): each block of rows reads U's columns, and `right`'s rows, only
/// from the block's start on.
fn gemm_upper_left(
    [tokens, columns]: [usize; 2],
    alpha: f32,
    upper: (&[f32], usize, usize),
    right: (&[f32], usize, usize),
    output: (&mut [f32], usize, usize),
) {
    gemm_row_blocks(tokens, alpha, upper, right, output, |start, _| {
        (start..tokens, columns)
    });
}

/// `output[t, blk·s + o] = Σ_d weight[blk, o, d] · input[t, blk·s + d] (+ bias)`, writing into the
/// `width`-strided rows of `output` starting at column `offset`.
#[inline(always)]
fn block_diagonal(
    shape: &CoreShape,
    weight: &[f32],
    bias: Option<&[f32]>,
    input: (&[f32], usize, usize),
    output: (&mut [f32], usize, usize),
) {
    match shape.block {
        // ViL's block size: a fixed-size loop the compiler unrolls into vector code.
        4 => block_diagonal_sized::<4>(shape, weight, bias, input, output),
        _ => block_diagonal_any(shape, weight, bias, input, output),
    }
}

#[inline(always)]
fn block_diagonal_sized<const SIZE: usize>(
    shape: &CoreShape,
    weight: &[f32],
    bias: Option<&[f32]>,
    (input, input_stride, input_offset): (&[f32], usize, usize),
    (output, output_stride, output_offset): (&mut [f32], usize, usize),
) {
    // Column c of every block's matrix side by side (`columns[c][b·SIZE + r] = W_b[r][c]`), so
    // that adding column c's share to a whole row is one contiguous multiply-add with the input
    // spread over its block (`spread[b·SIZE + r] = x[b·SIZE + c]`); the sums run in the same
    // order as the textbook loop.
    let inner = shape.inner;
    let columns = side_by_side::<SIZE>(weight, inner, true);
    let mut spread = vec![0.0f32; inner];
    for token in 0..shape.tokens {
        let source = &input[token * input_stride + input_offset..][..inner];
        let target = &mut output[token * output_stride + output_offset..][..inner];
        match bias {
            Some(bias) => target.copy_from_slice(&bias[..inner]),
            None => target.fill(0.0),
        }
        for column in 0..SIZE {
            spread_lane::<SIZE>(source, column, &mut spread);
            let weights = &columns[column * inner..][..inner];
            for ((value, &input), &weight) in target.iter_mut().zip(&spread).zip(weights) {
                *value += input * weight;
            }
        }
    }
}

/// The `SIZE × SIZE` blocks of a block-diagonal weight (`[blocks, SIZE, SIZE]`, row-major) laid
/// out as `SIZE` rows of length `inner`: row r holds every block's row r when `transposed` is
/// false, every block's column r when it is true.
#[inline(always)]
fn side_by_side<const SIZE: usize>(weight: &[f32], inner: usize, transposed: bool) -> Vec<f32> {
    let mut rows = vec![0.0f32; SIZE * inner];
    for block in 0..inner / SIZE {
        for row in 0..SIZE {
            for column in 0..SIZE {
                let (line, place) = if transposed {
                    (column, row)
                } else {
                    (row, column)
                };
                rows[line * inner + block * SIZE + place] =
                    weight[block * SIZE * SIZE + row * SIZE + column];
            }
        }
    }
    rows
}

/// `target[b·SIZE + i] = source[b·SIZE + lane]` for every block b and every i.
#[inline(always)]
fn spread_lane<const SIZE: usize>(source: &[f32], lane: usize, target: &mut [f32]) {
    for (target, source) in target.chunks_exact_mut(SIZE).zip(source.chunks_exact(SIZE)) {
        let value = source[lane];
        for slot in target.iter_mut() {
            *slot = value;
        }
    }
}

#[inline(always)]
fn block_diagonal_any(
    shape: &CoreShape,
    weight: &[f32],
    bias: Option<&[f32]>,
    (input, input_stride, input_offset): (&[f32], usize, usize),
    (output, output_stride, output_offset): (&mut [f32], usize, usize),
) {
    let size = shape.block;
    for token in 0..shape.tokens {
        let source = &input[token * input_stride + input_offset..][..shape.inner];
        let target = &mut output[token * output_stride + output_offset..][..shape.inner];
        for (block, (target, source)) in target
            .chunks_exact_mut(size)
            .zip(source.chunks_exact(size))
            .enumerate()
        {
            let matrix = &weight[block * size * size..(block + 1) * size * size];
            for (row, value) in target.iter_mut().enumerate() {
                let mut sum = 0.0;
                for (weight, input) in matrix[row * size..(row + 1) * size].iter().zip(source) {
                    sum += weight * input;
                }
                *value = sum + bias.map_or(0.0, |bias| bias[block * size + row]);
            }
        }
    }
}

/// Backward of [`block_diagonal`]: accumulates the weight (and bias) gradient and adds the input
/// gradient into `input_gradient` (`[S, E]`).
#[inline(always)]
fn block_diagonal_backward(
    shape: &CoreShape,
    weight: &[f32],
    input: &[f32],
    output_gradient: (&[f32], usize, usize),
    weight_gradient: &mut [f32],
    bias_gradient: &mut [f32],
    input_gradient: &mut [f32],
) {
    match shape.block {
        4 => block_diagonal_backward_sized::<4>(
            shape,
            weight,
            input,
            output_gradient,
            weight_gradient,
            bias_gradient,
            input_gradient,
        ),
        _ => block_diagonal_backward_any(
            shape,
            weight,
            input,
            output_gradient,
            weight_gradient,
            bias_gradient,
            input_gradient,
        ),
    }
}

#[inline(always)]
fn block_diagonal_backward_sized<const SIZE: usize>(
    shape: &CoreShape,
    weight: &[f32],
    input: &[f32],
    (output_gradient, stride, offset): (&[f32], usize, usize),
    weight_gradient: &mut [f32],
    bias_gradient: &mut [f32],
    input_gradient: &mut [f32],
) {
    // Row r of every block side by side, for the weights and their gradient, and the output
    // gradient's lane r spread over its block: each row r is then two contiguous multiply-adds
    // over the whole token (dW_r += spread·x, dx += spread·W_r), in the textbook loop's order.
    let inner = shape.inner;
    let rows = side_by_side::<SIZE>(weight, inner, false);
    let mut row_gradients = vec![0.0f32; SIZE * inner];
    let mut spread = vec![0.0f32; inner];
    for token in 0..shape.tokens {
        let gradient = &output_gradient[token * stride + offset..][..inner];
        let source = &input[token * inner..][..inner];
        let source_gradient = &mut input_gradient[token * inner..][..inner];
        if !bias_gradient.is_empty() {
            for (bias, value) in bias_gradient.iter_mut().zip(gradient) {
                *bias += value;
            }
        }
        for row in 0..SIZE {
            spread_lane::<SIZE>(gradient, row, &mut spread);
            let weights = &rows[row * inner..][..inner];
            let weight_gradients = &mut row_gradients[row * inner..][..inner];
            for (((weight_gradient, source_gradient), (&value, &input)), &weight) in
                weight_gradients
                    .iter_mut()
                    .zip(source_gradient.iter_mut())
                    .zip(spread.iter().zip(source))
                    .zip(weights)
            {
                *weight_gradient += value * input;
                *source_gradient += value * weight;
            }
        }
    }
    for block in 0..inner / SIZE {
        for row in 0..SIZE {
            for column in 0..SIZE {
                weight_gradient[block * SIZE * SIZE + row * SIZE + column] +=
                    row_gradients[row * inner + block * SIZE + column];
            }
        }
    }
}

#[inline(always)]
fn block_diagonal_backward_any(
    shape: &CoreShape,
    weight: &[f32],
    input: &[f32],
    (output_gradient, stride, offset): (&[f32], usize, usize),
    weight_gradient: &mut [f32],
    bias_gradient: &mut [f32],
    input_gradient: &mut [f32],
) {
    let size = shape.block;
    let inner = shape.inner;
    for token in 0..shape.tokens {
        let gradient = &output_gradient[token * stride + offset..][..inner];
        let source = &input[token * inner..(token + 1) * inner];
        let source_gradient = &mut input_gradient[token * inner..(token + 1) * inner];
        if !bias_gradient.is_empty() {
            for (bias, value) in bias_gradient.iter_mut().zip(gradient) {
                *bias += value;
            }
        }
        for block in 0..inner / size {
            let columns = block * size..(block + 1) * size;
            let matrix = &weight[block * size * size..(block + 1) * size * size];
            let matrix_gradient =
                &mut weight_gradient[block * size * size..(block + 1) * size * size];
            for (row, &value) in gradient[columns.clone()].iter().enumerate() {
                let weights = &matrix[row * size..(row + 1) * size];
                let weight_gradients = &mut matrix_gradient[row * size..(row + 1) * size];
                for (((weight_gradient, input_gradient), weight), input) in weight_gradients
                    .iter_mut()
                    .zip(&mut source_gradient[columns.clone()])
                    .zip(weights)
                    .zip(&source[columns.clone()])
                {
                    *weight_gradient += value * input;
                    *input_gradient += weight * value;
                }
            }
        }
    }
}

/// Per-head scratch: the S×S log-decay / decay matrix and the S×S product matrix.
struct HeadScratch {
    decay: Vec<f32>,
    product: Vec<f32>,
}

impl HeadScratch {
    fn new(tokens: usize) -> Self {
        Self {
            decay: vec![0.0; tokens * tokens],
            product: vec![0.0; tokens * tokens],
        }
    }
}

/// M1–M2 and the TwoSum rounding error of the cumulative sum, for head `head`.
#[inline(always)]
fn cumulative_forget(
    shape: &CoreShape,
    gates: &[f32],
    head: usize,
    cumulative: &mut [f32],
    rounding: &mut [f32],
) {
    let gate_width = 2 * shape.heads;
    let mut sum = 0.0f32;
    let mut error_sum = 0.0f32;
    for token in 0..shape.tokens {
        let term = log_sigmoid(gates[token * gate_width + shape.heads + head]);
        let previous = sum;
        sum = previous + term;
        let term_part = sum - previous;
        let previous_part = sum - term_part;
        error_sum += (previous - previous_part) + (term - term_part);
        cumulative[token] = sum;
        rounding[token] = error_sum;
    }
}

/// M3–M4 into `decay` (lower triangle: `D'_ts = exp(log D_ts − m_t)`, zero above), writing
/// m_t and the first `s` where it is reached (where the gradient of `max` goes).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn decay_matrix(
    shape: &CoreShape,
    gates: &[f32],
    head: usize,
    cumulative: &[f32],
    rounding: &[f32],
    row_max: &mut [f32],
    row_argmax: &mut [u32],
    decay: &mut [f32],
) {
    let tokens = shape.tokens;
    let gate_width = 2 * shape.heads;
    let shifted_gates: Vec<f32> = (0..tokens)
        .map(|s| gates[s * gate_width + head] - rounding[s])
        .collect();
    for t in 0..tokens {
        let row = &mut decay[t * tokens..(t + 1) * tokens];
        let current = cumulative[t];
        for ((value, &earlier), &gate) in row[..=t].iter_mut().zip(cumulative).zip(&shifted_gates) {
            *value = (current - earlier) + gate;
        }
        let (maximum, argmax) = first_maximum(&row[..=t]);
        for value in &mut row[..=t] {
            *value = exp(*value - maximum);
        }
        row[t + 1..].fill(0.0);
        row_max[t] = maximum;
        row_argmax[t] = argmax as u32;
    }
}

/// One sample's forward pass as one build compiles it (see [`builds`]).
type ForwardPass =
    unsafe fn(&CoreShape, &CoreParams, &Layouts, &[f32], &mut [f32]) -> SampleActivations;

/// One sample's backward pass as one build compiles it (see [`builds`]).
type BackwardPass = unsafe fn(
    &CoreShape,
    &CoreParams,
    &Layouts,
    &[f32],
    &SampleActivations,
    &[f32],
    &mut [f32],
    &mut CoreGradients,
);

/// The builds of the per-sample passes this processor can run, widest first, the portable one
/// last: name, forward, backward. Each function's only safety condition is its instruction set,
/// which this list checks, so calling any entry is sound.
fn builds() -> Vec<(&'static str, ForwardPass, BackwardPass)> {
    let mut builds: Vec<(&'static str, ForwardPass, BackwardPass)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            builds.push(("AVX-512", avx512::forward_sample, avx512::backward_sample));
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            builds.push(("AVX2", avx2::forward_sample, avx2::backward_sample));
        }
    }
    builds.push((
        "portable",
        portable::forward_sample,
        portable::backward_sample,
    ));
    builds
}

/// The widest build of the passes this processor runs.
fn passes() -> (ForwardPass, BackwardPass) {
    let (_, forward, backward) = builds()[0];
    (forward, backward)
}

/// The per-sample bodies compiled for one instruction set (everything they inline, too), one
/// module per set. The source is the same for all and Rust never fuses a multiply and an add on
/// its own, so wider vectors perform the same IEEE operations in the same order: every build
/// gives the same bits.
macro_rules! sample_passes_for {
    ($module:ident $(, $features:literal)?) => {
        mod $module {
            use super::*;

            /// # Safety
            /// The processor must support the module's instruction set.
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn forward_sample(
                shape: &CoreShape,
                params: &CoreParams,
                layouts: &Layouts,
                up: &[f32],
                output: &mut [f32],
            ) -> SampleActivations {
                forward_sample_body(shape, params, layouts, up, output)
            }

            /// # Safety
            /// The processor must support the module's instruction set.
            #[allow(clippy::too_many_arguments)]
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn backward_sample(
                shape: &CoreShape,
                params: &CoreParams,
                layouts: &Layouts,
                up: &[f32],
                saved: &SampleActivations,
                output_gradient: &[f32],
                up_gradient: &mut [f32],
                gradients: &mut CoreGradients,
            ) {
                backward_sample_body(
                    shape,
                    params,
                    layouts,
                    up,
                    saved,
                    output_gradient,
                    up_gradient,
                    gradients,
                );
            }
        }
    };
}

sample_passes_for!(portable);
#[cfg(target_arch = "x86_64")]
sample_passes_for!(avx2, "avx2");
#[cfg(target_arch = "x86_64")]
sample_passes_for!(avx512, "avx512f");

#[inline(always)]
fn forward_sample_body(
    shape: &CoreShape,
    params: &CoreParams,
    layouts: &Layouts,
    up: &[f32],
    output: &mut [f32],
) -> SampleActivations {
    let CoreShape {
        tokens,
        inner,
        heads,
        convolution,
        ..
    } = *shape;
    let head_dim = shape.head_dim();
    let (gate_weights, tap_weights) = (&layouts.gate_weights[..], &layouts.tap_weights[..]);
    let branch = |token: usize| &up[shape.row(token) * 2 * inner..][..inner];

    // L2: convolution (+ bias), then SiLU.
    let mut conv = vec![0.0; tokens * inner];
    for (token, row) in conv.chunks_exact_mut(inner).enumerate() {
        row.copy_from_slice(params.conv_bias);
        convolution.for_each_source(token, |tap, source| {
            let weights = &tap_weights[tap * inner..(tap + 1) * inner];
            for ((value, input), weight) in row.iter_mut().zip(branch(source)).zip(weights) {
                *value += weight * input;
            }
        });
    }
    let conv_factor: Vec<f32> = conv.iter().map(|&value| silu_factor(value)).collect();
    let activated: Vec<f32> = conv.iter().zip(&conv_factor).map(|(x, r)| x * r).collect();

    // L3: q and k from the activated convolution, v from the raw branch.
    let mut branch_rows = vec![0.0; tokens * inner];
    for (token, row) in branch_rows.chunks_exact_mut(inner).enumerate() {
        row.copy_from_slice(branch(token));
    }
    let width = 3 * inner;
    let mut qkv = vec![0.0; tokens * width];
    block_diagonal(
        shape,
        params.query_weight,
        params.query_bias,
        (&activated, inner, 0),
        (&mut qkv, width, 0),
    );
    block_diagonal(
        shape,
        params.key_weight,
        params.key_bias,
        (&activated, inner, 0),
        (&mut qkv, width, inner),
    );
    block_diagonal(
        shape,
        params.value_weight,
        params.value_bias,
        (&branch_rows, inner, 0),
        (&mut qkv, width, 2 * inner),
    );

    // L4: gate pre-activations [S, 2H] = [q‖k‖v] · [W_i ‖ W_f] + b, one product.
    let gate_width = 2 * heads;
    let mut gates = vec![0.0; tokens * gate_width];
    gemm(
        [tokens, width, gate_width],
        1.0,
        (&qkv, width, 1),
        (gate_weights, 1, width),
        0.0,
        (&mut gates, gate_width, 1),
    );
    for row in gates.chunks_exact_mut(gate_width) {
        for (value, bias) in row.iter_mut().zip(&layouts.gate_bias) {
            *value += bias;
        }
    }

    // L5: the cell, head by head.
    let mut cumulative = vec![0.0; heads * tokens];
    let mut rounding = vec![0.0; heads * tokens];
    let mut row_max = vec![0.0; heads * tokens];
    let mut row_argmax = vec![0; heads * tokens];
    let mut normaliser = vec![0.0; heads * tokens];
    let mut hidden = vec![0.0; tokens * inner];
    let mut scratch = HeadScratch::new(tokens);
    let scale = 1.0 / (head_dim as f32).sqrt();
    for head in 0..heads {
        let span = head * tokens..(head + 1) * tokens;
        cumulative_forget(
            shape,
            &gates,
            head,
            &mut cumulative[span.clone()],
            &mut rounding[span.clone()],
        );
        decay_matrix(
            shape,
            &gates,
            head,
            &cumulative[span.clone()],
            &rounding[span.clone()],
            &mut row_max[span.clone()],
            &mut row_argmax[span.clone()],
            &mut scratch.decay,
        );
        let query = &qkv[head * head_dim..];
        let key = &qkv[inner + head * head_dim..];
        let value = &qkv[2 * inner + head * head_dim..];
        // M5: C = (q·kᵀ/√DH) ⊙ D', lower triangle only.
        gemm_lower_output(
            [tokens, head_dim],
            scale,
            (query, width, 1),
            (key, 1, width),
            (&mut scratch.product, tokens, 1),
        );
        for t in 0..tokens {
            let row = &mut scratch.product[t * tokens..(t + 1) * tokens];
            for (product, decay) in row[..=t].iter_mut().zip(&scratch.decay[t * tokens..]) {
                *product *= decay;
            }
            row[t + 1..].fill(0.0);
        }
        // M6
        for t in 0..tokens {
            let sum = sum_lanes(&scratch.product[t * tokens..=t * tokens + t]);
            let stabiliser =
                (row_max[span.start + t] + rounding[span.start + t]).max(STABILISER_FLOOR);
            normaliser[span.start + t] = sum.abs().max((-stabiliser).exp()) + NORMALISER_EPSILON;
        }
        // M7: h = C·v / (n + ε).
        let hidden_head = &mut hidden[head * head_dim..];
        gemm_lower_left(
            [tokens, head_dim],
            1.0,
            (&scratch.product, tokens, 1),
            (value, width, 1),
            (hidden_head, inner, 1),
        );
        for t in 0..tokens {
            let divisor = normaliser[span.start + t];
            for value in &mut hidden[t * inner + head * head_dim..][..head_dim] {
                *value /= divisor;
            }
        }
    }

    // L6 and L7: per-head norm, learnable skip, output gate. Every loop below runs over equally
    // long slices, so that it compiles to vector code.
    let (norm_scale, norm_shift) = (&layouts.norm_scale[..], &layouts.norm_shift[..]);
    let mut norm_mean = vec![0.0; tokens * heads];
    let mut norm_inverse_std = vec![0.0; tokens * heads];
    let mut gate_factor = vec![0.0; tokens * inner];
    for token in 0..tokens {
        let span = token * inner..(token + 1) * inner;
        let gate = &up[shape.row(token) * 2 * inner + inner..][..inner];
        let target = &mut output[shape.row(token) * inner..][..inner];
        let (hidden, activated) = (&hidden[span.clone()], &activated[span.clone()]);
        let factors = &mut gate_factor[span];
        for head in 0..heads {
            let columns = head * head_dim..(head + 1) * head_dim;
            let (mean, inverse_std) = moments(&hidden[columns.clone()]);
            norm_mean[token * heads + head] = mean;
            norm_inverse_std[token * heads + head] = inverse_std;
            let hidden = &hidden[columns.clone()];
            let activated = &activated[columns.clone()];
            let gate = &gate[columns.clone()];
            let scale = &norm_scale[columns.clone()];
            let shift = &norm_shift[columns.clone()];
            let skip = &params.skip[columns.clone()];
            let factors = &mut factors[columns.clone()];
            let target = &mut target[columns];
            for channel in 0..head_dim {
                let normalised = (hidden[channel] - mean) * inverse_std;
                let scaled = normalised * scale[channel] + shift[channel];
                let skipped = scaled + activated[channel] * skip[channel];
                let factor = silu_factor(gate[channel]);
                factors[channel] = factor;
                target[channel] = skipped * (gate[channel] * factor);
            }
        }
    }

    SampleActivations {
        conv,
        conv_factor,
        gate_factor,
        qkv,
        gates,
        cumulative,
        rounding,
        normaliser,
        hidden,
        norm_mean,
        norm_inverse_std,
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_sample_body(
    shape: &CoreShape,
    params: &CoreParams,
    layouts: &Layouts,
    up: &[f32],
    saved: &SampleActivations,
    output_gradient: &[f32],
    up_gradient: &mut [f32],
    gradients: &mut CoreGradients,
) {
    let CoreShape {
        tokens,
        inner,
        heads,
        convolution,
        ..
    } = *shape;
    let head_dim = shape.head_dim();
    let (gate_weights, tap_weights) = (&layouts.gate_weights[..], &layouts.tap_weights[..]);
    let taps = convolution.taps();
    let width = 3 * inner;
    let gate_width = 2 * heads;
    let activated: Vec<f32> = saved
        .conv
        .iter()
        .zip(&saved.conv_factor)
        .map(|(x, r)| x * r)
        .collect();

    // L7 and L6 backward: output gate, skip, per-head norm, over equally long slices so that the
    // loops compile to vector code. The norm bias gradient is summed even when the layer has no
    // bias (and then dropped), which keeps the loop free of branches.
    let (norm_scale, norm_shift) = (&layouts.norm_scale[..], &layouts.norm_shift[..]);
    let mut norm_bias_gradient = vec![0.0; inner];
    let mut activated_gradient = vec![0.0; tokens * inner];
    let mut hidden_gradient = vec![0.0; tokens * inner];
    let mut normalised_gradient = vec![0.0; head_dim];
    let mut normalised = vec![0.0; head_dim];
    for token in 0..tokens {
        let row = shape.row(token);
        let span = token * inner..(token + 1) * inner;
        let gate = &up[row * 2 * inner + inner..][..inner];
        let incoming = &output_gradient[row * inner..][..inner];
        let gate_gradient = &mut up_gradient[row * 2 * inner + inner..][..inner];
        let (saved_hidden, activated) = (&saved.hidden[span.clone()], &activated[span.clone()]);
        let factors = &saved.gate_factor[span.clone()];
        let activated_gradient = &mut activated_gradient[span.clone()];
        let hidden_gradient = &mut hidden_gradient[span];
        for head in 0..heads {
            let mean = saved.norm_mean[token * heads + head];
            let inverse_std = saved.norm_inverse_std[token * heads + head];
            let columns = head * head_dim..(head + 1) * head_dim;
            let saved_hidden = &saved_hidden[columns.clone()];
            let activated = &activated[columns.clone()];
            let factors = &factors[columns.clone()];
            let gate = &gate[columns.clone()];
            let incoming = &incoming[columns.clone()];
            let scale = &norm_scale[columns.clone()];
            let shift = &norm_shift[columns.clone()];
            let skip = &params.skip[columns.clone()];
            let gate_gradient = &mut gate_gradient[columns.clone()];
            let skip_gradient = &mut gradients.skip[columns.clone()];
            let scale_gradient = &mut gradients.norm_weight[columns.clone()];
            let shift_gradient = &mut norm_bias_gradient[columns.clone()];
            let activated_gradient = &mut activated_gradient[columns.clone()];
            let (normalised, normalised_gradient) = (
                &mut normalised[..head_dim],
                &mut normalised_gradient[..head_dim],
            );
            for channel in 0..head_dim {
                let normal = (saved_hidden[channel] - mean) * inverse_std;
                let scaled = normal * scale[channel] + shift[channel];
                let skipped = scaled + activated[channel] * skip[channel];
                let gradient = incoming[channel];
                let factor = factors[channel];
                gate_gradient[channel] =
                    gradient * skipped * silu_derivative(gate[channel], factor);
                let skipped_gradient = gradient * (gate[channel] * factor);
                skip_gradient[channel] += skipped_gradient * activated[channel];
                activated_gradient[channel] = skipped_gradient * skip[channel];
                scale_gradient[channel] += skipped_gradient * normal;
                shift_gradient[channel] += skipped_gradient;
                normalised[channel] = normal;
                normalised_gradient[channel] = skipped_gradient * scale[channel];
            }
            let mean_gradient = sum_lanes(normalised_gradient) / head_dim as f32;
            let mean_projection = dot(normalised_gradient, normalised) / head_dim as f32;
            let hidden_gradient = &mut hidden_gradient[columns];
            for channel in 0..head_dim {
                hidden_gradient[channel] = inverse_std
                    * (normalised_gradient[channel]
                        - mean_gradient
                        - normalised[channel] * mean_projection);
            }
        }
    }
    if !gradients.norm_bias.is_empty() {
        gradients.norm_bias.copy_from_slice(&norm_bias_gradient);
    }

    // L5 backward, head by head, into the q/k/v gradient and the gate gradient.
    let mut qkv_gradient = vec![0.0; tokens * width];
    let mut gates_gradient = vec![0.0; tokens * gate_width];
    let mut scratch = HeadScratch::new(tokens);
    let mut combination_gradient = vec![0.0; tokens * tokens];
    let mut scaled_gradient = vec![0.0; tokens * head_dim];
    let (mut row_sum, mut column_sum) = (vec![0.0; tokens], vec![0.0; tokens]);
    let scale = 1.0 / (head_dim as f32).sqrt();
    for head in 0..heads {
        let span = head * tokens..(head + 1) * tokens;
        let rounding = &saved.rounding[span.clone()];
        let normaliser = &saved.normaliser[span.clone()];
        let mut row_max = vec![0.0; tokens];
        let mut row_argmax = vec![0; tokens];
        decay_matrix(
            shape,
            &saved.gates,
            head,
            &saved.cumulative[span.clone()],
            rounding,
            &mut row_max,
            &mut row_argmax,
            &mut scratch.decay,
        );
        let query = &saved.qkv[head * head_dim..];
        let key = &saved.qkv[inner + head * head_dim..];
        let value = &saved.qkv[2 * inner + head * head_dim..];
        // P = q·kᵀ/√DH (kept in `product`, lower triangle), C = P ⊙ D' rebuilt on the fly below.
        gemm_lower_output(
            [tokens, head_dim],
            scale,
            (query, width, 1),
            (key, 1, width),
            (&mut scratch.product, tokens, 1),
        );
        // M7: dY = dh / N and dN; M6: which side of the max the normaliser took.
        let mut row_gradient = vec![0.0; tokens];
        let mut max_gradient = vec![0.0; tokens];
        for t in 0..tokens {
            let hidden = &saved.hidden[t * inner + head * head_dim..][..head_dim];
            let incoming = &hidden_gradient[t * inner + head * head_dim..][..head_dim];
            let divisor = normaliser[t];
            let normaliser_gradient = -dot(incoming, hidden) / divisor;
            for (scaled, gradient) in scaled_gradient[t * head_dim..(t + 1) * head_dim]
                .iter_mut()
                .zip(incoming)
            {
                *scaled = gradient / divisor;
            }
            // The same sum, with the same bits, as the forward pass's M6.
            let row_sum = dot(
                &scratch.product[t * tokens..][..=t],
                &scratch.decay[t * tokens..][..=t],
            );
            let stabiliser_input = row_max[t] + rounding[t];
            let floor_value = (-stabiliser_input.max(STABILISER_FLOOR)).exp();
            if row_sum.abs() >= floor_value {
                row_gradient[t] = normaliser_gradient * sign(row_sum);
            } else if stabiliser_input >= STABILISER_FLOOR {
                max_gradient[t] = -floor_value * normaliser_gradient;
            }
        }
        // dC = dY·vᵀ + dr (row-broadcast); only s ≤ t matters.
        gemm_lower_output(
            [tokens, head_dim],
            1.0,
            (&scaled_gradient, head_dim, 1),
            (value, 1, width),
            (&mut combination_gradient, tokens, 1),
        );
        // dv = Cᵀ·dY, with C = P ⊙ D' formed in `decay` (P is still needed below): per row,
        // dP = dC ⊙ D' goes to `combination_gradient`, dL = dC ⊙ P ⊙ D' to `product`, and C
        // itself to `decay`; right of the diagonal all three are zero.
        for t in 0..tokens {
            let row = t * tokens..(t + 1) * tokens;
            let decay = &mut scratch.decay[row.clone()];
            let product = &mut scratch.product[row.clone()];
            let gradient = &mut combination_gradient[row];
            let broadcast = row_gradient[t];
            {
                let length = t + 1;
                let (decay, product, gradient) = (
                    &mut decay[..length],
                    &mut product[..length],
                    &mut gradient[..length],
                );
                for s in 0..length {
                    let weight = decay[s];
                    let score = product[s];
                    let combined = gradient[s] + broadcast;
                    decay[s] = score * weight;
                    gradient[s] = combined * weight;
                    product[s] = combined * score * weight;
                }
            }
            decay[t + 1..].fill(0.0);
            product[t + 1..].fill(0.0);
            gradient[t + 1..].fill(0.0);
        }
        gemm_upper_left(
            [tokens, head_dim],
            1.0,
            (&scratch.decay, 1, tokens),
            (&scaled_gradient, head_dim, 1),
            (&mut qkv_gradient[2 * inner + head * head_dim..], width, 1),
        );
        // dq = dP·k/√DH, dk = dPᵀ·q/√DH.
        gemm_lower_left(
            [tokens, head_dim],
            scale,
            (&combination_gradient, tokens, 1),
            (key, width, 1),
            (&mut qkv_gradient[head * head_dim..], width, 1),
        );
        gemm_upper_left(
            [tokens, head_dim],
            scale,
            (&combination_gradient, 1, tokens),
            (query, width, 1),
            (&mut qkv_gradient[inner + head * head_dim..], width, 1),
        );
        // M4 backward: m_t = max_s L_ts gets −Σ_s dL_ts (through D') plus the stabiliser's share,
        // and passes it to the first maximal element of the row. M3: L_ts = F_t − F_s + ĩ_s, so
        // dF_t is row t's sum minus column t's sum and dĩ_s is column s's sum; the column sums
        // are built row by row (a vector add per row, no scatter).
        let log_decay = &mut scratch.product;
        column_sum.fill(0.0);
        for t in 0..tokens {
            let row = &mut log_decay[t * tokens..][..=t];
            let through_decay = sum_lanes(row);
            row[row_argmax[t] as usize] += max_gradient[t] - through_decay;
            row_sum[t] = sum_lanes(row);
            for (column, value) in column_sum[..=t].iter_mut().zip(row.iter()) {
                *column += value;
            }
        }
        // M2, M1 backward.
        let mut suffix = 0.0;
        for t in (0..tokens).rev() {
            gates_gradient[t * gate_width + head] = column_sum[t];
            suffix += row_sum[t] - column_sum[t];
            let forget = saved.gates[t * gate_width + heads + head];
            gates_gradient[t * gate_width + heads + head] = suffix * sigmoid(-forget);
        }
    }

    // L4 backward: gate weights, biases and the q/k/v gradient through the gates, as products:
    // d[q‖k‖v] += dG·W (W as the `[2H, 3E]` rows), dW = dGᵀ·[q‖k‖v].
    gemm(
        [tokens, gate_width, width],
        1.0,
        (&gates_gradient, gate_width, 1),
        (gate_weights, width, 1),
        1.0,
        (&mut qkv_gradient, width, 1),
    );
    let mut gate_weights_gradient = vec![0.0; gate_width * width];
    gemm(
        [gate_width, tokens, width],
        1.0,
        (&gates_gradient, 1, gate_width),
        (&saved.qkv, width, 1),
        0.0,
        (&mut gate_weights_gradient, width, 1),
    );
    for row in gates_gradient.chunks_exact(gate_width) {
        let (input, forget) = row.split_at(heads);
        for (bias, gradient) in gradients.input_gate_bias.iter_mut().zip(input) {
            *bias += gradient;
        }
        for (bias, gradient) in gradients.forget_gate_bias.iter_mut().zip(forget) {
            *bias += gradient;
        }
    }
    for (gate, row) in gate_weights_gradient.chunks_exact(width).enumerate() {
        let (target, head) = if gate < heads {
            (&mut gradients.input_gate_weight, gate)
        } else {
            (&mut gradients.forget_gate_weight, gate - heads)
        };
        for (feature, value) in row.iter().enumerate() {
            target[feature * heads + head] += value;
        }
    }

    // L3 backward.
    let mut branch_rows = vec![0.0; tokens * inner];
    for (token, row) in branch_rows.chunks_exact_mut(inner).enumerate() {
        row.copy_from_slice(&up[shape.row(token) * 2 * inner..][..inner]);
    }
    let mut branch_gradient = vec![0.0; tokens * inner];
    block_diagonal_backward(
        shape,
        params.query_weight,
        &activated,
        (&qkv_gradient, width, 0),
        &mut gradients.query_weight,
        &mut gradients.query_bias,
        &mut activated_gradient,
    );
    block_diagonal_backward(
        shape,
        params.key_weight,
        &activated,
        (&qkv_gradient, width, inner),
        &mut gradients.key_weight,
        &mut gradients.key_bias,
        &mut activated_gradient,
    );
    block_diagonal_backward(
        shape,
        params.value_weight,
        &branch_rows,
        (&qkv_gradient, width, 2 * inner),
        &mut gradients.value_weight,
        &mut gradients.value_bias,
        &mut branch_gradient,
    );

    // L2 backward: SiLU, bias, taps.
    let mut conv_gradient = vec![0.0; inner];
    let mut tap_gradients = vec![0.0; taps * inner];
    for (token, row) in activated_gradient.chunks_exact(inner).enumerate() {
        let span = token * inner..(token + 1) * inner;
        for (((target, gradient), &value), &factor) in conv_gradient
            .iter_mut()
            .zip(row)
            .zip(&saved.conv[span.clone()])
            .zip(&saved.conv_factor[span])
        {
            *target = gradient * silu_derivative(value, factor);
        }
        for (bias, gradient) in gradients.conv_bias.iter_mut().zip(&conv_gradient) {
            *bias += gradient;
        }
        convolution.for_each_source(token, |tap, source| {
            let input = &branch_rows[source * inner..(source + 1) * inner];
            let input_gradient = &mut branch_gradient[source * inner..(source + 1) * inner];
            let weights = &tap_weights[tap * inner..(tap + 1) * inner];
            let weight_gradients = &mut tap_gradients[tap * inner..(tap + 1) * inner];
            for ((((weight_gradient, input_gradient), &weight), &input), &gradient) in
                weight_gradients
                    .iter_mut()
                    .zip(input_gradient.iter_mut())
                    .zip(weights)
                    .zip(input)
                    .zip(&conv_gradient)
            {
                *weight_gradient += gradient * input;
                *input_gradient += weight * gradient;
            }
        });
    }
    for (tap, row) in tap_gradients.chunks_exact(inner).enumerate() {
        for (channel, value) in row.iter().enumerate() {
            gradients.conv_weight[channel * taps + tap] += value;
        }
    }
    for (token, row) in branch_gradient.chunks_exact(inner).enumerate() {
        up_gradient[shape.row(token) * 2 * inner..][..inner].copy_from_slice(row);
    }
}

/// The per-head norm's affine part per channel: the scale `1 + w` (the official layer keeps the
/// weight as an offset from one) and the bias, zero when the layer has none.
fn norm_affine(params: &CoreParams, inner: usize) -> (Vec<f32>, Vec<f32>) {
    let scale = params
        .norm_weight
        .iter()
        .map(|weight| weight + 1.0)
        .collect();
    let shift = params
        .norm_bias
        .map_or_else(|| vec![0.0; inner], <[f32]>::to_vec);
    (scale, shift)
}

/// Mean and `1/√(variance + ε)` of one head's channels (the biased variance, as the norm takes
/// it).
#[inline(always)]
fn moments(values: &[f32]) -> (f32, f32) {
    let count = values.len() as f32;
    let mean = sum_lanes(values) / count;
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|value| (value - mean) * (value - mean))
        .sum();
    for chunk in chunks {
        for lane in 0..LANES {
            lanes[lane] += (chunk[lane] - mean) * (chunk[lane] - mean);
        }
    }
    let variance = (lanes.iter().sum::<f32>() + tail) / count;
    (mean, 1.0 / (variance + NORM_EPSILON).sqrt())
}

/// `sign(x)` with `sign(0) = 0`, as the gradient of `abs` uses it.
#[inline(always)]
fn sign(value: f32) -> f32 {
    if value > 0.0 {
        1.0
    } else if value < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [−2, 2) from a fixed linear congruential sequence.
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Both passes of one sample on the portable build and on every wider build this processor
    /// runs give the same bits: a v1 layer read backwards with biases, and a v2 layer without.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let shapes = [
            CoreShape {
                batch: 1,
                tokens: 37,
                inner: 24,
                heads: 3,
                block: 4,
                convolution: Convolution::Causal { kernel: 4 },
                reverse: true,
            },
            CoreShape {
                batch: 1,
                tokens: 30,
                inner: 32,
                heads: 2,
                block: 4,
                convolution: Convolution::Grid {
                    kernel: 3,
                    height: 5,
                    width: 6,
                },
                reverse: false,
            },
        ];
        for (index, shape) in shapes.iter().enumerate() {
            let inner = shape.inner;
            let biased = index == 0;
            let seed = 100 * index as u64;
            let block_weights = (inner / shape.block) * shape.block * shape.block;
            let owned: Vec<Vec<f32>> = vec![
                values(inner * shape.convolution.taps(), seed + 1),
                values(inner, seed + 2),
                values(block_weights, seed + 3),
                values(block_weights, seed + 4),
                values(block_weights, seed + 5),
                values(inner, seed + 6),
                values(3 * inner * shape.heads, seed + 7),
                values(shape.heads, seed + 8),
                values(3 * inner * shape.heads, seed + 9),
                values(shape.heads, seed + 10),
                values(inner, seed + 11),
                values(inner, seed + 12),
            ];
            let params = CoreParams {
                conv_weight: &owned[0],
                conv_bias: &owned[1],
                query_weight: &owned[2],
                key_weight: &owned[3],
                value_weight: &owned[4],
                query_bias: biased.then_some(&owned[5][..]),
                key_bias: biased.then_some(&owned[5][..]),
                value_bias: biased.then_some(&owned[5][..]),
                input_gate_weight: &owned[6],
                input_gate_bias: &owned[7],
                forget_gate_weight: &owned[8],
                forget_gate_bias: &owned[9],
                norm_weight: &owned[10],
                norm_bias: biased.then_some(&owned[11][..]),
                skip: &owned[11],
            };
            let sample = shape.tokens * inner;
            let up = values(2 * sample, seed + 13);
            let incoming = values(sample, seed + 14);
            let layouts = Layouts::new(shape, &params);
            let both_passes = |forward: &dyn Fn(&mut [f32]) -> SampleActivations,
                               backward: &dyn Fn(
                &SampleActivations,
                &mut [f32],
                &mut CoreGradients,
            )| {
                let mut output = vec![0.0; sample];
                let saved = forward(&mut output);
                let mut up_gradient = vec![0.0; 2 * sample];
                let mut gradients = CoreGradients::zeros(shape, &params);
                backward(&saved, &mut up_gradient, &mut gradients);
                (output, saved, up_gradient, gradients)
            };
            let bits = |run: &(Vec<f32>, SampleActivations, Vec<f32>, CoreGradients)| {
                let fields: Vec<u32> = run
                    .0
                    .iter()
                    .chain(&run.2)
                    .chain(run.3.clone().into_fields().iter().flatten())
                    .map(|value| value.to_bits())
                    .collect();
                (fields, run.1.clone())
            };
            let runs: Vec<_> = builds()
                .into_iter()
                .map(|(name, forward, backward)| {
                    // SAFETY: `builds` lists only what this processor supports.
                    let run = both_passes(
                        &|output| unsafe { forward(shape, &params, &layouts, &up, output) },
                        &|saved, up_gradient, gradients| unsafe {
                            backward(
                                shape,
                                &params,
                                &layouts,
                                &up,
                                saved,
                                &incoming,
                                up_gradient,
                                gradients,
                            )
                        },
                    );
                    (name, run)
                })
                .collect();
            let (portable_name, portable) = runs.last().expect("the portable build is listed");
            assert_eq!(*portable_name, "portable");
            assert!(
                portable
                    .0
                    .iter()
                    .chain(&portable.2)
                    .all(|value| value.is_finite())
            );
            for (name, run) in &runs {
                assert!(bits(run) == bits(portable), "{name} differs, shape {index}");
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_normal_range() {
        let mut worst = 0.0f32;
        let mut input = -87.0f32;
        while input < 88.0 {
            let (ours, libm) = (exp(input), input.exp());
            let ulp = f32::from_bits(libm.to_bits() + 1) - libm;
            worst = worst.max((ours - libm).abs() / ulp);
            input += 0.000_731;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-90.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }
}
