//! `vilab data ...`: data utilities.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::EXIT_OK;
use crate::data::idx::import_idx;
use crate::progress::Reporter;

/// Data utilities.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Convert MNIST-style IDX files (gzip or plain) into an image folder, one PNG per image
    /// under OUT/<class>/.
    #[command(after_help = "Examples:
  vilab data import-idx --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz \\
      --classes 0,1,2,3,4,5,6,7,8,9 --out data/mnist
  vilab data import-idx --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz \\
      --classes 0,1,2,3,4,5,6,7,8,9 --out data/mnist_small --per-class 100")]
    ImportIdx(ImportIdxArgs),
}

/// Arguments of `vilab data import-idx`.
#[derive(Debug, Args)]
pub struct ImportIdxArgs {
    /// The IDX image file (e.g. train-images-idx3-ubyte.gz).
    #[arg(long, value_name = "FILE")]
    pub images: PathBuf,
    /// The IDX label file (e.g. train-labels-idx1-ubyte.gz).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Class names in label order, comma-separated; they become folder names.
    #[arg(long, value_name = "A,B,...", value_delimiter = ',', required = true)]
    pub classes: Vec<String>,
    /// The folder to create; existing files are never overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Keep only the first N images of each class (in file order).
    #[arg(long, value_name = "N")]
    pub per_class: Option<usize>,
}

/// Runs a data subcommand.
pub fn run(command: DataCommand, reporter: &Reporter) -> anyhow::Result<u8> {
    match command {
        DataCommand::ImportIdx(args) => {
            let summary = import_idx(
                &args.images,
                &args.labels,
                &args.classes,
                &args.out,
                args.per_class,
            )?;
            reporter.line(&format!(
                "wrote {} images ({}×{}) in {} classes",
                summary.total(),
                summary.width,
                summary.height,
                summary.per_class.len()
            ));
            println!("{}", summary.out.display());
            Ok(EXIT_OK)
        }
    }
}
