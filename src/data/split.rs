//! Seeded train/validation split of labelled items, stratified per class by default.
//!
//! Reproducibility is the point: the same labels, fraction and seed give the same split on every
//! machine and every vilab version. So the generator is ChaCha8 (its output stream is fixed by
//! its specification) and the shuffle is a Fisher–Yates written here with unbiased rejection
//! sampling, rather than `rand`'s `shuffle`, whose exact output is not promised across releases.
//!
//! When stratifying, each class is shuffled with its own ChaCha stream (stream number = label),
//! so adding images to one class leaves the split of every other class unchanged.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Splits item indices `0..labels.len()` into `(train, validation)`.
///
/// With `stratify`, each class contributes `round(n × val_fraction)` of its `n` items to
/// validation, but a class with at least two items always keeps at least one on each side; a class
/// with one item goes to training. Without `stratify` the same rule applies to the whole set.
/// `val_fraction` is clamped to `[0, 1]`. `num_classes` is the number of classes (labels are
/// expected below it; larger labels are still handled). Both lists come back sorted ascending so
/// manifests written from them are stable.
pub fn split_indices(
    labels: &[usize],
    num_classes: usize,
    val_fraction: f64,
    stratify: bool,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let val_fraction = if val_fraction.is_nan() {
        0.0
    } else {
        val_fraction.clamp(0.0, 1.0)
    };
    let groups: Vec<Vec<usize>> = if stratify {
        let class_count = labels
            .iter()
            .map(|label| label + 1)
            .max()
            .unwrap_or(0)
            .max(num_classes);
        let mut groups = vec![Vec::new(); class_count];
        for (index, &label) in labels.iter().enumerate() {
            groups[label].push(index);
        }
        groups
    } else {
        vec![(0..labels.len()).collect()]
    };

    let mut train = Vec::with_capacity(labels.len());
    let mut validation = Vec::new();
    for (stream, mut group) in groups.into_iter().enumerate() {
        let mut generator = ChaCha8Rng::seed_from_u64(seed);
        generator.set_stream(stream as u64);
        shuffle(&mut group, &mut generator);
        let validation_count = validation_size(group.len(), val_fraction);
        validation.extend_from_slice(&group[..validation_count]);
        train.extend_from_slice(&group[validation_count..]);
    }
    train.sort_unstable();
    validation.sort_unstable();
    (train, validation)
}

/// How many of `count` items go to validation.
fn validation_size(count: usize, val_fraction: f64) -> usize {
    if count < 2 {
        return 0;
    }
    let rounded = (count as f64 * val_fraction).round() as usize;
    rounded.clamp(1, count - 1)
}

/// Fisher–Yates shuffle (Knuth, TAOCP vol. 2, algorithm 3.4.2 P).
fn shuffle(items: &mut [usize], generator: &mut ChaCha8Rng) {
    for last in (1..items.len()).rev() {
        let other = uniform_below(generator, last as u64 + 1) as usize;
        items.swap(last, other);
    }
}

/// A uniform integer in `0..bound` (`bound > 0`), without modulo bias: draws in the first
/// `2^64 mod bound` values are rejected so the accepted range is a whole number of `bound`s.
fn uniform_below(generator: &mut ChaCha8Rng, bound: u64) -> u64 {
    let rejected_below = bound.wrapping_neg() % bound;
    loop {
        let draw = generator.next_u64();
        if draw >= rejected_below {
            return draw % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 classes of 50, 20 and 7 items, permuted (17 is coprime with 77) so that indices do not
    /// give the classes away.
    fn labels() -> Vec<usize> {
        let sorted: Vec<usize> = [(0, 50), (1, 20), (2, 7)]
            .into_iter()
            .flat_map(|(class, count)| std::iter::repeat_n(class, count))
            .collect();
        (0..sorted.len())
            .map(|index| sorted[index * 17 % sorted.len()])
            .collect()
    }

    fn count_of(labels: &[usize], indices: &[usize], class: usize) -> usize {
        indices
            .iter()
            .filter(|&&index| labels[index] == class)
            .count()
    }

    #[test]
    fn fixture_has_the_intended_class_sizes() {
        let labels = labels();
        let all: Vec<usize> = (0..labels.len()).collect();
        assert_eq!(
            [0, 1, 2].map(|class| count_of(&labels, &all, class)),
            [50, 20, 7]
        );
    }

    #[test]
    fn split_is_disjoint_covering_and_sorted() {
        let labels = labels();
        for stratify in [true, false] {
            let (train, validation) = split_indices(&labels, 3, 0.2, stratify, 42);
            let mut all: Vec<usize> = train.iter().chain(&validation).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
            assert!(train.windows(2).all(|pair| pair[0] < pair[1]));
            assert!(validation.windows(2).all(|pair| pair[0] < pair[1]));
        }
    }

    #[test]
    fn stratified_split_rounds_each_class() {
        let labels = labels();
        let (train, validation) = split_indices(&labels, 3, 0.2, true, 7);
        // round(50 × 0.2) = 10, round(20 × 0.2) = 4, round(7 × 0.2) = round(1.4) = 1.
        assert_eq!(
            [0, 1, 2].map(|class| count_of(&labels, &validation, class)),
            [10, 4, 1]
        );
        assert_eq!(
            [0, 1, 2].map(|class| count_of(&labels, &train, class)),
            [40, 16, 6]
        );
    }

    #[test]
    fn small_classes_keep_one_item_on_each_side() {
        let labels = vec![0, 0, 1, 1, 1, 2];
        let (train, validation) = split_indices(&labels, 3, 0.01, true, 1);
        assert_eq!(count_of(&labels, &validation, 0), 1);
        assert_eq!(count_of(&labels, &validation, 1), 1);
        assert_eq!(
            count_of(&labels, &validation, 2),
            0,
            "a singleton class trains"
        );
        assert_eq!(train.len(), 4);
        let (_, validation) = split_indices(&labels, 3, 0.99, true, 1);
        assert_eq!(count_of(&labels, &validation, 0), 1);
        assert_eq!(count_of(&labels, &validation, 1), 2);
        assert_eq!(count_of(&labels, &validation, 2), 0);
    }

    #[test]
    fn same_seed_same_split_and_different_seeds_differ() {
        let labels = labels();
        for stratify in [true, false] {
            let first = split_indices(&labels, 3, 0.3, stratify, 123);
            assert_eq!(first, split_indices(&labels, 3, 0.3, stratify, 123));
            assert_ne!(first, split_indices(&labels, 3, 0.3, stratify, 124));
        }
    }

    #[test]
    fn split_values_are_pinned() {
        // Guards value stability: a change here means old manifests no longer reproduce.
        let labels = vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
        let (_, validation) = split_indices(&labels, 2, 0.4, true, 2024);
        assert_eq!(validation, PINNED_VALIDATION);
    }

    const PINNED_VALIDATION: [usize; 4] = [1, 4, 5, 8];

    #[test]
    fn unstratified_split_uses_the_global_fraction() {
        let labels = labels();
        let (train, validation) = split_indices(&labels, 3, 0.25, false, 9);
        assert_eq!(validation.len(), 19, "round(77 × 0.25) = round(19.25)");
        assert_eq!(train.len(), 58);
    }

    #[test]
    fn adding_to_one_class_keeps_other_classes_split() {
        let labels = labels();
        let (_, before) = split_indices(&labels, 3, 0.2, true, 5);
        let mut grown = labels.clone();
        grown.extend([2, 2, 2]);
        let (_, after) = split_indices(&grown, 3, 0.2, true, 5);
        let without_class_two = |indices: &[usize]| -> Vec<usize> {
            indices.iter().copied().filter(|&i| grown[i] != 2).collect()
        };
        assert_eq!(without_class_two(&before), without_class_two(&after));
    }

    #[test]
    fn uniform_below_stays_in_range_and_hits_every_value() {
        let mut generator = ChaCha8Rng::seed_from_u64(0);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[uniform_below(&mut generator, 7) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&count| (800..1200).contains(&count)),
            "{seen:?}"
        );
    }
}
