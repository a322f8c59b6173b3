//! Image data: from a folder of class sub-folders to packed, normalisable training inputs.
//!
//! The data stages call these in order: [`scan`] lists classes and files (metadata only),
//! [`verify`] decodes every file once to find the unreadable ones, [`split`] draws a seeded
//! stratified train/validation split written as [`manifest`]s, [`stats`] measures the per-channel
//! mean and std, and [`pack`] decodes and resizes each split once into a memory-mappable uint8
//! file so training never decodes again; [`transforms`] (seeded augmentations) and [`mixup`]
//! (MixUp/CutMix with label smoothing) prepare batches on the fly, with the costly per-pixel
//! loops in `kernels` (AVX2 when the processor has it, bit-identical either way). [`image`] holds
//! the decoding and resizing all of them share, [`idx`] turns MNIST-style IDX files into an image
//! folder, and [`error`] the one error type. Nothing here ever writes under the data root.

pub mod error;
pub mod idx;
pub mod image;
mod kernels;
pub mod loader;
pub mod manifest;
pub mod mixup;
pub mod pack;
pub mod preview;
pub mod scan;
pub mod split;
pub mod stats;
pub mod transforms;
pub mod verify;

pub use error::DataError;
