//! A model's parameters as one flat list, the shape the optimiser, clipping, EMA, data
//! parallelism and checkpoints all work on.
//!
//! burn's optimisers walk a module and update each parameter in isolation, which cannot express
//! what the recipe needs: a weight-decay rule by parameter name, clipping by the norm over *all*
//! gradients, loss-scale unscaling with one overflow check, averaging gradients across replicas,
//! and optimiser state that a checkpoint stores by name. So the loop turns the model into a list:
//! every float parameter, in the module's visiting order, as a 1-D tensor, described by a
//! [`ParamLayout`] entry (dotted path, shape, whether it decays). [`flatten_params`] reads the
//! list, [`with_params`] writes one back, [`take_gradients`] reads the gradients in the same
//! order. Visiting and mapping a burn module traverse fields in the same order, so index `i`
//! always names the same parameter.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// One parameter's place in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamEntry {
    /// Dotted path of burn field names, e.g. `blocks.Single.0.layer.proj_up.weight`.
    pub path: String,
    /// Shape of the parameter.
    pub shape: Vec<usize>,
    /// Whether decoupled weight decay applies (see [`decays`]).
    pub decay: bool,
}

impl ParamEntry {
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every float parameter of a model, in visiting order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    /// One entry per parameter.
    pub entries: Vec<ParamEntry>,
}

impl ParamLayout {
    /// The layout of `module`.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> ParamLayout {
        let mut visitor = LayoutVisitor {
            path: Vec::new(),
            entries: Vec::new(),
        };
        module.visit(&mut visitor);
        ParamLayout {
            entries: visitor.entries,
        }
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the model has no float parameters.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of scalars over all parameters.
    pub fn numel(&self) -> usize {
        self.entries.iter().map(ParamEntry::numel).sum()
    }
}

/// timm's rule (`param_groups_weight_decay`): no decay for 0-/1-D parameters (biases, norm
/// scales and offsets, gate biases, the learnable skip), for anything named `bias`, and for the
/// positional embedding (the official ViL lists `pos_embed` under `no_weight_decay`).
pub fn decays(path: &str, shape: &[usize]) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    shape.len() > 1 && last != "bias" && !path.split('.').any(|part| part == "pos_embed")
}

struct LayoutVisitor {
    path: Vec<String>,
    entries: Vec<ParamEntry>,
}

impl<B: Backend> ModuleVisitor<B> for LayoutVisitor {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        let shape = param.val().dims().to_vec();
        let decay = decays(&path, &shape);
        self.entries.push(ParamEntry { path, shape, decay });
    }
}

/// Draws every lazily initialised parameter now. burn's initialisers are lazy: a parameter gets
/// its random value on first use, and a clone taken before that draws its own, different value.
/// Materialising right after `init`, with the RNG seeded, makes the weights a function of the
/// seed alone and every later clone an exact copy.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Every float parameter of `module` as a 1-D tensor, in layout order.
pub fn flatten_params<B: Backend, M: Module<B>>(module: &M) -> Vec<Tensor<B, 1>> {
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let numel = value.shape().num_elements();
            self.0.push(value.reshape([numel]));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// `module` with its float parameters replaced by `values` (layout order, 1-D), keeping every
/// parameter id.
///
/// # Panics
/// When `values` does not match the module's layout in count or sizes: the list always comes
/// from [`flatten_params`] of the same architecture, so a mismatch is a bug.
pub fn with_params<B: Backend, M: Module<B>>(module: M, values: Vec<Tensor<B, 1>>) -> M {
    struct Replace<B: Backend> {
        values: std::vec::IntoIter<Tensor<B, 1>>,
    }
    impl<B: Backend> ModuleMapper<B> for Replace<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, current, mapper) = param.consume();
            let shape: [usize; D] = current.dims();
            let value = self
                .values
                .next()
                .unwrap_or_else(|| panic!("fewer values than parameters"));
            assert_eq!(
                value.dims()[0],
                shape.iter().product::<usize>(),
                "value size does not match parameter shape {shape:?}"
            );
            Param::from_mapped_value(id, value.reshape(shape), mapper)
        }
    }
    let mut replace = Replace {
        values: values.into_iter(),
    };
    let module = module.map(&mut replace);
    assert!(
        replace.values.next().is_none(),
        "more values than parameters"
    );
    module
}

/// Marks every float parameter as a gradient leaf. An inner module wrapped with
/// `from_inner` keeps the `require_grad` flag its tensors report, which the inner backend never
/// sets, so the training copy is made explicitly trainable here.
pub fn require_grad<B: AutodiffBackend, M: AutodiffModule<B>>(module: M) -> M {
    struct RequireGrad;
    impl<B: Backend> ModuleMapper<B> for RequireGrad {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            param.map(Tensor::require_grad)
        }
    }
    module.map(&mut RequireGrad)
}

/// The gradient of every float parameter of `module`, in layout order, as 1-D tensors on the
/// inner backend; `None` for a parameter the loss does not depend on.
pub fn take_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    gradients: &mut B::Gradients,
) -> Vec<Option<Tensor<B::InnerBackend, 1>>> {
    struct Take<'a, B: AutodiffBackend> {
        gradients: &'a mut B::Gradients,
        out: Vec<Option<Tensor<B::InnerBackend, 1>>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let gradient = param.val().grad_remove(self.gradients).map(|gradient| {
                let numel = gradient.shape().num_elements();
                gradient.reshape([numel])
            });
            self.out.push(gradient);
        }
    }
    let mut take = Take::<B> {
        gradients,
        out: Vec::new(),
    };
    module.visit(&mut take);
    take.out
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{Linear, LinearConfig};

    type Inner = NdArray<f32>;
    type Train = Autodiff<Inner>;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        first: Linear<B>,
        pos_embed: Param<Tensor<B, 2>>,
        second: Linear<B>,
    }

    fn tiny<B: Backend>(device: &B::Device) -> Tiny<B> {
        Tiny {
            first: LinearConfig::new(3, 4).init(device),
            pos_embed: Param::from_tensor(Tensor::ones([2, 4], device)),
            second: LinearConfig::new(4, 2).with_bias(false).init(device),
        }
    }

    #[test]
    fn layout_names_every_parameter_and_applies_the_decay_rule() {
        let device = Default::default();
        let layout = ParamLayout::of(&tiny::<Inner>(&device));
        let described: Vec<(&str, Vec<usize>, bool)> = layout
            .entries
            .iter()
            .map(|entry| (entry.path.as_str(), entry.shape.clone(), entry.decay))
            .collect();
        assert_eq!(
            described,
            vec![
                ("first.weight", vec![3, 4], true),
                ("first.bias", vec![4], false),
                ("pos_embed", vec![2, 4], false),
                ("second.weight", vec![4, 2], true),
            ]
        );
        assert_eq!(layout.numel(), 12 + 4 + 8 + 8);
        assert!(!decays("blocks.0.layer.mlstm_cell.outnorm.weight", &[384]));
        assert!(decays("blocks.0.layer.proj_up.weight", &[96, 384]));
        assert!(!decays("pos_embed.embed", &[1, 7, 7, 96]));
    }

    #[test]
    fn flatten_then_replace_round_trips_and_keeps_ids() {
        let device = Default::default();
        let model = tiny::<Inner>(&device);
        let ids: Vec<_> = [model.first.weight.id, model.pos_embed.id].into();
        let doubled: Vec<_> = flatten_params(&model)
            .into_iter()
            .map(|value| value * 2.0)
            .collect();
        let expected: Vec<Vec<f32>> = doubled
            .iter()
            .map(|value| value.to_data().to_vec().unwrap())
            .collect();
        let replaced = with_params(model, doubled);
        assert_eq!([replaced.first.weight.id, replaced.pos_embed.id], ids[..]);
        let actual: Vec<Vec<f32>> = flatten_params(&replaced)
            .iter()
            .map(|value| value.to_data().to_vec().unwrap())
            .collect();
        assert_eq!(actual, expected);
        assert_eq!(replaced.pos_embed.val().dims(), [2, 4]);
    }

    #[test]
    fn gradients_come_back_in_layout_order() {
        let device = Default::default();
        let inner = tiny::<Inner>(&device);
        let model = require_grad(Tiny::<Train>::from_inner(inner));
        let input = Tensor::<Train, 2>::ones([5, 3], &device);
        // The positional embedding is not used, so it has no gradient.
        let loss = model.second.forward(model.first.forward(input)).sum();
        let mut gradients = loss.backward();
        let taken = take_gradients(&model, &mut gradients);
        let present: Vec<bool> = taken.iter().map(Option::is_some).collect();
        assert_eq!(present, vec![true, true, false, true]);
        // d(sum)/d(first.bias) = 5 rows · the column sums of second.weight.
        let second: Vec<f32> = model
            .second
            .weight
            .val()
            .inner()
            .to_data()
            .to_vec()
            .unwrap();
        let bias_gradient: Vec<f32> = taken[1].clone().unwrap().to_data().to_vec().unwrap();
        for (unit, gradient) in bias_gradient.iter().enumerate() {
            let expected = 5.0 * (second[unit * 2] + second[unit * 2 + 1]);
            assert!(
                (gradient - expected).abs() < 1e-5,
                "{gradient} vs {expected}"
            );
        }
    }
}
