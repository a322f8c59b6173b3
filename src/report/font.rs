//! The font every plot uses, compiled into the binary.
//!
//! plotters' `ab_glyph` backend knows no fonts until one is registered, and looking fonts up on
//! the machine would make plots depend on what happens to be installed. DejaVu Sans (full
//! version, about 740 KB) is bundled rather than a Latin subset because class names come from
//! folder names in any script; its licence is in `assets/fonts/LICENSE-DejaVu.txt`.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

/// The family name plots ask for; the bundled font is registered under it.
pub(crate) const FAMILY: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/fonts/DejaVuSans.ttf"
));

static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Registers the bundled font the first time it is called; false if the font failed to parse.
pub(crate) fn ensure_registered() -> bool {
    *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok())
}
