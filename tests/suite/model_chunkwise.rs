//! The chunkwise mLSTM (`chunkwise::chunkwise_stabilized`) against the parallel form
//! (`mlstm::parallel_stabilized`, itself checked against an f64 recurrence in model_cell.rs):
//! outputs and the gradients with respect to query, key, value and both gates, for token counts
//! that are multiples of the chunk, not multiples, shorter than one chunk and a single token, and
//! for gate pre-activations of ±30.
//!
//! Tolerances are absolute, scaled by the largest magnitude of the reference when that exceeds 1:
//! `max |chunkwise − parallel| ≤ tolerance · max(1, max |parallel|)`, with tolerance 1e-5 for
//! outputs and 1e-4 for gradients.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vilab::model::chunkwise::chunkwise_stabilized;
use vilab::model::mlstm::parallel_stabilized;

type Backend = NdArray<f32>;
type Training = Autodiff<Backend>;

const BATCH: usize = 2;
const HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const OUTPUT_TOLERANCE: f64 = 1e-5;
const GRADIENT_TOLERANCE: f64 = 1e-4;

/// Inputs of one comparison as f32 values, `[batch][head][token][channel]` row-major, plus the
/// weights of the scalar loss `Σ weight · output` used for the gradients.
struct CellInputs {
    tokens: usize,
    query: Vec<f32>,
    key: Vec<f32>,
    value: Vec<f32>,
    input_gate: Vec<f32>,
    forget_gate: Vec<f32>,
    loss_weights: Vec<f32>,
}

/// How a comparison draws its gates.
#[derive(Clone, Copy)]
enum Gates {
    /// Input gates in [−6, 0] so exp(−m) ≥ 1 keeps the normaliser away from zero; forget gates
    /// in [−4, 6].
    Moderate,
    /// Both gates at −30, 0 or +30 (±0.5): forget gates fully shut or open, input gates spanning
    /// e^±30.
    Saturated,
}

impl CellInputs {
    /// With saturated gates, q and k are positive so Σ C cannot cancel to zero in M6, where the
    /// function itself would be ill-conditioned.
    fn random(tokens: usize, seed: u64, gates: Gates) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vectors = BATCH * HEADS * tokens * HEAD_DIM;
        let scalars = BATCH * HEADS * tokens;
        let mut draw = |count: usize, low: f32, high: f32| -> Vec<f32> {
            (0..count).map(|_| rng.random_range(low..high)).collect()
        };
        let (query_low, query_high) = match gates {
            Gates::Moderate => (-1.5, 1.5),
            Gates::Saturated => (0.1, 1.0),
        };
        let query = draw(vectors, query_low, query_high);
        let key = draw(vectors, query_low, query_high);
        let value = draw(vectors, -2.0, 2.0);
        let loss_weights = draw(vectors, -1.0, 1.0);
        let (input_gate, forget_gate) = match gates {
            Gates::Moderate => (draw(scalars, -6.0, 0.0), draw(scalars, -4.0, 6.0)),
            Gates::Saturated => {
                let mut saturated = || {
                    (0..scalars)
                        .map(|_| {
                            [-30.0, 0.0, 30.0][rng.random_range(0..3)] + rng.random_range(-0.5..0.5)
                        })
                        .collect::<Vec<f32>>()
                };
                (saturated(), saturated())
            }
        };
        Self {
            tokens,
            query,
            key,
            value,
            input_gate,
            forget_gate,
            loss_weights,
        }
    }

    fn tensor<B: burn::tensor::backend::Backend>(
        &self,
        values: &[f32],
        width: usize,
    ) -> Tensor<B, 4> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [BATCH, HEADS, self.tokens, width]),
            &Default::default(),
        )
    }

    /// The five inputs as tensors, in the order of the cell's arguments.
    fn tensors<B: burn::tensor::backend::Backend>(&self) -> [Tensor<B, 4>; 5] {
        [
            self.tensor(&self.query, HEAD_DIM),
            self.tensor(&self.key, HEAD_DIM),
            self.tensor(&self.value, HEAD_DIM),
            self.tensor(&self.input_gate, 1),
            self.tensor(&self.forget_gate, 1),
        ]
    }
}

/// Which form of the cell to evaluate.
#[derive(Clone, Copy)]
enum Form {
    Parallel,
    Chunkwise(usize),
}

fn evaluate<B: burn::tensor::backend::Backend>(
    form: Form,
    [query, key, value, input_gate, forget_gate]: [Tensor<B, 4>; 5],
) -> Tensor<B, 4> {
    match form {
        Form::Parallel => parallel_stabilized(query, key, value, input_gate, forget_gate),
        Form::Chunkwise(chunk) => {
            chunkwise_stabilized(query, key, value, input_gate, forget_gate, chunk)
        }
    }
}

fn values<B: burn::tensor::backend::Backend>(tensor: Tensor<B, 4>) -> Vec<f32> {
    tensor.into_data().to_vec().expect("f32 tensor")
}

/// `max |actual − reference|` and `max(1, max |reference|)`.
fn difference(actual: &[f32], reference: &[f32]) -> (f64, f64) {
    assert_eq!(actual.len(), reference.len());
    let scale = reference
        .iter()
        .fold(1.0f64, |acc, &value| acc.max(f64::from(value).abs()));
    let difference = actual.iter().zip(reference).fold(0.0f64, |acc, (&a, &r)| {
        acc.max((f64::from(a) - f64::from(r)).abs())
    });
    (difference, scale)
}

fn assert_outputs_match(inputs: &CellInputs, chunk: usize) {
    let reference = values(evaluate::<Backend>(Form::Parallel, inputs.tensors()));
    let chunkwise = values(evaluate::<Backend>(
        Form::Chunkwise(chunk),
        inputs.tensors(),
    ));
    let largest = reference.iter().fold(0.0f32, |acc, v| acc.max(v.abs()));
    assert!(
        largest > 0.05,
        "outputs are not trivially small ({largest})"
    );
    let (difference, scale) = difference(&chunkwise, &reference);
    assert!(
        difference <= OUTPUT_TOLERANCE * scale,
        "{} tokens, chunk {chunk}: max |Δ| = {difference:e} (scale {scale})",
        inputs.tokens
    );
}

/// The gradients of `Σ weight · output` with respect to the five inputs.
fn gradients(inputs: &CellInputs, form: Form) -> Vec<Vec<f32>> {
    let tensors = inputs
        .tensors::<Training>()
        .map(|tensor| tensor.require_grad());
    let output = evaluate(form, tensors.clone());
    let weights = inputs.tensor::<Training>(&inputs.loss_weights, HEAD_DIM);
    let gradients = (output * weights).sum().backward();
    tensors
        .into_iter()
        .map(|tensor| {
            let gradient = tensor.grad(&gradients).expect("every input has a gradient");
            gradient.into_data().to_vec().expect("f32 gradient")
        })
        .collect()
}

fn assert_gradients_match(inputs: &CellInputs, chunk: usize) {
    let reference = gradients(inputs, Form::Parallel);
    let chunkwise = gradients(inputs, Form::Chunkwise(chunk));
    for (name, (actual, expected)) in ["query", "key", "value", "input gate", "forget gate"]
        .into_iter()
        .zip(chunkwise.iter().zip(&reference))
    {
        assert!(
            actual.iter().all(|value| value.is_finite()),
            "{name} gradient is finite"
        );
        // A single token's output does not depend on its forget gate (F_t − F_s = 0).
        if inputs.tokens > 1 || name != "forget gate" {
            let largest = expected.iter().fold(0.0f32, |acc, v| acc.max(v.abs()));
            assert!(largest > 1e-3, "{name} gradient is not trivially small");
        }
        let (difference, scale) = difference(actual, expected);
        assert!(
            difference <= GRADIENT_TOLERANCE * scale,
            "{name} gradient, {} tokens, chunk {chunk}: max |Δ| = {difference:e} (scale {scale})",
            inputs.tokens
        );
    }
}

#[test]
fn chunkwise_equals_parallel_for_moderate_gates() {
    // Multiples of the chunk, remainders, shorter than one chunk, one token, chunk of one.
    for (seed, tokens, chunk) in [
        (1, 1, 16),
        (2, 7, 16),
        (3, 16, 16),
        (4, 49, 16),
        (5, 64, 16),
        (6, 100, 32),
        (7, 196, 64),
        (8, 13, 1),
    ] {
        assert_outputs_match(&CellInputs::random(tokens, seed, Gates::Moderate), chunk);
    }
}

#[test]
fn chunkwise_equals_parallel_for_saturated_gates() {
    for (seed, tokens, chunk) in [(11, 16, 4), (12, 64, 16), (13, 196, 64), (14, 150, 7)] {
        assert_outputs_match(&CellInputs::random(tokens, seed, Gates::Saturated), chunk);
    }
}

#[test]
fn chunkwise_gradients_equal_parallel_gradients() {
    for (seed, tokens, chunk, gates) in [
        (21, 1, 8, Gates::Moderate),
        (22, 5, 8, Gates::Moderate),
        (23, 49, 16, Gates::Moderate),
        (24, 70, 32, Gates::Moderate),
        (25, 49, 16, Gates::Saturated),
        (26, 100, 32, Gates::Saturated),
    ] {
        assert_gradients_match(&CellInputs::random(tokens, seed, gates), chunk);
    }
}

#[test]
fn chunk_size_does_not_change_the_result() {
    // Every chunk length from one token to the whole sequence gives the same outputs.
    let inputs = CellInputs::random(37, 31, Gates::Moderate);
    let reference = values(evaluate::<Backend>(Form::Parallel, inputs.tensors()));
    for chunk in [1, 2, 3, 5, 8, 36, 37, 38, 100] {
        let chunkwise = values(evaluate::<Backend>(
            Form::Chunkwise(chunk),
            inputs.tensors(),
        ));
        let (difference, scale) = difference(&chunkwise, &reference);
        assert!(
            difference <= OUTPUT_TOLERANCE * scale,
            "chunk {chunk}: max |Δ| = {difference:e}"
        );
    }
}
