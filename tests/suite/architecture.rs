//! The layering of `src/`: derives the top-level module graph from the `crate::` (and
//! escaping `super::`) paths in each file, test modules and comments left out, and fails on an
//! import that goes up or sideways between the floors written down in `ARCHITECTURE.md`, on a
//! cycle, and on a top-level module that no floor names.
//!
//! The checker is run on synthetic trees too, so it is shown to fail where it must.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Floors from the ground up; a module may import only modules on lower floors.
type Layers = Vec<Vec<String>>;

/// Top-level module ⇒ the top-level modules it imports, with one file that does.
type Graph = BTreeMap<String, BTreeMap<String, PathBuf>>;

/// Reads the floors from the ```layers block of `ARCHITECTURE.md`: one floor a line, the top
/// floor first, the modules of a floor separated by spaces.
fn read_layers(text: &str) -> Layers {
    let block = text
        .split("```layers")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```layers block");
    let mut layers: Layers = block
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|floor| !floor.is_empty())
        .collect();
    layers.reverse();
    layers
}

/// `text` without comments (line, block and doc comments) and without string literals'
/// contents, so a path in a doc link or a message is not taken for an import.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    while index < bytes.len() {
        let rest = &text[index..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            index += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |end| end + 2);
            index += end;
        } else if rest.starts_with('"') {
            let mut cursor = 1;
            let inner = rest.as_bytes();
            while cursor < inner.len() && inner[cursor] != b'"' {
                cursor += if inner[cursor] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            index += (cursor + 1).min(rest.len());
        } else if let Some(length) = char_literal_length(rest) {
            out.push_str("' '");
            index += length;
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            let end = raw.find("\"#").map_or(rest.len(), |end| end + 5);
            out.push_str("\"\"");
            index += end;
        } else {
            let character = rest.chars().next().expect("not at the end");
            out.push(character);
            index += character.len_utf8();
        }
    }
    out
}

/// The length of the character literal `rest` starts with (`'{'`, `'\''`), if it starts
/// with one rather than a lifetime.
fn char_literal_length(rest: &str) -> Option<usize> {
    let mut characters = rest.char_indices();
    if characters.next()?.1 != '\'' {
        return None;
    }
    let (_, first) = characters.next()?;
    if first == '\\' {
        return rest[2..].find('\'').map(|end| end + 3);
    }
    let (at, closing) = characters.next()?;
    (closing == '\'').then_some(at + 1)
}

/// `code` without the items that follow `#[cfg(test)]` (a test module or function).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(start) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        // The item ends at the `;` or at the brace that closes its first `{`.
        let mut depth = 0usize;
        let mut end = after.len();
        for (offset, character) in after.char_indices() {
            match character {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = offset + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = offset + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The module path of a file under `src/` (`pipeline/cache.rs` ⇒ `[pipeline, cache]`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The top-level modules that `code`, in the module at `path`, names.
fn imported_modules(code: &str, path: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let words: Vec<(usize, &str)> = code
        .match_indices(|c: char| !(c.is_alphanumeric() || c == '_'))
        .scan(0, |start, (at, separator)| {
            let word = (*start, &code[*start..at]);
            *start = at + separator.len();
            Some(word)
        })
        .filter(|(_, word)| !word.is_empty())
        .collect();
    for (position, &(at, word)) in words.iter().enumerate() {
        let preceded_by_path = code[..at].trim_end().ends_with("::");
        let preceded_by_dollar = code[..at].ends_with('$');
        if preceded_by_path || preceded_by_dollar {
            continue;
        }
        let followed = |offset: usize| -> Option<&str> {
            let (next_at, next) = *words.get(position + offset)?;
            let (_, previous) = words[position + offset - 1];
            let between = &code[words[position + offset - 1].0 + previous.len()..next_at];
            (between.trim() == "::" || between.trim() == "::{").then_some(next)
        };
        if word == "crate" {
            // `crate::name` or `crate::{a::x, b}`.
            let after = code[at + word.len()..].trim_start();
            if let Some(group) = after.strip_prefix("::{") {
                let group = &group[..matching_brace(group)];
                for name in top_names_of_group(group) {
                    found.insert(name);
                }
            } else if let Some(next) = followed(1) {
                found.insert(next.to_owned());
            }
        } else if word == "super" {
            let mut hops = 1;
            while followed(hops) == Some("super") {
                hops += 1;
            }
            if hops >= path.len()
                && let Some(next) = followed(hops)
            {
                found.insert(next.to_owned());
            }
        }
    }
    found.retain(|name| name != "self" && path.first() != Some(name));
    found
}

/// The length of a `{…}` group's contents (`group` starts after the `{`).
fn matching_brace(group: &str) -> usize {
    let mut depth = 1usize;
    for (offset, character) in group.char_indices() {
        match character {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return offset;
                }
            }
            _ => {}
        }
    }
    group.len()
}

/// The first path segment of each item of a `use` group, at the group's top level.
fn top_names_of_group(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut item = String::new();
    for character in group.chars().chain([',']) {
        match character {
            '{' => {
                depth += 1;
                item.push(character);
            }
            '}' => {
                depth -= 1;
                item.push(character);
            }
            ',' if depth == 0 => {
                let head: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !head.is_empty() {
                    names.push(head);
                }
                item.clear();
            }
            _ => item.push(character),
        }
    }
    names
}

/// The top-level module graph of the crate whose sources are under `src`.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let mut items: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap_or_else(|error| panic!("{}: {error}", folder.display()))
            .map(|item| item.expect("folder entry").path())
            .collect();
        items.sort();
        for item in items {
            if item.is_dir() {
                stack.push(item);
                continue;
            }
            if item.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let relative = item.strip_prefix(src).expect("below src");
            let path = module_path(relative);
            // The crate root and the binary declare modules; they are not one.
            let Some(top) = path.first().filter(|top| *top != "lib" && *top != "main") else {
                continue;
            };
            let text = std::fs::read_to_string(&item)
                .unwrap_or_else(|error| panic!("{}: {error}", item.display()));
            let code = without_tests(&code_only(&text));
            let edges = graph.entry(top.clone()).or_default();
            for imported in imported_modules(&code, &path) {
                edges
                    .entry(imported)
                    .or_insert_with(|| relative.to_path_buf());
            }
        }
    }
    // `crate::name` may also be a macro exported at the crate root: only modules count.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|imported, _| modules.contains(imported));
    }
    graph
}

/// Every violation of `layers` in `graph`, one sentence each (empty: the graph is layered).
fn violations(graph: &Graph, layers: &Layers) -> Vec<String> {
    let floor_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(floor, modules)| modules.iter().map(move |name| (name.as_str(), floor)))
        .collect();
    let mut problems = Vec::new();
    for (module, imports) in graph {
        let Some(&floor) = floor_of.get(module.as_str()) else {
            problems.push(format!(
                "module `{module}` is on no floor of ARCHITECTURE.md's layers"
            ));
            continue;
        };
        for (imported, file) in imports {
            match floor_of.get(imported.as_str()) {
                None => problems.push(format!(
                    "{}: `{module}` imports `{imported}`, which is on no floor",
                    file.display()
                )),
                Some(&other) if other >= floor => problems.push(format!(
                    "{}: `{module}` (floor {floor}) imports `{imported}` (floor {other}): {}",
                    file.display(),
                    if other == floor {
                        "modules on one floor do not import each other"
                    } else {
                        "imports only go down"
                    }
                )),
                Some(_) => {}
            }
        }
    }
    problems.extend(
        cycles(graph)
            .into_iter()
            .map(|cycle| format!("import cycle: {}", cycle.join(" → "))),
    );
    problems
}

/// The import cycles of `graph`, each as the path that closes it (`a → b → a`).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(start) = path.iter().position(|step| step == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            found.push(cycle);
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            visit(next, graph, path, done, found);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn src_imports_only_go_down_the_floors_of_architecture_md() {
    let text = std::fs::read_to_string(repo_root().join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the repository root");
    let layers = read_layers(&text);
    let graph = module_graph(&repo_root().join("src"));
    // The derivation sees the crate: every top-level module with code, and real imports.
    assert!(graph.len() >= 10, "too few modules found: {graph:?}");
    assert!(
        graph["cli"].contains_key("spec"),
        "cli's imports were not found: {:?}",
        graph["cli"]
    );
    let problems = violations(&graph, &layers);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every floor names modules that exist.
    for name in layers.iter().flatten() {
        assert!(
            graph.contains_key(name),
            "ARCHITECTURE.md names `{name}`, not in src/"
        );
    }
}

/// A synthetic crate: file name ⇒ contents.
fn synthetic(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary folder");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("folders");
        std::fs::write(path, text).expect("write");
    }
    dir
}

const SYNTHETIC_LAYERS: &str = "\
# Layers\n\n```layers\ncli\nstore model   # one floor, two modules\nfiles\n```\n";

#[test]
fn the_checker_accepts_downward_imports_and_ignores_tests_comments_and_strings() {
    let dir = synthetic(&[
        (
            "lib.rs",
            "pub mod cli; pub mod files; pub mod model; pub mod store;",
        ),
        ("cli/mod.rs", "use crate::{store::Cache, model};\nmod verb;"),
        ("cli/verb.rs", "use super::super::files::write;"),
        (
            "store.rs",
            "use crate::files::{self, write};\n/// See [`crate::cli`].\nfn f() { let s = \"crate::cli\"; }\n#[cfg(test)]\nmod tests { use crate::cli::x; }",
        ),
        (
            "model.rs",
            "pub fn f() -> crate::files::Id { crate::some_macro!() } // crate::store",
        ),
        ("files.rs", "pub fn write() {}"),
    ]);
    let graph = module_graph(dir.path());
    let expected: Graph = [
        (
            "cli",
            vec![
                ("files", "cli/verb.rs"),
                ("model", "cli/mod.rs"),
                ("store", "cli/mod.rs"),
            ],
        ),
        ("files", vec![]),
        ("model", vec![("files", "model.rs")]),
        ("store", vec![("files", "store.rs")]),
    ]
    .into_iter()
    .map(|(module, edges)| {
        (
            module.to_owned(),
            edges
                .into_iter()
                .map(|(to, file)| (to.to_owned(), PathBuf::from(file)))
                .collect(),
        )
    })
    .collect();
    assert_eq!(graph, expected);
    assert_eq!(
        violations(&graph, &read_layers(SYNTHETIC_LAYERS)),
        Vec::<String>::new()
    );
}

#[test]
fn the_checker_fails_on_an_upward_import_a_sideways_import_a_cycle_and_an_unlisted_module() {
    let dir = synthetic(&[
        ("lib.rs", ""),
        ("cli.rs", "use crate::store::Cache;"),
        // Upward: files is the ground floor.
        ("files.rs", "pub fn f() { crate::cli::run(); }"),
        // Sideways, and with model's import of store, a cycle.
        ("store.rs", "use crate::model::Vil;"),
        ("model.rs", "use crate::store::Cache;"),
        ("extra.rs", "use crate::files::f;"),
    ]);
    let graph = module_graph(dir.path());
    let problems = violations(&graph, &read_layers(SYNTHETIC_LAYERS));
    let expected = [
        "module `extra` is on no floor of ARCHITECTURE.md's layers",
        "files.rs: `files` (floor 0) imports `cli` (floor 2): imports only go down",
        "model.rs: `model` (floor 1) imports `store` (floor 1): modules on one floor do not import each other",
        "store.rs: `store` (floor 1) imports `model` (floor 1): modules on one floor do not import each other",
        "import cycle: store → model → store",
    ];
    for sentence in expected {
        assert!(
            problems.iter().any(|problem| problem == sentence),
            "missing: {sentence}\nall: {problems:#?}"
        );
    }
}
