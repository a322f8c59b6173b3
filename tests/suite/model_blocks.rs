//! Block-level behaviour of the ViL port: causality of forward and reversed blocks with the
//! causal 1-D convolution, stochastic depth only while training, and gradients reaching every
//! parameter of both layouts (including the zero-initialised gate weights and norm offsets).

use std::collections::BTreeMap;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend as BackendTrait};
use burn::tensor::{Distribution, ElementConversion, Tensor};
use vilab::model::layers::{drop_path, silu};
use vilab::model::{BlockLayout, ConvKind, Direction, Pooling, ViLBlock, VilConfig};

use crate::common::backend_rng_lock;

type Backend = NdArray<f32>;
type Training = Autodiff<Backend>;

const GRID: [usize; 2] = [4, 4];
const TOKENS: usize = 16;

fn block_config() -> VilConfig {
    VilConfig::new(16, 2).with_patch_size(4).with_image_size(16)
}

/// Largest |a − b| over tokens `range` of two `[1, tokens, dim]` outputs.
fn difference_over(
    a: &Tensor<Backend, 3>,
    b: &Tensor<Backend, 3>,
    range: std::ops::Range<usize>,
) -> f32 {
    let length = range.end - range.start;
    let a = a.clone().narrow(1, range.start, length);
    let b = b.clone().narrow(1, range.start, length);
    (a - b).abs().max().into_scalar()
}

/// Runs the block on a random sequence and on a copy with token `changed` replaced.
fn outputs_before_and_after_change(
    direction: Direction,
    changed: usize,
) -> [Tensor<Backend, 3>; 2] {
    // The test binary's other tests share burn's global RNG: hold it from the seed until the
    // forward passes are done (the block's parameters are drawn when first used).
    let _rng = backend_rng_lock();
    let device = Default::default();
    Backend::seed(&device, 7);
    let block = ViLBlock::<Backend>::new(&block_config(), direction, &device);
    let input =
        Tensor::<Backend, 3>::random([1, TOKENS, 16], Distribution::Normal(0.0, 1.0), &device);
    let replacement =
        Tensor::<Backend, 3>::random([1, 1, 16], Distribution::Normal(0.0, 1.0), &device);
    let changed_input = input
        .clone()
        .slice_assign([0..1, changed..changed + 1, 0..16], replacement);
    [
        block.forward(input, GRID),
        block.forward(changed_input, GRID),
    ]
}

#[test]
fn forward_block_is_causal() {
    let changed = 8;
    let [original, modified] = outputs_before_and_after_change(Direction::FromTopLeft, changed);
    assert_eq!(difference_over(&original, &modified, 0..changed), 0.0);
    assert!(difference_over(&original, &modified, changed..TOKENS) > 1e-3);
}

#[test]
fn reversed_block_is_causal_from_the_other_end() {
    let changed = 7;
    let [original, modified] = outputs_before_and_after_change(Direction::FromBottomRight, changed);
    assert_eq!(
        difference_over(&original, &modified, changed + 1..TOKENS),
        0.0
    );
    assert!(difference_over(&original, &modified, 0..changed + 1) > 1e-3);
}

#[test]
fn drop_path_drops_whole_samples_only_while_training() {
    // drop_path draws from burn's global RNG, which seeded tests running alongside rely on.
    let _rng = backend_rng_lock();
    let device = Default::default();
    let batch = 8;
    let branch_of_ones = |input: Tensor<Training, 3>| input * 0.0 + 1.0;
    let input = Tensor::<Training, 3>::zeros([batch, 3, 2], &device);
    // Rate 0.5 keeps ⌊8·0.5⌋ = 4 samples and scales their residual by 8/4 = 2.
    let output = drop_path(input, 0.5, branch_of_ones);
    let per_sample: Vec<f32> = output
        .mean_dim(2)
        .mean_dim(1)
        .into_data()
        .to_vec()
        .expect("f32");
    let kept = per_sample.iter().filter(|&&value| value == 2.0).count();
    let dropped = per_sample.iter().filter(|&&value| value == 0.0).count();
    assert_eq!((kept, dropped), (4, 4), "{per_sample:?}");

    // Without autodiff (evaluation) the branch is always added, unscaled.
    let input = Tensor::<Backend, 3>::zeros([batch, 3, 2], &device);
    let output = drop_path(input, 0.5, |input| input * 0.0 + 1.0);
    assert_eq!(output.clone().min().into_scalar(), 1.0);
    assert_eq!(output.max().into_scalar(), 1.0);
}

#[test]
fn silu_is_exact_and_finite_with_finite_gradients_at_extreme_inputs() {
    let inputs = [
        -200.0f32, -60.0, -40.0, -5.0, -0.5, 0.0, 0.5, 5.0, 60.0, 200.0,
    ];
    let device = Default::default();
    let input = Tensor::<Training, 1>::from_floats(inputs, &device).require_grad();
    let output = silu(input.clone());
    let values: Vec<f32> = output.clone().into_data().to_vec().expect("f32");
    for (&x, &y) in inputs.iter().zip(&values) {
        let x = f64::from(x);
        let expected = x / (1.0 + (-x).exp());
        assert!(
            (f64::from(y) - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
            "silu({x}) = {y}"
        );
    }
    let gradients = output.sum().backward();
    let gradient: Vec<f32> = input
        .grad(&gradients)
        .expect("gradient")
        .into_data()
        .to_vec()
        .expect("f32");
    assert!(
        gradient.iter().all(|value| value.is_finite()),
        "{gradient:?}"
    );
    // d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))): 0.5 at 0, → 1 for large x.
    assert!((gradient[5] - 0.5).abs() < 1e-6 && (gradient[9] - 1.0).abs() < 1e-6);
}

/// Collects, per parameter path, the largest |gradient| (or `None` when there is none).
struct GradientSizes<'a, B: AutodiffBackend> {
    gradients: &'a B::Gradients,
    path: Vec<String>,
    sizes: BTreeMap<String, Option<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradientSizes<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let size = param
            .grad(self.gradients)
            .map(|gradient| gradient.abs().max().into_scalar().elem::<f32>());
        self.sizes.insert(self.path.join("."), size);
    }
}

fn assert_every_parameter_gets_a_gradient(config: VilConfig) {
    // Held from the seed to the backward pass: no other test may draw in between.
    let _rng = backend_rng_lock();
    let device = Default::default();
    Training::seed(&device, 3);
    let model = config.init::<Training>(&device);
    let images =
        Tensor::<Training, 4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let logits = model.forward(images);
    let weights =
        Tensor::<Training, 2>::random(logits.dims(), Distribution::Normal(0.0, 1.0), &device);
    let gradients = (logits * weights).sum().backward();
    let mut visitor = GradientSizes::<Training> {
        gradients: &gradients,
        path: Vec::new(),
        sizes: BTreeMap::new(),
    };
    model.visit(&mut visitor);
    assert!(
        visitor.sizes.len() > 20,
        "visited {} tensors",
        visitor.sizes.len()
    );
    for (path, size) in &visitor.sizes {
        let size = size.unwrap_or_else(|| panic!("{path}: no gradient"));
        assert!(size > 0.0 && size.is_finite(), "{path}: gradient {size}");
    }
}

#[test]
fn gradients_reach_every_parameter_of_the_v1_layout() {
    assert_every_parameter_gets_a_gradient(block_config().with_num_classes(5));
}

#[test]
fn gradients_reach_every_parameter_of_the_v2_layout() {
    let config = VilConfig::new(16, 2)
        .with_patch_size(4)
        .with_image_size(16)
        .with_num_classes(5)
        .with_pooling(Pooling::BilateralFlatten)
        .with_conv_kind(ConvKind::TwoD)
        .with_conv_kernel_size(3)
        .with_bias(true)
        .with_layout(BlockLayout::Pairs);
    assert_every_parameter_gets_a_gradient(config);
}
