//! The training recipe as the experiment file states it (`train:`): epochs, batches, the
//! optimiser, schedule, EMA, clipping, precision, MixUp/CutMix, the checkpoint choice and how
//! often a resumable checkpoint is written inside an epoch. The
//! types live with the code that runs them; `spec` composes them into the experiment.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checkpoint::CheckpointEvery;
use super::clipping::GradientClip;
use super::ema::EmaSpec;
use super::precision::{LossScaleSpec, Precision};
use super::schedule::Schedule;
use crate::backend::BackendKind;
use crate::data::mixup::MixupConfig;
use crate::field::FieldError;

fn default_true() -> bool {
    true
}

/// The metric that picks the `best` checkpoint; it also decides which weights (raw or EMA) the
/// `best` and `last` checkpoints hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelectMetric {
    /// Validation ACC1 of the raw weights.
    #[default]
    ValAcc1,
    /// Validation ACC1 of the EMA weights (needs `train.ema.enabled`).
    EmaValAcc1,
}

impl SelectMetric {
    /// The name as written in YAML and in `history.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            SelectMetric::ValAcc1 => "val_acc1",
            SelectMetric::EmaValAcc1 => "ema_val_acc1",
        }
    }
}

/// The training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Number of passes over the training split (0 exports the initial weights untrained).
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// Images per optimiser step (split across `devices`).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// Images per validation batch; absent = `batch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub val_batch_size: Option<u32>,
    /// Leave out the last, shorter training batch of each epoch (the blog's `drop_last=True`).
    #[serde(default = "default_true")]
    pub drop_last: bool,
    /// The optimiser.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule, evaluated every step.
    #[serde(default)]
    pub schedule: Schedule,
    /// MixUp / CutMix / label smoothing with timm's semantics; absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<MixupConfig>,
    /// Gradient clipping after unscaling: `{norm: 5.0}` by the global L2 norm over all
    /// parameters, or `{value: 1.0}` element-wise; absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<GradientClip>,
    /// Exponential moving average of the weights, validated every epoch next to the raw ones.
    #[serde(default)]
    pub ema: EmaSpec,
    /// The metric that picks the `best` checkpoint (and the weights both checkpoints hold).
    #[serde(default)]
    pub select: SelectMetric,
    /// Float type of the forward and backward passes; `bf16`/`f16` keep f32 master weights and
    /// need a GPU backend (`cuda` or `wgpu`).
    #[serde(default)]
    pub precision: Precision,
    /// Dynamic loss scaling, used with `precision: f16`.
    #[serde(default)]
    pub loss_scale: LossScaleSpec,
    /// Devices the batch is split across, gradients averaged: CUDA ordinals, wgpu adapter
    /// ordinals (discrete GPUs first; `vilab bench --backend wgpu` lists them), or on the CPU the
    /// number of entries is the number of replicas.
    #[serde(default = "default_devices")]
    #[schemars(length(min = 1))]
    pub devices: Vec<u32>,
    /// Threads preparing batches ahead of the training step (0 = on the training thread).
    /// Results do not depend on it.
    #[serde(default = "default_workers")]
    #[schemars(range(max = 64))]
    pub workers: u32,
    /// A resumable checkpoint inside an epoch as well: `{steps: N}` after every N optimiser
    /// steps, or `{minutes: M}` once M minutes of wall time have passed, since the last
    /// checkpoint; a `kill -9` then loses at most that much. Absent = only after every epoch
    /// (and on Ctrl-C/SIGTERM). Results do not depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<CheckpointEvery>,
}

fn default_epochs() -> u32 {
    10
}

fn default_batch_size() -> u32 {
    64
}

fn default_devices() -> Vec<u32> {
    vec![0]
}

fn default_workers() -> u32 {
    2
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            val_batch_size: None,
            drop_last: true,
            optimizer: OptimizerSpec::default(),
            schedule: Schedule::default(),
            mixup: None,
            clip_grad: None,
            ema: EmaSpec::default(),
            select: SelectMetric::default(),
            precision: Precision::default(),
            loss_scale: LossScaleSpec::default(),
            devices: default_devices(),
            workers: default_workers(),
            checkpoint_every: None,
        }
    }
}

impl TrainSpec {
    /// What the schema cannot check (`schedule` and `mixup` have their own `validate`); the
    /// error is the tail after `train.`, e.g. `ema.decay: must be in [0, 1) (got 1)`.
    pub fn validate(&self, backend: BackendKind) -> Result<(), FieldError> {
        self.optimizer
            .validate()
            .map_err(|error| error.within("optimizer"))?;
        if let Some(clip) = &self.clip_grad {
            clip.validate().map_err(|error| error.within("clip_grad"))?;
        }
        if let Some(every) = &self.checkpoint_every {
            every
                .validate()
                .map_err(|error| error.within("checkpoint_every"))?;
        }
        self.ema.validate().map_err(|error| error.within("ema"))?;
        self.loss_scale
            .validate()
            .map_err(|error| error.within("loss_scale"))?;
        if self.select == SelectMetric::EmaValAcc1 && !self.ema.enabled {
            return Err(FieldError::new(
                "select",
                "ema_val_acc1 needs ema.enabled: true",
            ));
        }
        if self.devices.is_empty() {
            return Err(FieldError::new("devices", "must list at least one device"));
        }
        if let Some(position) =
            (1..self.devices.len()).find(|&i| self.devices[..i].contains(&self.devices[i]))
        {
            return Err(crate::field_error!(
                "devices.{position}",
                "device {} is listed twice",
                self.devices[position]
            ));
        }
        if self.precision != Precision::F32 && backend == BackendKind::Cpu {
            return Err(crate::field_error!(
                "precision",
                "{} needs backend: cuda or wgpu (the CPU backend has no half-precision kernels)",
                self.precision.as_str()
            ));
        }
        Ok(())
    }

    /// Images per validation batch.
    pub fn val_batch_size(&self) -> u32 {
        self.val_batch_size.unwrap_or(self.batch_size)
    }
}

/// Optimiser kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    /// AdamW with PyTorch's defaults (betas 0.9/0.999, eps 1e-8).
    #[default]
    Adamw,
    /// SGD with momentum.
    Sgd,
}

/// The optimiser and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// `adamw` or `sgd`.
    #[serde(default)]
    pub name: OptimizerName,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    #[schemars(extend("exclusiveMinimum" = 0.0))]
    pub lr: f64,
    /// Weight decay (not applied to biases, norm scales or the positional embedding):
    /// decoupled for AdamW, added to the gradient for SGD (as PyTorch does).
    #[serde(default = "default_weight_decay")]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// AdamW's β₁ and β₂, each in [0, 1).
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// AdamW's ε, added to the denominator.
    #[serde(default = "default_eps")]
    #[schemars(extend("exclusiveMinimum" = 0.0))]
    pub eps: f64,
    /// SGD's momentum, in [0, 1); 0 is plain SGD.
    #[serde(default = "default_momentum")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub momentum: f64,
    /// SGD with Nesterov momentum (needs momentum > 0).
    #[serde(default)]
    pub nesterov: bool,
}

fn default_lr() -> f64 {
    1e-3
}

fn default_weight_decay() -> f64 {
    0.05
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}

fn default_eps() -> f64 {
    1e-8
}

fn default_momentum() -> f64 {
    0.9
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            name: OptimizerName::default(),
            lr: default_lr(),
            weight_decay: default_weight_decay(),
            betas: default_betas(),
            eps: default_eps(),
            momentum: default_momentum(),
            nesterov: false,
        }
    }
}

impl OptimizerSpec {
    /// Checks the hyper-parameters; the error is the tail after `train.optimizer.`.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (index, beta) in self.betas.iter().enumerate() {
            if !(0.0..1.0).contains(beta) {
                return Err(crate::field_error!(
                    "betas.{index}",
                    "must be in [0, 1) (got {beta})"
                ));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(crate::field_error!("eps", "must be > 0 (got {})", self.eps));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(crate::field_error!(
                "momentum",
                "must be in [0, 1) (got {})",
                self.momentum
            ));
        }
        if self.nesterov && self.name == OptimizerName::Sgd && self.momentum == 0.0 {
            return Err(FieldError::new("nesterov", "needs momentum > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_checkpoint_interval_names_its_field() {
        let spec = |every| TrainSpec {
            checkpoint_every: Some(every),
            ..TrainSpec::default()
        };
        let error = spec(CheckpointEvery::Steps(0))
            .validate(BackendKind::Cpu)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "checkpoint_every.steps: must be ≥ 1 (got 0)"
        );
        let error = spec(CheckpointEvery::Minutes(0.0))
            .validate(BackendKind::Cpu)
            .unwrap_err();
        assert_eq!(error.field, "checkpoint_every.minutes");
        assert!(
            spec(CheckpointEvery::Minutes(0.5))
                .validate(BackendKind::Cpu)
                .is_ok()
        );
    }

    #[test]
    fn no_interval_leaves_the_resolved_spec_as_before() {
        let value = serde_json::to_value(TrainSpec::default()).unwrap();
        assert!(value.get("checkpoint_every").is_none(), "{value}");
        let every = TrainSpec {
            checkpoint_every: Some(CheckpointEvery::Minutes(2.5)),
            ..TrainSpec::default()
        };
        let value = serde_json::to_value(every).unwrap();
        assert_eq!(
            value["checkpoint_every"],
            serde_json::json!({"minutes": 2.5})
        );
    }
}
