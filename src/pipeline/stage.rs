//! The kinds of stage an experiment compiles into, with their on-disk format versions.

use serde::{Deserialize, Serialize};

/// A stage of the experiment graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Scan the image folder, drop unreadable files, split train/validation.
    Split,
    /// Per-channel mean and standard deviation of the training images.
    Stats,
    /// Decode and resize every image once into packed uint8 arrays; augmentation preview.
    Augment,
    /// Train the model; history, metrics and exported weights.
    Train,
    /// Scores, per-class report, confusion matrix and misclassified images of the weights.
    Evaluate,
    /// Loss, accuracy and learning-rate curves.
    Plot,
}

impl StageKind {
    /// The stage's name in commands, folders and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Stats => "stats",
            Self::Augment => "augment",
            Self::Train => "train",
            Self::Evaluate => "evaluate",
            Self::Plot => "plot",
        }
    }

    /// Version of the stage's output format; bump it when outputs change meaning, so that old
    /// cache entries are not reused.
    pub fn format_version(self) -> u32 {
        match self {
            Self::Split
            | Self::Stats
            | Self::Augment
            | Self::Train
            | Self::Evaluate
            | Self::Plot => 1,
        }
    }

    /// The folder of this stage's entries inside the cache.
    pub fn cache_folder(self) -> String {
        format!("{}-v{}", self.name(), self.format_version())
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}
