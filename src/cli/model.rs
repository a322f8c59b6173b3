//! `vilab model info NAME`: parameter count per component and forward MACs of a preset.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::plan::{Format, print_json};
use super::{EXIT_OK, usage};
use crate::model::{PRESET_NAMES, ParamCount, VilConfig, preset};

/// Model utilities.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Parameter count (total and per component) and forward MACs at an image size.
    #[command(after_help = "Examples:
  vilab model info vil_tiny                              the paper's tiny model, 224×224
  vilab model info vil_micro --classes 10                the quickstart's model
  vilab model info vil2_small --image-size 384           another input size
  vilab model info vil_micro --classes 10 --format json  the figures as JSON")]
    Info(InfoArgs),
}

/// Arguments of `vilab model info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Preset name: vil_micro, vil_tiny, vil_tinyplus, vil_small, vil_smallplus, vil_base,
    /// vil2_tiny, vil2_small, vil2_base.
    pub name: String,
    /// Number of classes of the head.
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    /// Side of the square input image (default: the preset's, 224 or 28 for vil_micro).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `vilab model info --format json`.
#[derive(Debug, Serialize)]
struct InfoJson<'a> {
    model: &'a str,
    image_size: usize,
    tokens: u64,
    dim: usize,
    depth: usize,
    classes: usize,
    parameters: ParametersJson,
    /// Forward multiply-accumulates per image, S×S products counted in full.
    forward_macs: u64,
    /// The same counting only the causal half of the S×S products (the paper's convention).
    forward_macs_causal: u64,
    /// 2 × forward_macs.
    forward_flops: u64,
}

/// The parameter count, total and per component.
#[derive(Debug, Serialize)]
struct ParametersJson {
    total: u64,
    #[serde(flatten)]
    components: ParamCount,
}

fn grouped(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Runs a model subcommand.
pub fn run(command: ModelCommand) -> anyhow::Result<u8> {
    let ModelCommand::Info(args) = command;
    let config = preset_with(&args.name, args.classes, args.image_size).map_err(usage)?;
    let count = config.param_count();
    let macs = config.forward_macs();
    let tokens = config.num_tokens() as u64;
    // The two S×S products, counted in full above; the causal convention counts half of them.
    let causal = macs - config.depth as u64 * tokens * tokens * config.inner_dim() as u64;
    if args.format == Format::Json {
        print_json(&InfoJson {
            model: &args.name,
            image_size: config.image_size,
            tokens,
            dim: config.dim,
            depth: config.depth,
            classes: config.num_classes,
            parameters: ParametersJson {
                total: count.total(),
                components: count,
            },
            forward_macs: macs,
            forward_macs_causal: causal,
            forward_flops: 2 * macs,
        })?;
        return Ok(EXIT_OK);
    }
    println!(
        "{} at {}×{} ({} tokens of dim {}, {} blocks), {} classes",
        args.name,
        config.image_size,
        config.image_size,
        tokens,
        config.dim,
        config.depth,
        config.num_classes
    );
    println!("parameters   {:>13}", grouped(count.total()));
    for (name, value) in [
        ("patch_embed", count.patch_embed),
        ("pos_embed", count.pos_embed),
        ("blocks", count.blocks),
        ("norms", count.norms),
        ("head", count.head),
    ] {
        println!("  {name:<11}{:>13}", grouped(value));
    }
    println!(
        "forward      {:>9.3} GMACs ({:.3} GFLOPs), S×S products counted in full",
        macs as f64 / 1e9,
        2.0 * macs as f64 / 1e9
    );
    println!(
        "             {:>9.3} GMACs counting only the causal half (the paper's convention)",
        causal as f64 / 1e9
    );
    Ok(EXIT_OK)
}

/// The preset `name` with its class count and (optionally) image size replaced, validated; the
/// error is one line naming the model, with a suggestion for a misspelt name.
pub(crate) fn preset_with(
    name: &str,
    classes: usize,
    image_size: Option<usize>,
) -> Result<VilConfig, String> {
    let Some(mut config) = preset(name) else {
        let close = crate::spec::problems::suggest(name, PRESET_NAMES.iter().copied());
        return Err(format!(
            "unknown model `{name}`{}; known: {}",
            close.map_or(String::new(), |c| format!(" (did you mean `{c}`?)")),
            PRESET_NAMES.join(", ")
        ));
    };
    config.num_classes = classes;
    if let Some(size) = image_size {
        config.image_size = size;
    }
    config
        .validate()
        .map_err(|message| format!("{name}: {message}"))?;
    Ok(config)
}
