//! The `vilab` binary: parse the command line, set up logging, run (`vilab::cli::main` prints
//! errors and maps them to exit codes).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use tracing_subscriber::EnvFilter;
use vilab::cli::Cli;

fn main() -> ExitCode {
    ignore_file_size_signal();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
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
    ExitCode::from(vilab::cli::main(cli))
}

/// Prints a command-line mistake as one line (what is wrong, then the usage), exit code 2;
/// `--help`, `--version` and a bare `vilab` print as clap has them.
fn usage_error(error: &clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let text = error.render().to_string();
    let (problem, rest) = text.split_once("\nUsage:").unwrap_or((&text, ""));
    let problem: Vec<&str> = problem
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let usage = rest.lines().next().unwrap_or_default().trim();
    let mut line = String::new();
    for part in problem {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    if !usage.is_empty() {
        line.push_str(&format!(" (usage: {usage}; see --help)"));
    }
    eprintln!("{line}");
    ExitCode::from(vilab::cli::EXIT_USAGE)
}

/// A write past the file-size limit (`ulimit -f`) raises SIGXFSZ, which ends the process
/// without a word by default. Ignored, the write fails with EFBIG instead, and the error is
/// reported with the path like any other I/O error.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: installing SIG_IGN for one signal at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
