//! Launchers: who starts the trials of a sweep.
//!
//! The unit of work is always one trial, `vilab run FILE --trial ID`, which needs nothing from
//! whoever started it (see [`crate::runner::sweep`]). The local launcher ([`local`]) starts
//! trial processes on this machine. The
//! Slurm launcher ([`slurm`]) hands the same commands to a Slurm cluster as one job array whose
//! tasks all write to the same output root on a shared filesystem; [`queue`] asks Slurm how
//! those tasks stand, and [`requeue`] lets a task requeue itself when its time runs out or it
//! is preempted.

pub mod local;
pub mod queue;
pub mod requeue;
pub mod slurm;

use std::path::PathBuf;

/// Why talking to Slurm failed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command is not installed here.
    #[error(
        "`{program}` not found on PATH: --launcher slurm needs Slurm's commands (run vilab on a \
         login node of the cluster)"
    )]
    Missing {
        /// The command.
        program: String,
    },
    /// A Slurm command could not be started.
    #[error("cannot run `{program}`: {error}")]
    Spawn {
        /// The command.
        program: String,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// A Slurm command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on standard error, on one line.
        stderr: String,
    },
    /// `sbatch --parsable` printed something that is not a job id.
    #[error("`{command}` printed no job id: {output:?}")]
    NoJobId {
        /// The command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// `slurm.json` could not be read.
    #[error("{path}: {error}", path = path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        error: serde_json::Error,
    },
    /// A path cannot be written into a shell script.
    #[error("{path}: not valid UTF-8, so the batch script cannot name it", path = path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A file of the sweep folder could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The sweep itself could not be planned or refreshed.
    #[error(transparent)]
    Sweep(#[from] crate::runner::sweep::SweepError),
}
