//! The chunkwise-parallel form of the stabilised mLSTM cell (xLSTM, arXiv 2405.04517, section 2.3
//! and appendix; ViL, arXiv 2406.04303, section 3; equations M1-M7 of VIL_SPEC): the same function
//! as [`super::mlstm::parallel_stabilized`], computed chunk by chunk so that memory grows with
//! S·chunk instead of S².
//!
//! The token axis is cut into chunks of `chunk` tokens. Inside a chunk the decay matrix is built
//! in parallel as in the parallel form; everything before the chunk is summarised by the
//! recurrent state of the cell, carried from chunk to chunk per batch element and head: the
//! memory `C` (head_dim × head_dim), the normaliser state `n` (head_dim) and the stabiliser `m`
//! (a scalar), all scaled by `exp(−m)` so they stay finite for any gate values.
//!
//! It keeps the numerical care of the parallel form, so both agree to f32 rounding even with
//! gate pre-activations of ±30: the cumulative log forget gate of a chunk is an f32 sum plus its
//! rounding error (TwoSum), the row constant of that error is added back only to the stabiliser,
//! the causal mask is a large finite negative value, and `exp(−m)` uses a clamped `m`.

use burn::tensor::{Bool, Tensor, activation, backend::Backend};

use super::mlstm::{cumulative_rounding_error, transpose_vector};

/// Token count from which [`chunkwise_stabilized`] trains faster than the parallel form on the
/// CPU backend (NdArray f32), forward + backward, batch 1, 4 heads, head_dim 48, chunk
/// [`DEFAULT_CHUNK`]. Measured with `cargo bench --bench sequence` on a shared 2-core machine
/// (plot: `docs/sequence_length.png`), ms per iteration parallel / chunkwise: 144 tokens
/// 12.0 / 13.7, 196 tokens 19.9 / 18.0, 784 tokens 534 / 106, 3136 tokens 15,700 / 683;
/// interpolating between 144 and 196 puts the crossover near 170 tokens. Peak memory is already
/// lower from 100 tokens on (1.3 vs 1.5 MiB; 45 vs 1,100 MiB at 3136). A faster parallel kernel
/// moves the crossover up, so re-measure after changing either form.
pub const CPU_CHUNKWISE_MIN_TOKENS: usize = 170;

/// The same switch on GPU backends (CUDA, wgpu, and any other burn backend than the CPU one):
/// never, so far. The parallel form's S×S products are what GPUs are built for, and the
/// crossover has not been measured on one (`benches/sequence.rs` times both forms; run it on
/// the device and move this there). There is a second reason: with burn 0.21's kernel fusion
/// (which both GPU backends use), the chunkwise form is wrong as soon as a state is carried from
/// one chunk to the next (40 tokens in chunks of 20 differ from the CPU by O(1) on lavapipe,
/// while a single chunk, and the same products with a device sync in between, are exact).
/// Until that is fixed upstream the GPU path runs the parallel form at every length: exact,
/// with S² intermediates (4 MiB per head and image at 1,024 tokens, kept for the backward pass
/// in every layer), which is what limits the sequence length there.
pub const GPU_CHUNKWISE_MIN_TOKENS: usize = usize::MAX;

/// Token count from which the layer uses the chunkwise form on `device`'s backend.
pub fn chunkwise_min_tokens<B: Backend>(device: &B::Device) -> usize {
    if B::name(device).contains("ndarray") {
        CPU_CHUNKWISE_MIN_TOKENS
    } else {
        GPU_CHUNKWISE_MIN_TOKENS
    }
}

/// Chunk length used when the layer picks the chunkwise form: large enough that the per-chunk
/// matrix products stay efficient, small enough that the S·chunk intermediates stay small.
pub const DEFAULT_CHUNK: usize = 64;

/// Added to the log-decay of future positions; finite so that no `inf − inf` appears.
const MASKED_LOG_DECAY: f64 = -1e30;
/// Lower bound for the stabiliser in `exp(−m)`, as in the parallel form.
const STABILISER_FLOOR: f64 = -60.0;
/// ε of M7.
const NORMALISER_EPSILON: f64 = 1e-6;

/// The recurrent state after a chunk, per batch element and head, scaled by `exp(−m)`.
struct ChunkState<B: Backend> {
    /// `Σ_s w_s k_s v_sᵀ` with k already scaled by 1/√DH: `[batch, heads, head_dim, head_dim]`.
    memory: Tensor<B, 4>,
    /// `Σ_s w_s k_s`: `[batch, heads, head_dim, 1]`.
    normaliser: Tensor<B, 4>,
    /// The stabiliser `m` of the state at the last token of the chunk: `[batch, heads, 1, 1]`.
    stabiliser: Tensor<B, 4>,
}

/// The stabilised mLSTM (equations M1-M7 of VIL_SPEC) in chunkwise-parallel form; equal to
/// [`super::mlstm::parallel_stabilized`] up to f32 rounding, for every `chunk ≥ 1` (a `chunk` of
/// 0 is taken as 1). The last chunk is shorter when `chunk` does not divide the token count.
///
/// With `F` the cumulative log forget gate, per chunk starting after token `P`:
/// - inter-chunk: `C_P = Σ_{s≤P} exp(F_P − F_s + ĩ_s − m_P) k_s v_sᵀ`, `n_P` likewise with `k_s`,
///   `m_P = max_{s≤P} (F_P − F_s + ĩ_s)`;
/// - for t in the chunk, `m_t = max(F_t − F_P + m_P, max_{P<s≤t} F_t − F_s + ĩ_s)` (M4), the
///   numerator `exp(F_t − F_P + m_P − m_t)·q_t C_P + Σ_{P<s≤t} C_ts v_s` (M5, M7) and the
///   normaliser from `q_t·n_P` plus the row sum of `C_ts` (M6).
///
/// # Shapes
/// - query, key, value: `[batch, heads, tokens, head_dim]`
/// - input_gate, forget_gate (pre-activations): `[batch, heads, tokens, 1]`
/// - returns `[batch, heads, tokens, head_dim]`
pub fn chunkwise_stabilized<B: Backend>(
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    input_gate: Tensor<B, 4>,
    forget_gate: Tensor<B, 4>,
    chunk: usize,
) -> Tensor<B, 4> {
    let [_, _, tokens, head_dim] = query.dims();
    let chunk = chunk.max(1);
    let key = key * (1.0 / (head_dim as f64).sqrt());
    // M1
    let log_forget = activation::log_sigmoid(forget_gate);

    let mut outputs = Vec::with_capacity(tokens.div_ceil(chunk));
    let mut state: Option<ChunkState<B>> = None;
    let mut start = 0;
    while start < tokens {
        let length = chunk.min(tokens - start);
        let part = |tensor: &Tensor<B, 4>| tensor.clone().narrow(2, start, length);
        let (output, next) = chunk_step(
            part(&query),
            part(&key),
            part(&value),
            part(&input_gate),
            part(&log_forget),
            state.as_ref(),
            start + length < tokens,
        );
        outputs.push(output);
        state = next;
        start += length;
    }
    Tensor::cat(outputs, 2)
}

/// One chunk: its outputs from the carried state plus its own tokens, and the state after it
/// (only when `carry_on`, as the last chunk's state is never read).
fn chunk_step<B: Backend>(
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    input_gate: Tensor<B, 4>,
    log_forget: Tensor<B, 4>,
    previous: Option<&ChunkState<B>>,
    carry_on: bool,
) -> (Tensor<B, 4>, Option<ChunkState<B>>) {
    let [_, _, length, _] = query.dims();
    let device = query.device();

    // M2 within the chunk: F_t − F_P = hi_t + lo_t, `lo` the running rounding error (TwoSum).
    let cumulative = log_forget.clone().cumsum(2);
    let rounding = cumulative_rounding_error(log_forget, cumulative.clone()).detach();

    // M3, M4 inside the chunk, shifted by the row constant lo_t (added back to m for M6 only).
    let log_decay = (cumulative.clone() - transpose_vector(cumulative.clone()))
        + transpose_vector(input_gate.clone() - rounding.clone());
    let future = Tensor::<B, 2, Bool>::tril_mask([length, length], 0, &device)
        .reshape([1, 1, length, length]);
    let shape = log_decay.dims();
    let log_decay = log_decay.mask_fill(future.expand(shape), MASKED_LOG_DECAY);
    let intra_max = log_decay.clone().max_dim(3);
    // The carried state decays by F_t − F_P from the chunk start, and is at scale m_P.
    let carried_log = previous.map(|state| cumulative.clone() + state.stabiliser.clone());
    let row_max = match &carried_log {
        Some(carried_log) => intra_max.max_pair(carried_log.clone()),
        None => intra_max,
    };

    // M5 inside the chunk, then M6 and M7 with the carried state's share.
    let decay = (log_decay - row_max.clone()).exp();
    let combination = query.clone().matmul(key.clone().swap_dims(2, 3)) * decay;
    let mut denominator = combination.clone().sum_dim(3);
    let mut numerator = combination.matmul(value.clone());
    if let (Some(state), Some(carried_log)) = (previous, carried_log) {
        let carried_weight = (carried_log - row_max.clone()).exp();
        numerator = numerator + query.clone().matmul(state.memory.clone()) * carried_weight.clone();
        denominator = denominator + query.matmul(state.normaliser.clone()) * carried_weight;
    }
    let stabiliser = (row_max + rounding.clone()).clamp_min(STABILISER_FLOOR);
    let normaliser = denominator.abs().max_pair(stabiliser.neg().exp());
    let output = numerator / (normaliser + NORMALISER_EPSILON);

    if !carry_on {
        return (output, None);
    }
    (
        output,
        Some(next_state(
            key, value, input_gate, cumulative, rounding, previous,
        )),
    )
}

/// The state after a chunk: every token s of the chunk enters with log weight
/// `F_L − F_s + ĩ_s` and the carried state with `F_L − F_P + m_P`, all relative to the new
/// stabiliser (their maximum), so the state stays finite whatever the gates.
fn next_state<B: Backend>(
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    input_gate: Tensor<B, 4>,
    cumulative: Tensor<B, 4>,
    rounding: Tensor<B, 4>,
    previous: Option<&ChunkState<B>>,
) -> ChunkState<B> {
    let [_, _, length, _] = key.dims();
    let last = |tensor: &Tensor<B, 4>| tensor.clone().narrow(2, length - 1, 1);
    let (last_cumulative, last_rounding) = (last(&cumulative), last(&rounding));
    // Shifted by lo_L like the rows above; lo_L is added back to the stored stabiliser.
    let token_log = (last_cumulative.clone() - cumulative) + (input_gate - rounding);
    let token_max = token_log.clone().max_dim(2);
    let carried_log = previous.map(|state| last_cumulative + state.stabiliser.clone());
    let shifted_max = match &carried_log {
        Some(carried_log) => token_max.max_pair(carried_log.clone()),
        None => token_max,
    };
    let weighted_key = key * (token_log - shifted_max.clone()).exp();
    let mut memory = weighted_key.clone().swap_dims(2, 3).matmul(value);
    let mut normaliser = transpose_vector(weighted_key.sum_dim(2));
    if let (Some(state), Some(carried_log)) = (previous, carried_log) {
        let carried_weight = (carried_log - shifted_max.clone()).exp();
        memory = memory + state.memory.clone() * carried_weight.clone();
        normaliser = normaliser + state.normaliser.clone() * carried_weight;
    }
    ChunkState {
        memory,
        normaliser,
        stabiliser: shifted_max + last_rounding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_backend_switches_at_its_measured_crossover_with_or_without_autodiff() {
        let device = crate::backend::cpu_device();
        assert_eq!(
            chunkwise_min_tokens::<crate::backend::Cpu>(&device),
            CPU_CHUNKWISE_MIN_TOKENS
        );
        assert_eq!(
            chunkwise_min_tokens::<crate::backend::CpuTrain>(&device),
            CPU_CHUNKWISE_MIN_TOKENS
        );
    }
}
