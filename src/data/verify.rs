//! Finding the unreadable files of a scan before anything depends on them.
//!
//! Scanning looks at metadata only; here every file is decoded once, on all cores, so a truncated
//! PNG or a stray text file is reported up front with a reason instead of failing a later stage.
//! What to do about bad files is the caller's decision ([`BadImagePolicy`]).

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::image::{BadImage, decode_rgb8};
use crate::data::scan::ScannedFile;

/// What to do with files under the data root that cannot be decoded.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BadImagePolicy {
    /// Leave them out, warn, and list them with the reason in `skipped.csv`.
    #[default]
    Skip,
    /// Stop with an error naming the first bad file.
    Fail,
}

/// Decodes every file in `files` (paths relative to `root`) in parallel.
///
/// The result has one entry per file, in the same order: `Ok(())` for a usable image, or why not.
pub fn verify_images(root: &Path, files: &[ScannedFile]) -> Vec<Result<(), BadImage>> {
    files
        .par_iter()
        .map(|file| decode_rgb8(&file.path_under(root)).map(drop))
        .collect()
}
