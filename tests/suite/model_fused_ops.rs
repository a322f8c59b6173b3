//! The threaded CPU operations around the fused layer core — `fused::linear` (the up- and
//! down-projections, the patch embedding) and `fused::norm` (every layer norm of the model) —
//! compute what the same formula written as burn operations computes, values and gradients of the
//! input and of every parameter, and give the same bits on one thread and on several.

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::tensor::backend::Backend as BackendTrait;
use burn::tensor::{Distribution, Tensor};
use vilab::model::fused::linear::linear;
use vilab::model::layers::VilLayerNorm;

use crate::common::backend_rng_lock;

type Backend = NdArray<f32>;
type Training = Autodiff<Backend>;

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Backend, D> {
    Backend::seed(&Default::default(), seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

fn tracked<const D: usize>(tensor: &Tensor<Backend, D>) -> Tensor<Training, D> {
    Tensor::from_inner(tensor.clone()).require_grad()
}

/// Largest absolute difference relative to the largest magnitude of `expected`.
fn difference<const D: usize>(actual: &Tensor<Backend, D>, expected: &Tensor<Backend, D>) -> f32 {
    let scale = expected.clone().abs().max().into_scalar().max(1e-6);
    (actual.clone() - expected.clone())
        .abs()
        .max()
        .into_scalar()
        / scale
}

/// Output and the gradients of input, weight and bias of `input · weight + bias` against the
/// loss `Σ output ⊙ probe`, through `fused::linear` or through plain burn products.
fn linear_run(
    fused: bool,
    input: &Tensor<Backend, 2>,
    weight: &Tensor<Backend, 2>,
    bias: &Tensor<Backend, 1>,
    probe: &Tensor<Backend, 2>,
) -> [Tensor<Backend, 2>; 4] {
    let (x, w, b) = (tracked(input), tracked(weight), tracked(bias));
    let output = if fused {
        linear(x.clone(), w.clone(), Some(b.clone()))
    } else {
        x.clone().matmul(w.clone()) + b.clone().unsqueeze::<2>()
    };
    let gradients = (output.clone() * Tensor::from_inner(probe.clone()))
        .sum()
        .backward();
    [
        output.inner(),
        x.grad(&gradients).expect("input gradient"),
        w.grad(&gradients).expect("weight gradient"),
        b.grad(&gradients).expect("bias gradient").unsqueeze::<2>(),
    ]
}

#[test]
fn threaded_linear_matches_burn_products_in_values_and_gradients() {
    let _rng = backend_rng_lock();
    // 150 rows × 70 columns: more than one block of 64 both ways, and ragged last blocks.
    for (rows, depth, columns) in [(150, 37, 70), (5, 200, 130), (1, 3, 1)] {
        let input = random([rows, depth], 1);
        let weight = random([depth, columns], 2);
        let bias = random([columns], 3);
        let probe = random([rows, columns], 4);
        let output = linear(input.clone(), weight.clone(), Some(bias.clone()));
        let expected = input.clone().matmul(weight.clone()) + bias.clone().unsqueeze::<2>();
        let error = difference(&output, &expected);
        assert!(
            error < 1e-6,
            "{rows}×{depth}·{depth}×{columns}: output off by {error}"
        );
        let fused = linear_run(true, &input, &weight, &bias, &probe);
        let generic = linear_run(false, &input, &weight, &bias, &probe);
        for (name, (actual, expected)) in ["output", "input", "weight", "bias"]
            .iter()
            .zip(fused.iter().zip(generic.iter()))
        {
            let error = difference(actual, expected);
            assert!(
                error < 1e-5,
                "{rows}×{depth}·{depth}×{columns}: {name} off by {error}"
            );
        }
    }
}

/// Output and gradients (input, weight, bias) of a layer norm against `Σ output ⊙ probe`.
fn norm_run(
    norm: &VilLayerNorm<Training>,
    input: &Tensor<Backend, 3>,
    probe: &Tensor<Backend, 3>,
) -> (
    Tensor<Backend, 3>,
    Tensor<Backend, 3>,
    Tensor<Backend, 1>,
    Tensor<Backend, 1>,
) {
    let x = tracked(input);
    let output = norm.forward(x.clone());
    let gradients = (output.clone() * Tensor::from_inner(probe.clone()))
        .sum()
        .backward();
    (
        output.inner(),
        x.grad(&gradients).expect("input gradient"),
        norm.weight.grad(&gradients).expect("weight gradient"),
        norm.bias
            .as_ref()
            .expect("a bias")
            .grad(&gradients)
            .expect("bias gradient"),
    )
}

/// The norm as burn operations: `(x − mean) / √(var + ε) · scale + bias`, biased variance.
fn reference_norm(
    input: Tensor<Training, 3>,
    scale: Tensor<Training, 1>,
    bias: Tensor<Training, 1>,
    epsilon: f64,
) -> Tensor<Training, 3> {
    let centred = input.clone() - input.mean_dim(2);
    let variance = (centred.clone() * centred.clone()).mean_dim(2);
    centred / (variance + epsilon).sqrt() * scale.unsqueeze::<3>() + bias.unsqueeze::<3>()
}

fn with_parameters(
    offset: bool,
    weight: &Tensor<Backend, 1>,
    bias: &Tensor<Backend, 1>,
) -> VilLayerNorm<Training> {
    let device = Default::default();
    let width = weight.dims()[0];
    let mut norm = if offset {
        VilLayerNorm::offset(width, true, 1e-5, &device)
    } else {
        VilLayerNorm::direct(width, 1e-5, &device)
    };
    norm.weight = Param::from_tensor(tracked(weight));
    norm.bias = Some(Param::from_tensor(tracked(bias)));
    norm
}

#[test]
fn threaded_layer_norm_matches_burn_operations_in_values_and_gradients() {
    let _rng = backend_rng_lock();
    // 3 × 50 rows: more than one block of 64, the last ragged; offset and direct scales.
    let input = random([3, 50, 24], 5).mul_scalar(3.0).add_scalar(0.5);
    let probe = random([3, 50, 24], 6);
    let weight = random([24], 7).mul_scalar(0.3);
    let bias = random([24], 8).mul_scalar(0.3);
    for offset in [true, false] {
        let norm = with_parameters(offset, &weight, &bias);
        let (output, input_gradient, weight_gradient, bias_gradient) =
            norm_run(&norm, &input, &probe);

        let x = tracked(&input);
        let w = tracked(&weight);
        let b = tracked(&bias);
        let scale = if offset { w.clone() + 1.0 } else { w.clone() };
        let expected = reference_norm(x.clone(), scale, b.clone(), 1e-5);
        let gradients = (expected.clone() * Tensor::from_inner(probe.clone()))
            .sum()
            .backward();
        let checks = [
            ("output", difference(&output, &expected.inner())),
            (
                "input gradient",
                difference(&input_gradient, &x.grad(&gradients).unwrap()),
            ),
            (
                "weight gradient",
                difference(&weight_gradient, &w.grad(&gradients).unwrap()),
            ),
            (
                "bias gradient",
                difference(&bias_gradient, &b.grad(&gradients).unwrap()),
            ),
        ];
        for (name, error) in checks {
            assert!(error < 1e-5, "offset scale {offset}: {name} off by {error}");
        }
    }
}

#[test]
fn threaded_operations_give_the_same_bits_for_any_thread_count() {
    let _rng = backend_rng_lock();
    let input = random([150, 40], 9);
    let weight = random([40, 70], 10);
    let bias = random([70], 11);
    let probe = random([150, 70], 12);
    let norm_input = random([2, 70, 40], 13);
    let norm_probe = random([2, 70, 40], 14);
    let norm_weight = random([40], 15);
    let norm_bias = random([40], 16);
    let with_threads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| {
            let mut all: Vec<Vec<f32>> = linear_run(true, &input, &weight, &bias, &probe)
                .into_iter()
                .map(|tensor| tensor.into_data().to_vec().expect("f32"))
                .collect();
            let norm = with_parameters(true, &norm_weight, &norm_bias);
            let (output, input_gradient, weight_gradient, bias_gradient) =
                norm_run(&norm, &norm_input, &norm_probe);
            all.push(output.into_data().to_vec().expect("f32"));
            all.push(input_gradient.into_data().to_vec().expect("f32"));
            all.push(weight_gradient.into_data().to_vec().expect("f32"));
            all.push(bias_gradient.into_data().to_vec().expect("f32"));
            all
        })
    };
    let one = with_threads(1);
    for threads in [2, 3] {
        assert!(
            one == with_threads(threads),
            "results on {threads} threads differ from one thread's"
        );
    }
}
