//! The HTML pages in a real browser: the quickstart's `report.html` (on a two-epoch budget), a
//! `vilab compare --html` page and the output root's `index.html` are opened from `file://` in
//! headless Chromium, which must log no console message and make no network request; the DOM
//! it renders holds the run's ACC1 and every class name, and a screenshot of each is taken.
//!
//! Requests are read from Chromium's own network log: a request whose network isolation key is
//! the `file://` page's is one the page made (Chromium's background requests have other keys).
//! A control page that loads a remote image and logs an error proves both checks can fail.
//!
//! Chromium is Debian's `chromium` (`.ci/run` installs it and sets `VILAB_REQUIRE_BROWSER=1`,
//! so a missing browser fails CI); elsewhere the test says it skipped. `VILAB_CHROMIUM` names
//! another binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{Output, Workspace, copy_tree, repo_root};

/// What Chromium did with one page.
struct Visit {
    /// The DOM after loading.
    dom: String,
    /// Console messages it logged.
    console: Vec<String>,
    /// URLs the page requested over the network.
    requests: Vec<String>,
}

fn chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("VILAB_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn browser_command(binary: &Path, profile: &Path) -> Command {
    let mut command = Command::new(binary);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,2000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Opens `page` and returns its DOM, console messages and network requests.
fn visit(binary: &Path, scratch: &Path, page: &Path) -> Visit {
    let net_log = scratch.join("net-log.json");
    let output = browser_command(binary, &scratch.join("profile"))
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg(url(page))
        .output()
        .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
    assert!(
        output.status.success(),
        "chromium failed on {}",
        page.display()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let console = stderr
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let log: Value = serde_json::from_slice(&std::fs::read(&net_log).expect("net log"))
        .expect("net log is JSON");
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let requests = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["type"] == start_job)
        .filter(|event| {
            event["params"]["network_isolation_key"]
                .as_str()
                .is_some_and(|key| key.starts_with("file://"))
        })
        .filter_map(|event| event["params"]["url"].as_str())
        .filter(|url| !url.starts_with("file:") && !url.starts_with("data:"))
        .map(str::to_owned)
        .collect();
    Visit {
        dom: String::from_utf8_lossy(&output.stdout).into_owned(),
        console,
        requests,
    }
}

/// Takes a screenshot of `page` into `png`, checks it decodes, and returns its size.
fn screenshot(binary: &Path, scratch: &Path, page: &Path, png: &Path) -> (u32, u32) {
    let status = browser_command(binary, &scratch.join("profile"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url(page))
        .output()
        .expect("chromium")
        .status;
    assert!(status.success(), "no screenshot of {}", page.display());
    let image = image::open(png).unwrap_or_else(|error| panic!("{}: {error}", png.display()));
    (image.width(), image.height())
}

fn url(page: &Path) -> String {
    format!(
        "file://{}",
        page.canonicalize().expect("page exists").display()
    )
}

fn vilab(workspace: &Workspace, args: &[&str]) -> Output {
    let output = workspace.vilab(args);
    output.assert_code(0).assert_no_panic();
    output
}

#[test]
fn report_compare_and_index_pages_load_offline_in_a_real_browser() {
    let Some(binary) = chromium() else {
        assert!(
            std::env::var("VILAB_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "VILAB_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)"
        );
        eprintln!("skipped: no chromium on PATH (VILAB_REQUIRE_BROWSER=1 makes this a failure)");
        return;
    };
    let workspace = Workspace::new();
    copy_tree(&repo_root().join("data1"), &workspace.path().join("data1"));
    let experiment = std::fs::read_to_string(repo_root().join("experiments/quickstart.yaml"))
        .expect("quickstart.yaml");
    workspace.write("experiments/quickstart.yaml", experiment);
    let quickstart = ["run", "experiments/quickstart.yaml", "--out", "out"];
    let first = vilab(
        &workspace,
        &[&quickstart[..], &["--set", "train.epochs=2"]].concat(),
    );
    let run_a = workspace.path().join(first.last_stdout_line());
    let second = vilab(
        &workspace,
        &[
            &quickstart[..],
            &[
                "--set",
                "train.epochs=2",
                "--set",
                "train.optimizer.lr=0.004",
            ],
        ]
        .concat(),
    );
    let run_b = workspace.path().join(second.last_stdout_line());
    let compare_page = workspace.path().join("compare.html");
    let (a, b) = (run_a.display().to_string(), run_b.display().to_string());
    vilab(
        &workspace,
        &[
            "compare",
            &a,
            &b,
            "--html",
            "compare.html",
            "--format",
            "md",
        ],
    );
    vilab(&workspace, &["runs", "--out", "out", "--html"]);

    let metrics: Value = serde_json::from_slice(
        &std::fs::read(run_a.join("evaluate/metrics.json")).expect("metrics.json"),
    )
    .expect("metrics JSON");
    let acc1 = format!(
        "{:.2}",
        metrics["best"]["val"]["acc1"].as_f64().expect("acc1")
    );
    let classes: Vec<String> = std::fs::read_dir(workspace.path().join("data1"))
        .expect("data1")
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(classes.len(), 10);

    let scratch = tempfile::tempdir().expect("scratch");
    let shots = repo_root().join("target").join("screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let pages = [
        ("report", run_a.join("report.html")),
        ("compare", compare_page),
        ("index", workspace.path().join("out/index.html")),
    ];
    for (name, page) in &pages {
        let seen = visit(&binary, scratch.path(), page);
        assert!(
            seen.console.is_empty(),
            "{name}: console messages {:?}",
            seen.console
        );
        assert!(
            seen.requests.is_empty(),
            "{name}: network requests {:?}",
            seen.requests
        );
        assert!(seen.dom.contains("</table>"), "{name}: no table rendered");
        match *name {
            "report" => {
                assert!(
                    seen.dom.contains(&format!("{acc1}%")),
                    "report: ACC1 {acc1}% not in the page"
                );
                for class in &classes {
                    assert!(
                        seen.dom.contains(class.as_str()),
                        "report: class {class} missing"
                    );
                }
                assert!(seen.dom.contains("<svg"), "report: no inline curves");
            }
            "compare" => {
                assert!(
                    seen.dom.contains(&acc1),
                    "compare: ACC1 {acc1} not in the page"
                );
                for class in &classes {
                    assert!(
                        seen.dom.contains(class.as_str()),
                        "compare: class {class} missing"
                    );
                }
                assert!(seen.dom.contains("train.optimizer.lr"));
            }
            _ => {
                assert!(
                    seen.dom.contains(&acc1),
                    "index: ACC1 {acc1} not in the page"
                );
                assert!(seen.dom.contains("report.html"));
            }
        }
        let png = shots.join(format!("{name}.png"));
        let (width, height) = screenshot(&binary, scratch.path(), page, &png);
        assert_eq!((width, height), (1280, 2000), "{name}: screenshot size");
    }

    // The control: a page that loads a remote image and logs an error fails both checks.
    let control = workspace.write(
        "control.html",
        "<!DOCTYPE html><html><body><img src=\"http://vilab-control.invalid/x.png\">\
         <script>console.error('control')</script></body></html>",
    );
    let seen = visit(&binary, scratch.path(), &control);
    assert_eq!(seen.requests, ["http://vilab-control.invalid/x.png"]);
    assert_eq!(seen.console.len(), 1, "{:?}", seen.console);
}
