//! Parameter counts and MACs of the ViL presets against the official training logs
//! (VIL_SPEC section 4): the analytic count and the built module must both hit the logged totals,
//! so any structural difference from the official models fails here.

use burn::backend::NdArray;
use burn::module::Module;
use vilab::model::{BlockLayout, ConvKind, PRESET_NAMES, Pooling, VilConfig, preset};

use crate::common::backend_rng_lock;

type Backend = NdArray<f32>;

fn named(name: &str) -> VilConfig {
    preset(name).unwrap_or_else(|| panic!("preset {name} exists"))
}

fn built_count(config: &VilConfig) -> u64 {
    // Building may draw from burn's global RNG, which seeded tests of this binary rely on.
    let _rng = backend_rng_lock();
    config.init::<Backend>(&Default::default()).num_params() as u64
}

#[test]
fn tiny_models_match_the_official_counts_analytically_and_when_built() {
    for (name, classes, expected) in [
        ("vil_tiny", 1000, 6_088_360),
        ("vil2_tiny", 1000, 6_391_528),
        ("vil_tiny", 12, 5_897_676),
        ("vil2_tiny", 12, 6_011_148),
    ] {
        let config = named(name).with_num_classes(classes);
        assert_eq!(
            config.param_count().total(),
            expected,
            "{name} analytic, {classes} classes"
        );
        assert_eq!(
            built_count(&config),
            expected,
            "{name} built, {classes} classes"
        );
    }
}

#[test]
fn small_and_base_models_match_the_official_counts() {
    for (name, expected) in [
        ("vil_small", 22_792_360),
        ("vil2_small", 23_398_696),
        ("vil_base", 88_050_856),
        ("vil2_base", 89_263_528),
    ] {
        let config = named(name);
        assert_eq!(config.param_count().total(), expected, "{name} analytic");
        assert_eq!(built_count(&config), expected, "{name} built");
    }
}

#[test]
fn remaining_presets_match_the_counts_of_the_spec() {
    assert_eq!(named("vil_tinyplus").param_count().total(), 7_277_840);
    assert_eq!(named("vil_smallplus").param_count().total(), 24_628_664);
    // v2-small pre-trains at 192²: only the positional embedding shrinks.
    assert_eq!(
        named("vil2_small")
            .with_image_size(192)
            .param_count()
            .total(),
        23_378_728
    );
    assert_eq!(
        named("vil2_tiny")
            .with_image_size(192)
            .param_count()
            .total(),
        6_381_544
    );
}

#[test]
fn components_of_vil_tiny_add_up_as_in_the_spec() {
    let count = named("vil_tiny").param_count();
    assert_eq!(count.patch_embed, 147_648);
    assert_eq!(count.pos_embed, 37_632);
    assert_eq!(count.blocks, 24 * 237_896);
    assert_eq!(count.norms, 192 + 384);
    assert_eq!(count.head, 193_000);
    let count = named("vil2_tiny").param_count();
    assert_eq!(count.blocks, 24 * 242_504);
    assert_eq!(count.norms, 384 + 768);
    assert_eq!(count.head, 385_000);
}

#[test]
fn every_preset_is_valid_and_its_built_count_matches_the_analytic_one() {
    for name in PRESET_NAMES {
        let config = named(name);
        assert_eq!(config.validate(), Ok(()), "{name}");
        assert_eq!(config.image_size % config.patch_size, 0);
    }
    assert!(preset("vil_huge").is_none());
    // Custom variants exercise the optional pieces (no legacy norm, mean pooling, biases, 2-D
    // convolution in the single layout).
    let custom = VilConfig::new(48, 3)
        .with_num_classes(7)
        .with_patch_size(4)
        .with_image_size(16)
        .with_pooling(Pooling::Mean)
        .with_conv_kind(ConvKind::TwoD)
        .with_conv_kernel_size(5)
        .with_bias(true)
        .with_legacy_norm(false);
    assert_eq!(custom.param_count().total(), built_count(&custom));
    let paired = VilConfig {
        depth: 4,
        ..custom.clone().with_layout(BlockLayout::Pairs)
    };
    assert_eq!(paired.param_count().total(), built_count(&paired));
    let micro = named("vil_micro");
    assert_eq!(micro.param_count().total(), built_count(&micro));
}

#[test]
fn forward_macs_follow_the_full_square_convention() {
    // VIL_SPEC section 4: 76.24M per v2-T sub-block, 1.86G in total; v1-T 1.85G.
    let v2 = named("vil2_tiny").forward_macs() as f64;
    assert!((v2 / 1e9 - 1.86).abs() < 0.005, "vil2_tiny {v2}");
    let v1 = named("vil_tiny").forward_macs() as f64;
    assert!((v1 / 1e9 - 1.85).abs() < 0.005, "vil_tiny {v1}");
    let micro = named("vil_micro");
    assert!(micro.forward_macs() < named("vil_tiny").forward_macs() / 50);
}

#[test]
fn validation_names_the_offending_field() {
    let tiny = named("vil_tiny");
    let cases = [
        (tiny.clone().with_image_size(200), "image_size"),
        (tiny.clone().with_num_heads(5), "num_heads"),
        (tiny.clone().with_qkv_block_size(5), "qkv_block_size"),
        (tiny.clone().with_drop_path(1.0), "drop_path"),
        (
            VilConfig {
                depth: 23,
                ..named("vil2_tiny")
            },
            "depth",
        ),
        (
            named("vil2_tiny").with_conv_kernel_size(4),
            "conv_kernel_size",
        ),
        (VilConfig::new(0, 2), "dim"),
    ];
    for (config, field) in cases {
        let error = config.validate().expect_err(field);
        assert_eq!(error.field, field, "{error}");
    }
}

#[test]
fn configs_round_trip_through_json_with_the_yaml_spellings() {
    let config = named("vil2_small");
    let json = serde_json::to_value(&config).expect("serialises");
    assert_eq!(json["conv_kind"], "2d");
    assert_eq!(json["pooling"], "bilateral_flatten");
    assert_eq!(json["layout"], "pairs");
    let back: VilConfig = serde_json::from_value(json).expect("deserialises");
    assert_eq!(back, config);
}
