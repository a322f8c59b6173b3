//! `vilab schema`: the experiment JSON Schema (draft-07), as checked in under `schemas/`.

use std::path::PathBuf;

use clap::Args;

use super::EXIT_OK;
use crate::spec::schema::experiment_schema_text;

/// Arguments of `vilab schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs the verb.
pub fn run(args: &SchemaArgs) -> anyhow::Result<u8> {
    let text = experiment_schema_text();
    match &args.out {
        Some(path) => crate::files::write_atomic(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}
