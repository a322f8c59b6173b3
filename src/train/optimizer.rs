//! AdamW and SGD with momentum over the flat parameter list of [`super::params`].
//!
//! We keep our own optimiser rather than burn's because the recipe needs two parameter groups
//! (no decay on biases, norm parameters and the positional embedding; burn's `AdamW` decays
//! every tensor), and because state that is a plain list in layout order is what clipping,
//! loss scaling, data parallelism and bit-exact checkpoints need anyway (see `params`). The
//! updates are PyTorch's (up to the association of floating-point sums), so a run is comparable
//! with a PyTorch run of the same recipe:
//!
//! - `torch.optim.AdamW` (Loshchilov & Hutter, arXiv 1711.05101): `p ← p·(1 − lr·wd)`;
//!   `m ← β₁m + (1−β₁)g`; `v ← β₂v + (1−β₂)g²`; `p ← p − (lr/(1−β₁ᵗ))·m/(√v/√(1−β₂ᵗ) + ε)`.
//! - `torch.optim.SGD` with momentum μ and (coupled) weight decay: `g ← g + wd·p`;
//!   `b ← g` at the first step, then `b ← μb + g`; with Nesterov `g ← g + μb`, else `g ← b`;
//!   `p ← p − lr·g`.
//!
//! A parameter without a gradient (unused by the loss) is left alone and its state untouched,
//! as PyTorch does.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::params::ParamLayout;
use super::spec::{OptimizerName, OptimizerSpec};

/// Optimiser state, one slot per parameter in layout order.
#[derive(Debug, Clone)]
pub struct Optimizer<B: Backend> {
    spec: OptimizerSpec,
    decay: Vec<bool>,
    /// Completed update steps (Adam's `t`).
    steps: u64,
    /// Adam's first moment, or SGD's momentum buffer.
    first: Vec<Option<Tensor<B, 1>>>,
    /// Adam's second moment (unused by SGD).
    second: Vec<Option<Tensor<B, 1>>>,
}

impl<B: Backend> Optimizer<B> {
    /// A fresh optimiser for a model of `layout`.
    pub fn new(spec: &OptimizerSpec, layout: &ParamLayout) -> Optimizer<B> {
        let count = layout.len();
        Optimizer {
            spec: spec.clone(),
            decay: layout.entries.iter().map(|entry| entry.decay).collect(),
            steps: 0,
            first: vec![None; count],
            second: vec![None; count],
        }
    }

    /// Completed update steps.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The same state with `map` applied to every moment tensor (a data-parallel replica's
    /// optimiser: the moments moved to its device).
    pub fn map_state(&self, map: impl Fn(Tensor<B, 1>) -> Tensor<B, 1>) -> Optimizer<B> {
        let mapped = |slots: &[Option<Tensor<B, 1>>]| {
            slots.iter().map(|slot| slot.clone().map(&map)).collect()
        };
        Optimizer {
            spec: self.spec.clone(),
            decay: self.decay.clone(),
            steps: self.steps,
            first: mapped(&self.first),
            second: mapped(&self.second),
        }
    }

    /// Applies one update with learning rate `lr`, returning the new parameters.
    ///
    /// # Panics
    /// When `params` or `gradients` do not have one slot per parameter of the layout.
    pub fn step(
        &mut self,
        lr: f64,
        params: Vec<Tensor<B, 1>>,
        gradients: Vec<Option<Tensor<B, 1>>>,
    ) -> Vec<Tensor<B, 1>> {
        assert_eq!(params.len(), self.decay.len(), "parameter count");
        assert_eq!(gradients.len(), self.decay.len(), "gradient count");
        self.steps += 1;
        let step = self.steps;
        params
            .into_iter()
            .zip(gradients)
            .enumerate()
            .map(|(index, (param, gradient))| match gradient {
                None => param,
                Some(gradient) => match self.spec.name {
                    OptimizerName::Adamw => self.adamw(index, step, lr, param, gradient),
                    OptimizerName::Sgd => self.sgd(index, lr, param, gradient),
                },
            })
            .collect()
    }

    fn weight_decay(&self, index: usize) -> f64 {
        if self.decay[index] {
            self.spec.weight_decay
        } else {
            0.0
        }
    }

    fn adamw(
        &mut self,
        index: usize,
        step: u64,
        lr: f64,
        param: Tensor<B, 1>,
        gradient: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let [beta1, beta2] = self.spec.betas;
        let weight_decay = self.weight_decay(index);
        let param = if weight_decay > 0.0 {
            param.mul_scalar(1.0 - lr * weight_decay)
        } else {
            param
        };
        let first = match self.first[index].take() {
            Some(first) => first.mul_scalar(beta1) + gradient.clone().mul_scalar(1.0 - beta1),
            None => gradient.clone().mul_scalar(1.0 - beta1),
        };
        let squared = gradient.square().mul_scalar(1.0 - beta2);
        let second = match self.second[index].take() {
            Some(second) => second.mul_scalar(beta2) + squared,
            None => squared,
        };
        let exponent = i32::try_from(step).unwrap_or(i32::MAX);
        let bias_correction1 = 1.0 - beta1.powi(exponent);
        let bias_correction2_sqrt = (1.0 - beta2.powi(exponent)).sqrt();
        let step_size = lr / bias_correction1;
        let denominator = second
            .clone()
            .sqrt()
            .div_scalar(bias_correction2_sqrt)
            .add_scalar(self.spec.eps);
        let updated = param - first.clone().div(denominator).mul_scalar(step_size);
        self.first[index] = Some(first);
        self.second[index] = Some(second);
        updated
    }

    fn sgd(
        &mut self,
        index: usize,
        lr: f64,
        param: Tensor<B, 1>,
        gradient: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let weight_decay = self.weight_decay(index);
        let gradient = if weight_decay > 0.0 {
            gradient + param.clone().mul_scalar(weight_decay)
        } else {
            gradient
        };
        let momentum = self.spec.momentum;
        let direction = if momentum > 0.0 {
            let buffer = match self.first[index].take() {
                Some(buffer) => buffer.mul_scalar(momentum) + gradient.clone(),
                None => gradient.clone(),
            };
            self.first[index] = Some(buffer.clone());
            if self.spec.nesterov {
                gradient + buffer.mul_scalar(momentum)
            } else {
                buffer
            }
        } else {
            gradient
        };
        param - direction.mul_scalar(lr)
    }

    /// The state for a checkpoint: the step count and every moment tensor that exists, named
    /// `first.<index>` / `second.<index>`.
    pub fn state(&self) -> (u64, Vec<(String, Tensor<B, 1>)>) {
        let mut tensors = Vec::new();
        for (kind, slots) in [("first", &self.first), ("second", &self.second)] {
            for (index, slot) in slots.iter().enumerate() {
                if let Some(tensor) = slot {
                    tensors.push((format!("{kind}.{index}"), tensor.clone()));
                }
            }
        }
        (self.steps, tensors)
    }

    /// Restores what [`Optimizer::state`] returned.
    ///
    /// # Errors
    /// A name that is not `first.<index>` / `second.<index>` for an existing parameter.
    pub fn load_state(
        &mut self,
        steps: u64,
        tensors: Vec<(String, Tensor<B, 1>)>,
    ) -> Result<(), String> {
        self.steps = steps;
        for slot in self.first.iter_mut().chain(self.second.iter_mut()) {
            *slot = None;
        }
        for (name, tensor) in tensors {
            let parsed = name
                .split_once('.')
                .and_then(|(kind, index)| Some((kind, index.parse::<usize>().ok()?)));
            let slot = match parsed {
                Some(("first", index)) => self.first.get_mut(index),
                Some(("second", index)) => self.second.get_mut(index),
                _ => None,
            };
            match slot {
                Some(slot) => *slot = Some(tensor),
                None => return Err(format!("unknown optimizer state `{name}`")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::backend::NdArray;

    use crate::train::params::ParamEntry;

    type B = NdArray<f32>;

    fn layout(decay: &[bool]) -> ParamLayout {
        ParamLayout {
            entries: decay
                .iter()
                .enumerate()
                .map(|(index, &decay)| ParamEntry {
                    path: format!("p{index}"),
                    shape: vec![2],
                    decay,
                })
                .collect(),
        }
    }

    fn tensor(values: [f32; 2]) -> Tensor<B, 1> {
        Tensor::from_floats(values, &Default::default())
    }

    fn values(tensor: &Tensor<B, 1>) -> Vec<f32> {
        tensor.to_data().to_vec().unwrap()
    }

    fn close(actual: &[f32], expected: &[f64]) {
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (f64::from(*a) - e).abs() < 1e-6,
                "{actual:?} vs {expected:?}"
            );
        }
    }

    /// A scalar AdamW in f64, written from the PyTorch docs' algorithm box.
    fn reference_adamw(
        mut p: f64,
        gradients: &[f64],
        lr: f64,
        wd: f64,
        betas: (f64, f64),
        eps: f64,
    ) -> f64 {
        let (mut m, mut v) = (0.0, 0.0);
        for (t, g) in gradients.iter().enumerate() {
            let t = t as i32 + 1;
            p -= lr * wd * p;
            m = betas.0 * m + (1.0 - betas.0) * g;
            v = betas.1 * v + (1.0 - betas.1) * g * g;
            let m_hat = m / (1.0 - betas.0.powi(t));
            let v_hat = v / (1.0 - betas.1.powi(t));
            p -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        p
    }

    #[test]
    fn adamw_matches_the_reference_and_skips_decay_where_told() {
        let spec = OptimizerSpec {
            weight_decay: 0.1,
            ..OptimizerSpec::default()
        };
        let mut optimizer = Optimizer::<B>::new(&spec, &layout(&[true, false]));
        let mut params = vec![tensor([1.0, -2.0]), tensor([0.5, 3.0])];
        let gradients = [[0.3, -0.1], [-0.2, 0.4], [0.05, 0.05]];
        for gradient in gradients {
            params = optimizer.step(
                0.01,
                params,
                vec![Some(tensor(gradient)), Some(tensor(gradient))],
            );
        }
        let per_element = |start: [f64; 2], wd: f64| -> Vec<f64> {
            (0..2)
                .map(|i| {
                    let gs: Vec<f64> = gradients.iter().map(|g| f64::from(g[i])).collect();
                    reference_adamw(start[i], &gs, 0.01, wd, (0.9, 0.999), 1e-8)
                })
                .collect()
        };
        close(&values(&params[0]), &per_element([1.0, -2.0], 0.1));
        close(&values(&params[1]), &per_element([0.5, 3.0], 0.0));
        assert_eq!(optimizer.steps(), 3);
    }

    #[test]
    fn sgd_momentum_and_nesterov_follow_pytorch() {
        let spec = OptimizerSpec {
            name: OptimizerName::Sgd,
            weight_decay: 0.0,
            momentum: 0.9,
            ..OptimizerSpec::default()
        };
        let mut optimizer = Optimizer::<B>::new(&spec, &layout(&[true]));
        let mut params = vec![tensor([1.0, 1.0])];
        for _ in 0..2 {
            params = optimizer.step(0.1, params, vec![Some(tensor([1.0, -1.0]))]);
        }
        // b₁ = g, p = 1 − 0.1; b₂ = 0.9 + 1 = 1.9, p = 0.9 − 0.19.
        close(&values(&params[0]), &[0.71, 1.29]);

        let nesterov = OptimizerSpec {
            nesterov: true,
            ..spec
        };
        let mut optimizer = Optimizer::<B>::new(&nesterov, &layout(&[true]));
        let mut params = vec![tensor([1.0, 1.0])];
        for _ in 0..2 {
            params = optimizer.step(0.1, params, vec![Some(tensor([1.0, -1.0]))]);
        }
        // Step 1: g + 0.9·b = 1.9; step 2: b = 1.9, g + 0.9·1.9 = 2.71.
        close(
            &values(&params[0]),
            &[1.0 - 0.19 - 0.271, 1.0 + 0.19 + 0.271],
        );
    }

    #[test]
    fn a_parameter_without_gradient_keeps_value_and_state() {
        let mut optimizer = Optimizer::<B>::new(&OptimizerSpec::default(), &layout(&[true, true]));
        let params = optimizer.step(
            0.1,
            vec![tensor([1.0, 2.0]), tensor([3.0, 4.0])],
            vec![Some(tensor([1.0, 1.0])), None],
        );
        assert_eq!(values(&params[1]), vec![3.0, 4.0]);
        let (steps, state) = optimizer.state();
        assert_eq!(steps, 1);
        let names: Vec<&str> = state.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, vec!["first.0", "second.0"]);
    }

    #[test]
    fn state_round_trips_and_continues_identically() {
        let spec = OptimizerSpec::default();
        let layout = layout(&[true]);
        let mut original = Optimizer::<B>::new(&spec, &layout);
        let params = original.step(
            1e-2,
            vec![tensor([1.0, 2.0])],
            vec![Some(tensor([0.5, -0.5]))],
        );
        let (steps, state) = original.state();
        let mut restored = Optimizer::<B>::new(&spec, &layout);
        restored.load_state(steps, state).unwrap();
        let next = |optimizer: &mut Optimizer<B>| {
            values(&optimizer.step(1e-2, params.clone(), vec![Some(tensor([0.1, 0.2]))])[0])
        };
        assert_eq!(next(&mut original), next(&mut restored));
        assert!(
            restored
                .load_state(1, vec![("third.0".into(), tensor([0.0, 0.0]))])
                .is_err()
        );
    }
}
