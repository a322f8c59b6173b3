//! Progress display behind one small type: indicatif bars and spinners on a terminal, plain
//! lines otherwise (CI logs, pipes), and nothing at all with `--quiet`.
//!
//! Everything goes to stderr; stdout is kept for results (the run folder's path, tables).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows what the runner is doing.
#[derive(Debug, Clone)]
pub struct Reporter {
    multi: MultiProgress,
    interactive: bool,
    quiet: bool,
}

impl Reporter {
    /// A reporter for stderr: bars only when stderr is a terminal.
    pub fn new(quiet: bool) -> Self {
        let interactive = !quiet && std::io::stderr().is_terminal();
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
        Self::new(true)
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
