//! `vilab validate FILE`: report every problem of an experiment at once.

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::plan::{Format, print_json};
use super::{EXIT_OK, EXIT_USAGE, ExperimentArgs};
use crate::spec::{LoadError, Origin, Problem};

/// Arguments of `vilab validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Output format; with json the problems are a list in the document on stdout (the exit
    /// code is still 2).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `vilab validate --format json`.
#[derive(Debug, Serialize)]
struct ValidateJson<'a> {
    /// The experiment file as given.
    file: String,
    /// No problems.
    valid: bool,
    /// What the text output summarises; null when invalid.
    experiment: Option<ExperimentJson<'a>>,
    /// Every problem, in file order.
    problems: Vec<Problem>,
}

/// A valid experiment in `validate --format json`.
#[derive(Debug, Serialize)]
struct ExperimentJson<'a> {
    name: &'a str,
    model: &'a str,
    epochs: u32,
    /// The resolved spec: every layer merged, every default filled in (as `spec.yaml`).
    resolved: &'a Value,
}

/// Runs the verb.
pub fn run(args: &ValidateArgs) -> anyhow::Result<u8> {
    if args.format == Format::Json {
        return run_json(args);
    }
    let spec = args.experiment.load()?;
    spec.spec.backend.ensure_available()?;
    println!(
        "{}: ok (experiment `{}`, model {}, {} epochs)",
        args.experiment.file.display(),
        spec.spec.name,
        spec.spec.model.name.as_str(),
        spec.spec.train.epochs
    );
    Ok(EXIT_OK)
}

/// `--format json`: one document whether the experiment is valid or not; the exit code is the
/// text output's (2 for any problem).
fn run_json(args: &ValidateArgs) -> anyhow::Result<u8> {
    let file = &args.experiment.file;
    let whole_file = |field: &str, message: String| Problem {
        origin: Origin::File {
            file: file.clone(),
            position: None,
        },
        field: field.to_owned(),
        message,
    };
    let (spec, problems) = match args.experiment.load() {
        Ok(spec) => match spec.spec.backend.ensure_available() {
            Ok(()) => (Some(spec), Vec::new()),
            Err(missing) => {
                let message = missing.to_string();
                let message = message.strip_prefix("backend: ").unwrap_or(&message);
                (None, vec![whole_file("backend", message.to_owned())])
            }
        },
        Err(LoadError::Invalid(problems)) => (None, problems.0),
        Err(LoadError::Read { message, .. }) => (
            None,
            vec![whole_file("", format!("cannot read: {message}"))],
        ),
    };
    let document = ValidateJson {
        file: file.display().to_string(),
        valid: problems.is_empty(),
        experiment: spec.as_ref().map(|spec| ExperimentJson {
            name: &spec.spec.name,
            model: spec.spec.model.name.as_str(),
            epochs: spec.spec.train.epochs,
            resolved: &spec.resolved,
        }),
        problems,
    };
    print_json(&document)?;
    Ok(if document.valid { EXIT_OK } else { EXIT_USAGE })
}
