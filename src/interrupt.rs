//! Ctrl-C, SIGTERM, SIGHUP and SIGUSR1.
//!
//! Outside a graceful section (data stages, planning) a signal ends the process at once with
//! exit code 130: cache entries are committed by an atomic rename, so whatever was being
//! written stays in `cache/tmp/` and is never read, and lock files are released by the kernel.
//! Inside a graceful section (a training epoch) the first signal only raises a flag that the
//! loop polls, so it can finish the step, write a checkpoint and return; a second signal ends
//! the process immediately.
//!
//! SIGUSR1 is the warning a Slurm batch script asks for before its time limit
//! (`#SBATCH --signal=B:USR1@N`, see [`crate::launcher::requeue`]); it is handled like SIGTERM,
//! except that a [warning filter](set_warning_filter) may find it early and ignore it. A
//! [stop hook](set_stop_hook) runs before the process ends at once, so a Slurm task can
//! requeue itself even when no checkpoint is due.
//!
//! The handlers are signal-hook's: the signal only wakes a thread of ours, which does the rest
//! in ordinary code (printing, asking Slurm, exiting), none of it inside a signal handler.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

/// The exit code of a process stopped by a signal (128 + SIGINT), at once or gracefully.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The signal that raised the flag (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
static GRACEFUL_DEPTH: AtomicUsize = AtomicUsize::new(0);

type StopHook = Box<dyn Fn(Signal) + Send + Sync>;
type WarningFilter = Box<dyn Fn() -> bool + Send + Sync>;

static STOP_HOOK: OnceLock<StopHook> = OnceLock::new();
static WARNING_FILTER: OnceLock<WarningFilter> = OnceLock::new();

/// The signals vilab stops on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT, Ctrl-C.
    Interrupt,
    /// SIGTERM: `kill`, `scancel`, or Slurm preempting or requeueing the job.
    Terminate,
    /// SIGHUP: the terminal went away.
    HangUp,
    /// SIGUSR1: the batch script's warning that its time limit is near.
    TimeLimitWarning,
}

impl Signal {
    fn from_number(number: i32) -> Option<Self> {
        match number {
            SIGINT => Some(Self::Interrupt),
            SIGTERM => Some(Self::Terminate),
            SIGHUP => Some(Self::HangUp),
            SIGUSR1 => Some(Self::TimeLimitWarning),
            _ => None,
        }
    }

    fn number(self) -> i32 {
        match self {
            Self::Interrupt => SIGINT,
            Self::Terminate => SIGTERM,
            Self::HangUp => SIGHUP,
            Self::TimeLimitWarning => SIGUSR1,
        }
    }

    /// `SIGINT`, `SIGTERM` or `SIGUSR1`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::HangUp => "SIGHUP",
            Self::TimeLimitWarning => "SIGUSR1",
        }
    }

    /// What the signal means, for logs and records.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Interrupt => "interrupted (SIGINT)",
            Self::Terminate => "terminated (SIGTERM)",
            Self::HangUp => "hung up (SIGHUP)",
            Self::TimeLimitWarning => "time limit near (SIGUSR1)",
        }
    }
}

/// Installs the handlers; call once at start-up. Should that fail, the default behaviour
/// stays, which also stops the process (without a checkpoint), and a warning says so.
pub fn install() {
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1])
    {
        Ok(signals) => signals,
        Err(error) => {
            tracing::warn!("signal handlers not installed ({error}): a signal stops vilab at once");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            for number in signals.forever() {
                if let Some(signal) = Signal::from_number(number) {
                    handle(signal);
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!("signal thread not started ({error})");
    }
}

fn handle(signal: Signal) {
    if signal == Signal::TimeLimitWarning
        && let Some(filter) = WARNING_FILTER.get()
        && !filter()
    {
        return;
    }
    let graceful = GRACEFUL_DEPTH.load(Ordering::SeqCst) > 0;
    let first = RECEIVED
        .compare_exchange(0, signal.number(), Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if graceful && first {
        eprintln!(
            "{}: finishing the current step and saving a checkpoint (again to quit now)",
            signal.meaning()
        );
        return;
    }
    eprintln!("{}", signal.meaning());
    if let Some(hook) = STOP_HOOK.get() {
        hook(signal);
    }
    std::process::exit(i32::from(EXIT_INTERRUPTED));
}

/// Whether a signal arrived during a graceful section.
pub fn requested() -> bool {
    RECEIVED.load(Ordering::SeqCst) != 0
}

/// The signal that asked a graceful section to stop, if one did.
pub fn received() -> Option<Signal> {
    Signal::from_number(RECEIVED.load(Ordering::SeqCst))
}

/// Sets what runs (on the signal thread) before a signal ends the process at once; the
/// first call wins.
pub fn set_stop_hook(hook: impl Fn(Signal) + Send + Sync + 'static) {
    let _ = STOP_HOOK.set(Box::new(hook));
}

/// Sets the check a SIGUSR1 must pass to count (false: the warning is ignored); the first
/// call wins.
pub fn set_warning_filter(filter: impl Fn() -> bool + Send + Sync + 'static) {
    let _ = WARNING_FILTER.set(Box::new(filter));
}

/// Marks a graceful section until dropped.
#[must_use = "the section ends when the guard is dropped"]
pub struct GracefulSection(());

/// Starts a graceful section: signals raise [`requested`] instead of exiting.
pub fn graceful() -> GracefulSection {
    GRACEFUL_DEPTH.fetch_add(1, Ordering::SeqCst);
    GracefulSection(())
}

impl Drop for GracefulSection {
    fn drop(&mut self) {
        GRACEFUL_DEPTH.fetch_sub(1, Ordering::SeqCst);
    }
}
