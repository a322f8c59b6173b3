//! MixUp, CutMix and label smoothing on a normalised batch, with timm's semantics.
//!
//! This mirrors `timm.data.Mixup` (Zhang et al. 2017, arXiv 1710.09412; Yun et al. 2019,
//! arXiv 1905.04899): every sample is mixed with its mirror in the batch (`i` with `B−1−i`, the
//! `x.flip(0)` of timm), the soft target is `λ·onehot(y) + (1−λ)·onehot(flip y)` built from
//! smoothed one-hots, and CutMix pastes a box whose clipped area corrects λ. The loop calls
//! [`MixupConfig::mix_batch`] on the normalised `[batch, channels, height, width]` floats right
//! before the forward pass, with the loader's per-step RNG, so mixing is reproducible.
//!
//! Differences from timm worth knowing: random draws come from ChaCha8 rather than NumPy (same
//! distributions, different streams), and `batch` mode accepts an odd batch (the middle sample is
//! then mixed with itself and stays as it was) while `pair` and `elem` require an even one.

use crate::field::FieldError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How mixing parameters are drawn across a batch (timm's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MixMode {
    /// One λ and one choice of MixUp or CutMix for the whole batch.
    #[default]
    Batch,
    /// One draw per mirrored pair `(i, B−1−i)`; both members get the same λ.
    Pair,
    /// One draw per sample.
    Elem,
}

/// MixUp / CutMix / label-smoothing settings (`train.mixup` in the spec); defaults are timm's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MixupConfig {
    /// Beta(α, α) parameter of MixUp; 0 turns MixUp off.
    pub mixup_alpha: f64,
    /// Beta(α, α) parameter of CutMix; 0 turns CutMix off.
    pub cutmix_alpha: f64,
    /// CutMix box side as `[min, max]` fractions of the image side; when set, CutMix is on, its
    /// box is drawn uniformly between these bounds instead of from λ, and λ always comes from the
    /// box area (timm forces `cutmix_alpha = 1` in this case).
    pub cutmix_minmax: Option<[f64; 2]>,
    /// Probability of mixing a batch (or pair, or element).
    pub prob: f64,
    /// Probability of CutMix instead of MixUp when both are on.
    pub switch_prob: f64,
    /// How draws are shared across the batch.
    pub mode: MixMode,
    /// Recompute λ from the CutMix box after clipping it to the image.
    pub correct_lam: bool,
    /// Label smoothing ε: off-class targets ε/C, the true class 1 − ε + ε/C.
    pub label_smoothing: f64,
}

impl Default for MixupConfig {
    fn default() -> Self {
        Self {
            mixup_alpha: 1.0,
            cutmix_alpha: 0.0,
            cutmix_minmax: None,
            prob: 1.0,
            switch_prob: 0.5,
            mode: MixMode::Batch,
            correct_lam: true,
            label_smoothing: 0.1,
        }
    }
}

/// Which kind of mixing a sample (or a whole batch) received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixKind {
    None,
    Mixup,
    Cutmix,
    /// `pair`/`elem` modes only: the batch holds both MixUp and CutMix samples.
    Both,
}

/// The result of mixing one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MixOutcome {
    /// Soft targets, `[batch, classes]` row-major; each row sums to 1.
    pub targets: Vec<f32>,
    /// λ of each sample: the weight of its own label in its target (1 when unmixed).
    pub lam: Vec<f32>,
    /// What the batch received as a whole.
    pub kind: MixKind,
    /// What each sample received.
    pub sample_kinds: Vec<MixKind>,
}

/// Why a batch could not be mixed; these are caller bugs or spec errors, never data errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixError {
    #[error("mixup mode {mode:?} needs an even batch size (got {batch})")]
    OddBatch { mode: MixMode, batch: usize },
    #[error(
        "image buffer holds {actual} floats, expected {expected} ({batch}×{channels}×{height}×{width})"
    )]
    ImageShape {
        actual: usize,
        expected: usize,
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
    },
    #[error("label {label} at batch index {index} is outside the {classes} classes")]
    LabelOutOfRange {
        label: usize,
        index: usize,
        classes: usize,
    },
}

/// One draw of mixing parameters: the sampled λ and whether CutMix replaces MixUp.
#[derive(Debug, Clone, Copy)]
struct MixDraw {
    lam: f64,
    cutmix: bool,
}

const UNMIXED: MixDraw = MixDraw {
    lam: 1.0,
    cutmix: false,
};

/// A CutMix box in pixel coordinates, half-open: rows `top..bottom`, columns `left..right`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CutBox {
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
}

impl CutBox {
    fn area(&self) -> usize {
        (self.bottom - self.top) * (self.right - self.left)
    }
}

impl MixupConfig {
    /// Whether mixing can ever happen (timm's `mixup_active` with a non-zero probability).
    /// Label smoothing applies either way: use [`smooth_targets`] when this is false.
    pub fn enabled(&self) -> bool {
        (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0 || self.cutmix_minmax.is_some())
            && self.prob > 0.0
    }

    /// Checks the parameters; the error is the message tail after `train.mixup.`,
    /// e.g. `prob: must be in [0, 1] (got 1.5)`.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, value) in [
            ("mixup_alpha", self.mixup_alpha),
            ("cutmix_alpha", self.cutmix_alpha),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(crate::field_error!("{field}", "must be ≥ 0 (got {value})"));
            }
        }
        for (field, value) in [("prob", self.prob), ("switch_prob", self.switch_prob)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(crate::field_error!(
                    "{field}",
                    "must be in [0, 1] (got {value})"
                ));
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(crate::field_error!(
                "label_smoothing",
                "must be in [0, 1) (got {})",
                self.label_smoothing
            ));
        }
        if let Some([low, high]) = self.cutmix_minmax
            && !(0.0 < low && low < high && high <= 1.0)
        {
            return Err(crate::field_error!(
                "cutmix_minmax",
                "must satisfy 0 < min < max ≤ 1 (got [{low}, {high}])"
            ));
        }
        Ok(())
    }

    /// Mixes `images` (`[batch, channels, height, width]`, normalised floats) in place and
    /// returns the soft targets for `labels`.
    ///
    /// # Shapes
    /// `images.len() == labels.len() · channels · height · width`; `targets` is
    /// `[labels.len(), classes]`.
    // The flat-slice signature keeps the loader free of tensor types; the shape travels alongside.
    #[allow(clippy::too_many_arguments)]
    pub fn mix_batch(
        &self,
        images: &mut [f32],
        labels: &[usize],
        classes: usize,
        channels: usize,
        height: usize,
        width: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<MixOutcome, MixError> {
        let batch = labels.len();
        let expected = batch * channels * height * width;
        if images.len() != expected {
            return Err(MixError::ImageShape {
                actual: images.len(),
                expected,
                batch,
                channels,
                height,
                width,
            });
        }
        check_labels(labels, classes)?;
        if self.mode != MixMode::Batch && !batch.is_multiple_of(2) {
            return Err(MixError::OddBatch {
                mode: self.mode,
                batch,
            });
        }
        let sample_len = channels * height * width;
        let mut lam = vec![1.0_f64; batch];
        let mut sample_kinds = vec![MixKind::None; batch];
        match self.mode {
            MixMode::Batch => {
                let draw = self.draw(rng);
                if draw.lam < 1.0 {
                    let (applied_lam, kind) = if draw.cutmix {
                        let (cut, corrected) = self.cutmix_box(draw.lam, height, width, rng);
                        for pair_index in 0..batch / 2 {
                            let (first, second) =
                                mirrored_pair(images, pair_index, batch, sample_len);
                            swap_box(first, second, cut, channels, height, width);
                        }
                        (corrected, MixKind::Cutmix)
                    } else {
                        for pair_index in 0..batch / 2 {
                            let (first, second) =
                                mirrored_pair(images, pair_index, batch, sample_len);
                            blend_pair(first, second, draw.lam as f32);
                        }
                        (draw.lam, MixKind::Mixup)
                    };
                    lam.fill(applied_lam);
                    sample_kinds.fill(kind);
                }
            }
            MixMode::Pair => {
                for pair_index in 0..batch / 2 {
                    let mirror = batch - 1 - pair_index;
                    let draw = self.draw(rng);
                    if draw.lam >= 1.0 {
                        continue;
                    }
                    let (first, second) = mirrored_pair(images, pair_index, batch, sample_len);
                    let (applied_lam, kind) = if draw.cutmix {
                        let (cut, corrected) = self.cutmix_box(draw.lam, height, width, rng);
                        swap_box(first, second, cut, channels, height, width);
                        (corrected, MixKind::Cutmix)
                    } else {
                        blend_pair(first, second, draw.lam as f32);
                        (draw.lam, MixKind::Mixup)
                    };
                    lam[pair_index] = applied_lam;
                    lam[mirror] = applied_lam;
                    sample_kinds[pair_index] = kind;
                    sample_kinds[mirror] = kind;
                }
            }
            MixMode::Elem => {
                // Each sample mixes with its mirror's original pixels, so a pair keeps copies of
                // both originals before either member changes (timm clones the whole batch).
                let mut original_first = vec![0.0_f32; sample_len];
                let mut original_second = vec![0.0_f32; sample_len];
                let draws: Vec<MixDraw> = (0..batch).map(|_| self.draw(rng)).collect();
                for pair_index in 0..batch / 2 {
                    let mirror = batch - 1 - pair_index;
                    let (first, second) = mirrored_pair(images, pair_index, batch, sample_len);
                    original_first.copy_from_slice(first);
                    original_second.copy_from_slice(second);
                    for (index, target, source) in [
                        (pair_index, &mut *first, &original_second),
                        (mirror, &mut *second, &original_first),
                    ] {
                        let draw = draws[index];
                        if draw.lam >= 1.0 {
                            continue;
                        }
                        if draw.cutmix {
                            let (cut, corrected) = self.cutmix_box(draw.lam, height, width, rng);
                            paste_box(target, source, cut, channels, height, width);
                            lam[index] = corrected;
                            sample_kinds[index] = MixKind::Cutmix;
                        } else {
                            blend_into(target, source, draw.lam as f32);
                            lam[index] = draw.lam;
                            sample_kinds[index] = MixKind::Mixup;
                        }
                    }
                }
            }
        }
        let lam: Vec<f32> = lam.into_iter().map(|value| value as f32).collect();
        let targets = mixed_targets(labels, classes, self.label_smoothing, &lam);
        Ok(MixOutcome {
            targets,
            lam,
            kind: summarise_kinds(&sample_kinds),
            sample_kinds,
        })
    }

    /// One draw of timm's `_params_per_batch` / `_params_per_elem`: mix with probability
    /// `prob`; with both methods on, CutMix with probability `switch_prob`; λ ~ Beta(α, α).
    fn draw(&self, rng: &mut ChaCha8Rng) -> MixDraw {
        if !self.enabled() || rng.random::<f64>() >= self.prob {
            return UNMIXED;
        }
        let cutmix_alpha = if self.cutmix_minmax.is_some() {
            1.0
        } else {
            self.cutmix_alpha
        };
        let cutmix = match (self.mixup_alpha > 0.0, cutmix_alpha > 0.0) {
            (true, true) => rng.random::<f64>() < self.switch_prob,
            (false, true) => true,
            _ => false,
        };
        let alpha = if cutmix {
            cutmix_alpha
        } else {
            self.mixup_alpha
        };
        MixDraw {
            lam: sample_beta(alpha, rng),
            cutmix,
        }
    }

    /// timm's `cutmix_bbox_and_lam`: the box, and λ recomputed from its clipped area when
    /// `correct_lam` is set or the box came from `cutmix_minmax`.
    fn cutmix_box(
        &self,
        lam: f64,
        height: usize,
        width: usize,
        rng: &mut ChaCha8Rng,
    ) -> (CutBox, f64) {
        let cut = match self.cutmix_minmax {
            Some(minmax) => random_box_minmax(height, width, minmax, rng),
            None => random_box(height, width, lam, rng),
        };
        if self.correct_lam || self.cutmix_minmax.is_some() {
            let corrected = 1.0 - cut.area() as f64 / (height * width) as f64;
            (cut, corrected)
        } else {
            (cut, lam)
        }
    }
}

/// Smoothed one-hot targets, `[labels.len(), classes]` row-major: the targets of an unmixed batch.
pub fn smooth_targets(labels: &[usize], classes: usize, smoothing: f64) -> Vec<f32> {
    let lam = vec![1.0_f32; labels.len()];
    mixed_targets(labels, classes, smoothing, &lam)
}

/// timm's `mixup_target`: `lam[i]·onehot(y_i) + (1 − lam[i])·onehot(y_{B−1−i})`, both one-hots
/// smoothed.
fn mixed_targets(labels: &[usize], classes: usize, smoothing: f64, lam: &[f32]) -> Vec<f32> {
    let off_value = (smoothing / classes as f64) as f32;
    let on_value = (1.0 - smoothing) as f32 + off_value;
    let batch = labels.len();
    let mut targets = vec![off_value; batch * classes];
    for (index, (&label, &own_weight)) in labels.iter().zip(lam).enumerate() {
        let row = &mut targets[index * classes..(index + 1) * classes];
        let mirror_label = labels[batch - 1 - index];
        // off·λ + off·(1−λ) = off for every class; only the two labelled classes get more.
        row[label] += (on_value - off_value) * own_weight;
        row[mirror_label] += (on_value - off_value) * (1.0 - own_weight);
    }
    targets
}

fn check_labels(labels: &[usize], classes: usize) -> Result<(), MixError> {
    match labels.iter().position(|&label| label >= classes) {
        Some(index) => Err(MixError::LabelOutOfRange {
            label: labels[index],
            index,
            classes,
        }),
        None => Ok(()),
    }
}

fn summarise_kinds(sample_kinds: &[MixKind]) -> MixKind {
    let mixup = sample_kinds.contains(&MixKind::Mixup);
    let cutmix = sample_kinds.contains(&MixKind::Cutmix);
    match (mixup, cutmix) {
        (true, true) => MixKind::Both,
        (true, false) => MixKind::Mixup,
        (false, true) => MixKind::Cutmix,
        (false, false) => MixKind::None,
    }
}

fn sample_beta(alpha: f64, rng: &mut ChaCha8Rng) -> f64 {
    // `enabled` and `validate` keep alpha finite and positive here, so construction succeeds.
    match Beta::new(alpha, alpha) {
        Ok(beta) => beta.sample(rng),
        Err(_) => 1.0,
    }
}

/// Sample `pair_index` and its mirror `batch − 1 − pair_index` as two disjoint mutable slices.
fn mirrored_pair(
    images: &mut [f32],
    pair_index: usize,
    batch: usize,
    sample_len: usize,
) -> (&mut [f32], &mut [f32]) {
    let mirror = batch - 1 - pair_index;
    let (head, tail) = images.split_at_mut(mirror * sample_len);
    let first = &mut head[pair_index * sample_len..(pair_index + 1) * sample_len];
    let second = &mut tail[..sample_len];
    (first, second)
}

/// Both members of a pair become `λ·self + (1 − λ)·other`, read from the values before mixing.
fn blend_pair(first: &mut [f32], second: &mut [f32], lam: f32) {
    let other_weight = 1.0 - lam;
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let (original_a, original_b) = (*a, *b);
        *a = original_a * lam + original_b * other_weight;
        *b = original_b * lam + original_a * other_weight;
    }
}

fn blend_into(target: &mut [f32], source: &[f32], lam: f32) {
    let other_weight = 1.0 - lam;
    for (value, &other) in target.iter_mut().zip(source) {
        *value = *value * lam + other * other_weight;
    }
}

/// Exchanges the box region between the two samples of a pair, in every channel.
fn swap_box(
    first: &mut [f32],
    second: &mut [f32],
    cut: CutBox,
    channels: usize,
    height: usize,
    width: usize,
) {
    for channel in 0..channels {
        for row in cut.top..cut.bottom {
            let start = (channel * height + row) * width;
            first[start + cut.left..start + cut.right]
                .swap_with_slice(&mut second[start + cut.left..start + cut.right]);
        }
    }
}

fn paste_box(
    target: &mut [f32],
    source: &[f32],
    cut: CutBox,
    channels: usize,
    height: usize,
    width: usize,
) {
    for channel in 0..channels {
        for row in cut.top..cut.bottom {
            let start = (channel * height + row) * width;
            target[start + cut.left..start + cut.right]
                .copy_from_slice(&source[start + cut.left..start + cut.right]);
        }
    }
}

/// timm's `rand_bbox` (no margin): a box of side `⌊side·√(1−λ)⌋` centred uniformly in the image
/// and clipped to it. The half-sides are rounded down, as in timm, so the unclipped box spans
/// `2·⌊cut/2⌋` pixels.
fn random_box(height: usize, width: usize, lam: f64, rng: &mut ChaCha8Rng) -> CutBox {
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let cut_height = (height as f64 * ratio) as usize;
    let cut_width = (width as f64 * ratio) as usize;
    let center_y = rng.random_range(0..height);
    let center_x = rng.random_range(0..width);
    CutBox {
        top: center_y.saturating_sub(cut_height / 2),
        bottom: (center_y + cut_height / 2).min(height),
        left: center_x.saturating_sub(cut_width / 2),
        right: (center_x + cut_width / 2).min(width),
    }
}

/// timm's `rand_bbox_minmax`: each side drawn uniformly from `[⌊min·side⌋, ⌊max·side⌋)`, the box
/// placed uniformly so that it fits inside the image.
fn random_box_minmax(
    height: usize,
    width: usize,
    [low, high]: [f64; 2],
    rng: &mut ChaCha8Rng,
) -> CutBox {
    let mut side = |extent: usize| {
        let smallest = (extent as f64 * low) as usize;
        let largest = ((extent as f64 * high) as usize).min(extent);
        if largest > smallest {
            rng.random_range(smallest..largest)
        } else {
            smallest.min(extent)
        }
    };
    let cut_height = side(height);
    let cut_width = side(width);
    let mut offset = |room: usize| {
        if room > 0 {
            rng.random_range(0..room)
        } else {
            0
        }
    };
    let top = offset(height - cut_height);
    let left = offset(width - cut_width);
    CutBox {
        top,
        bottom: top + cut_height,
        left,
        right: left + cut_width,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const CHANNELS: usize = 3;
    const HEIGHT: usize = 12;
    const WIDTH: usize = 10;
    const SAMPLE: usize = CHANNELS * HEIGHT * WIDTH;

    /// A batch where every pixel of sample `i` equals `i + 1`, so provenance is readable.
    fn constant_batch(batch: usize) -> Vec<f32> {
        (0..batch)
            .flat_map(|index| std::iter::repeat_n(index as f32 + 1.0, SAMPLE))
            .collect()
    }

    /// A batch of distinct pseudo-random values.
    fn varied_batch(batch: usize) -> Vec<f32> {
        (0..batch * SAMPLE)
            .map(|index| ((index * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect()
    }

    fn smoothed_one_hot(label: usize, classes: usize, smoothing: f64) -> Vec<f64> {
        let off = smoothing / classes as f64;
        let mut row = vec![off; classes];
        row[label] = 1.0 - smoothing + off;
        row
    }

    fn assert_rows_sum_to_one(targets: &[f32], classes: usize) {
        for (index, row) in targets.chunks(classes).enumerate() {
            let sum: f64 = row.iter().map(|&value| value as f64).sum();
            assert!((sum - 1.0).abs() <= 1e-6, "row {index} sums to {sum}");
            assert!(row.iter().all(|&value| value >= 0.0));
        }
    }

    fn mixup_only() -> MixupConfig {
        MixupConfig {
            mixup_alpha: 0.8,
            ..MixupConfig::default()
        }
    }

    fn cutmix_only(correct_lam: bool) -> MixupConfig {
        MixupConfig {
            mixup_alpha: 0.0,
            cutmix_alpha: 1.0,
            correct_lam,
            ..MixupConfig::default()
        }
    }

    fn run(
        config: &MixupConfig,
        images: &mut [f32],
        labels: &[usize],
        classes: usize,
        seed: u64,
    ) -> MixOutcome {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        config
            .mix_batch(images, labels, classes, CHANNELS, HEIGHT, WIDTH, &mut rng)
            .unwrap()
    }

    #[test]
    fn smoothing_follows_timm_on_and_off_values() {
        let targets = smooth_targets(&[2, 0], 4, 0.1);
        let expected = [0.025, 0.025, 0.925, 0.025, 0.925, 0.025, 0.025, 0.025];
        for (actual, expected) in targets.iter().zip(expected) {
            assert!((actual - expected).abs() < 1e-7, "{targets:?}");
        }
        assert_eq!(smooth_targets(&[1], 3, 0.0), vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn mixup_blends_pixels_and_targets_with_the_flipped_batch() {
        let labels = [0, 3, 1, 4, 2, 3];
        let classes = 5;
        let config = mixup_only();
        for seed in 0..20 {
            let original = varied_batch(labels.len());
            let mut images = original.clone();
            let outcome = run(&config, &mut images, &labels, classes, seed);
            assert_eq!(outcome.kind, MixKind::Mixup);
            let lam = outcome.lam[0];
            assert!(outcome.lam.iter().all(|&value| value == lam));
            assert!(0.0 < lam && lam < 1.0);
            for index in 0..labels.len() {
                let mirror = labels.len() - 1 - index;
                for offset in [0, 17, SAMPLE - 1] {
                    let expected = original[index * SAMPLE + offset] * lam
                        + original[mirror * SAMPLE + offset] * (1.0 - lam);
                    let actual = images[index * SAMPLE + offset];
                    assert!((actual - expected).abs() < 1e-5, "{actual} vs {expected}");
                }
                let own = smoothed_one_hot(labels[index], classes, 0.1);
                let other = smoothed_one_hot(labels[mirror], classes, 0.1);
                for class in 0..classes {
                    let expected = lam as f64 * own[class] + (1.0 - lam as f64) * other[class];
                    let actual = outcome.targets[index * classes + class] as f64;
                    assert!((actual - expected).abs() < 1e-6, "{actual} vs {expected}");
                }
            }
            assert_rows_sum_to_one(&outcome.targets, classes);
        }
    }

    #[test]
    fn corrected_cutmix_lambda_equals_the_unpasted_area() {
        let labels = [0, 1, 2, 3];
        let config = cutmix_only(true);
        for seed in 0..40 {
            let mut images = constant_batch(labels.len());
            let outcome = run(&config, &mut images, &labels, 4, seed);
            assert_eq!(outcome.kind, MixKind::Cutmix);
            for index in 0..labels.len() {
                let sample = &images[index * SAMPLE..(index + 1) * SAMPLE];
                let own_value = index as f32 + 1.0;
                let mirror_value = (labels.len() - index) as f32;
                let pasted = sample
                    .iter()
                    .filter(|&&value| value == mirror_value)
                    .count();
                let kept = sample.iter().filter(|&&value| value == own_value).count();
                assert_eq!(pasted + kept, SAMPLE, "only the pair's pixels appear");
                let pasted_fraction = pasted as f64 / SAMPLE as f64;
                let lam = outcome.lam[index] as f64;
                assert!((pasted_fraction - (1.0 - lam)).abs() < 1e-6);
            }
            assert_rows_sum_to_one(&outcome.targets, 4);
        }
    }

    #[test]
    fn uncorrected_cutmix_keeps_the_sampled_lambda() {
        let labels = [0, 1];
        let mut differs = false;
        for seed in 0..20 {
            let mut corrected_images = constant_batch(2);
            let mut raw_images = constant_batch(2);
            let corrected = run(&cutmix_only(true), &mut corrected_images, &labels, 2, seed);
            let raw = run(&cutmix_only(false), &mut raw_images, &labels, 2, seed);
            // Same stream, same box: only λ's bookkeeping differs.
            assert_eq!(corrected_images, raw_images);
            differs |= corrected.lam[0] != raw.lam[0];
        }
        assert!(differs);
    }

    #[test]
    fn cutmix_boxes_follow_timm_rand_bbox_geometry() {
        // λ = 0.75: √(1−λ) = 0.5, so cuts of ⌊12·0.5⌋ = 6 rows and ⌊10·0.5⌋ = 5 columns, whose
        // half-sides 3 and 2 give an unclipped box of 6×4 around a uniform centre.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut saw_unclipped = false;
        for _ in 0..200 {
            let cut = random_box(HEIGHT, WIDTH, 0.75, &mut rng);
            assert!(cut.bottom <= HEIGHT && cut.right <= WIDTH);
            assert!(
                cut.bottom - cut.top <= 6 && cut.right - cut.left <= 4,
                "{cut:?}"
            );
            if cut.top > 0 && cut.left > 0 && cut.bottom < HEIGHT && cut.right < WIDTH {
                assert_eq!((cut.bottom - cut.top, cut.right - cut.left), (6, 4));
                saw_unclipped = true;
            }
        }
        assert!(saw_unclipped);
    }

    #[test]
    fn cutmix_minmax_boxes_stay_within_bounds() {
        let config = MixupConfig {
            mixup_alpha: 0.0,
            cutmix_minmax: Some([0.3, 0.6]),
            correct_lam: false,
            ..MixupConfig::default()
        };
        for seed in 0..30 {
            let mut images = constant_batch(2);
            let outcome = run(&config, &mut images, &[0, 1], 2, seed);
            let pasted = images[..SAMPLE]
                .iter()
                .filter(|&&value| value == 2.0)
                .count();
            let area = pasted / CHANNELS;
            // Sides in [3, 7) rows of 12 and [3, 6) columns of 10.
            assert!((9..=42).contains(&area), "area {area}");
            let lam = outcome.lam[0] as f64;
            assert!((1.0 - lam - area as f64 / (HEIGHT * WIDTH) as f64).abs() < 1e-6);
        }
    }

    #[test]
    fn zero_probability_gives_smoothed_unmixed_targets() {
        let labels = [1, 0, 2, 2];
        for mode in [MixMode::Batch, MixMode::Pair, MixMode::Elem] {
            let config = MixupConfig {
                prob: 0.0,
                cutmix_alpha: 1.0,
                mode,
                ..MixupConfig::default()
            };
            assert!(!config.enabled());
            let original = varied_batch(labels.len());
            let mut images = original.clone();
            let outcome = run(&config, &mut images, &labels, 3, 5);
            assert_eq!(images, original);
            assert_eq!(outcome.kind, MixKind::None);
            assert_eq!(outcome.targets, smooth_targets(&labels, 3, 0.1));
            assert_eq!(outcome.lam, vec![1.0; 4]);
        }
    }

    #[test]
    fn pair_mode_shares_lambda_within_mirrored_pairs() {
        let labels = [0, 1, 2, 3, 4, 5];
        let config = MixupConfig {
            cutmix_alpha: 1.0,
            mode: MixMode::Pair,
            ..MixupConfig::default()
        };
        for seed in 0..10 {
            let mut images = constant_batch(labels.len());
            let outcome = run(&config, &mut images, &labels, 6, seed);
            for index in 0..3 {
                let mirror = 5 - index;
                assert_eq!(outcome.lam[index], outcome.lam[mirror]);
                assert_eq!(outcome.sample_kinds[index], outcome.sample_kinds[mirror]);
                // Whatever happened to one side happened symmetrically to the other.
                let own = &images[index * SAMPLE..(index + 1) * SAMPLE];
                let other = &images[mirror * SAMPLE..(mirror + 1) * SAMPLE];
                let (own_value, mirror_value) = (index as f32 + 1.0, mirror as f32 + 1.0);
                for (a, b) in own.iter().zip(other) {
                    let mirrored = own_value + mirror_value - a;
                    assert!((b - mirrored).abs() < 1e-4, "{a} {b}");
                }
            }
            assert_rows_sum_to_one(&outcome.targets, 6);
        }
    }

    #[test]
    fn elem_mode_mixes_each_sample_with_its_mirror_original() {
        let labels = [0, 1, 2, 3];
        let config = MixupConfig {
            mode: MixMode::Elem,
            ..mixup_only()
        };
        let original = constant_batch(labels.len());
        let mut images = original.clone();
        let outcome = run(&config, &mut images, &labels, 4, 11);
        for index in 0..4 {
            let lam = outcome.lam[index];
            let expected = (index as f32 + 1.0) * lam + (4 - index) as f32 * (1.0 - lam);
            assert!((images[index * SAMPLE] - expected).abs() < 1e-5);
            let row = &outcome.targets[index * 4..(index + 1) * 4];
            let own = (1.0 - 0.1) * lam as f64 + 0.025;
            assert!((row[index] as f64 - own).abs() < 1e-6);
        }
        let distinct: std::collections::BTreeSet<u32> =
            outcome.lam.iter().map(|value| value.to_bits()).collect();
        assert_eq!(distinct.len(), 4, "each sample draws its own λ");
    }

    #[test]
    fn odd_batches_are_refused_for_pair_and_elem() {
        for mode in [MixMode::Pair, MixMode::Elem] {
            let config = MixupConfig {
                mode,
                ..MixupConfig::default()
            };
            let mut images = constant_batch(3);
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let error = config
                .mix_batch(
                    &mut images,
                    &[0, 1, 2],
                    3,
                    CHANNELS,
                    HEIGHT,
                    WIDTH,
                    &mut rng,
                )
                .unwrap_err();
            assert_eq!(error, MixError::OddBatch { mode, batch: 3 });
        }
        let mut images = constant_batch(3);
        let outcome = run(&mixup_only(), &mut images, &[0, 1, 2], 3, 0);
        assert!(images[SAMPLE..2 * SAMPLE].iter().all(|&value| value == 2.0));
        assert_rows_sum_to_one(&outcome.targets, 3);
    }

    #[test]
    fn same_seed_same_batch_different_seed_different_batch() {
        let labels = [0, 1, 2, 3];
        let config = MixupConfig {
            cutmix_alpha: 1.0,
            mode: MixMode::Elem,
            ..MixupConfig::default()
        };
        let mut first = varied_batch(4);
        let mut second = varied_batch(4);
        let mut third = varied_batch(4);
        let outcome_first = run(&config, &mut first, &labels, 4, 42);
        let outcome_second = run(&config, &mut second, &labels, 4, 42);
        let outcome_third = run(&config, &mut third, &labels, 4, 43);
        assert_eq!(first, second);
        assert_eq!(outcome_first, outcome_second);
        assert_ne!(outcome_first.lam, outcome_third.lam);
    }

    #[test]
    fn shape_and_label_errors_are_reported() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut images = vec![0.0; 10];
        let config = MixupConfig::default();
        assert!(matches!(
            config.mix_batch(&mut images, &[0, 1], 2, 3, 2, 2, &mut rng),
            Err(MixError::ImageShape { expected: 24, .. })
        ));
        let mut images = vec![0.0; 24];
        assert_eq!(
            config
                .mix_batch(&mut images, &[0, 2], 2, 3, 2, 2, &mut rng)
                .unwrap_err(),
            MixError::LabelOutOfRange {
                label: 2,
                index: 1,
                classes: 2
            }
        );
    }

    #[test]
    fn parses_timm_defaults_and_validates_fields() {
        let parsed: MixupConfig =
            serde_json::from_str(r#"{"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 0.1}"#)
                .unwrap();
        assert_eq!(parsed.switch_prob, 0.5);
        assert_eq!(parsed.mode, MixMode::Batch);
        assert!(parsed.correct_lam);
        assert_eq!(parsed.label_smoothing, 0.1);
        assert!(parsed.enabled());
        assert!(serde_json::from_str::<MixupConfig>(r#"{"alpha": 1.0}"#).is_err());
        let bad = MixupConfig {
            prob: 1.5,
            ..MixupConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "prob: must be in [0, 1] (got 1.5)"
        );
        let bad_box = MixupConfig {
            cutmix_minmax: Some([0.8, 0.2]),
            ..MixupConfig::default()
        };
        assert!(
            bad_box
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("cutmix_minmax:")
        );
        let off = MixupConfig {
            mixup_alpha: 0.0,
            ..MixupConfig::default()
        };
        assert!(!off.enabled());
    }
}
