//! Ctrl-C and SIGTERM.
//!
//! Outside a graceful section (data stages, planning) an interrupt ends the process at once
//! with exit code 130: cache entries are committed by an atomic rename, so whatever was being
//! written stays in `cache/tmp/` and is never read, and lock files are released by the kernel.
//! Inside a graceful section (a training epoch) the first interrupt only raises a flag that the
//! loop polls, so it can finish the step, write a checkpoint and return; a second interrupt
//! ends the process immediately.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The exit code of a process stopped by an interrupt (128 + SIGINT), at once or gracefully.
pub const EXIT_INTERRUPTED: u8 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static GRACEFUL_DEPTH: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler; call once at start-up. A failure to install (another handler is
/// already there) leaves the default behaviour, which also stops the process.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        let graceful = GRACEFUL_DEPTH.load(Ordering::SeqCst) > 0;
        if graceful && !REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!(
                "interrupted: finishing the current step and saving a checkpoint (again to quit now)"
            );
        } else {
            eprintln!("interrupted");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });
}

/// Whether an interrupt arrived during a graceful section.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Marks a graceful section until dropped.
#[must_use = "the section ends when the guard is dropped"]
pub struct GracefulSection(());

/// Starts a graceful section: interrupts raise [`requested`] instead of exiting.
pub fn graceful() -> GracefulSection {
    GRACEFUL_DEPTH.fetch_add(1, Ordering::SeqCst);
    GracefulSection(())
}

impl Drop for GracefulSection {
    fn drop(&mut self) {
        GRACEFUL_DEPTH.fetch_sub(1, Ordering::SeqCst);
    }
}
