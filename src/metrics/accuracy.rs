//! Top-k accuracy from raw logits (ACC1 and ACC5 of the train and validation loops).
//!
//! A sample is top-k correct when its label is among the `k` highest-scoring classes. Instead of
//! sorting each row, the label's rank is counted directly: the number of classes that outrank it.
//! Ties are broken deterministically, by the higher score first and then the lower class index
//! (torch.topk leaves tie order unspecified), and NaN scores rank below every number, so a row of
//! NaNs never counts as correct by accident. `k` larger than the class count is clipped to it,
//! which makes ACC5 on a 3-class problem 100%, as timm's `accuracy` does after its own clip.

/// The 0-based rank of each sample's label within its row of `logits` (0 = top-1).
///
/// # Shapes
/// `logits` is `[labels.len(), classes]` row-major.
///
/// # Panics
/// When `logits.len() != labels.len() · classes` or a label is `≥ classes`: the loop builds both
/// from the same batch, so a mismatch is a bug, not a data error.
pub fn label_ranks(logits: &[f32], labels: &[usize], classes: usize) -> Vec<usize> {
    assert_eq!(
        logits.len(),
        labels.len() * classes,
        "logits hold {} values, expected {} samples × {classes} classes",
        logits.len(),
        labels.len()
    );
    labels
        .iter()
        .enumerate()
        .map(|(sample, &label)| {
            assert!(
                label < classes,
                "label {label} of sample {sample} is outside the {classes} classes"
            );
            let row = &logits[sample * classes..(sample + 1) * classes];
            let own = row[label];
            row.iter()
                .enumerate()
                .filter(|&(class, &score)| outranks(score, class, own, label))
                .count()
        })
        .collect()
}

/// How many samples have their label among the top `k` classes (`k` clipped to `classes`).
///
/// # Shapes
/// `logits` is `[labels.len(), classes]` row-major.
///
/// # Panics
/// As [`label_ranks`].
pub fn topk_correct(logits: &[f32], labels: &[usize], classes: usize, k: usize) -> usize {
    let k = k.min(classes);
    label_ranks(logits, labels, classes)
        .into_iter()
        .filter(|&rank| rank < k)
        .count()
}

/// Top-k accuracy in percent (0 for an empty batch).
///
/// # Panics
/// As [`label_ranks`].
pub fn accuracy_percent(logits: &[f32], labels: &[usize], classes: usize, k: usize) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    100.0 * topk_correct(logits, labels, classes, k) as f64 / labels.len() as f64
}

/// Whether class `other` (with `other_score`) sorts before class `own` in the deterministic
/// order: higher score first, NaN last, equal scores by lower index.
fn outranks(other_score: f32, other: usize, own_score: f32, own: usize) -> bool {
    match (other_score.is_nan(), own_score.is_nan()) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => other < own,
        (false, false) => other_score > own_score || (other_score == own_score && other < own),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four samples over four classes; each row's order is written next to it.
    fn logits() -> Vec<f32> {
        vec![
            0.1, 2.0, -1.0, 0.5, // order 1, 3, 0, 2
            3.0, 3.0, 1.0, 0.0, // tie between 0 and 1: order 0, 1, 2, 3
            -0.5, -0.2, -0.1, -0.3, // order 2, 1, 3, 0
            1.0, 1.0, 1.0, 1.0, // all tied: order 0, 1, 2, 3
        ]
    }

    #[test]
    fn ranks_follow_score_then_lower_index() {
        let labels = [3, 1, 0, 2];
        assert_eq!(label_ranks(&logits(), &labels, 4), vec![1, 1, 3, 2]);
    }

    #[test]
    fn topk_counts_labels_within_the_first_k() {
        let labels = [1, 0, 1, 3];
        // Ranks: 0, 0, 1, 3.
        assert_eq!(topk_correct(&logits(), &labels, 4, 1), 2);
        assert_eq!(topk_correct(&logits(), &labels, 4, 2), 3);
        assert_eq!(topk_correct(&logits(), &labels, 4, 3), 3);
        assert_eq!(topk_correct(&logits(), &labels, 4, 4), 4);
        assert_eq!(topk_correct(&logits(), &labels, 4, 0), 0);
        assert_eq!(accuracy_percent(&logits(), &labels, 4, 1), 50.0);
        assert_eq!(accuracy_percent(&logits(), &labels, 4, 2), 75.0);
    }

    #[test]
    fn k_beyond_the_class_count_is_clipped() {
        let logits = [0.3, -2.0, 1.5, 9.0, 0.0, -9.0];
        let labels = [1, 2];
        assert_eq!(topk_correct(&logits, &labels, 3, 2), 0);
        assert_eq!(topk_correct(&logits, &labels, 3, 5), 2);
        assert_eq!(accuracy_percent(&logits, &labels, 3, 5), 100.0);
    }

    #[test]
    fn nan_scores_rank_last() {
        let logits = [f32::NAN, -5.0, f32::NAN, 0.0, 1.0, -1.0];
        // A NaN label is outranked by every number and by earlier NaNs.
        assert_eq!(label_ranks(&logits, &[0, 2], 3), vec![1, 2]);
        assert_eq!(label_ranks(&logits[..3], &[1], 3), vec![0]);
        assert_eq!(topk_correct(&logits, &[0, 1], 3, 1), 1);
    }

    #[test]
    fn empty_batch_is_zero_percent() {
        assert_eq!(accuracy_percent(&[], &[], 10, 1), 0.0);
    }

    #[test]
    #[should_panic(expected = "outside the 3 classes")]
    fn a_label_outside_the_classes_is_a_bug() {
        label_ranks(&[0.0, 1.0, 2.0], &[3], 3);
    }
}
