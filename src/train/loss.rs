//! The two losses of the recipe: soft-target cross-entropy for training (the targets come from
//! MixUp/CutMix and label smoothing; timm's `SoftTargetCrossEntropy`) and plain cross-entropy on
//! hard labels for validation (`torch.nn.CrossEntropyLoss`).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Mean over the batch of `−Σ_c target_c · log softmax(logits)_c`.
///
/// # Shapes
/// `logits`, `targets`: `[batch, classes]` → `[1]`
pub fn soft_target_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [batch, _] = logits.dims();
    let per_sample = (log_softmax(logits, 1) * targets).sum_dim(1).neg();
    per_sample.reshape([batch]).mean()
}

/// `−log softmax(logits)_label` for every sample.
///
/// # Shapes
/// `logits`: `[batch, classes]`, `labels`: `[batch]` → `[batch]`
pub fn cross_entropy_per_sample<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [batch, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, labels.reshape([batch, 1]))
        .reshape([batch])
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn logits() -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(vec![2.0_f32, 0.0, -1.0, 0.5, 0.5, 0.5], [2, 3]),
            &Default::default(),
        )
    }

    fn log_softmax_row(row: [f64; 3]) -> [f64; 3] {
        let log_sum = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        row.map(|v| v - log_sum)
    }

    #[test]
    fn soft_targets_give_the_hand_computed_mean() {
        let targets = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.7_f32, 0.3, 0.0, 0.1, 0.1, 0.8], [2, 3]),
            &Default::default(),
        );
        let loss: f32 = soft_target_cross_entropy(logits(), targets).into_scalar();
        let first = log_softmax_row([2.0, 0.0, -1.0]);
        let second = log_softmax_row([0.5, 0.5, 0.5]);
        let expected = -(0.7 * first[0] + 0.3 * first[1])
            - (0.1 * second[0] + 0.1 * second[1] + 0.8 * second[2]);
        assert!((f64::from(loss) - expected / 2.0).abs() < 1e-6);
    }

    #[test]
    fn hard_labels_pick_the_label_column() {
        let labels = Tensor::<B, 1, Int>::from_data(
            TensorData::new(vec![1_i64, 2], [2]),
            &Default::default(),
        );
        let losses: Vec<f32> = cross_entropy_per_sample(logits(), labels)
            .into_data()
            .to_vec()
            .unwrap();
        let first = log_softmax_row([2.0, 0.0, -1.0]);
        assert!((f64::from(losses[0]) + first[1]).abs() < 1e-6);
        assert!((f64::from(losses[1]) - 3.0_f64.ln()).abs() < 1e-6);
    }
}
