//! `vilab completions SHELL`: the script is generated for every shell clap_complete knows, and
//! the bash one, sourced in a real `bash`, completes `vilab r<TAB>` to the verbs that start
//! with `r` and `vilab run --lau<TAB>` to the flag.

use crate::common::Workspace;

/// The words bash offers for the command line `words` (the last one is being completed), using
/// the completion script at `script`.
fn bash_completions(workspace: &Workspace, script: &str, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source {script}
function_name=$(complete -p vilab | sed -n 's/.*-F \([^ ]*\).*/\1/p')
test -n "$function_name" || {{ echo "no completion function registered" >&2; exit 3; }}
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE='{line}'
COMP_POINT={point}
"$function_name" vilab '{current}' '{previous}'
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = words.join(" "),
        cword = words.len() - 1,
        point = line.len(),
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let output = std::process::Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(program)
        .current_dir(workspace.path())
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_verbs_and_flags_from_the_generated_script() {
    let workspace = Workspace::new();
    let output = workspace.vilab(&["completions", "bash"]);
    output.assert_code(0);
    let script = workspace.path().join("vilab.bash");
    std::fs::write(&script, &output.stdout).expect("write the script");
    let script = script.to_str().expect("UTF-8 path");

    // `run` and `runs` are the verbs starting with `r`.
    let verbs = bash_completions(&workspace, script, &["vilab", "r"]);
    assert_eq!(verbs, ["run", "runs"]);

    let flags = bash_completions(&workspace, script, &["vilab", "run", "--lau"]);
    assert_eq!(flags, ["--launcher"]);
}

#[test]
fn every_shell_gets_a_script_naming_the_verbs() {
    let workspace = Workspace::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = workspace.vilab(&["completions", shell]);
        output.assert_code(0);
        for verb in ["run", "validate", "status", "predict", "completions"] {
            assert!(
                output.stdout.contains(verb),
                "{shell}: `{verb}` missing from the script"
            );
        }
    }
    let unknown = workspace.vilab(&["completions", "cmd"]);
    unknown.assert_code(2);
}
