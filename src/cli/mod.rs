//! The `vilab` command line: clap definitions and one file per verb.
//!
//! Exit codes: 0 ok, 1 failure (for `status`: something is not cached), 2 usage or validation
//! error (for `status`: the check could not be made at all), 130 interrupted. Verbs return
//! errors; [`main`] prints them and [`exit_code_of`] is the one place an error becomes a code.

mod bench;
mod cancel;
mod compare;
mod completions;
mod data;
mod export;
mod gc;
mod model;
mod plan;
mod predict;
mod run;
mod schema;
mod validate;
mod verify;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::spec::{LoadError, LoadedSpec};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for a failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage or validation error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code after an interruption (Ctrl-C, SIGTERM).
pub use crate::interrupt::EXIT_INTERRUPTED;

/// `vilab --version`: the version and the compute backends this binary was built with.
#[cfg(feature = "cuda")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (backends: cpu, cuda)");
/// `vilab --version`: the version and the compute backends this binary was built with.
#[cfg(not(feature = "cuda"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (backends: cpu)");

/// Declarative, cached Vision-LSTM experiments: one YAML file, one binary.
#[derive(Debug, Parser)]
#[command(name = "vilab", version = VERSION, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Print only results and errors (no progress).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log detail (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Colour and progress bars on stderr: auto (a terminal, unless NO_COLOR is set or
    /// TERM=dumb), always, or never (plain lines, no escape sequences).
    #[arg(long, global = true, value_enum, value_name = "WHEN",
          default_value_t = crate::progress::ColorChoice::Auto)]
    pub color: crate::progress::ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment: compute the stages that are not cached, reuse the rest.
    Run(run::RunArgs),
    /// Check an experiment file and report every problem with its line and column.
    Validate(validate::ValidateArgs),
    /// Show the stage graph with each stage's key and state (cached, missing, stale).
    Plan(plan::PlanArgs),
    /// Like plan, as a check: exit 0 when every stage is cached, 1 otherwise (for a sweep:
    /// done/failed/pending trials and their Slurm tasks, exit 0 when all are done).
    Status(plan::PlanArgs),
    /// Cancel the queued and running Slurm tasks of a sweep (`run --launcher slurm`).
    Cancel(cancel::CancelArgs),
    /// Compare runs or sweeps: differing parameters, metric deltas, per-class F1, curves.
    Compare(compare::CompareArgs),
    /// Delete cache entries no run folder references (needs an explicit --out).
    Gc(gc::GcArgs),
    /// Hash every cache entry and checkpoint again; report (or --quarantine) damaged ones.
    Verify(verify::VerifyArgs),
    /// Print the experiment JSON Schema (draft-07) for editors.
    Schema(schema::SchemaArgs),
    /// Print the tab-completion script of a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Data utilities.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Model utilities.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Predict image files or folders with a run's weights (or a weights file), as CSV.
    Predict(predict::PredictArgs),
    /// Save a run's weights with the official ViL names, plus the class names and normalisation.
    Export(export::ExportArgs),
    /// Forward and training-step throughput, GFLOP/s and peak memory of a model preset.
    Bench(bench::BenchArgs),
}

/// Options shared by the verbs that take an experiment.
#[derive(Debug, Clone, Args)]
pub struct ExperimentArgs {
    /// The experiment file (YAML).
    pub file: PathBuf,
    /// Override a field, e.g. --set train.epochs=3 (repeatable; the value is a YAML scalar or
    /// flow list).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Output root holding the cache and the run folders.
    #[arg(long, value_name = "DIR", default_value = "outputs", env = "VILAB_OUT")]
    pub out: PathBuf,
    /// Fingerprint data by file contents instead of size and modification time.
    #[arg(long)]
    pub verify_data: bool,
}

impl ExperimentArgs {
    /// Loads and validates the experiment.
    pub fn load(&self) -> Result<LoadedSpec, LoadError> {
        crate::spec::load(&self.file, &self.sets)
    }

    /// Plan options from the flags.
    pub fn plan_options(&self) -> crate::pipeline::plan::PlanOptions {
        crate::pipeline::plan::PlanOptions {
            verify_data: self.verify_data,
        }
    }
}

/// A mistake in the command line or its paths: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// A [`UsageError`] saying `message`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Runs a parsed command line, prints what went wrong, and returns the exit code.
pub fn main(cli: Cli) -> u8 {
    let checking = matches!(cli.command, Command::Status(_));
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            match error.downcast_ref::<LoadError>() {
                // Validation problems are already `FILE:LINE:COL: field: message` lines.
                Some(LoadError::Invalid(problems)) => eprintln!("{problems}"),
                _ => eprintln!("error: {error:#}"),
            }
            match exit_code_of(&error) {
                // `status` says 1 for "not cached": a check that failed is something else.
                EXIT_FAILURE if checking => EXIT_USAGE,
                code => code,
            }
        }
    }
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let reporter = crate::progress::Reporter::new(cli.quiet, cli.color.decide());
    match cli.command {
        Command::Run(args) => run::run(&args, &reporter, cli.verbose),
        Command::Validate(args) => validate::run(&args),
        Command::Plan(args) => plan::plan(&args),
        Command::Status(args) => plan::status(&args),
        Command::Cancel(args) => cancel::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Gc(args) => gc::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Data(command) => data::run(command, &reporter),
        Command::Model(command) => model::run(command),
        Command::Predict(args) => predict::run(&args, &reporter),
        Command::Export(args) => export::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}

/// The exit code an error stands for.
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    use crate::backend::BackendUnavailable;
    use crate::files::PublishError;
    use crate::pipeline::layout::LayoutError;
    use crate::runner::run::RunError;
    use crate::stages::StageError;
    use crate::train::TrainError;
    let usage_error = error.downcast_ref::<LoadError>().is_some()
        || error.downcast_ref::<UsageError>().is_some()
        || error.downcast_ref::<LayoutError>().is_some()
        || error.downcast_ref::<BackendUnavailable>().is_some()
        || matches!(
            error.downcast_ref::<PublishError>(),
            Some(PublishError::Exists(_))
        );
    if usage_error {
        return EXIT_USAGE;
    }
    match error.downcast_ref::<RunError>() {
        Some(RunError::Stage {
            error: StageError::Train(TrainError::Interrupted { .. }),
            ..
        }) => EXIT_INTERRUPTED,
        _ => EXIT_FAILURE,
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Where an output path would be shown relative to the current directory.
pub(crate) fn shown_path(path: &std::path::Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from));
    relative
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_well() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
