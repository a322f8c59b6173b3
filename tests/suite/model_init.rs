//! The initialisation of a freshly built model against VIL_SPEC section 3, read through the
//! official parameter names: zero gate weights, forget-gate biases 3..6, unit skips, zero norm
//! offsets, and the standard deviations / bounds of small-init, wang-init, xavier, the PyTorch
//! convolution default and the truncated normals.

use std::collections::BTreeMap;

use burn::backend::NdArray;
use burn::store::ModuleSnapshot;
use vilab::model::preset;

use crate::common::backend_rng_lock;

type Backend = NdArray<f32>;

/// Every parameter of a preset by official name (PyTorch names, burn layouts).
fn parameters(name: &str) -> BTreeMap<String, Vec<f32>> {
    // Initialisation draws from burn's global RNG, which seeded tests of this binary rely on;
    // the values are drawn when collected below, so the lock is held until then.
    let _rng = backend_rng_lock();
    let model = preset(name)
        .expect("preset exists")
        .init::<Backend>(&Default::default());
    model
        .collect(None, None, true)
        .into_iter()
        .map(|snapshot| {
            let values = snapshot
                .to_data()
                .expect("materialises")
                .to_vec::<f32>()
                .expect("f32");
            (snapshot.full_path(), values)
        })
        .collect()
}

fn standard_deviation(values: &[f32]) -> f64 {
    let count = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
    let squares = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>();
    (squares / count).sqrt()
}

fn largest(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |acc, v| acc.max(v.abs()))
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual / expected - 1.0).abs() < 0.05,
        "{what}: σ = {actual}, expected {expected}"
    );
}

#[test]
fn vil_tiny_starts_as_the_official_model_does() {
    let parameters = parameters("vil_tiny");
    let get = |name: &str| {
        parameters
            .get(name)
            .unwrap_or_else(|| panic!("{name} exists"))
            .as_slice()
    };
    let dim = 192.0f64;
    let small = (2.0 / (5.0 * dim)).sqrt();
    for block in ["blocks.0", "blocks.23"] {
        let layer = format!("{block}.layer");
        assert!(
            get(&format!("{block}.norm.weight"))
                .iter()
                .all(|&v| v == 0.0)
        );
        assert_close(
            standard_deviation(get(&format!("{layer}.proj_up.weight"))),
            small,
            "proj_up",
        );
        for projection in ["q_proj", "k_proj", "v_proj"] {
            let values = get(&format!("{layer}.{projection}.weight"));
            assert_eq!(values.len(), 96 * 4 * 4);
            assert_close(standard_deviation(values), small, projection);
        }
        assert_close(
            standard_deviation(get(&format!("{layer}.proj_down.weight"))),
            2.0 / dim.sqrt(),
            "proj_down",
        );
        let conv = get(&format!("{layer}.conv1d.conv.weight"));
        assert!(
            largest(conv) <= 0.5 && largest(conv) > 0.45,
            "conv bound 1/√4"
        );
        assert!(largest(get(&format!("{layer}.conv1d.conv.bias"))) <= 0.5);
        let cell = format!("{layer}.mlstm_cell");
        assert!(
            get(&format!("{cell}.igate.weight"))
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(
            get(&format!("{cell}.fgate.weight"))
                .iter()
                .all(|&v| v == 0.0)
        );
        assert_eq!(get(&format!("{cell}.fgate.bias")), &[3.0, 4.0, 5.0, 6.0]);
        let input_bias = get(&format!("{cell}.igate.bias"));
        assert!(largest(input_bias) < 0.6 && input_bias.iter().any(|&v| v != 0.0));
        assert!(
            get(&format!("{cell}.outnorm.weight"))
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(
            get(&format!("{layer}.learnable_skip"))
                .iter()
                .all(|&v| v == 1.0)
        );
    }
    let patch = get("patch_embed.proj.weight");
    let bound = (6.0f64 / (3.0 * 16.0 * 16.0 + dim)).sqrt();
    assert!(f64::from(largest(patch)) <= bound);
    assert_close(
        standard_deviation(patch),
        bound / 3.0f64.sqrt(),
        "patch_embed",
    );
    assert!(get("patch_embed.proj.bias").iter().all(|&v| v == 0.0));
    assert_close(
        standard_deviation(get("pos_embed.embed")),
        0.02,
        "pos_embed",
    );
    assert_close(standard_deviation(get("head.weight")), 2e-5, "head");
    assert!(get("head.bias").iter().all(|&v| v == 0.0));
    assert!(get("legacy_norm.weight").iter().all(|&v| v == 0.0));
    assert!(get("norm.weight").iter().all(|&v| v == 1.0));
    assert!(get("norm.bias").iter().all(|&v| v == 0.0));
}

#[test]
fn vil2_tiny_has_biases_and_a_three_by_three_convolution() {
    let parameters = parameters("vil2_tiny");
    let layer = "blocks.11.rowwise_from_bot_right.layer";
    let conv = &parameters[&format!("{layer}.conv.weight")];
    assert_eq!(conv.len(), 384 * 9);
    assert!(
        largest(conv) <= 1.0 / 3.0 && largest(conv) > 0.3,
        "conv bound 1/√9"
    );
    for bias in [
        "proj_up.bias",
        "q_proj.bias",
        "proj_down.bias",
        "mlstm_cell.outnorm.bias",
    ] {
        assert!(
            parameters[&format!("{layer}.{bias}")]
                .iter()
                .all(|&v| v == 0.0),
            "{bias}"
        );
    }
    assert!(parameters["norm.bias"].iter().all(|&v| v == 0.0));
    assert_eq!(parameters["legacy_norm.weight"].len(), 384);
    assert!(parameters["legacy_norm.weight"].iter().all(|&v| v == 1.0));
    assert_eq!(parameters["head.weight"].len(), 384 * 1000);
}
