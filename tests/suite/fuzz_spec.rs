//! Property tests (fuzzing) of experiment loading through the library API: arbitrary YAML
//! text, structured mutations of `experiments/quickstart.yaml`, sweep sections whose trials are
//! loaded one by one with `load_trial`, and arbitrary `--set` arguments.
//!
//! Whatever the input, loading must return, never panic, and either succeed or report problems
//! that are each one non-empty line (`FILE:LINE:COL: field: message`): that is what `vilab
//! validate` prints, one problem per line.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default, a few seconds in all). With
//! `VILAB_FUZZ_SECONDS=N` each property instead keeps drawing fresh cases for N seconds and
//! prints how many it ran; `scripts/fuzz.sh` drives that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_yaml::{Mapping, Value};
use vilab::spec::load::load_trial;
use vilab::spec::{LoadError, LoadedSpec, load};

/// Trials of one generated sweep that are loaded one by one (the rest are only counted).
const TRIALS_LOADED: usize = 8;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `test` on values of `strategy`: `PROPTEST_CASES` of them, or, with
/// `VILAB_FUZZ_SECONDS`, as many as fit in that time. Prints the number of cases run.
fn run_property<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let budget = std::env::var("VILAB_FUZZ_SECONDS")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .map(Duration::from_secs);
    let start = Instant::now();
    let mut cases = 0u64;
    loop {
        let config = Config {
            // Regressions are kept as tests here, not as files next to the sources.
            failure_persistence: None,
            ..Config::default()
        };
        let round = u64::from(config.cases);
        let mut runner = TestRunner::new(config);
        if let Err(error) = runner.run(&strategy, &test) {
            panic!("{name}: {error}");
        }
        cases += round;
        if budget.is_none_or(|budget| start.elapsed() >= budget) {
            break;
        }
    }
    println!("fuzz_spec {name}: {cases} cases");
}

/// Ok, or problems that are each one non-empty line.
fn one_line_outcome(result: Result<LoadedSpec, LoadError>) -> Result<(), TestCaseError> {
    match result {
        Ok(_) => Ok(()),
        Err(LoadError::Read { .. }) => Err(TestCaseError::fail(
            "a file written a moment ago could not be read",
        )),
        Err(LoadError::Invalid(problems)) => {
            prop_assert!(!problems.0.is_empty(), "an error without a problem");
            for problem in &problems.0 {
                let line = problem.to_string();
                prop_assert!(
                    !line.contains('\n') && !line.contains('\r'),
                    "a problem spans several lines: {line:?}"
                );
                prop_assert!(
                    !problem.message.trim().is_empty(),
                    "empty message: {line:?}"
                );
            }
            let text = LoadError::Invalid(problems.clone()).to_string();
            prop_assert_eq!(text.lines().count(), problems.0.len());
            Ok(())
        }
    }
}

/// A scratch folder with one experiment file that each case overwrites.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("vilab-fuzz-")
                .tempdir()
                .expect("temporary folder"),
        }
    }

    fn write(&self, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join("experiment.yaml");
        std::fs::write(&path, contents).expect("write experiment");
        path
    }
}

/// The quickstart experiment with its data root made absolute, so it loads from anywhere.
fn quickstart() -> Value {
    let path = repo_root().join("experiments/quickstart.yaml");
    let text = std::fs::read_to_string(&path).expect("quickstart.yaml");
    let mut document: Value = serde_yaml::from_str(&text).expect("quickstart parses");
    let root = repo_root().join("data1").display().to_string();
    document["data"]["root"] = Value::String(root);
    document
}

/// Pieces YAML is made of, so arbitrary text often gets past the parser into validation.
fn yaml_token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "name",
        "seed",
        "data",
        "root",
        "image_size",
        "train",
        "epochs",
        "optimizer",
        "lr",
        "model",
        "vil_micro",
        "sweep",
        "grid",
        "augment",
        "stats",
        "mean",
        ": ",
        "- ",
        "\n",
        "\n  ",
        "\n    ",
        "\t",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&a ",
        "*a",
        "!!str ",
        "!!int ",
        "---\n",
        "...\n",
        "# ",
        "'",
        "\"",
        "? ",
        "|\n",
        ">\n",
        "~",
        "null",
        "true",
        ".nan",
        ".inf",
        "-.inf",
        "0x1F",
        "1e400",
        "-1",
        "0",
        "18446744073709551616",
        "\u{feff}",
        "\0",
        "é",
        "../",
        "/",
    ]);
    prop_oneof![
        3 => fixed.prop_map(str::to_owned),
        1 => "[a-z_.]{1,8}",
        1 => "-?[0-9]{1,25}(\\.[0-9]{1,5})?",
    ]
}

fn yaml_like_text() -> impl Strategy<Value = String> {
    prop::collection::vec(yaml_token(), 0..40).prop_map(|tokens| tokens.concat())
}

/// A leaf value: every YAML scalar kind, including the awkward numbers.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        (-3i64..300).prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        prop::sample::select(vec![f64::NAN, f64::INFINITY, -0.0, 1e-300, 0.5, 1.5])
            .prop_map(|n| Value::Number(n.into())),
        "[a-z_./]{0,12}".prop_map(Value::String),
        "\\PC{0,12}".prop_map(Value::String),
        "[a-z\n\r\t\x1b]{0,6}".prop_map(Value::String),
        prop::sample::select(vec![
            "vil_micro",
            "vil_tiny",
            "custom",
            "adamw",
            "sgd",
            "cuda",
            "bf16",
            "../x",
            "",
            "data",
        ])
        .prop_map(|text| Value::String(text.to_owned())),
    ]
}

/// Any value: leaves, or small lists and mappings of them.
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::btree_map(key(), inner, 0..4).prop_map(|entries| {
                Value::Mapping(
                    entries
                        .into_iter()
                        .map(|(key, value)| (Value::String(key), value))
                        .collect::<Mapping>(),
                )
            }),
        ]
    })
}

/// A key: a real field name, a near miss, or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "seed",
            "backend",
            "data",
            "root",
            "val_root",
            "test_root",
            "image_size",
            "on_bad_image",
            "split",
            "val_fraction",
            "stratify",
            "stats",
            "mean",
            "std",
            "augment",
            "train",
            "val",
            "model",
            "dim",
            "depth",
            "patch_size",
            "epochs",
            "batch_size",
            "optimizer",
            "lr",
            "schedule",
            "cosine",
            "mixup",
            "ema",
            "sweep",
            "grid",
            "list",
            "random",
            "evaluate",
            "metric",
            "plot",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,10}",
        "\\PC{1,8}",
        "[a-z\n\r\t]{1,6}",
    ]
}

/// One change to a document, applied at the node `target` picks (modulo the node count).
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    Rename(usize, String),
    Insert(usize, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), value()).prop_map(|(target, value)| Mutation::Replace(target, value)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => (any::<usize>(), key()).prop_map(|(target, key)| Mutation::Rename(target, key)),
        2 => (any::<usize>(), key(), value())
            .prop_map(|(target, key, value)| Mutation::Insert(target, key, value)),
    ]
}

/// A step from a node to one of its children.
#[derive(Debug, Clone)]
enum Step {
    Key(Value),
    Index(usize),
}

/// The path of every node of `document`, the root first.
fn node_paths(document: &Value) -> Vec<Vec<Step>> {
    fn walk(node: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(path.clone());
        match node {
            Value::Mapping(map) => {
                for (key, child) in map {
                    path.push(Step::Key(key.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Sequence(items) => {
                for (index, child) in items.iter().enumerate() {
                    path.push(Step::Index(index));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(document, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'a>(document: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut node = document;
    for step in path {
        node = match (step, node) {
            (Step::Key(key), Value::Mapping(map)) => map.get_mut(key)?,
            (Step::Index(index), Value::Sequence(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(node)
}

fn apply(document: &mut Value, mutation: &Mutation) {
    let paths = node_paths(document);
    let pick = |target: usize| paths[target % paths.len()].clone();
    match mutation {
        Mutation::Replace(target, value) => {
            if let Some(node) = node_mut(document, &pick(*target)) {
                *node = value.clone();
            }
        }
        Mutation::Remove(target) | Mutation::Rename(target, _) => {
            let path = pick(*target);
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            let Some(parent) = node_mut(document, parent) else {
                return;
            };
            match (last, parent) {
                (Step::Key(key), Value::Mapping(map)) => {
                    if let Some(value) = map.remove(key)
                        && let Mutation::Rename(_, name) = mutation
                    {
                        map.insert(Value::String(name.clone()), value);
                    }
                }
                (Step::Index(index), Value::Sequence(items)) if *index < items.len() => {
                    items.remove(*index);
                }
                _ => {}
            }
        }
        Mutation::Insert(target, key, value) => {
            if let Some(Value::Mapping(map)) = node_mut(document, &pick(*target)) {
                map.insert(Value::String(key.clone()), value.clone());
            }
        }
    }
}

/// Paths a sweep may name: real fields (some of them lists or sections), and near misses.
fn sweep_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "train.epochs",
            "train.batch_size",
            "train.optimizer.lr",
            "train.optimizer.name",
            "model.name",
            "model.depth",
            "model.dim",
            "split.val_fraction",
            "split.seed",
            "seed",
            "name",
            "sweep",
            "data.root",
            "data.image_size",
            "augment.train",
            "augment.train.0",
            "train.epocs",
            "train",
            "model",
            "stats.mean",
            "train.schedule",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,6}(\\.[a-z_0-9]{1,6}){0,2}",
    ]
}

/// A sweep section of a few trials (so every trial can be loaded) or, rarely, of very many.
fn sweep_section() -> impl Strategy<Value = Value> {
    let grid = prop::collection::btree_map(sweep_path(), prop::collection::vec(leaf(), 0..3), 0..3);
    let list = prop::collection::vec(
        prop::collection::btree_map(sweep_path(), leaf(), 0..3),
        0..3,
    );
    let distribution = prop_oneof![
        (any::<f64>(), any::<f64>()).prop_map(|(low, high)| {
            serde_yaml::to_value(BTreeMap::from([("uniform", vec![low, high])])).expect("yaml")
        }),
        (-2.0f64..1.0, -2.0f64..1.0).prop_map(|(low, high)| {
            serde_yaml::to_value(BTreeMap::from([("loguniform", vec![low, high])])).expect("yaml")
        }),
        prop::collection::vec(leaf(), 0..3).prop_map(|values| {
            serde_yaml::to_value(BTreeMap::from([("choice", values)])).expect("yaml")
        }),
    ];
    let random = (
        prop_oneof![4 => 0u64..4, 1 => any::<u32>().prop_map(u64::from)],
        prop::collection::btree_map(sweep_path(), distribution, 0..2),
    );
    (grid, list, prop::option::of(random)).prop_map(|(grid, list, random)| {
        let mut section = Mapping::new();
        if !grid.is_empty() {
            section.insert("grid".into(), serde_yaml::to_value(grid).expect("yaml"));
        }
        if !list.is_empty() {
            section.insert("list".into(), serde_yaml::to_value(list).expect("yaml"));
        }
        if let Some((n, params)) = random {
            let mut random = Mapping::new();
            random.insert("n".into(), n.into());
            random.insert("params".into(), serde_yaml::to_value(params).expect("yaml"));
            section.insert("random".into(), Value::Mapping(random));
        }
        Value::Mapping(section)
    })
}

/// A `--set` argument: anything, something shaped like one, or a real field with any value.
fn set_argument() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => "\\PC{0,30}",
        2 => "[a-z_.]{0,24}=\\PC{0,24}",
        3 => (sweep_path(), yaml_like_text()).prop_map(|(path, value)| format!("{path}={value}")),
        3 => (sweep_path(), leaf()).prop_map(|(path, value)| {
            let text = serde_yaml::to_string(&value).expect("yaml");
            format!("{path}={}", text.trim_end())
        }),
    ]
}

fn load_text(scratch: &Scratch, text: &[u8], sets: &[String]) -> Result<LoadedSpec, LoadError> {
    let path = scratch.write(text);
    load(&path, sets)
}

#[test]
fn arbitrary_text_loads_or_reports_one_line_problems() {
    let scratch = Scratch::new();
    let text = prop_oneof![
        yaml_like_text(),
        "\\PC{0,200}",
        prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    run_property("arbitrary_text", text, |text| {
        one_line_outcome(load_text(&scratch, text.as_bytes(), &[]))
    });
}

#[test]
fn mutated_quickstart_loads_or_reports_one_line_problems() {
    let scratch = Scratch::new();
    let base = quickstart();
    // The base itself must load, or every mutation would only test one error.
    let text = serde_yaml::to_string(&base).expect("yaml");
    load_text(&scratch, text.as_bytes(), &[]).expect("the quickstart loads");
    run_property(
        "mutated_quickstart",
        prop::collection::vec(mutation(), 1..5),
        |mutations| {
            let mut document = base.clone();
            for mutation in &mutations {
                apply(&mut document, mutation);
            }
            let text = serde_yaml::to_string(&document).expect("yaml");
            one_line_outcome(load_text(&scratch, text.as_bytes(), &[]))
        },
    );
}

#[test]
fn sweep_trials_load_or_report_one_line_problems() {
    let scratch = Scratch::new();
    let base = quickstart();
    run_property("sweep_trials", sweep_section(), |section| {
        let mut document = base.clone();
        document["sweep"] = section;
        let text = serde_yaml::to_string(&document).expect("yaml");
        let path = scratch.write(text.as_bytes());
        let loaded = load(&path, &[]);
        if let Ok(spec) = &loaded
            && let Some(sweep) = &spec.spec.sweep
        {
            for trial in sweep.trials().iter().take(TRIALS_LOADED) {
                one_line_outcome(load_trial(&path, &[], trial))?;
            }
        }
        one_line_outcome(loaded)
    });
}

#[test]
fn set_arguments_load_or_report_one_line_problems() {
    let minimal: &Path = &repo_root().join("tests/fixtures/minimal.yaml");
    run_property(
        "set_arguments",
        prop::collection::vec(set_argument(), 1..4),
        |sets| one_line_outcome(load(minimal, &sets)),
    );
}

#[test]
fn line_breaks_inside_a_problem_are_shown_escaped() {
    // Keys and strings from the file end up in messages; a quoted "a\nb" must not split the
    // line `vilab validate` prints.
    use vilab::spec::{Origin, Problem};
    let problem = Problem {
        origin: Origin::Set("a=b\nc".into()),
        field: "x\ny".into(),
        message: "unknown value `first\r\nsecond`".into(),
    };
    assert_eq!(
        problem.to_string(),
        "--set a=b\\nc: x\\ny: unknown value `first\\r\\nsecond`"
    );
}
