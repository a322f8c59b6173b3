//! The parallel mLSTM cell (`mlstm::parallel_stabilized`, equations M1-M7) against an
//! independent step-by-step recurrent mLSTM written here in f64 (xLSTM, arXiv 2405.04517,
//! equations 19-27 with the max-stabiliser), including gate pre-activations of ±30, and the
//! absence of inf/NaN in forward and backward for such gates.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vilab::model::mlstm::parallel_stabilized;

type Backend = NdArray<f32>;

const BATCH: usize = 2;
const HEADS: usize = 2;
const HEAD_DIM: usize = 8;

/// Inputs for one comparison, stored `[batch][head][token][channel]` row-major.
struct CellInputs {
    tokens: usize,
    query: Vec<f64>,
    key: Vec<f64>,
    value: Vec<f64>,
    input_gate: Vec<f64>,
    forget_gate: Vec<f64>,
}

impl CellInputs {
    fn random(
        tokens: usize,
        seed: u64,
        positive_query_key: bool,
        input_gate: impl Fn(&mut ChaCha8Rng) -> f64,
        forget_gate: impl Fn(&mut ChaCha8Rng) -> f64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vectors = BATCH * HEADS * tokens * HEAD_DIM;
        let gates = BATCH * HEADS * tokens;
        // Rounded to f32 so that both implementations see exactly the same numbers.
        let round = |value: f64| f64::from(value as f32);
        let query_key = |rng: &mut ChaCha8Rng| {
            (0..vectors)
                .map(|_| {
                    round(if positive_query_key {
                        rng.random_range(0.1..1.0)
                    } else {
                        rng.random_range(-1.5..1.5)
                    })
                })
                .collect::<Vec<f64>>()
        };
        let query = query_key(&mut rng);
        let key = query_key(&mut rng);
        let value = (0..vectors)
            .map(|_| round(rng.random_range(-2.0..2.0)))
            .collect();
        let input_gate = (0..gates).map(|_| round(input_gate(&mut rng))).collect();
        let forget_gate = (0..gates).map(|_| round(forget_gate(&mut rng))).collect();
        Self {
            tokens,
            query,
            key,
            value,
            input_gate,
            forget_gate,
        }
    }

    fn tensor<B: burn::tensor::backend::Backend>(
        &self,
        values: &[f64],
        width: usize,
    ) -> Tensor<B, 4> {
        let data: Vec<f32> = values.iter().map(|&value| value as f32).collect();
        Tensor::from_data(
            TensorData::new(data, [BATCH, HEADS, self.tokens, width]),
            &Default::default(),
        )
    }

    fn parallel<B: burn::tensor::backend::Backend>(&self) -> Tensor<B, 4> {
        parallel_stabilized(
            self.tensor(&self.query, HEAD_DIM),
            self.tensor(&self.key, HEAD_DIM),
            self.tensor(&self.value, HEAD_DIM),
            self.tensor(&self.input_gate, 1),
            self.tensor(&self.forget_gate, 1),
        )
    }

    /// The recurrent form, per batch element and head:
    /// m_t = max(log f_t + m_{t-1}, ĩ_t), C_t = f'·C_{t-1} + i'·v_t k_tᵀ, n_t = f'·n_{t-1} + i'·k_t,
    /// h_t = C_t q_t / (max(|n_tᵀ q_t|, exp(−m_t)) + 1e-6), with f' = exp(log f_t + m_{t-1} − m_t),
    /// i' = exp(ĩ_t − m_t) and k scaled by 1/√DH.
    fn recurrent(&self) -> Vec<f64> {
        let tokens = self.tokens;
        let scale = 1.0 / (HEAD_DIM as f64).sqrt();
        let mut output = vec![0.0; BATCH * HEADS * tokens * HEAD_DIM];
        for sequence in 0..BATCH * HEADS {
            let mut memory = [[0.0f64; HEAD_DIM]; HEAD_DIM];
            let mut normaliser = [0.0f64; HEAD_DIM];
            let mut stabiliser = f64::NEG_INFINITY;
            for t in 0..tokens {
                let vector = |values: &[f64]| -> [f64; HEAD_DIM] {
                    let start = (sequence * tokens + t) * HEAD_DIM;
                    std::array::from_fn(|channel| values[start + channel])
                };
                let (query, key, value) =
                    (vector(&self.query), vector(&self.key), vector(&self.value));
                let input_gate = self.input_gate[sequence * tokens + t];
                let forget_gate = self.forget_gate[sequence * tokens + t];
                let log_forget = log_sigmoid(forget_gate);
                let next = if t == 0 {
                    input_gate
                } else {
                    (log_forget + stabiliser).max(input_gate)
                };
                let forget = if t == 0 {
                    0.0
                } else {
                    (log_forget + stabiliser - next).exp()
                };
                let input = (input_gate - next).exp();
                stabiliser = next;
                for row in 0..HEAD_DIM {
                    for column in 0..HEAD_DIM {
                        memory[row][column] =
                            forget * memory[row][column] + input * value[row] * key[column] * scale;
                    }
                    normaliser[row] = forget * normaliser[row] + input * key[row] * scale;
                }
                let projection: f64 = (0..HEAD_DIM).map(|c| normaliser[c] * query[c]).sum();
                let denominator = projection.abs().max((-stabiliser).exp()) + 1e-6;
                for row in 0..HEAD_DIM {
                    let retrieved: f64 = (0..HEAD_DIM).map(|c| memory[row][c] * query[c]).sum();
                    output[(sequence * tokens + t) * HEAD_DIM + row] = retrieved / denominator;
                }
            }
        }
        output
    }
}

/// log σ(x) without overflow for large |x|: min(x, 0) − ln(1 + e^{−|x|}).
fn log_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

fn max_difference(inputs: &CellInputs) -> (f64, f64) {
    let parallel: Vec<f32> = inputs
        .parallel::<Backend>()
        .into_data()
        .to_vec()
        .expect("f32 output");
    let recurrent = inputs.recurrent();
    let largest = recurrent
        .iter()
        .fold(0.0f64, |acc, value| acc.max(value.abs()));
    let difference = parallel
        .iter()
        .zip(&recurrent)
        .fold(0.0f64, |acc, (&p, &r)| acc.max((f64::from(p) - r).abs()));
    (difference, largest)
}

// Both comparisons keep the normaliser of M6 away from zero, where h itself is ill-conditioned
// (|Σ C| ≈ 0 with a tiny exp(−m) amplifies any rounding): either exp(−m) ≥ 1 dominates (input
// gates ≤ 0) or q·k > 0 makes Σ C at least as large as its diagonal term.

#[test]
fn parallel_cell_equals_the_recurrent_form_for_moderate_gates() {
    let forget = |rng: &mut ChaCha8Rng| rng.random_range(-4.0..6.0);
    for (seed, tokens) in [(1, 1), (2, 7), (3, 16), (4, 49)] {
        let signed = CellInputs::random(
            tokens,
            seed,
            false,
            |rng| rng.random_range(-6.0..0.0),
            forget,
        );
        let positive = CellInputs::random(
            tokens,
            seed + 10,
            true,
            |rng| rng.random_range(-4.0..6.0),
            forget,
        );
        for inputs in [signed, positive] {
            let (difference, largest) = max_difference(&inputs);
            assert!(largest > 0.1, "outputs are not trivially small ({largest})");
            assert!(
                difference <= 1e-5,
                "{tokens} tokens: max |Δ| = {difference:e}"
            );
        }
    }
}

#[test]
fn parallel_cell_equals_the_recurrent_form_for_saturated_gates() {
    // Gate pre-activations of ±30 (and 0), so forget gates are fully open or fully shut and input
    // gates span e^±30. With positive q·k the normaliser cannot cancel to zero, so the function
    // itself is well conditioned and the comparison measures the implementation alone.
    let saturated = |rng: &mut ChaCha8Rng| {
        [-30.0, 0.0, 30.0][rng.random_range(0..3)] + rng.random_range(-0.5..0.5)
    };
    for (seed, tokens) in [(5, 16), (6, 64), (7, 196)] {
        let inputs = CellInputs::random(tokens, seed, true, saturated, saturated);
        let (difference, largest) = max_difference(&inputs);
        assert!(largest > 0.1, "outputs are not trivially small ({largest})");
        assert!(
            difference <= 1e-5,
            "{tokens} tokens: max |Δ| = {difference:e}"
        );
    }
}

#[test]
fn saturated_gates_give_finite_outputs_and_gradients() {
    type Training = Autodiff<Backend>;
    for gate_value in [-30.0, 30.0, -80.0, 80.0] {
        let extreme = |rng: &mut ChaCha8Rng| gate_value * [1.0, -1.0][rng.random_range(0..2)];
        let inputs = CellInputs::random(24, 8, false, extreme, extreme);
        let query = inputs
            .tensor::<Training>(&inputs.query, HEAD_DIM)
            .require_grad();
        let key = inputs
            .tensor::<Training>(&inputs.key, HEAD_DIM)
            .require_grad();
        let value = inputs
            .tensor::<Training>(&inputs.value, HEAD_DIM)
            .require_grad();
        let input_gate = inputs
            .tensor::<Training>(&inputs.input_gate, 1)
            .require_grad();
        let forget_gate = inputs
            .tensor::<Training>(&inputs.forget_gate, 1)
            .require_grad();
        let output = parallel_stabilized(
            query.clone(),
            key.clone(),
            value.clone(),
            input_gate.clone(),
            forget_gate.clone(),
        );
        let finite = |values: Vec<f32>| values.iter().all(|value| value.is_finite());
        let output_values: Vec<f32> = output.clone().into_data().to_vec().expect("f32");
        assert!(finite(output_values), "forward at ±{gate_value}");
        let gradients = output.sum().backward();
        for (name, tensor) in [
            ("query", query),
            ("key", key),
            ("value", value),
            ("input gate", input_gate),
            ("forget gate", forget_gate),
        ] {
            let gradient = tensor.grad(&gradients).expect("gradient exists");
            let values: Vec<f32> = gradient.into_data().to_vec().expect("f32");
            assert!(finite(values), "{name} gradient at ±{gate_value}");
        }
    }
}
