//! The fused CPU kernel of the ViL layer core (`vilab::model::fused`) computes what the generic
//! composition of burn operations computes: the same outputs and the same gradients for the
//! input and every parameter, for both convolutions (v1 causal 1-D, v2 2-D over the grid), both
//! reading directions, with and without biases, and for gates pushed to extremes.
//!
//! Parameters are randomised first (the official init leaves gate weights and norm offsets at
//! zero, which would leave most of the backward pass untested).

use std::collections::BTreeMap;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend as BackendTrait};
use burn::tensor::{Distribution, Tensor};
use vilab::model::{BlockLayout, ConvKind, Direction, Kernels, Pooling, ViLLayer, VilConfig};

use crate::common::backend_rng_lock;

type Backend = NdArray<f32>;
type Training = Autodiff<Backend>;

/// Adds N(0, `spread`) noise to every parameter, and `gate_offset` to the gate biases.
struct Perturb {
    spread: f64,
    path: Vec<String>,
    gate_offset: f64,
}

impl<B: BackendTrait> ModuleMapper<B> for Perturb {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let spread = self.spread;
        let gate = self
            .path
            .iter()
            .any(|part| part == "igate" || part == "fgate");
        let offset = if gate && D == 1 {
            self.gate_offset
        } else {
            0.0
        };
        param.map(|tensor| {
            let noise = Tensor::random(
                tensor.shape(),
                Distribution::Normal(0.0, spread),
                &tensor.device(),
            );
            // A fresh leaf, so that gradients stop here and not at the unperturbed value.
            (tensor + noise + offset).detach().require_grad()
        })
    }
}

/// Every parameter gradient by its module path.
struct Gradients<'a> {
    grads: &'a <Training as AutodiffBackend>::Gradients,
    path: Vec<String>,
    found: BTreeMap<String, Tensor<Backend, 1>>,
}

impl ModuleVisitor<Training> for Gradients<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Training, D>>) {
        let name = format!("{}#{}", self.path.join("."), self.found.len());
        if let Some(gradient) = param.val().grad(self.grads) {
            self.found.insert(name, gradient.flatten(0, D - 1));
        }
    }
}

struct Case {
    config: VilConfig,
    direction: Direction,
    grid: [usize; 2],
    gate_offset: f64,
}

fn cases() -> Vec<(String, Case)> {
    let v1 = || VilConfig::new(16, 2).with_patch_size(4).with_image_size(20);
    let v2 = || {
        VilConfig::new(16, 2)
            .with_patch_size(4)
            .with_image_size(20)
            .with_conv_kind(ConvKind::TwoD)
            .with_conv_kernel_size(3)
            .with_bias(true)
            .with_layout(BlockLayout::Pairs)
            .with_pooling(Pooling::BilateralFlatten)
    };
    let mut cases = Vec::new();
    // 72 tokens on a 9×8 grid: more than one row block of the kernel's triangular products,
    // and a grid that is not square.
    for (config, direction, tag) in [
        (v1(), Direction::FromTopLeft, "v1_top_left_72_tokens"),
        (
            v1(),
            Direction::FromBottomRight,
            "v1_bottom_right_72_tokens",
        ),
        (
            v2(),
            Direction::FromBottomRight,
            "v2_bottom_right_72_tokens",
        ),
    ] {
        cases.push((
            tag.to_owned(),
            Case {
                config,
                direction,
                grid: [9, 8],
                gate_offset: 0.0,
            },
        ));
    }
    for (direction, tag) in [
        (Direction::FromTopLeft, "top_left"),
        (Direction::FromBottomRight, "bottom_right"),
    ] {
        for (offset, offset_tag) in [
            (0.0, ""),
            (30.0, "_gates_plus_30"),
            (-30.0, "_gates_minus_30"),
        ] {
            cases.push((
                format!("v1_{tag}{offset_tag}"),
                Case {
                    config: v1(),
                    direction,
                    grid: [5, 5],
                    gate_offset: offset,
                },
            ));
        }
        cases.push((
            format!("v2_{tag}"),
            Case {
                config: v2(),
                direction,
                grid: [5, 5],
                gate_offset: 0.0,
            },
        ));
    }
    cases
}

/// Output and all gradients of one layer on one input, through the chosen kernels.
fn run(
    layer: &ViLLayer<Training>,
    input: &Tensor<Backend, 3>,
    weights: &Tensor<Backend, 3>,
    grid: [usize; 2],
    kernels: Kernels,
) -> (Tensor<Backend, 3>, BTreeMap<String, Tensor<Backend, 1>>) {
    let input = Tensor::<Training, 3>::from_inner(input.clone()).require_grad();
    let output = layer.forward_with(input.clone(), grid, kernels);
    let loss = (output.clone() * Tensor::from_inner(weights.clone())).sum();
    let grads = loss.backward();
    let mut visitor = Gradients {
        grads: &grads,
        path: Vec::new(),
        found: BTreeMap::new(),
    };
    layer.visit(&mut visitor);
    let mut found = visitor.found;
    let input_gradient = input.grad(&grads).expect("the input is tracked");
    found.insert("input".into(), input_gradient.flatten(0, 2));
    (output.inner(), found)
}

/// max |a − b| / (1 + max |b|): relative to the tensor's scale, absolute near zero.
fn scaled_difference<const D: usize>(a: &Tensor<Backend, D>, b: &Tensor<Backend, D>) -> f32 {
    let difference: f32 = (a.clone() - b.clone()).abs().max().into_scalar();
    let scale: f32 = b.clone().abs().max().into_scalar();
    difference / (1.0 + scale)
}

/// A freshly initialised layer with N(0, 0.3) noise on every parameter and `gate_offset` on
/// its gate biases, so that no parameter sits at its special initial value.
fn perturbed_layer(
    config: &VilConfig,
    direction: Direction,
    gate_offset: f64,
    device: &burn::backend::ndarray::NdArrayDevice,
) -> ViLLayer<Training> {
    ViLLayer::<Training>::new(config, direction, device).map(&mut Perturb {
        spread: 0.3,
        path: Vec::new(),
        gate_offset,
    })
}

#[test]
fn fused_core_matches_the_generic_layer_in_values_and_gradients() {
    // Every case seeds burn's global RNG and draws from it; the lock keeps the other tests of
    // this binary from drawing in between.
    let _rng = backend_rng_lock();
    let device = Default::default();
    let mut report = Vec::new();
    for (name, case) in cases() {
        Training::seed(&device, 11);
        let layer = perturbed_layer(&case.config, case.direction, case.gate_offset, &device);
        let [height, width] = case.grid;
        let shape = [3, height * width, case.config.dim];
        let input = Tensor::<Backend, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let weights = Tensor::<Backend, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device);

        let (fused_output, fused_gradients) =
            run(&layer, &input, &weights, case.grid, Kernels::Fused);
        let (generic_output, generic_gradients) =
            run(&layer, &input, &weights, case.grid, Kernels::Generic);

        let output_difference = scaled_difference(&fused_output, &generic_output);
        assert!(
            output_difference <= 1e-5,
            "{name}: outputs differ by {output_difference:e}"
        );
        assert_eq!(
            fused_gradients.keys().collect::<Vec<_>>(),
            generic_gradients.keys().collect::<Vec<_>>(),
            "{name}: the same parameters receive gradients"
        );
        let mut worst = (String::new(), 0.0f32);
        for (parameter, generic) in &generic_gradients {
            let difference = scaled_difference(&fused_gradients[parameter], generic);
            if difference > worst.1 {
                worst = (parameter.clone(), difference);
            }
            assert!(
                difference <= 1e-4,
                "{name}: gradient of {parameter} differs by {difference:e}"
            );
        }
        report.push(format!(
            "{name}: output {output_difference:.1e}, worst gradient {} {:.1e}",
            worst.0, worst.1
        ));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn fused_inference_matches_training_forward() {
    // Seeds and draws: see the first test.
    let _rng = backend_rng_lock();
    let device = Default::default();
    Training::seed(&device, 5);
    let config = VilConfig::new(16, 2).with_patch_size(4).with_image_size(16);
    let layer = perturbed_layer(&config, Direction::FromBottomRight, 0.0, &device);
    let input = Tensor::<Backend, 3>::random([2, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let trained = layer
        .forward_with(Tensor::from_inner(input.clone()), [4, 4], Kernels::Fused)
        .inner();
    let inference = layer
        .valid()
        .forward_with(input.clone(), [4, 4], Kernels::Fused);
    let generic = layer.valid().forward_with(input, [4, 4], Kernels::Generic);
    assert_eq!(
        trained.to_data(),
        inference.to_data(),
        "the same kernel gives the same bits"
    );
    assert!(scaled_difference(&inference, &generic) <= 1e-5);
}

#[test]
fn fused_gradients_are_the_same_bits_for_any_thread_count() {
    // Seeds and draws: see the first test.
    let _rng = backend_rng_lock();
    let device = Default::default();
    Training::seed(&device, 3);
    let config = VilConfig::new(16, 2).with_patch_size(4).with_image_size(16);
    let layer = perturbed_layer(&config, Direction::FromTopLeft, 0.0, &device);
    let input = Tensor::<Backend, 3>::random([9, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let weights =
        Tensor::<Backend, 3>::random([9, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let gradients_with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| run(&layer, &input, &weights, [4, 4], Kernels::Fused).1)
    };
    let one = gradients_with(1);
    let three = gradients_with(3);
    for (name, gradient) in &one {
        assert_eq!(
            gradient.to_data(),
            three[name].to_data(),
            "{name}: the gradient depends on the thread count"
        );
    }
}
