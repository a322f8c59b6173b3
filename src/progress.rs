//! Progress display behind one small type: indicatif bars and spinners on a terminal when
//! colour is on, plain lines otherwise (CI logs, pipes, `NO_COLOR`, `--color never`), and nothing
//! at all with `--quiet`; and the one decision whether stderr gets colour and escape sequences
//! at all ([`ColorChoice::decide`]).
//!
//! Everything goes to stderr; stdout is kept for results (the run folder's path, tables).

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// When stderr gets colour and terminal escape sequences (`--color`): log colours, progress
/// bars and spinners (whose redraws move the cursor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// When stderr is a terminal, `NO_COLOR` is unset or empty and `TERM` is not `dumb`.
    #[default]
    Auto,
    /// Always, even on a pipe or with `NO_COLOR` set.
    Always,
    /// Never: plain lines without a single escape sequence.
    Never,
}

impl ColorChoice {
    /// Whether stderr gets colour and escape sequences: the choice, and for `auto` whether
    /// stderr is a terminal, `NO_COLOR` and `TERM`.
    pub fn decide(self) -> bool {
        self.decide_with(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
        )
    }

    /// [`Self::decide`] for a given terminal and environment.
    pub fn decide_with(
        self,
        terminal: bool,
        no_color: Option<&OsStr>,
        term: Option<&OsStr>,
    ) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => {
                // https://no-color.org: any non-empty value turns colour off.
                let no_color = no_color.is_some_and(|value| !value.is_empty());
                let dumb = term.is_some_and(|value| value == "dumb");
                terminal && !no_color && !dumb
            }
        }
    }
}

/// Shows what the runner is doing.
#[derive(Debug, Clone)]
pub struct Reporter {
    multi: MultiProgress,
    interactive: bool,
    quiet: bool,
}

impl Reporter {
    /// A reporter for stderr. `color` is the decision of [`ColorChoice::decide`]: bars and
    /// spinners only when it is on and stderr is a terminal; plain lines otherwise.
    pub fn new(quiet: bool, color: bool) -> Self {
        let interactive = !quiet && color && std::io::stderr().is_terminal();
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            interactive,
            quiet,
        }
    }

    /// A reporter that prints nothing.
    pub fn silent() -> Self {
        Self::new(true, false)
    }

    /// Prints one line above any bars.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.interactive {
            let _ = self.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// A stage's status line: `split    cached`.
    pub fn stage(&self, stage: &str, text: &str) {
        self.line(&format!("{stage:<9}{text}"));
    }

    /// An indented note under the current stage.
    pub fn note(&self, text: &str) {
        self.line(&format!("{:<9}{text}", ""));
    }

    /// A bar with a known length (hidden when not interactive).
    pub fn bar(&self, length: u64, stage: &str, what: &str) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::hidden();
        }
        let bar = self.multi.add(ProgressBar::new(length));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:<9}{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(stage.to_owned());
        bar.set_message(what.to_owned());
        bar
    }

    /// A spinner for work of unknown length (hidden when not interactive).
    pub fn spinner(&self, stage: &str, what: &str) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::hidden();
        }
        let spinner = self.multi.add(ProgressBar::new_spinner());
        spinner.set_style(
            ProgressStyle::with_template("{prefix:<9}{msg} {spinner} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        spinner.set_prefix(stage.to_owned());
        spinner.set_message(what.to_owned());
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::ColorChoice;

    #[test]
    fn auto_colours_only_a_terminal_without_no_color_or_a_dumb_term() {
        let xterm = Some(OsStr::new("xterm-256color"));
        assert!(ColorChoice::Auto.decide_with(true, None, xterm));
        assert!(ColorChoice::Auto.decide_with(true, None, None));
        assert!(ColorChoice::Auto.decide_with(true, Some(OsStr::new("")), xterm));
        assert!(!ColorChoice::Auto.decide_with(false, None, xterm));
        assert!(!ColorChoice::Auto.decide_with(true, Some(OsStr::new("1")), xterm));
        assert!(!ColorChoice::Auto.decide_with(true, Some(OsStr::new("0")), xterm));
        assert!(!ColorChoice::Auto.decide_with(true, None, Some(OsStr::new("dumb"))));
    }

    #[test]
    fn always_and_never_ignore_the_environment() {
        let no_color = Some(OsStr::new("1"));
        assert!(ColorChoice::Always.decide_with(false, no_color, Some(OsStr::new("dumb"))));
        assert!(!ColorChoice::Never.decide_with(true, None, Some(OsStr::new("xterm"))));
    }
}
