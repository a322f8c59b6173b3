//! Every verb's `--help` ends with an "Examples:" section of real command lines: the verbs are
//! enumerated from the clap definition (so a new verb without examples fails here), each one's
//! help is printed by the real binary, and every example must parse with the flags that exist
//! and name only experiment files the repository has.

use clap::{CommandFactory, Parser};
use vilab::cli::Cli;

use crate::common::{Workspace, repo_root};

/// Every subcommand path below `command` (`["run"]`, `["data", "import-idx"]`, ...), groups
/// included.
fn verb_paths(command: &clap::Command, prefix: &[String], paths: &mut Vec<Vec<String>>) {
    for verb in command.get_subcommands() {
        if verb.get_name() == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(verb.get_name().to_owned());
        paths.push(path.clone());
        verb_paths(verb, &path, paths);
    }
}

/// The examples at the end of a help text, continuation lines (`\` at the end) joined, or why
/// the text does not end with an Examples section.
fn examples(help: &str) -> Result<Vec<String>, String> {
    let (_, section) = help
        .rsplit_once("\nExamples:\n")
        .ok_or("no `Examples:` section")?;
    let mut examples: Vec<String> = Vec::new();
    let mut continued = false;
    for line in section.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if continued {
            let last = examples
                .last_mut()
                .ok_or("a continuation without an example")?;
            last.push(' ');
            last.push_str(line.trim());
        } else if line.starts_with("  vilab ") {
            examples.push(line.trim().to_owned());
        } else {
            return Err(format!(
                "`{line}` after the examples: they must end the help"
            ));
        }
        continued = line.ends_with('\\');
        if continued && let Some(last) = examples.last_mut() {
            last.truncate(last.trim_end_matches('\\').trim_end().len());
        }
    }
    Ok(examples)
}

/// The words of an example: the command before its description (two spaces) and before any
/// shell redirection or pipe.
fn example_words(example: &str) -> Vec<String> {
    let command = example.split("  ").next().unwrap_or_default();
    command
        .split_whitespace()
        .take_while(|word| !matches!(*word, ">" | "|" | "&&" | ";"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_verbs_help_ends_with_examples_that_parse() {
    let workspace = Workspace::new();
    let mut paths = Vec::new();
    verb_paths(&Cli::command(), &[], &mut paths);
    assert!(paths.len() >= 15, "{paths:?}");
    let mut failures = Vec::new();
    for path in &paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let output = workspace.vilab(&args);
        output.assert_code(0).assert_no_panic();
        let verb = path.join(" ");
        let examples = match examples(&output.stdout) {
            Ok(examples) => examples,
            Err(why) => {
                failures.push(format!("vilab {verb} --help: {why}"));
                continue;
            }
        };
        if !(2..=4).contains(&examples.len()) {
            failures.push(format!(
                "vilab {verb} --help: {} examples, want 2 to 4",
                examples.len()
            ));
        }
        for example in &examples {
            if !example.starts_with(&format!("vilab {verb}")) {
                failures.push(format!(
                    "vilab {verb} --help: `{example}` is another verb's"
                ));
            }
            let words = example_words(example);
            if let Err(error) = Cli::try_parse_from(&words) {
                failures.push(format!(
                    "vilab {verb} --help: `{example}` does not parse: {}",
                    error.render()
                ));
            }
            for word in &words {
                if word.starts_with("experiments/") && !repo_root().join(word).is_file() {
                    failures.push(format!("vilab {verb} --help: `{word}` does not exist"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_example_parser_reads_descriptions_redirections_and_continuations() {
    let help = "Usage: vilab x\n\nExamples:\n  vilab x a.yaml --set k=v   what it does\n  \
                vilab x > out.txt\n  vilab x --long \\\n      --more b\n";
    let found = examples(help).expect("examples");
    assert_eq!(
        found,
        [
            "vilab x a.yaml --set k=v   what it does",
            "vilab x > out.txt",
            "vilab x --long --more b",
        ]
    );
    assert_eq!(
        example_words(&found[0]),
        ["vilab", "x", "a.yaml", "--set", "k=v"]
    );
    assert_eq!(example_words(&found[1]), ["vilab", "x"]);
    assert!(examples("Usage: vilab x\n\nOptions:\n  -h\n").is_err());
    assert!(examples("Usage: vilab x\n\nExamples:\n  vilab x\n\nOptions:\n  -h\n").is_err());
}
