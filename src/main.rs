//! The `vilab` binary: parse the command line, set up logging, run, map errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vilab::cli::{Cli, exit_code_of, run};
use vilab::spec::LoadError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("vilab={default_level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    vilab::interrupt::install();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            match error.downcast_ref::<LoadError>() {
                // Validation problems are already `FILE:LINE:COL: field: message` lines.
                Some(LoadError::Invalid(problems)) => eprintln!("{problems}"),
                _ => eprintln!("error: {error:#}"),
            }
            ExitCode::from(exit_code_of(&error))
        }
    }
}
