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
mod runs;
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

/// Declarative, cached Vision-LSTM experiments: one YAML file, one binary.
#[derive(Debug, Parser)]
#[command(name = "vilab", version = crate::backend::VERSION, about, long_about = None, propagate_version = true)]
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
    #[command(after_help = "Examples:
  vilab run experiments/quickstart.yaml                       the quickstart on data1/
  vilab run experiments/quickstart.yaml --set train.epochs=3  with a field overridden
  vilab run experiments/sweep_example.yaml --jobs 2           a sweep, two trials at a time
  vilab run experiments/sweep_example.yaml --launcher slurm   a sweep as a Slurm job array")]
    Run(run::RunArgs),
    /// Check an experiment file and report every problem with its line and column.
    #[command(after_help = "Examples:
  vilab validate experiments/quickstart.yaml                every problem, FILE:LINE:COL each
  vilab validate experiments/quickstart.yaml --set seed=7   with an override
  vilab validate experiments/quickstart.yaml --format json  the problems as JSON")]
    Validate(validate::ValidateArgs),
    /// Show the stage graph with each stage's key and state (cached, missing, stale).
    #[command(after_help = "Examples:
  vilab plan experiments/quickstart.yaml                     stages, keys and states
  vilab plan experiments/quickstart.yaml --set split.seed=7  what a change would recompute
  vilab plan experiments/sweep_example.yaml --format json    every trial's stages as JSON")]
    Plan(plan::PlanArgs),
    /// Like plan, as a check: exit 0 when every stage is cached, 1 otherwise (for a sweep:
    /// done/failed/pending trials and their Slurm tasks, exit 0 when all are done).
    #[command(after_help = "Examples:
  vilab status experiments/quickstart.yaml                exit 0 when every stage is cached
  vilab status experiments/sweep_example.yaml             done, failed and pending trials
  vilab status experiments/quickstart.yaml --format json  the states as JSON, same exit code")]
    Status(plan::PlanArgs),
    /// Cancel the queued and running Slurm tasks of a sweep (`run --launcher slurm`).
    #[command(after_help = "Examples:
  vilab cancel experiments/sweep_example.yaml                      submitted with outputs/
  vilab cancel experiments/sweep_example.yaml --out /shared/vilab  submitted with that --out")]
    Cancel(cancel::CancelArgs),
    /// Compare runs or sweeps: differing parameters, metric deltas, per-class F1, curves.
    #[command(after_help = "Examples:
  vilab compare outputs/quickstart/latest outputs/sweep_example/latest   two runs
  vilab compare outputs/sweep_example/sweep-2a47817491d9 --plot cmp.png  a sweep's trials
  vilab compare outputs/*/latest --format json                           for scripts
  vilab compare outputs/quickstart/* --html compare.html                 as one HTML page")]
    Compare(compare::CompareArgs),
    /// List every run under the output root: state, epoch, varied parameters, main metrics.
    #[command(after_help = "Examples:
  vilab runs                                 every run under outputs/
  vilab runs quickstart --sort acc1          one experiment's runs, best first
  vilab runs --format json > runs.json       for scripts (one JSON document)
  vilab runs --html                          also write outputs/index.html")]
    Runs(runs::RunsArgs),
    /// Delete cache entries no run folder references (needs an explicit --out).
    #[command(after_help = "Examples:
  vilab gc --out outputs --dry-run                what would be deleted
  vilab gc --out outputs                          delete it
  vilab gc --out outputs --dry-run --format json  the list as JSON")]
    Gc(gc::GcArgs),
    /// Hash every cache entry and checkpoint again; report (or --quarantine) damaged ones.
    #[command(after_help = "Examples:
  vilab verify --out outputs                name every damaged file; exit 1 if any
  vilab verify --out outputs --quarantine   also move damaged entries aside
  vilab verify --out outputs --format json  the findings as JSON")]
    Verify(verify::VerifyArgs),
    /// Print the experiment JSON Schema (draft-07) for editors.
    #[command(after_help = "Examples:
  vilab schema --out schemas/experiment.schema.json  the file experiments/ point to
  vilab schema > experiment.schema.json              to stdout")]
    Schema(schema::SchemaArgs),
    /// Print the tab-completion script of a shell (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  vilab completions bash > ~/.local/share/bash-completion/completions/vilab
  vilab completions zsh > ~/.zfunc/_vilab
  vilab completions fish > ~/.config/fish/completions/vilab.fish")]
    Completions(completions::CompletionsArgs),
    /// Data utilities.
    #[command(
        subcommand,
        after_help = "Examples:
  vilab data import-idx --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz \\
      --classes 0,1,2,3,4,5,6,7,8,9 --out data/mnist
  vilab data import-idx --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz \\
      --classes 0,1,2,3,4,5,6,7,8,9 --out data/mnist_small --per-class 100"
    )]
    Data(data::DataCommand),
    /// Model utilities.
    #[command(
        subcommand,
        after_help = "Examples:
  vilab model info vil_tiny                              the paper's tiny model, 224×224
  vilab model info vil_micro --classes 10 --format json  the quickstart's model as JSON"
    )]
    Model(model::ModelCommand),
    /// Predict image files or folders with a run's weights (or a weights file), as CSV.
    #[command(after_help = "Examples:
  vilab predict outputs/quickstart/latest data1/Coat               a folder, CSV on stdout
  vilab predict outputs/quickstart/latest data1 -o predictions.csv  to a file
  vilab predict outputs/quickstart/latest data1/Bag --weights ema --probs all")]
    Predict(predict::PredictArgs),
    /// Save a run's weights with the official ViL names, plus the class names and normalisation.
    #[command(after_help = "Examples:
  vilab export outputs/quickstart/latest --out model.safetensors
  vilab export outputs/quickstart/latest --weights ema --out ema.safetensors --force")]
    Export(export::ExportArgs),
    /// Forward and training-step throughput, GFLOP/s and peak memory of a model preset.
    #[command(after_help = "Examples:
  vilab bench --model vil_micro                                 the quickstart's model, 28×28
  vilab bench --model vil_tiny --batch 32 --steps 5             the paper's tiny model, 224×224
  vilab bench --model vil_tiny --backend cuda --precision bf16  a GPU (--features cuda build)
  vilab bench --model vil_micro --format json                   the figures as JSON")]
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
        Command::Runs(args) => runs::run(&args),
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

pub(crate) use crate::files::human_bytes;

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
