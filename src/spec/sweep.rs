//! Sweeps: many trials from one experiment file.
//!
//! A `sweep` section names spec fields by their dotted paths and the values to try:
//!
//! ```yaml
//! sweep:
//!   grid:                          # every combination (cartesian product)
//!     train.optimizer.lr: [1.0e-3, 3.0e-4]
//!     model.depth: [2, 4]
//!   list:                          # explicit override sets
//!     - {model.dim: 32, model.num_heads: 4}
//!     - {model.dim: 64, model.num_heads: 8}
//!   random:                        # n samples, reproducible from the seed
//!     n: 8
//!     seed: 0
//!     params:
//!       train.optimizer.weight_decay: {loguniform: [1.0e-4, 1.0e-1]}
//!       train.mixup.mixup_alpha: {uniform: [0.0, 1.0]}
//!       train.batch_size: {choice: [32, 64]}
//! ```
//!
//! When more than one of `grid`, `list` and `random` is given, the trials are their product:
//! every grid point with every list entry with every random sample (so `list` can name model
//! variants and `grid` the learning rates to try on each). A path may be varied by one of them
//! only. A trial is the base spec with its overrides applied as the highest layer, above
//! `--set`.
//!
//! A trial's id is a short blake3 of its overrides as canonical JSON, so it depends only on what
//! the trial sets, never on the order of the sweep, and the same overrides always get the same id
//! (in this sweep or a later, larger one). Random samples are rounded to four significant digits
//! so they read well in tables; sample `i` depends only on `seed` and `i`, so raising `n` keeps the
//! earlier samples.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::integrity::short_id;

/// Hex digits of a trial id.
pub const TRIAL_ID_LENGTH: usize = 10;

/// Significant digits random samples are rounded to.
const SAMPLE_DIGITS: usize = 4;

/// Top-level fields a sweep may not vary: the experiment's name decides where its runs go.
const FORBIDDEN_PATHS: &[&str] = &["name", "sweep"];

/// The most trials one sweep may expand to: every trial is validated up front and gets a run
/// folder, so a section that expands to millions is a mistake (a grid with one list too many,
/// a random `n` with extra digits) rather than a plan.
pub const MAX_TRIALS: u64 = 10_000;

/// Trials to run from this experiment file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Dotted field path ⇒ the values to try; every combination is a trial.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Explicit trials, each a mapping of dotted field paths to values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list: Vec<BTreeMap<String, Value>>,
    /// Random search: `n` samples of the `params` distributions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomSearch>,
}

/// Random search over some fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomSearch {
    /// Number of samples.
    #[schemars(range(min = 1))]
    pub n: u32,
    /// Seed of the samples; sample `i` depends only on the seed and `i`.
    #[serde(default)]
    pub seed: u64,
    /// Dotted field path ⇒ the distribution its values are drawn from.
    pub params: BTreeMap<String, Distribution>,
}

/// Where a random value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Uniform between the two bounds `[low, high]`.
    Uniform([f64; 2]),
    /// Uniform in the logarithm between the two positive bounds `[low, high]` (learning rates,
    /// weight decay).
    Loguniform([f64; 2]),
    /// One of the listed values, each equally likely.
    Choice(Vec<Value>),
}

/// One trial of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Short hash of the overrides.
    pub id: String,
    /// Dotted field path ⇒ value, applied above every other layer.
    pub overrides: BTreeMap<String, Value>,
    /// Dotted field path ⇒ where its value is written in the file (`sweep.grid.model.depth.1`),
    /// so a bad value is reported at its line.
    pub sources: BTreeMap<String, String>,
}

impl Trial {
    /// `train.optimizer.lr=0.001 model.depth=2`, in path order.
    pub fn describe(&self) -> String {
        describe_overrides(&self.overrides)
    }
}

/// `path=value` pairs joined by spaces, values as compact JSON (strings unquoted).
pub fn describe_overrides(overrides: &BTreeMap<String, Value>) -> String {
    overrides
        .iter()
        .map(|(path, value)| format!("{path}={}", show_value(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A value as a person reads it in tables: strings bare, everything else compact JSON.
pub fn show_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The id of a trial with these overrides.
pub fn trial_id(overrides: &BTreeMap<String, Value>) -> String {
    let value = serde_json::to_value(overrides)
        .unwrap_or_else(|error| unreachable!("JSON values always serialise: {error}"));
    short_id(&value, TRIAL_ID_LENGTH)
}

/// The trial whose id is `query` or starts with it.
pub fn find_trial<'a>(trials: &'a [Trial], query: &str) -> Result<&'a Trial, String> {
    if let Some(exact) = trials.iter().find(|trial| trial.id == query) {
        return Ok(exact);
    }
    let matching: Vec<&Trial> = trials
        .iter()
        .filter(|trial| !query.is_empty() && trial.id.starts_with(query))
        .collect();
    match matching.as_slice() {
        [only] => Ok(only),
        [] => Err(format!(
            "no trial `{query}` in this sweep; its trials are: {}",
            trials
                .iter()
                .map(|trial| trial.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        several => Err(format!(
            "`{query}` matches {} trials ({}); give more digits",
            several.len(),
            several
                .iter()
                .map(|trial| trial.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A part of the product: override sets, each with the sources of its values.
type Factor = Vec<(BTreeMap<String, Value>, BTreeMap<String, String>)>;

impl SweepSpec {
    /// Every varied path with the field under `sweep` that varies it (`sweep.grid.model.depth`),
    /// in file section order; a path listed by several `list` entries appears once per entry.
    pub fn paths(&self) -> Vec<(String, String)> {
        let mut paths: Vec<(String, String)> = self
            .grid
            .keys()
            .map(|path| (path.clone(), format!("sweep.grid.{path}")))
            .collect();
        for (index, entry) in self.list.iter().enumerate() {
            paths.extend(
                entry
                    .keys()
                    .map(|path| (path.clone(), format!("sweep.list.{index}.{path}"))),
            );
        }
        if let Some(random) = &self.random {
            paths.extend(
                random
                    .params
                    .keys()
                    .map(|path| (path.clone(), format!("sweep.random.params.{path}"))),
            );
        }
        paths
    }

    /// The distinct varied paths, sorted.
    pub fn varied_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.paths().into_iter().map(|(path, _)| path).collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// What the schema cannot say about the section itself; each problem is a field under
    /// `sweep` and a message. Whether the paths exist is checked against the schema by the
    /// loader.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let random_empty = self.random.as_ref().is_none_or(|r| r.params.is_empty());
        if self.grid.is_empty() && self.list.is_empty() && random_empty {
            problems.push((
                "sweep".to_owned(),
                "needs at least one of grid, list or random (with params)".to_owned(),
            ));
        }
        for (path, values) in &self.grid {
            if values.is_empty() {
                problems.push((
                    format!("sweep.grid.{path}"),
                    "needs at least one value".to_owned(),
                ));
            }
        }
        for (index, entry) in self.list.iter().enumerate() {
            if entry.is_empty() {
                problems.push((
                    format!("sweep.list.{index}"),
                    "an empty override set repeats the base spec; give at least one field"
                        .to_owned(),
                ));
            }
        }
        if let Some(random) = &self.random {
            for (path, distribution) in &random.params {
                let field = format!("sweep.random.params.{path}");
                match distribution {
                    Distribution::Uniform([low, high])
                        if low.partial_cmp(high) != Some(std::cmp::Ordering::Less) =>
                    {
                        problems.push((
                            format!("{field}.uniform"),
                            format!("needs low < high (got [{low}, {high}])"),
                        ));
                    }
                    Distribution::Loguniform([low, high]) if !(*low > 0.0 && low < high) => {
                        problems.push((
                            format!("{field}.loguniform"),
                            format!("needs 0 < low < high (got [{low}, {high}])"),
                        ));
                    }
                    Distribution::Choice(values) if values.is_empty() => problems.push((
                        format!("{field}.choice"),
                        "needs at least one value".to_owned(),
                    )),
                    _ => {}
                }
            }
        }
        let count = self.trial_count();
        if count > MAX_TRIALS {
            problems.push((
                "sweep".to_owned(),
                format!(
                    "expands to {count} trials; at most {MAX_TRIALS} are allowed (split the sweep)"
                ),
            ));
        }
        let paths = self.paths();
        for (path, source) in &paths {
            if let Some(first) = path.split('.').next()
                && FORBIDDEN_PATHS.contains(&first)
            {
                problems.push((
                    source.clone(),
                    format!("`{first}` cannot be varied by a sweep"),
                ));
            }
            let segments: Vec<&str> = path.split('.').collect();
            if let Some(index) = segments.iter().position(|s| s.parse::<usize>().is_ok()) {
                problems.push((
                    source.clone(),
                    format!(
                        "a sweep replaces whole lists; vary `{}` instead",
                        segments[..index].join(".")
                    ),
                ));
            }
            for (other, other_source) in &paths {
                // The field that holds the path: `sweep.grid`, or one entry `sweep.list.3`.
                let holder =
                    |source: &str, path: &str| source[..source.len() - path.len() - 1].to_owned();
                let (own_holder, other_holder) =
                    (holder(source, path), holder(other_source, other));
                let same_section = own_holder.split('.').nth(1) == other_holder.split('.').nth(1);
                let overlaps = if path == other {
                    !same_section
                } else {
                    own_holder == other_holder || !same_section
                } && (path == other
                    || other.starts_with(&format!("{path}."))
                    || path.starts_with(&format!("{other}.")));
                if overlaps {
                    problems.push((
                        source.clone(),
                        format!("overlaps `{other}`, which {other_holder} also varies"),
                    ));
                }
            }
        }
        problems.sort();
        problems.dedup();
        problems
    }

    /// How many trials the section expands to before duplicates are removed (saturating, so a
    /// section that would expand to billions is counted without expanding it).
    pub fn trial_count(&self) -> u64 {
        let mut count: u64 = 1;
        for values in self.grid.values() {
            count = count.saturating_mul(values.len() as u64);
        }
        if !self.list.is_empty() {
            count = count.saturating_mul(self.list.len() as u64);
        }
        if let Some(random) = self
            .random
            .as_ref()
            .filter(|random| !random.params.is_empty())
        {
            count = count.saturating_mul(u64::from(random.n));
        }
        count
    }

    /// Every trial, in order: grid points (first path slowest), each with every list entry,
    /// each with every random sample. Trials with identical overrides are listed once.
    pub fn trials(&self) -> Vec<Trial> {
        let mut factors: Vec<Factor> = Vec::new();
        if !self.grid.is_empty() {
            let mut points: Factor = vec![(BTreeMap::new(), BTreeMap::new())];
            for (path, values) in &self.grid {
                points = points
                    .into_iter()
                    .flat_map(|(overrides, sources)| {
                        values.iter().enumerate().map(move |(index, value)| {
                            let mut overrides = overrides.clone();
                            let mut sources = sources.clone();
                            overrides.insert(path.clone(), value.clone());
                            sources.insert(path.clone(), format!("sweep.grid.{path}.{index}"));
                            (overrides, sources)
                        })
                    })
                    .collect();
            }
            factors.push(points);
        }
        if !self.list.is_empty() {
            factors.push(
                self.list
                    .iter()
                    .enumerate()
                    .map(|(index, entry)| {
                        let sources = entry
                            .keys()
                            .map(|path| (path.clone(), format!("sweep.list.{index}.{path}")))
                            .collect();
                        (entry.clone(), sources)
                    })
                    .collect(),
            );
        }
        if let Some(random) = &self.random
            && !random.params.is_empty()
        {
            factors.push(
                (0..random.n)
                    .map(|index| random.sample(index))
                    .map(|overrides| {
                        let sources = overrides
                            .keys()
                            .map(|path| (path.clone(), format!("sweep.random.params.{path}")))
                            .collect();
                        (overrides, sources)
                    })
                    .collect(),
            );
        }
        let mut combined: Factor = vec![(BTreeMap::new(), BTreeMap::new())];
        for factor in factors {
            combined = combined
                .into_iter()
                .flat_map(|(overrides, sources)| {
                    factor.iter().map(move |(more, more_sources)| {
                        let mut overrides = overrides.clone();
                        let mut sources = sources.clone();
                        overrides.extend(more.clone());
                        sources.extend(more_sources.clone());
                        (overrides, sources)
                    })
                })
                .collect();
        }
        let mut trials: Vec<Trial> = Vec::new();
        for (overrides, sources) in combined {
            if overrides.is_empty() {
                continue;
            }
            let id = trial_id(&overrides);
            if trials.iter().all(|trial| trial.id != id) {
                trials.push(Trial {
                    id,
                    overrides,
                    sources,
                });
            }
        }
        trials
    }
}

impl RandomSearch {
    /// Sample `index`: one value per path, from a stream seeded by (seed, index) only.
    fn sample(&self, index: u32) -> BTreeMap<String, Value> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"vilab sweep.random");
        hasher.update(&self.seed.to_le_bytes());
        hasher.update(&index.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(*hasher.finalize().as_bytes());
        self.params
            .iter()
            .map(|(path, distribution)| {
                let value = match distribution {
                    Distribution::Uniform([low, high]) => {
                        number(round_significant(low + (high - low) * rng.random::<f64>()))
                    }
                    Distribution::Loguniform([low, high]) => {
                        let (log_low, log_high) = (low.ln(), high.ln());
                        let log = log_low + (log_high - log_low) * rng.random::<f64>();
                        number(round_significant(log.exp()))
                    }
                    Distribution::Choice(values) if values.is_empty() => Value::Null,
                    Distribution::Choice(values) => {
                        values[rng.random_range(0..values.len())].clone()
                    }
                };
                (path.clone(), value)
            })
            .collect()
    }
}

fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// `value` rounded to [`SAMPLE_DIGITS`] significant digits.
fn round_significant(value: f64) -> f64 {
    format!("{value:.*e}", SAMPLE_DIGITS - 1)
        .parse()
        .unwrap_or(value)
}

/// Sets `path` (dotted) in a JSON document to `value`, creating mappings on the way; what the
/// `--set` layer does, for checking trials without loading each one.
pub fn apply_override(document: &mut Value, path: &str, value: Value) {
    let mut node = document;
    let segments: Vec<&str> = path.split('.').collect();
    for (position, segment) in segments.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = node else {
            unreachable!("made an object just above")
        };
        if position + 1 == segments.len() {
            map.insert((*segment).to_owned(), value);
            return;
        }
        node = map
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// As the loader reads it: YAML to a JSON document (serde_yaml alone would want `!uniform`
    /// tags for enums), then the types.
    fn spec(yaml: &str) -> SweepSpec {
        serde_json::from_value(serde_yaml::from_str::<Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn grid_is_the_cartesian_product_with_the_first_path_slowest() {
        let sweep = spec("grid:\n  a.x: [1, 2]\n  b.y: [u, v, w]\n");
        let trials = sweep.trials();
        assert_eq!(trials.len(), 6);
        assert_eq!(trials[0].describe(), "a.x=1 b.y=u");
        assert_eq!(trials[1].describe(), "a.x=1 b.y=v");
        assert_eq!(trials[3].describe(), "a.x=2 b.y=u");
        assert_eq!(trials[4].sources["b.y"], "sweep.grid.b.y.1");
        let ids: std::collections::BTreeSet<&str> =
            trials.iter().map(|trial| trial.id.as_str()).collect();
        assert_eq!(ids.len(), 6, "ids collide: {ids:?}");
    }

    #[test]
    fn trial_ids_depend_on_the_overrides_only() {
        let forward = spec("list:\n  - {a.x: 1, b.y: 2}\n  - {a.x: 3}\n");
        let backward = spec("list:\n  - {a.x: 3}\n  - {b.y: 2, a.x: 1}\n");
        let ids = |sweep: &SweepSpec| {
            let mut ids: Vec<String> = sweep.trials().into_iter().map(|t| t.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&forward), ids(&backward));
        assert_eq!(forward.trials()[0].id.len(), TRIAL_ID_LENGTH);
        // 1e-3 and 0.001 are the same number, so the same trial.
        let one = spec("grid:\n  lr: [1.0e-3]\n");
        let other = spec("grid:\n  lr: [0.001]\n");
        assert_eq!(one.trials()[0].id, other.trials()[0].id);
        assert_ne!(
            one.trials()[0].id,
            spec("grid:\n  lr: [0.002]\n").trials()[0].id
        );
    }

    #[test]
    fn sections_combine_as_a_product_and_duplicates_collapse() {
        let sweep = spec("grid:\n  a: [1, 2]\nlist:\n  - {b: 1}\n  - {b: 2}\n  - {b: 1}\n");
        let trials = sweep.trials();
        assert_eq!(trials.len(), 4);
        assert_eq!(trials[0].describe(), "a=1 b=1");
        assert_eq!(trials[0].sources["b"], "sweep.list.0.b");
    }

    #[test]
    fn random_samples_are_reproducible_in_range_and_stable_under_more_samples() {
        let sweep = spec(
            "random:\n  n: 5\n  seed: 3\n  params:\n    lr: {loguniform: [1.0e-4, 1.0e-2]}\n    \
             wd: {uniform: [0.0, 0.5]}\n    bs: {choice: [16, 32]}\n",
        );
        let trials = sweep.trials();
        assert_eq!(trials.len(), 5);
        assert_eq!(trials, sweep.trials());
        for trial in &trials {
            let lr = trial.overrides["lr"].as_f64().unwrap();
            assert!((1e-4..1e-2).contains(&lr), "{lr}");
            let wd = trial.overrides["wd"].as_f64().unwrap();
            assert!((0.0..=0.5).contains(&wd), "{wd}");
            assert!([json!(16), json!(32)].contains(&trial.overrides["bs"]));
            assert_eq!(round_significant(lr), lr);
        }
        let mut more = sweep.clone();
        if let Some(random) = more.random.as_mut() {
            random.n = 7;
        }
        assert_eq!(more.trials()[..5], trials[..]);
        let mut reseeded = sweep.clone();
        if let Some(random) = reseeded.random.as_mut() {
            random.seed = 4;
        }
        assert_ne!(reseeded.trials(), trials);
    }

    #[test]
    fn problems_of_the_section_name_their_field() {
        let sweep = spec(
            "grid:\n  name: [a]\n  train.optimizer: [{}]\n  augment.train.0: [x]\n  model.depth: []\n\
             list:\n  - {train.optimizer.lr: 1}\n\
             random:\n  n: 2\n  params:\n    model.depth: {uniform: [3, 1]}\n",
        );
        let problems = sweep.validate();
        let text: Vec<String> = problems
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect();
        let expected = [
            "sweep.grid.name: `name` cannot be varied by a sweep",
            "sweep.grid.augment.train.0: a sweep replaces whole lists; vary `augment.train` instead",
            "sweep.grid.model.depth: needs at least one value",
            "sweep.grid.train.optimizer: overlaps `train.optimizer.lr`, which sweep.list.0 also varies",
            "sweep.random.params.model.depth.uniform: needs low < high (got [3, 1])",
            "sweep.random.params.model.depth: overlaps `model.depth`, which sweep.grid also varies",
        ];
        for line in expected {
            assert!(text.contains(&line.to_owned()), "missing {line}: {text:#?}");
        }
        assert_eq!(
            SweepSpec::default().validate(),
            [(
                "sweep".to_owned(),
                "needs at least one of grid, list or random (with params)".to_owned()
            )]
        );
    }

    #[test]
    fn trials_are_found_by_unique_prefix() {
        let trials = spec("grid:\n  a: [1, 2, 3, 4, 5, 6, 7, 8]\n").trials();
        let first = &trials[0];
        assert_eq!(find_trial(&trials, &first.id).unwrap(), first);
        let prefix = (1..=first.id.len())
            .map(|length| &first.id[..length])
            .find(|prefix| {
                trials
                    .iter()
                    .filter(|trial| trial.id.starts_with(prefix))
                    .count()
                    == 1
            })
            .unwrap();
        assert_eq!(find_trial(&trials, prefix).unwrap(), first);
        assert!(
            find_trial(&trials, "zz")
                .unwrap_err()
                .contains("no trial `zz`")
        );
        assert!(find_trial(&trials, "").is_err());
    }

    #[test]
    fn overrides_nest_like_set() {
        let mut document = json!({"train": {"epochs": 3, "optimizer": {"lr": 1}}, "model": 5});
        apply_override(&mut document, "train.optimizer.lr", json!(2));
        apply_override(&mut document, "model.depth", json!(4));
        apply_override(&mut document, "train.mixup.prob", json!(0.5));
        assert_eq!(
            document,
            json!({"train": {"epochs": 3, "optimizer": {"lr": 2}, "mixup": {"prob": 0.5}},
                   "model": {"depth": 4}})
        );
    }
}
