//! Loading an experiment: layering, validation, resolution.
//!
//! Layers, lowest first (figment merges them):
//! 1. built-in defaults (the `#[serde(default)]`s of [`super::types`]),
//! 2. the YAML file,
//! 3. `VILAB_*` environment variables, `__` for nesting (`VILAB_TRAIN__EPOCHS=3`),
//! 4. `--set path=value` arguments, in order (value parsed as a YAML scalar or flow list),
//! 5. for one trial of a sweep, the trial's overrides ([`super::sweep`]).
//!
//! The merged document is checked against the JSON Schema, collecting *every* problem with the
//! origin of the offending value, then checked for what a schema cannot say (folders exist,
//! mean and std come together). Only a spec without problems is deserialised; its serialised
//! form, with every default filled in, is the resolved spec that runs are hashed on and saved.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;

use super::positions::{PositionMap, SyntaxError, TopLevel};
use super::problems::{Origin, Problem, Problems, suggest};
use super::schema::{enum_values, experiment_schema, node_at, property_names, variant_tags};
use super::sweep::{Trial, apply_override};
use super::types::{
    BackendKind, ExperimentSpec, MixupConfig, ModelSpec, Schedule, SweepSpec, TrainSpec, Transform,
};
use crate::field::FieldError;
use crate::metrics::MetricName;

/// Fields holding file system paths. In the file they are relative to the file's folder; from
/// `--set` or the environment, relative to the current directory.
const PATH_FIELDS: &[&str] = &[
    "data.root",
    "data.val_root",
    "data.test_root",
    "model.pretrained",
];

/// Top-level fields an environment variable without `__` may set (`VILAB_SEED=7`). Other
/// `VILAB_*` variables configure the program, not the experiment, and are left alone.
const TOP_LEVEL_ENV_FIELDS: &[&str] = &["name", "seed", "backend"];

/// An experiment that passed validation.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The experiment file as named by the user.
    pub file: PathBuf,
    /// Absolute folder of the experiment file; relative paths in the file start here.
    pub base_dir: PathBuf,
    /// The typed spec.
    pub spec: ExperimentSpec,
    /// The resolved spec: every layer merged, every default filled in.
    pub resolved: Value,
}

impl LoadedSpec {
    /// A path from the spec made usable: relative ones are joined to the file's folder.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }
}

/// Why an experiment could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// One or more problems, each on its own line.
    #[error("{0}")]
    Invalid(Problems),
}

/// One value from the environment or the command line.
#[derive(Debug, Clone)]
struct Override {
    path: String,
    value: Value,
    origin: Origin,
}

/// Loads, layers and validates an experiment file. A spec with a `sweep` section is checked
/// with every trial's overrides applied as well, so a bad sweep value is reported up front, at
/// its line.
pub fn load(file: &Path, sets: &[String]) -> Result<LoadedSpec, LoadError> {
    load_layers(file, sets, None)
}

/// Loads one trial of the file's sweep: its overrides are the highest layer (above `--set`),
/// and the result has no `sweep` section, so it hashes and runs like a plain experiment.
/// Paths among the overrides are relative to the file, as everything written in it.
pub fn load_trial(file: &Path, sets: &[String], trial: &Trial) -> Result<LoadedSpec, LoadError> {
    load_layers(file, sets, Some(trial))
}

fn load_layers(
    file: &Path,
    sets: &[String],
    trial: Option<&Trial>,
) -> Result<LoadedSpec, LoadError> {
    // std rather than fs-err: `LoadError::Read` names the path once itself.
    let text = std::fs::read(file).map_err(|error| LoadError::Read {
        path: file.to_path_buf(),
        message: error.to_string(),
    })?;
    let file_origin = |position| Origin::File {
        file: file.to_path_buf(),
        position,
    };
    let invalid = |position, message: String| {
        LoadError::Invalid(Problems(vec![Problem {
            origin: file_origin(position),
            field: String::new(),
            message,
        }]))
    };
    let Ok(mut text) = String::from_utf8(text) else {
        return Err(invalid(
            None,
            "not a text file (invalid UTF-8); expected a YAML experiment".into(),
        ));
    };
    // Editors on Windows may start the file with a byte-order mark; the YAML reader behind
    // figment would take it for the start of a second document.
    if let Some(rest) = text.strip_prefix('\u{feff}') {
        text = rest.to_owned();
    }
    let positions = PositionMap::parse(&text).map_err(|SyntaxError { position, message }| {
        invalid(Some(position), format!("YAML syntax error: {message}"))
    })?;
    match positions.top_level() {
        TopLevel::Mapping => {}
        TopLevel::Empty => {
            return Err(invalid(
                None,
                "empty experiment file; expected a YAML mapping with at least `name` and `data.root`"
                    .into(),
            ));
        }
        TopLevel::Sequence | TopLevel::Scalar => {
            let found = if positions.top_level() == TopLevel::Sequence {
                "a list"
            } else {
                "a single value"
            };
            return Err(invalid(
                Some(super::positions::Position { line: 1, column: 1 }),
                format!(
                    "expected a mapping of sections (name, data, train, ...) at the top level, found {found}"
                ),
            ));
        }
    }

    let base_dir = absolute_parent(file);
    let mut problems: Vec<Problem> = positions
        .duplicates()
        .iter()
        .map(|duplicate| Problem {
            origin: file_origin(Some(duplicate.again)),
            field: duplicate.path.clone(),
            message: format!(
                "written twice in the same section (first at line {}); keep one",
                duplicate.first.line
            ),
        })
        .collect();
    let mut overrides = collect_overrides(sets, &mut problems);
    if let Some(trial) = trial {
        overrides.extend(trial_overrides(file, &positions, trial));
    }
    let mut figment = Figment::from(Yaml::string(&text));
    for item in &overrides {
        figment = figment.merge(Serialized::default(&item.path, &item.value));
    }
    let mut merged: Value = match figment.extract() {
        Ok(value) => value,
        Err(error) => return Err(extraction_error(file, &positions, &overrides, &error)),
    };
    if trial.is_some()
        && let Value::Object(map) = &mut merged
    {
        map.remove("sweep");
    }

    let context = Context {
        file,
        sets,
        positions: &positions,
        overrides: &overrides,
        base_dir: &base_dir,
    };
    for error in validator().iter_errors(&merged) {
        context.report_schema_error(&error, &mut problems);
    }
    context.check_semantics(&merged, &mut problems);
    if problems.is_empty() {
        context.check_trials(&merged, &mut problems);
    }
    if !problems.is_empty() {
        // One mistake, one line: a value the schema rejects is often rejected again by a
        // semantic check of the same field; the first (the schema's) is kept.
        let mut seen = std::collections::HashSet::new();
        problems.retain(|problem| {
            let key = if problem.field.is_empty() {
                problem.to_string()
            } else {
                format!("{}\u{0}{}", problem.origin, problem.field)
            };
            seen.insert(key)
        });
        context.sort(&mut problems);
        return Err(LoadError::Invalid(Problems(problems)));
    }
    let spec: ExperimentSpec = serde_json::from_value(merged)
        .map_err(|error| invalid(None, format!("does not describe an experiment: {error}")))?;
    let resolved = serde_json::to_value(&spec)
        .map_err(|error| invalid(None, format!("cannot serialise the resolved spec: {error}")))?;
    Ok(LoadedSpec {
        file: file.to_path_buf(),
        base_dir,
        spec,
        resolved,
    })
}

/// A value figment could not turn into a document (a number past 64 bits, a mapping as a key,
/// several YAML documents), as one problem at the value when the error names one.
fn extraction_error(
    file: &Path,
    positions: &PositionMap,
    overrides: &[Override],
    error: &figment::Error,
) -> LoadError {
    let mut segments = error.path.clone();
    if segments.first().is_some_and(|first| first == "default") {
        segments.remove(0);
    }
    let field = segments.join(".");
    let kind = error.kind.to_string();
    let message = if kind.contains("number out of range") {
        "number out of range (integers go up to 18446744073709551615)".to_owned()
    } else if kind.contains("more than one document") {
        "holds more than one YAML document (a `---` line); an experiment is one document".to_owned()
    } else if field.is_empty() {
        format!("cannot read YAML: {kind}")
    } else {
        format!("cannot read this value: {kind}")
    };
    let origin = overrides
        .iter()
        .rev()
        .find(|item| !field.is_empty() && is_within(&field, &item.path))
        .map(|item| item.origin.clone())
        .unwrap_or_else(|| Origin::File {
            file: file.to_path_buf(),
            position: positions
                .get(&field)
                .map(|found| found.value)
                .filter(|_| !field.is_empty()),
        });
    LoadError::Invalid(Problems(vec![Problem {
        origin,
        field,
        message,
    }]))
}

/// The largest value of an integer `format` schemars writes, for the formats narrower than the
/// JSON numbers the validator checks (`batch_size: 10000000000000` passes `minimum: 1`).
fn format_maximum(format: &str) -> Option<u64> {
    match format {
        "uint8" => Some(u64::from(u8::MAX)),
        "uint16" => Some(u64::from(u16::MAX)),
        "uint32" => Some(u64::from(u32::MAX)),
        _ => None,
    }
}

/// Integers in `value` too large for the field's type, as (field, message).
fn oversized_integers(
    value: &Value,
    segments: &mut Vec<String>,
    found: &mut Vec<(String, String)>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                segments.push(key.clone());
                oversized_integers(child, segments, found);
                segments.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                segments.push(index.to_string());
                oversized_integers(child, segments, found);
                segments.pop();
            }
        }
        Value::Number(number) => {
            let Some(integer) = number.as_u64() else {
                return;
            };
            let schema = experiment_schema();
            let maximum = node_at(schema, segments)
                .and_then(|node| node.get("format"))
                .and_then(Value::as_str)
                .and_then(format_maximum);
            if let Some(maximum) = maximum.filter(|maximum| integer > *maximum) {
                found.push((
                    segments.join("."),
                    format!("must be ≤ {maximum} (got {integer})"),
                ));
            }
        }
        _ => {}
    }
}

fn absolute_parent(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(""));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::options()
            .with_draft(Draft::Draft7)
            .build(experiment_schema())
            .unwrap_or_else(|error| unreachable!("the generated schema is valid: {error}"))
    })
}

/// Environment variables, then `--set` arguments, as overrides in merge order.
fn collect_overrides(sets: &[String], problems: &mut Vec<Problem>) -> Vec<Override> {
    let mut overrides = Vec::new();
    let env = Env::prefixed("VILAB_").split("__");
    let mut variables: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| (key.as_str().to_lowercase(), value))
        .filter(|(key, _)| key.contains('.') || TOP_LEVEL_ENV_FIELDS.contains(&key.as_str()))
        .collect();
    variables.sort();
    for (path, raw) in variables {
        let variable = format!("VILAB_{}", path.to_uppercase().replace('.', "__"));
        let origin = Origin::Env(variable);
        match parse_value(&raw) {
            Ok(value) => overrides.push(Override {
                value: absolutize(&path, value),
                path,
                origin,
            }),
            Err(message) => problems.push(Problem {
                origin,
                field: path,
                message,
            }),
        }
    }
    for argument in sets {
        let origin = Origin::Set(argument.clone());
        let Some((path, raw)) = argument.split_once('=') else {
            problems.push(Problem {
                origin,
                field: String::new(),
                message: "expected PATH=VALUE, e.g. --set train.epochs=3".into(),
            });
            continue;
        };
        let path = path.trim();
        let well_formed = !path.is_empty()
            && path.split('.').all(|segment| {
                !segment.is_empty()
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !well_formed {
            problems.push(Problem {
                origin,
                field: String::new(),
                message: format!(
                    "`{path}` is not a field path; expected dotted names like train.optimizer.lr"
                ),
            });
            continue;
        }
        match parse_value(raw) {
            Ok(value) => overrides.push(Override {
                path: path.to_owned(),
                value: absolutize(path, value),
                origin,
            }),
            Err(message) => problems.push(Problem {
                origin,
                field: path.to_owned(),
                message,
            }),
        }
    }
    overrides
}

/// A trial's overrides as the top layer; each one's origin is where its value is written in
/// the sweep section.
fn trial_overrides(file: &Path, positions: &PositionMap, trial: &Trial) -> Vec<Override> {
    trial
        .overrides
        .iter()
        .map(|(path, value)| Override {
            path: path.clone(),
            value: value.clone(),
            origin: Origin::File {
                file: file.to_path_buf(),
                position: trial
                    .sources
                    .get(path)
                    .and_then(|source| positions.get(source))
                    .map(|found| found.value),
            },
        })
        .collect()
}

/// Parses an override value as a YAML scalar or flow collection.
fn parse_value(raw: &str) -> Result<Value, String> {
    serde_yaml::from_str::<Value>(raw)
        .map_err(|error| format!("cannot parse `{raw}` as a YAML value: {error}"))
}

/// Relative paths given outside the file are relative to the current directory.
fn absolutize(path: &str, value: Value) -> Value {
    if !PATH_FIELDS.contains(&path) {
        return value;
    }
    match &value {
        Value::String(text) if Path::new(text).is_relative() => std::path::absolute(text)
            .map(|absolute| Value::String(absolute.to_string_lossy().into_owned()))
            .unwrap_or(value),
        _ => value,
    }
}

/// The allowed values of the enumeration at an instance path, if it is one.
fn enum_values_at(segments: &[String]) -> Vec<String> {
    let schema = experiment_schema();
    node_at(schema, segments)
        .map(|node| enum_values(schema, node))
        .unwrap_or_default()
}

/// The tags of the externally tagged enum at an instance path, if it is one.
fn variant_tags_at(segments: &[String]) -> Vec<String> {
    let schema = experiment_schema();
    node_at(schema, segments)
        .map(|node| variant_tags(schema, node))
        .unwrap_or_default()
}

/// "unknown model `vil_tiy`; did you mean `vil_tiny`?"
fn unknown_value(field: &str, value: &Value, allowed: &[String]) -> String {
    let what = if field == "model.name" {
        "unknown model"
    } else {
        "unknown value"
    };
    match value
        .as_str()
        .and_then(|text| suggest(text, allowed.iter().map(String::as_str)))
    {
        Some(close) => format!("{what} {}; did you mean `{close}`?", shown(value)),
        None => format!(
            "{what} {}; expected one of: {}",
            shown(value),
            allowed.join(", ")
        ),
    }
}

/// The paths a sweep section varies, with the field each is written at, read from the document
/// itself so they are checked even when another part of the section is malformed.
fn sweep_paths(section: &Value) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    let mut add = |holder: String, keys: Option<&serde_json::Map<String, Value>>| {
        for key in keys.into_iter().flat_map(|map| map.keys()) {
            paths.push((key.clone(), format!("{holder}.{key}")));
        }
    };
    add(
        "sweep.grid".into(),
        section.get("grid").and_then(Value::as_object),
    );
    for (index, entry) in section
        .get("list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        add(format!("sweep.list.{index}"), entry.as_object());
    }
    add(
        "sweep.random.params".into(),
        section.pointer("/random/params").and_then(Value::as_object),
    );
    paths
}

/// Whether a dotted path names a field of the experiment; the error names the first unknown
/// segment and suggests the closest field. Paths into lists stop at the list (the sweep section
/// reports those itself).
fn check_sweep_path(path: &str) -> Result<(), String> {
    let schema = experiment_schema();
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    for (index, segment) in segments.iter().enumerate() {
        if segment.parse::<usize>().is_ok() {
            return Ok(());
        }
        if node_at(schema, &segments[..=index]).is_some() {
            continue;
        }
        let parent = node_at(schema, &segments[..index]);
        let mut allowed = parent
            .map(|node| property_names(schema, node))
            .unwrap_or_default();
        if allowed.is_empty() {
            allowed = parent
                .map(|node| variant_tags(schema, node))
                .unwrap_or_default();
        }
        let what = if index + 1 == segments.len() {
            "unknown field".to_owned()
        } else {
            format!("unknown field `{segment}`")
        };
        if allowed.is_empty() {
            let holder = segments[..index].join(".");
            return Err(format!("{what}; `{holder}` has no fields to vary"));
        }
        return Err(match suggest(segment, allowed.iter().map(String::as_str)) {
            Some(close) => format!("{what}; did you mean `{close}`?"),
            None => format!("{what}; expected one of: {}", allowed.join(", ")),
        });
    }
    Ok(())
}

struct Context<'a> {
    file: &'a Path,
    sets: &'a [String],
    positions: &'a PositionMap,
    overrides: &'a [Override],
    base_dir: &'a Path,
}

/// Whether the dotted `path` lies inside `prefix` or is it.
fn is_within(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// A schema limit as a person writes it: `0`, not `0.0`.
fn limit(value: &Value) -> String {
    match value.as_f64() {
        Some(number) if number.fract() == 0.0 && number.abs() < 1e15 => {
            format!("{}", number as i64)
        }
        _ => value.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(number) if number.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("`{text}`"),
        Value::Object(_) => "a mapping".into(),
        other => other.to_string(),
    }
}

fn expected_type(kind: &TypeKind) -> String {
    let name = |t: &str| match t {
        "object" => "a mapping".to_owned(),
        "array" => "a list".to_owned(),
        "integer" => "an integer".to_owned(),
        "null" => "null".to_owned(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(single) => name(&single.to_string()),
        TypeKind::Multiple(set) => {
            let names: Vec<String> = set
                .into_iter()
                .filter(|t| t.to_string() != "null")
                .map(|t| name(&t.to_string()))
                .collect();
            names.join(" or ")
        }
    }
}

impl Context<'_> {
    /// The origin of the value at `field`: the last override covering it, else the file.
    fn origin(&self, field: &str, at_key: bool) -> Origin {
        if let Some(item) = self
            .overrides
            .iter()
            .rev()
            .find(|item| is_within(field, &item.path) || is_within(&item.path, field))
        {
            return item.origin.clone();
        }
        let position = match self.positions.get(field) {
            Some(found) if at_key => found.key.or(Some(found.value)),
            Some(found) => Some(found.value),
            None => self
                .positions
                .nearest(field)
                .map(|found| found.key.unwrap_or(found.value)),
        };
        Origin::File {
            file: self.file.to_path_buf(),
            position,
        }
    }

    fn problem(&self, field: String, at_key: bool, message: String) -> Problem {
        Problem {
            origin: self.origin(&field, at_key),
            field,
            message,
        }
    }

    fn report_schema_error(&self, error: &ValidationError<'_>, problems: &mut Vec<Problem>) {
        let segments: Vec<String> = error
            .instance_path()
            .iter()
            .map(|segment| match segment {
                LocationSegment::Property(name) => name.to_string(),
                LocationSegment::Index(index) => index.to_string(),
            })
            .collect();
        let field = segments.join(".");
        let value = error.instance();
        let schema = experiment_schema();
        let message = match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = node_at(schema, &segments)
                    .map(|node| property_names(schema, node))
                    .unwrap_or_default();
                for name in unexpected {
                    let child = if field.is_empty() {
                        name.clone()
                    } else {
                        format!("{field}.{name}")
                    };
                    let message = match suggest(name, allowed.iter().map(String::as_str)) {
                        Some(close) => format!("unknown field; did you mean `{close}`?"),
                        None => format!("unknown field; expected one of: {}", allowed.join(", ")),
                    };
                    problems.push(self.problem(child, true, message));
                }
                return;
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                let child = if field.is_empty() {
                    name.to_owned()
                } else {
                    format!("{field}.{name}")
                };
                problems.push(self.problem(child, true, "missing required field".into()));
                return;
            }
            // NaN and infinities reach the validator as null: JSON has no spelling for them.
            ValidationErrorKind::Type { kind } if value.is_null() => {
                let expected = expected_type(kind);
                if expected.contains("number") || expected.contains("integer") {
                    format!(
                        "expected {expected}, found null (or .nan / .inf, which are not numbers vilab accepts)"
                    )
                } else {
                    format!("expected {expected}, found null (nothing)")
                }
            }
            ValidationErrorKind::Type { kind } => format!(
                "expected {}, found {} {}",
                expected_type(kind),
                type_name(value),
                shown(value)
            ),
            ValidationErrorKind::Minimum { limit: limit_value } => {
                format!("must be ≥ {} (got {})", limit(limit_value), shown(value))
            }
            ValidationErrorKind::ExclusiveMinimum { limit: limit_value } => {
                format!("must be > {} (got {})", limit(limit_value), shown(value))
            }
            ValidationErrorKind::Maximum { limit: limit_value } => {
                format!("must be ≤ {} (got {})", limit(limit_value), shown(value))
            }
            ValidationErrorKind::ExclusiveMaximum { limit: limit_value } => {
                format!("must be < {} (got {})", limit(limit_value), shown(value))
            }
            ValidationErrorKind::MinItems { limit } | ValidationErrorKind::MaxItems { limit } => {
                let count = value.as_array().map_or(0, Vec::len);
                format!("expected {limit} values, found {count}")
            }
            ValidationErrorKind::Enum { options } => {
                let names: Vec<String> = options
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                unknown_value(&field, value, &names)
            }
            ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. }
                if !enum_values_at(&segments).is_empty() =>
            {
                unknown_value(&field, value, &enum_values_at(&segments))
            }
            ValidationErrorKind::Pattern { .. } if field == "name" => format!(
                "must be a single safe path component (letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most 100 characters); got {}",
                shown(value)
            ),
            ValidationErrorKind::OneOfNotValid { context }
                if !variant_tags_at(&segments).is_empty() =>
            {
                let tags = variant_tags_at(&segments);
                let keys: Vec<&String> = value
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                match keys.as_slice() {
                    [key] => match tags.iter().position(|tag| tag == *key) {
                        Some(branch) => {
                            for inner in context.get(branch).into_iter().flatten() {
                                self.report_schema_error(inner, problems);
                            }
                            return;
                        }
                        None => {
                            let child = format!("{field}.{key}");
                            let what = if field.starts_with("augment.") {
                                "unknown transform"
                            } else {
                                "unknown kind"
                            };
                            let message = match suggest(key, tags.iter().map(String::as_str)) {
                                Some(close) => format!("{what}; did you mean `{close}`?"),
                                None => format!("{what}; expected one of: {}", tags.join(", ")),
                            };
                            problems.push(self.problem(child, true, message));
                            return;
                        }
                    },
                    _ => format!(
                        "expected a mapping with exactly one of: {} (found {})",
                        tags.join(", "),
                        type_name(value)
                    ),
                }
            }
            ValidationErrorKind::AnyOf { context }
            | ValidationErrorKind::OneOfNotValid { context } => {
                // Report the branch that got furthest: for `Option<T>` that is T's own errors.
                if let Some(best) = context
                    .iter()
                    .filter(|branch| !branch.is_empty())
                    .max_by_key(|branch| {
                        let depth = branch
                            .iter()
                            .map(|e| e.instance_path().iter().count())
                            .max()
                            .unwrap_or(0);
                        let not_null_type = branch.iter().all(|e| {
                            !matches!(e.kind(), ValidationErrorKind::Type { kind: TypeKind::Single(t) } if t.to_string() == "null")
                        });
                        (not_null_type, depth, usize::MAX - branch.len())
                    })
                {
                    for inner in best {
                        self.report_schema_error(inner, problems);
                    }
                    return;
                }
                format!("{} is not valid here", shown(value))
            }
            _ => format!("{} is not valid here: {error}", shown(value)),
        };
        problems.push(self.problem(field, false, message));
    }

    /// What the schema cannot say: folders exist, options that go together.
    fn check_semantics(&self, merged: &Value, problems: &mut Vec<Problem>) {
        if let Some(section) = merged.get("sweep").filter(|value| !value.is_null()) {
            for (path, source) in sweep_paths(section) {
                if let Err(message) = check_sweep_path(&path) {
                    problems.push(self.problem(source, true, message));
                }
            }
            if let Ok(sweep) = serde_json::from_value::<SweepSpec>(section.clone()) {
                for (field, message) in sweep.validate() {
                    problems.push(self.problem(field, true, message));
                }
            }
        }
        for field in ["data.root", "data.val_root", "data.test_root"] {
            let Some(Value::String(text)) =
                merged.pointer(&format!("/{}", field.replace('.', "/")))
            else {
                continue;
            };
            if text.trim().is_empty() {
                problems.push(self.problem(
                    field.to_owned(),
                    false,
                    "must not be empty; expected a folder (relative to the experiment file)".into(),
                ));
                continue;
            }
            let path = self.base_dir.join(text);
            let message = match fs_err::metadata(&path) {
                Ok(metadata) if metadata.is_dir() => continue,
                Ok(_) => format!("`{text}` is not a folder"),
                Err(_) => format!("folder `{text}` not found"),
            };
            problems.push(self.problem(field.to_owned(), false, message));
        }
        let folder = |field: &str| {
            merged
                .pointer(&format!("/{}", field.replace('.', "/")))
                .and_then(Value::as_str)
                .filter(|text| !text.trim().is_empty())
                .and_then(|text| std::fs::canonicalize(self.base_dir.join(text)).ok())
        };
        if let Some(root) = folder("data.root") {
            for (field, role) in [("data.val_root", "validation"), ("data.test_root", "test")] {
                if folder(field).is_some_and(|other| other == root) {
                    problems.push(self.problem(
                        field.to_owned(),
                        false,
                        format!(
                            "is the same folder as data.root; the {role} images would be the training images"
                        ),
                    ));
                }
            }
        }
        let mut oversized = Vec::new();
        oversized_integers(merged, &mut Vec::new(), &mut oversized);
        for (field, message) in oversized {
            problems.push(self.problem(field, false, message));
        }
        if let Some(Value::String(name)) = merged.pointer("/evaluate/metric")
            && MetricName::parse(name).is_none()
        {
            let names = MetricName::accepted_names();
            let message = match suggest(name, names.iter().copied()) {
                Some(close) => format!("unknown metric `{name}`; did you mean `{close}`?"),
                None => format!(
                    "unknown metric `{name}`; expected one of: {}",
                    names.join(", ")
                ),
            };
            problems.push(self.problem("evaluate.metric".into(), false, message));
        }
        if let Some(Value::String(text)) = merged.pointer("/model/pretrained")
            && !self.base_dir.join(text).is_file()
        {
            problems.push(self.problem(
                "model.pretrained".into(),
                false,
                format!("checkpoint file `{text}` not found"),
            ));
        }
        for list in ["train", "val"] {
            let Some(Value::Array(items)) = merged.pointer(&format!("/augment/{list}")) else {
                continue;
            };
            for (index, item) in items.iter().enumerate() {
                if let Ok(transform) = serde_json::from_value::<Transform>(item.clone())
                    && let Err(tail) = transform.validate()
                {
                    problems.push(self.tail_problem(&format!("augment.{list}.{index}"), &tail));
                }
            }
        }
        if let Some(item) = merged.pointer("/train/mixup").filter(|v| !v.is_null())
            && let Ok(mixup) = serde_json::from_value::<MixupConfig>(item.clone())
            && let Err(tail) = mixup.validate()
        {
            problems.push(self.tail_problem("train.mixup", &tail));
        }
        if let Some(item) = merged.pointer("/train/schedule")
            && let Ok(schedule) = serde_json::from_value::<Schedule>(item.clone())
            && let Err(tail) = schedule.validate()
        {
            problems.push(self.tail_problem("train.schedule", &tail));
        }
        let backend = merged
            .pointer("/backend")
            .and_then(|value| serde_json::from_value::<BackendKind>(value.clone()).ok())
            .unwrap_or_default();
        if let Some(item) = merged.pointer("/train")
            && let Ok(train) = serde_json::from_value::<TrainSpec>(item.clone())
            && let Err(tail) = train.validate(backend)
        {
            problems.push(self.tail_problem("train", &tail));
        }
        // An image size the schema already rejected would only be reported again through the
        // patch size it no longer divides.
        let image_size_rejected = problems
            .iter()
            .any(|problem| problem.field == "data.image_size");
        if let Some(item) = merged.pointer("/model")
            && !image_size_rejected
            && let Ok(model) = serde_json::from_value::<ModelSpec>(item.clone())
            && let Some(image_size) = merged
                .pointer("/data/image_size")
                .and_then(Value::as_u64)
                .and_then(|size| u32::try_from(size).ok())
            // The class count does not decide whether the model can be built; 2 stands in.
            && let Err(tail) = model.vil_config(2, image_size)
        {
            problems.push(self.tail_problem("model", &tail));
        }
        let size = |field: &str| {
            merged
                .pointer(&format!("/data/{field}"))
                .and_then(Value::as_u64)
        };
        let image_size =
            size("image_size").unwrap_or(u64::from(super::types::default_image_size()));
        if let Some(storage_size) = size("storage_size")
            && storage_size < image_size
        {
            problems.push(self.problem(
                "data.storage_size".into(),
                false,
                format!("must be ≥ data.image_size {image_size} (got {storage_size})"),
            ));
        }
        let mean = merged.pointer("/stats/mean").filter(|v| !v.is_null());
        let std = merged.pointer("/stats/std").filter(|v| !v.is_null());
        match (mean, std) {
            (Some(_), None) => problems.push(self.problem(
                "stats.std".into(),
                false,
                "required when stats.mean is given (fixed statistics need both)".into(),
            )),
            (None, Some(_)) => problems.push(self.problem(
                "stats.mean".into(),
                false,
                "required when stats.std is given (fixed statistics need both)".into(),
            )),
            _ => {}
        }
        if let Some(Value::Array(values)) = mean {
            for (index, value) in values.iter().enumerate() {
                if value.as_f64().is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                    problems.push(self.problem(
                        format!("stats.mean.{index}"),
                        false,
                        format!("must be in [0, 1], the range of pixel values (got {value})"),
                    ));
                }
            }
        }
        if let Some(Value::Array(values)) = std {
            for (index, value) in values.iter().enumerate() {
                if value.as_f64().is_some_and(|v| v <= 0.0) {
                    problems.push(self.problem(
                        format!("stats.std.{index}"),
                        false,
                        format!("must be > 0 (got {value})"),
                    ));
                }
            }
        }
    }

    /// Every trial of a valid sweep, checked like a spec of its own: its overrides applied to
    /// the merged document, problems pointing at the sweep values that cause them.
    fn check_trials(&self, merged: &Value, problems: &mut Vec<Problem>) {
        let Some(section) = merged.get("sweep").filter(|value| !value.is_null()) else {
            return;
        };
        let Ok(sweep) = serde_json::from_value::<SweepSpec>(section.clone()) else {
            return;
        };
        let mut base = merged.clone();
        if let Value::Object(map) = &mut base {
            map.remove("sweep");
        }
        for trial in sweep.trials() {
            let mut document = base.clone();
            for (path, value) in &trial.overrides {
                apply_override(&mut document, path, value.clone());
            }
            let mut overrides = self.overrides.to_vec();
            overrides.extend(trial_overrides(self.file, self.positions, &trial));
            let context = Context {
                overrides: &overrides,
                ..*self
            };
            for error in validator().iter_errors(&document) {
                context.report_schema_error(&error, problems);
            }
            context.check_semantics(&document, problems);
        }
    }

    /// A problem from a `validate()` that returns `field.sub: message` relative to `prefix`.
    fn tail_problem(&self, prefix: &str, error: &FieldError) -> Problem {
        let error = error.clone().within(prefix);
        self.problem(error.field, false, error.message)
    }

    /// File problems in line order, then overrides.
    fn sort(&self, problems: &mut [Problem]) {
        problems.sort_by_key(|problem| match &problem.origin {
            Origin::File { position, .. } => (
                0,
                position.map_or((0, 0), |p| (p.line, p.column)),
                String::new(),
            ),
            Origin::Env(name) => (1, (0, 0), name.clone()),
            Origin::Set(argument) => (
                2,
                (
                    self.sets
                        .iter()
                        .position(|set| set == argument)
                        .unwrap_or(usize::MAX),
                    0,
                ),
                String::new(),
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_is_segment_aware() {
        assert!(is_within("train.epochs", "train"));
        assert!(is_within("train", "train"));
        assert!(!is_within("trainer.x", "train"));
    }

    #[test]
    fn override_values_are_yaml_scalars_and_flow_lists() {
        assert_eq!(parse_value("3").unwrap(), Value::from(3));
        assert_eq!(parse_value("1e-4").unwrap(), Value::from(1e-4));
        assert_eq!(parse_value("[1, 2]").unwrap(), serde_json::json!([1, 2]));
        assert_eq!(parse_value("abc").unwrap(), Value::from("abc"));
        assert!(parse_value("[1,").is_err());
    }
}
