//! The `vilab` binary: parse the command line, set up logging, run (`vilab::cli::main` prints
//! errors and maps them to exit codes).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, ValueEnum};
use tracing_subscriber::EnvFilter;
use vilab::cli::Cli;
use vilab::progress::ColorChoice;

fn main() -> ExitCode {
    vilab::backend::keep_freed_memory();
    restore_signal_defaults();
    let args: Vec<OsString> = std::env::args_os().collect();
    // clap colours its help and errors itself, so it needs the choice before parsing; on
    // `auto` it checks the stream it writes to and honours NO_COLOR and TERM=dumb as we do.
    let clap_color = match requested_color(&args) {
        ColorChoice::Auto => clap::ColorChoice::Auto,
        ColorChoice::Always => clap::ColorChoice::Always,
        ColorChoice::Never => clap::ColorChoice::Never,
    };
    let parsed = Cli::command()
        .color(clap_color)
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let mut cli = match parsed {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    // Decided once, for every line on stderr: the log below and the progress reporter.
    let color = cli.color.decide();
    cli.color = if color {
        ColorChoice::Always
    } else {
        ColorChoice::Never
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
        .with_ansi(color)
        .without_time()
        .init();
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), color, "vilab starting");
    vilab::interrupt::install();
    ExitCode::from(vilab::cli::main(cli))
}

/// The `--color` value on the command line (the last one before `--`), `auto` when there is
/// none or it is not one of the values (clap reports that once it parses).
fn requested_color(args: &[OsString]) -> ColorChoice {
    let mut choice = ColorChoice::Auto;
    let mut args = args.iter().skip(1).map(|arg| arg.to_str());
    while let Some(arg) = args.next() {
        let value = match arg {
            Some("--") => break,
            Some("--color") => args.next().flatten(),
            Some(other) => other.strip_prefix("--color="),
            None => None,
        };
        if let Some(parsed) = value.and_then(|value| ColorChoice::from_str(value, false).ok()) {
            choice = parsed;
        }
    }
    choice
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

/// Two signals get their Unix command-line behaviour back.
///
/// A write past the file-size limit (`ulimit -f`) raises SIGXFSZ, which ends the process
/// without a word by default. Ignored, the write fails with EFBIG instead, and the error is
/// reported with the path like any other I/O error.
///
/// Rust ignores SIGPIPE, so `vilab status FILE | head -1` would make the next `println!` panic
/// on the closed pipe. With the default action the process ends quietly, as `ls | head` does;
/// output files are committed by atomic renames, so nothing is left half-written.
fn restore_signal_defaults() {
    #[cfg(unix)]
    // SAFETY: setting the disposition of two signals at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
