//! Running what the pipeline planned: one experiment into its run folder ([`run`]), one trial of
//! a sweep and the sweep folder around it ([`sweep`]), and the sweep's summary ([`summary`]).
//! Who starts the trials of a sweep is the launchers' business (`crate::launcher`).
//! [`catalog`] lists what an output root holds: every run's state and results (`vilab runs`).

pub mod catalog;
pub mod run;
pub mod summary;
pub mod sweep;
