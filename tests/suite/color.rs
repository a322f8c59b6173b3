//! Colour and escape sequences follow `--color` and `NO_COLOR`, on a real pseudo-terminal: the
//! real binary runs with stdout and stderr on the slave side of a pty (so both are terminals, as
//! in an interactive shell), and everything it writes is read back from the master side.
//!
//! `vilab -v run` of a tiny experiment (one epoch) prints a debug log line, stage lines and —
//! with colour — progress bars. With `NO_COLOR=1` or `--color never` not one ESC byte may appear;
//! with `--color always`, or `auto` on a terminal, escape sequences must appear, so the check
//! would catch a pty that is not one. clap's help follows the same choice.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

use crate::common::{PROCESS_TIMEOUT, Workspace, wait_until_done};
use crate::faults::small_workspace;

/// ESC, which starts every colour and cursor sequence.
const ESC: u8 = 0x1b;

/// A tiny model trained for one epoch on a few images, so every stage (and its progress) runs.
const EXPERIMENT: &str = "name: tiny\n\
    seed: 42\n\
    data:\n  root: data\n  image_size: 16\n\
    model:\n  name: vil_micro\n  dim: 16\n  depth: 2\n\
    train:\n  epochs: 1\n  batch_size: 8\n  workers: 0\n\
    plot:\n  formats: [png]\n";

/// A pseudo-terminal of 40 rows and 120 columns: (master, slave).
fn open_pty() -> (File, OwnedFd) {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the integers passed; the name and termios
    // arguments may be null, and the window size outlives the call.
    let result = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &size,
        )
    };
    assert_eq!(result, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and nothing else owns them.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// What a `vilab` on a terminal printed (stdout and stderr interleaved, as a terminal shows
/// them) and its exit code.
struct Screen {
    code: i32,
    bytes: Vec<u8>,
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn has_escape(&self) -> bool {
        self.bytes.contains(&ESC)
    }

    /// Panics unless the exit code is `expected`.
    fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            expected,
            "unexpected exit code:\n{}",
            self.text()
        );
        self
    }

    /// Panics when any escape sequence was written, showing the first.
    fn assert_plain(&self) -> &Self {
        if let Some(at) = self.bytes.iter().position(|byte| *byte == ESC) {
            let context = &self.bytes[at.saturating_sub(60)..(at + 20).min(self.bytes.len())];
            panic!(
                "ESC at byte {at}: {:?}\n--- whole output\n{}",
                String::from_utf8_lossy(context),
                self.text()
            );
        }
        self
    }
}

/// Runs `vilab ARGS` in `workspace` with stdout and stderr on a pseudo-terminal, `TERM=xterm`
/// and `env` on top (the helper already removed NO_COLOR and VILAB_*).
fn on_terminal(workspace: &Workspace, args: &[&str], env: &[(&str, &str)]) -> Screen {
    let (mut master, slave) = open_pty();
    let mut command = workspace.command(args);
    command
        .env("TERM", "xterm-256color")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .envs(env.iter().copied())
        .stdout(Stdio::from(slave.try_clone().expect("dup the pty slave")))
        .stderr(Stdio::from(slave));
    let mut child = command.spawn().expect("vilab starts");
    // The command holds our copies of the slave: once they are closed, reading the master ends
    // (with EIO) when the child has exited.
    drop(command);
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match master.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => bytes.extend_from_slice(&buffer[..count]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: every slave descriptor is closed.
                Err(_) => break,
            }
        }
        bytes
    });
    let status = wait_until_done(&mut child, PROCESS_TIMEOUT);
    Screen {
        code: status.code().unwrap_or(-1),
        bytes: reader.join().expect("pty reader"),
    }
}

/// A workspace with a few classes of data1/ and the tiny experiment.
fn tiny_workspace() -> Workspace {
    let workspace = small_workspace(&["Bag", "Coat", "Sandal"], 24);
    workspace.write("exp.yaml", EXPERIMENT);
    workspace
}

/// `vilab -v [FLAGS] run exp.yaml` on a terminal, checked to have done the whole pipeline.
fn run_on_terminal(flags: &[&str], env: &[(&str, &str)]) -> Screen {
    let workspace = tiny_workspace();
    let mut args = vec!["-v"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["run", "exp.yaml", "--out", "out"]);
    let screen = on_terminal(&workspace, &args, env);
    screen.assert_code(0);
    let text = screen.text();
    // Every kind of line we print was printed: the debug log, stage lines, the summary.
    for expected in [
        "DEBUG",
        "split",
        "train",
        "evaluate",
        "done in",
        "out/tiny/",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    screen
}

#[test]
fn no_color_set_prints_no_escape_sequence_on_a_terminal() {
    run_on_terminal(&[], &[("NO_COLOR", "1")]).assert_plain();
}

#[test]
fn color_never_prints_no_escape_sequence_on_a_terminal() {
    run_on_terminal(&["--color", "never"], &[]).assert_plain();
}

#[test]
fn color_always_and_auto_on_a_terminal_print_escape_sequences() {
    for flags in [&["--color", "always"][..], &[]] {
        let screen = run_on_terminal(flags, &[]);
        let text = screen.text();
        // The log's level in colour, and progress drawn over itself (erase line).
        let log_line = text
            .split('\n')
            .find(|line| line.contains("DEBUG"))
            .unwrap_or_default();
        assert!(
            log_line.contains('\x1b'),
            "{flags:?}: the log line is not coloured on a terminal:\n{text}"
        );
        assert!(
            text.contains("\x1b[2K"),
            "{flags:?}: no progress redrawn on a terminal:\n{text}"
        );
    }
}

/// Arguments, environment, and whether escape sequences must appear.
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    bool,
);

#[test]
fn explicit_always_beats_no_color_and_a_dumb_terminal_gets_none() {
    let workspace = Workspace::new();
    let cases: [Case; 5] = [
        (&["--color", "always"], &[("NO_COLOR", "1")], true),
        (&["--color=always"], &[("TERM", "dumb")], true),
        (&[], &[("TERM", "dumb")], false),
        (&["--color", "auto"], &[("NO_COLOR", "1")], false),
        // An empty NO_COLOR does not count (no-color.org).
        (&[], &[("NO_COLOR", "")], true),
    ];
    for (flags, env, coloured) in cases {
        // `-v` logs a debug line before the verb fails on the missing file.
        let mut args = vec!["-v"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["validate", "missing.yaml"]);
        let screen = on_terminal(&workspace, &args, env);
        screen.assert_code(2);
        assert!(screen.text().contains("DEBUG"), "{}", screen.text());
        assert_eq!(
            screen.has_escape(),
            coloured,
            "{flags:?} {env:?}:\n{}",
            screen.text()
        );
    }
}

#[test]
fn help_is_coloured_only_when_colour_is_on() {
    let workspace = Workspace::new();
    let cases: [Case; 4] = [
        (&["run", "--help"], &[], true),
        (&["run", "--help"], &[("NO_COLOR", "1")], false),
        (&["--color", "never", "run", "--help"], &[], false),
        (
            &["run", "--help", "--color", "always"],
            &[("NO_COLOR", "1")],
            true,
        ),
    ];
    for (args, env, coloured) in cases {
        let screen = on_terminal(&workspace, args, env);
        screen.assert_code(0);
        assert!(screen.text().contains("Usage:"), "{}", screen.text());
        assert_eq!(
            screen.has_escape(),
            coloured,
            "{args:?} {env:?}:\n{}",
            screen.text()
        );
    }
}
