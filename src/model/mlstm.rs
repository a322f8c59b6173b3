//! The matrix-LSTM cell of ViL in its stabilised parallel form (xLSTM, arXiv 2405.04517,
//! section 2.3 and appendix; ViL, arXiv 2406.04303, section 3; equations M1-M7 of VIL_SPEC),
//! plus the module around it: the input/forget gate projections and the per-head output norm.
//!
//! The parallel form materialises the S×S decay matrix once per head. Two details keep it exact
//! and finite for extreme gates (pre-activations of ±30 and beyond):
//!
//! - the cumulative log forget gate is kept as an f32 sum plus its rounding error (Knuth's
//!   TwoSum), so `F_t − F_s` is accurate even when `F` has grown to thousands while the
//!   difference is small; the official f32 code loses ~1e-5 relative there;
//! - the causal mask uses a large finite negative value, the row maximum is taken over the
//!   masked matrix (the diagonal is always present, so it is finite), and the normaliser's
//!   `exp(−m)` is computed from a clamped `m` so it cannot overflow.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Tensor, activation, backend::Backend};

use super::chunkwise::{DEFAULT_CHUNK, chunkwise_min_tokens, chunkwise_stabilized};
use super::init;
use super::layers::MultiHeadLayerNorm;

/// Added to the log-decay of future positions; finite so that no `inf − inf` appears anywhere.
const MASKED_LOG_DECAY: f64 = -1e30;
/// Lower bound for the stabiliser in `exp(−m)`; e^60 is far from f32 overflow and the clamp only
/// acts when every input gate of a row is below −60, where the output is ~0 either way.
const STABILISER_FLOOR: f64 = -60.0;
/// ε of M7.
const NORMALISER_EPSILON: f64 = 1e-6;

/// Input/forget gates and output norm of one ViL layer (the official `MatrixLSTMCell`).
#[derive(Module, Debug)]
pub struct MatrixLstmCell<B: Backend> {
    /// Input gate: `[q ‖ k ‖ v]` (3E) → one pre-activation per head.
    pub igate: Linear<B>,
    /// Forget gate, same shape.
    pub fgate: Linear<B>,
    pub outnorm: MultiHeadLayerNorm<B>,
    num_heads: usize,
}

impl<B: Backend> MatrixLstmCell<B> {
    /// Gate weights 0; forget bias linspace(3, 6, heads); input bias N(0, 0.1); norm δ = 0.
    pub fn new(inner_dim: usize, num_heads: usize, norm_bias: bool, device: &B::Device) -> Self {
        let mut igate = LinearConfig::new(3 * inner_dim, num_heads).init(device);
        igate.weight = init::zeros([3 * inner_dim, num_heads], device);
        igate.bias = Some(init::normal([num_heads], 0.1, device));
        let mut fgate = LinearConfig::new(3 * inner_dim, num_heads).init(device);
        fgate.weight = init::zeros([3 * inner_dim, num_heads], device);
        fgate.bias = Some(init::linspace(3.0, 6.0, num_heads, device));
        Self {
            igate,
            fgate,
            outnorm: MultiHeadLayerNorm::new(inner_dim, norm_bias, device),
            num_heads,
        }
    }

    /// Number of mLSTM heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Equations L4-L6: gates from `[q ‖ k ‖ v]`, the parallel cell, and the per-head norm.
    ///
    /// # Shapes
    /// - query, value: `[batch, heads, tokens, head_dim]`
    /// - key_transposed: `[batch, heads, head_dim, tokens]`
    /// - returns `[batch·tokens, heads·head_dim]`
    pub fn forward(
        &self,
        query: Tensor<B, 4>,
        key_transposed: Tensor<B, 4>,
        value: Tensor<B, 4>,
    ) -> Tensor<B, 2> {
        let [batch, heads, tokens, head_dim] = query.dims();
        let [input_gate, forget_gate] = self.gate_preactivations(&query, &key_transposed, &value);
        // Above the crossover of this backend the chunkwise form is faster and its memory
        // grows with S·chunk instead of S².
        let hidden = if tokens >= chunkwise_min_tokens::<B>(&query.device()) {
            chunkwise_stabilized(
                query,
                key_transposed.swap_dims(2, 3),
                value,
                input_gate,
                forget_gate,
                DEFAULT_CHUNK,
            )
        } else {
            parallel_stabilized_transposed_key(
                query,
                key_transposed,
                value,
                input_gate,
                forget_gate,
            )
        };
        self.outnorm
            .forward(hidden)
            .swap_dims(1, 2)
            .reshape([batch * tokens, heads * head_dim])
    }

    /// L4: `[q ‖ k ‖ v]·[W_i ‖ W_f] + b` from the per-head tensors, as one small batched product
    /// per input (the rows of W that belong to head h multiply head h) summed over heads, so the
    /// 3E-wide concatenation is never built.
    ///
    /// Returns the input and forget pre-activations, each `[batch, heads, tokens, 1]`.
    fn gate_preactivations(
        &self,
        query: &Tensor<B, 4>,
        key_transposed: &Tensor<B, 4>,
        value: &Tensor<B, 4>,
    ) -> [Tensor<B, 4>; 2] {
        let [_, heads, _, head_dim] = query.dims();
        let inner = heads * head_dim;
        let gates = self.num_heads;
        // [3E, 2·gates]
        let weight = Tensor::cat(vec![self.igate.weight.val(), self.fgate.weight.val()], 1);
        let bias = Tensor::cat(
            vec![gate_bias(&self.igate, gates), gate_bias(&self.fgate, gates)],
            0,
        );
        // Rows of input `index` (q, k, v), split per head: [1, heads, head_dim, 2·gates].
        let per_head = |index: usize| {
            weight
                .clone()
                .narrow(0, index * inner, inner)
                .reshape([1, heads, head_dim, 2 * gates])
        };
        let from_key = per_head(1)
            .swap_dims(2, 3)
            .matmul(key_transposed.clone())
            .swap_dims(2, 3);
        let summed =
            (query.clone().matmul(per_head(0)) + from_key + value.clone().matmul(per_head(2)))
                .sum_dim(1)
                + bias.reshape([1, 1, 1, 2 * gates]);
        // [batch, 1, tokens, gates] → [batch, gates, tokens, 1]
        [
            summed.clone().narrow(3, 0, gates).swap_dims(1, 3),
            summed.narrow(3, gates, gates).swap_dims(1, 3),
        ]
    }
}

fn gate_bias<B: Backend>(gate: &Linear<B>, heads: usize) -> Tensor<B, 1> {
    match &gate.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([heads], &gate.weight.device()),
    }
}

/// The stabilised parallel mLSTM (equations M1-M7 of VIL_SPEC), per batch element and head:
///
/// - M1 `log f_t = log σ(f̃_t)`;  M2 `F_t = Σ_{r≤t} log f_r`;
/// - M3 `log D_ts = F_t − F_s + ĩ_s` for s ≤ t, −∞ otherwise;
/// - M4 `m_t = max_s log D_ts`, `D'_ts = exp(log D_ts − m_t)`;
/// - M5 `C_ts = (q_t·k_s / √DH) · D'_ts`;
/// - M6 `n_t = max(|Σ_s C_ts|, exp(−m_t))`;
/// - M7 `h_t = Σ_s C_ts v_s / (n_t + 1e-6)`.
///
/// # Shapes
/// - query, key, value: `[batch, heads, tokens, head_dim]`
/// - input_gate, forget_gate (pre-activations): `[batch, heads, tokens, 1]`
/// - returns `[batch, heads, tokens, head_dim]`
pub fn parallel_stabilized<B: Backend>(
    query: Tensor<B, 4>,
    key: Tensor<B, 4>,
    value: Tensor<B, 4>,
    input_gate: Tensor<B, 4>,
    forget_gate: Tensor<B, 4>,
) -> Tensor<B, 4> {
    parallel_stabilized_transposed_key(query, key.swap_dims(2, 3), value, input_gate, forget_gate)
}

/// [`parallel_stabilized`] with the key given as `[batch, heads, head_dim, tokens]`.
fn parallel_stabilized_transposed_key<B: Backend>(
    query: Tensor<B, 4>,
    key_transposed: Tensor<B, 4>,
    value: Tensor<B, 4>,
    input_gate: Tensor<B, 4>,
    forget_gate: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [_, _, tokens, head_dim] = query.dims();
    let device = query.device();

    // M1, M2. F = hi + lo: `hi` is the f32 running sum, `lo` the running sum of the rounding
    // error of each step (TwoSum), which only feeds the normaliser below.
    let log_forget = activation::log_sigmoid(forget_gate);
    let cumulative = log_forget.clone().cumsum(2);
    let rounding = cumulative_rounding_error(log_forget, cumulative.clone()).detach();

    // M3 with F_t − F_s formed from the f32 sums directly: their difference is exact to one
    // rounding, while `F_t + (ĩ_s − F_s)` would round ĩ_s − F_s at the magnitude of F.
    // The row-constant `lo_t` cancels in D' and is added back to m_t for the normaliser.
    let log_decay = (cumulative.clone() - transpose_vector(cumulative))
        + transpose_vector(input_gate - rounding.clone());
    let future = Tensor::<B, 2, Bool>::tril_mask([tokens, tokens], 0, &device)
        .reshape([1, 1, tokens, tokens]);
    let shape = log_decay.dims();
    let log_decay = log_decay.mask_fill(future.expand(shape), MASKED_LOG_DECAY);

    // M4
    let row_max = log_decay.clone().max_dim(3);
    let decay = (log_decay - row_max.clone()).exp();

    // M5
    let key_transposed = key_transposed * (1.0 / (head_dim as f64).sqrt());
    let combination = query.matmul(key_transposed) * decay;

    // M6
    let stabiliser = (row_max + rounding).clamp_min(STABILISER_FLOOR);
    let normaliser = combination
        .clone()
        .sum_dim(3)
        .abs()
        .max_pair(stabiliser.neg().exp());

    // M7: dividing the product row-wise equals normalising C first, at S·DH instead of S² cost.
    combination.matmul(value) / (normaliser + NORMALISER_EPSILON)
}

/// `[batch, heads, n, 1]` ↔ `[batch, heads, 1, n]`: the same values in the same order, so a
/// reshape, not `swap_dims(2, 3)`. burn 0.21's kernel fusion (wgpu, and CUDA runs the same fusion
/// code) computes `x − x.swap_dims(2, 3)` wrongly when `n` is even — a broadcast between a
/// tensor and its own swapped view (tests/gpu checks the cell against the CPU); the reshape
/// gives a plainly laid-out tensor and is free on every backend.
pub(crate) fn transpose_vector<B: Backend>(vector: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, heads, rows, columns] = vector.dims();
    vector.reshape([batch, heads, columns, rows])
}

/// Running sum of the rounding errors of `sums = cumsum(terms)` along axis 2, from Knuth's
/// TwoSum applied to each step `sums[t] = fl(sums[t-1] + terms[t])`; the chunkwise form applies
/// it within each chunk.
pub(crate) fn cumulative_rounding_error<B: Backend>(
    terms: Tensor<B, 4>,
    sums: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [batch, heads, tokens, width] = sums.dims();
    let start = Tensor::zeros([batch, heads, 1, width], &sums.device());
    let previous = if tokens > 1 {
        Tensor::cat(vec![start, sums.clone().narrow(2, 0, tokens - 1)], 2)
    } else {
        start
    };
    let term_part = sums.clone() - previous.clone();
    let previous_part = sums - term_part.clone();
    let step_error = (previous - previous_part) + (terms - term_part);
    step_error.cumsum(2)
}
