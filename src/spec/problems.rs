//! Problems found in an experiment, each pointing at where the offending value came from.
//!
//! A value can come from the YAML file (reported as `FILE:LINE:COL`), from `--set` or from a
//! `VILAB_*` environment variable; every problem names that origin and the dotted field path, so
//! `vilab validate` prints one actionable line per mistake.

use std::fmt;
use std::path::PathBuf;

use super::positions::Position;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The experiment file, at a position when one is known.
    File {
        /// The file as the user named it.
        file: PathBuf,
        /// Line and column of the key or value.
        position: Option<Position>,
    },
    /// A `--set PATH=VALUE` argument.
    Set(String),
    /// A `VILAB_*` environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                file,
                position: Some(position),
            } => write!(
                formatter,
                "{}:{}:{}",
                file.display(),
                position.line,
                position.column
            ),
            Origin::File {
                file,
                position: None,
            } => write!(formatter, "{}", file.display()),
            Origin::Set(argument) => write!(formatter, "--set {argument}"),
            Origin::Env(variable) => write!(formatter, "environment {variable}"),
        }
    }
}

/// One mistake in an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the value came from.
    pub origin: Origin,
    /// Dotted field path (`train.optimizer.lr`); empty for file-level problems.
    pub field: String,
    /// What is wrong, with the offending value and, where possible, a fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = if self.field.is_empty() {
            format!("{}: {}", self.origin, self.message)
        } else {
            format!("{}: {}: {}", self.origin, self.field, self.message)
        };
        formatter.write_str(&one_line(&line))
    }
}

/// A problem as one flat JSON object (`vilab validate --format json`): every key present, null
/// where it does not apply.
#[derive(serde::Serialize)]
struct ProblemJson<'a> {
    /// `file`, `set` or `env`.
    origin: &'static str,
    /// The experiment file, for `file`.
    file: Option<String>,
    /// 1-based line, when known.
    line: Option<usize>,
    /// 1-based column, when known.
    column: Option<usize>,
    /// The `PATH=VALUE` argument, for `set`.
    argument: Option<&'a str>,
    /// The `VILAB_*` variable, for `env`.
    variable: Option<&'a str>,
    /// Dotted field path; null for problems of the file as a whole.
    field: Option<&'a str>,
    /// What is wrong.
    message: &'a str,
    /// The whole line as `vilab validate` prints it.
    text: String,
}

impl serde::Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (origin, file, position, argument, variable) = match &self.origin {
            Origin::File { file, position } => (
                "file",
                Some(file.display().to_string()),
                *position,
                None,
                None,
            ),
            Origin::Set(argument) => ("set", None, None, Some(argument.as_str()), None),
            Origin::Env(variable) => ("env", None, None, None, Some(variable.as_str())),
        };
        ProblemJson {
            origin,
            file,
            line: position.map(|position| position.line),
            column: position.map(|position| position.column),
            argument,
            variable,
            field: (!self.field.is_empty()).then_some(self.field.as_str()),
            message: &self.message,
            text: self.to_string(),
        }
        .serialize(serializer)
    }
}

/// `text` with control characters escaped (`\n`, `\t`, `\u{1b}`): keys, values and `--set`
/// arguments are quoted in messages, and one of them holding a line break must not split the
/// problem over two lines.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Everything wrong with an experiment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The closest candidate to `word` by edit distance, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            let distance = strsim::damerau_levenshtein(&word_lower, &candidate.to_lowercase());
            (distance, candidate)
        })
        .filter(|(distance, candidate)| {
            let longest = word.chars().count().max(candidate.chars().count());
            *distance <= 3 && *distance * 3 <= longest.max(3)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let fields = ["epochs", "batch_size", "optimizer"];
        assert_eq!(suggest("epocs", fields), Some("epochs"));
        assert_eq!(suggest("batchsize", fields), Some("batch_size"));
        assert_eq!(suggest("momentum", fields), None);
        assert_eq!(
            suggest("vil_tiy", ["vil_tiny", "vil_small"]),
            Some("vil_tiny")
        );
    }

    #[test]
    fn problems_serialise_flat_with_every_key() {
        let problem = |origin| Problem {
            origin,
            field: "train.epocs".into(),
            message: "unknown field".into(),
        };
        let in_file = problem(Origin::File {
            file: "a.yaml".into(),
            position: Some(Position { line: 3, column: 5 }),
        });
        assert_eq!(
            serde_json::to_value(&in_file).unwrap(),
            serde_json::json!({
                "origin": "file", "file": "a.yaml", "line": 3, "column": 5, "argument": null,
                "variable": null, "field": "train.epocs", "message": "unknown field",
                "text": "a.yaml:3:5: train.epocs: unknown field"
            })
        );
        let from_env = problem(Origin::Env("VILAB_TRAIN__EPOCS".into()));
        let value = serde_json::to_value(&from_env).unwrap();
        assert_eq!(value["origin"], "env");
        assert_eq!(value["variable"], "VILAB_TRAIN__EPOCS");
        assert_eq!(value["file"], serde_json::Value::Null);
        let whole_file = Problem {
            field: String::new(),
            ..problem(Origin::Set("x=1".into()))
        };
        assert_eq!(
            serde_json::to_value(&whole_file).unwrap()["field"],
            serde_json::Value::Null
        );
    }
}
