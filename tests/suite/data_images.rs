//! Decoding the awkward fixture images (tests/fixtures/odd_images, made by make_odd_images.py):
//! every good file becomes 8-bit RGB of its true size with the pixel values the generator wrote,
//! every bad file gets the expected short reason, and a decompression bomb is refused unread.
//!
//! Expected pixels are recomputed here from the generator's formulas, so these tests are an
//! independent check of the decoders' conversions (grey, alpha, 16-bit, CMYK, BMP).

use std::path::{Path, PathBuf};

use image::RgbImage;
use vilab::data::image::{BadImage, decode_rgb8, load_resized, resize_square};
use vilab::data::scan::scan_image_folder;
use vilab::data::verify::{BadImagePolicy, verify_images};

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/odd_images")
        .join(relative)
}

fn decode(relative: &str) -> RgbImage {
    decode_rgb8(&fixture(relative)).unwrap_or_else(|reason| panic!("{relative}: {reason}"))
}

/// The first three channels of make_odd_images.py's `pattern` at (x, y).
fn pattern(x: u32, y: u32, width: u32, height: u32) -> [u8; 3] {
    [
        (x * 255 / (width - 1).max(1)) as u8,
        (y * 255 / (height - 1).max(1)) as u8,
        ((x + y) * 37 % 256) as u8,
    ]
}

fn assert_pattern(relative: &str, width: u32, height: u32, grey: bool) {
    let image = decode(relative);
    assert_eq!(image.dimensions(), (width, height), "{relative}");
    for (x, y, pixel) in image.enumerate_pixels() {
        let expected = pattern(x, y, width, height);
        let expected = if grey { [expected[0]; 3] } else { expected };
        assert_eq!(pixel.0, expected, "{relative} at ({x}, {y})");
    }
}

#[test]
fn eight_bit_pngs_and_bmp_decode_to_exact_pixels() {
    assert_pattern("Black-grass/rgb.png", 40, 30, false);
    assert_pattern("Common chickweed/bitmap.bmp", 19, 23, false);
    assert_pattern("Common chickweed/more photos/leaf photo.png", 16, 12, false);
    assert_pattern("Löwenzahn/one_pixel.png", 1, 1, false);
}

#[test]
fn grey_is_replicated_to_three_channels() {
    assert_pattern("Black-grass/grey.png", 33, 17, true);
    assert_pattern("Black-grass/grey_alpha.png", 20, 28, true);
}

#[test]
fn alpha_is_dropped_not_composited() {
    // The fourth channel ((x·y·11) mod 256) is alpha; compositing over any background would
    // change the colour wherever alpha < 255, which is most pixels.
    assert_pattern("Black-grass/rgba.png", 24, 24, false);
}

#[test]
fn content_decides_the_format_not_the_extension() {
    assert_pattern("Löwenzahn/really_png.jpg", 25, 35, false);
}

#[test]
fn sixteen_bit_samples_scale_to_eight_bits() {
    let close = |actual: u8, wide: u32| {
        (i32::from(actual) - (wide as f64 / 257.0).round() as i32).abs() <= 1
    };
    let image = decode("Common chickweed/rgb16.png");
    assert_eq!(image.dimensions(), (21, 13));
    for (x, y, pixel) in image.enumerate_pixels() {
        let wide = [x * 65535 / 20, y * 65535 / 12, (x + y) * 4099 % 65536];
        for channel in 0..3 {
            assert!(
                close(pixel.0[channel], wide[channel]),
                "({x}, {y}) {:?} vs {wide:?}",
                pixel.0
            );
        }
    }
    let grey = decode("Löwenzahn/grey16.png");
    assert_eq!(grey.dimensions(), (18, 14));
    for (x, y, pixel) in grey.enumerate_pixels() {
        let wide = (x * 3000 + y * 1700) % 65536;
        assert!(
            close(pixel.0[0], wide),
            "({x}, {y}) {:?} vs {wide}",
            pixel.0
        );
        assert_eq!(pixel.0[0], pixel.0[1]);
        assert_eq!(pixel.0[0], pixel.0[2]);
    }
}

#[test]
fn cmyk_jpeg_converts_to_rgb() {
    // Pillow wrote CMYK (c, m, y, k) = (x ramp, y ramp, (x+y)·37, x·y·11); the RGB a reader should
    // see is (255 − c)(255 − k)/255 per channel. JPEG is lossy (quality 90, chroma subsampling on
    // sharp diagonals), so compare the mean error, which a wrong conversion (inverted CMYK, K
    // ignored, channels swapped) pushes far above the tolerance.
    let image = decode("Common chickweed/cmyk.jpg");
    assert_eq!(image.dimensions(), (30, 20));
    let mut total_error = 0.0;
    for (x, y, pixel) in image.enumerate_pixels() {
        let cmy = [x * 255 / 29, y * 255 / 19, (x + y) * 37 % 256];
        let key = x * y * 11 % 256;
        for (&ink, &value) in cmy.iter().zip(&pixel.0) {
            let expected = f64::from((255 - ink) * (255 - key)) / 255.0;
            total_error += (f64::from(value) - expected).abs();
        }
    }
    let mean_error = total_error / (30.0 * 20.0 * 3.0);
    assert!(mean_error < 12.0, "mean absolute error {mean_error:.1}");
}

#[test]
fn bad_files_get_short_reasons() {
    let reason = |relative: &str| decode_rgb8(&fixture(relative)).unwrap_err();
    assert_eq!(reason("Black-grass/empty.png"), BadImage::Empty);
    assert_eq!(
        reason("Black-grass/empty.png").to_string(),
        "empty file (0 bytes)"
    );
    assert_eq!(
        reason("Common chickweed/notes.jpg").to_string(),
        "not an image (unrecognised format)"
    );
    let truncated = reason("Löwenzahn/truncated.png").to_string();
    assert!(
        truncated.starts_with("truncated or corrupt PNG: "),
        "{truncated}"
    );
    let missing = reason("Black-grass/no_such_file.png").to_string();
    assert!(missing.starts_with("cannot read file: "), "{missing}");
}

/// A PNG whose header claims `width`×`height` pixels, followed by a tiny, valid IDAT.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        [
            &(data.len() as u32).to_be_bytes()[..],
            kind,
            data,
            &crc.sum().to_be_bytes()[..],
        ]
        .concat()
    }
    let header = [
        &width.to_be_bytes()[..],
        &height.to_be_bytes()[..],
        &[8, 2, 0, 0, 0],
    ]
    .concat();
    let mut compressed = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut compressed, &[0; 4096]).unwrap();
    [
        &b"\x89PNG\r\n\x1a\n"[..],
        &chunk(b"IHDR", &header),
        &chunk(b"IDAT", &compressed.finish().unwrap()),
        &chunk(b"IEND", &[]),
    ]
    .concat()
}

#[test]
fn decompression_bomb_is_refused_by_its_header() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("bomb.png");
    std::fs::write(&path, png_claiming(40_000, 40_000)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 200);
    assert_eq!(
        decode_rgb8(&path).unwrap_err().to_string(),
        "too large: 40000×40000 pixels (limit 16384 per side and 128 Mpixel)"
    );
    // Within each side's limit but over the pixel budget.
    std::fs::write(&path, png_claiming(16_000, 16_000)).unwrap();
    assert_eq!(
        decode_rgb8(&path).unwrap_err(),
        BadImage::TooLarge {
            width: 16_000,
            height: 16_000
        }
    );
}

#[test]
fn load_resized_is_decode_then_resize() {
    let path = fixture("Black-grass/rgba.png");
    let resized = load_resized(&path, 10).unwrap();
    assert_eq!(resized.dimensions(), (10, 10));
    assert_eq!(resized, resize_square(&decode_rgb8(&path).unwrap(), 10));
    // Upscaling a 1×1 image gives a flat square of its colour.
    let dot = load_resized(&fixture("Löwenzahn/one_pixel.png"), 5).unwrap();
    assert!(dot.pixels().all(|pixel| pixel.0 == [0, 0, 0]));
}

#[test]
fn verify_finds_exactly_the_bad_files() {
    let root = fixture("");
    let scan = scan_image_folder(&root).unwrap();
    let results = verify_images(&root, &scan.files);
    assert_eq!(results.len(), scan.files.len());
    let bad: Vec<(&str, String)> = scan
        .files
        .iter()
        .zip(&results)
        .filter_map(|(file, result)| {
            let reason = result.as_ref().err()?.to_string();
            Some((file.rel_path.as_str(), reason.split(':').next()?.to_owned()))
        })
        .collect();
    assert_eq!(
        bad,
        [
            ("Black-grass/empty.png", "empty file (0 bytes)".to_owned()),
            (
                "Common chickweed/notes.jpg",
                "not an image (unrecognised format)".to_owned()
            ),
            (
                "Löwenzahn/truncated.png",
                "truncated or corrupt PNG".to_owned()
            ),
        ]
    );
}

#[test]
fn bad_image_policy_reads_snake_case() {
    let policy: BadImagePolicy = serde_json::from_str("\"fail\"").unwrap();
    assert_eq!(policy, BadImagePolicy::Fail);
    assert_eq!(
        serde_json::to_string(&BadImagePolicy::Skip).unwrap(),
        "\"skip\""
    );
    assert_eq!(BadImagePolicy::default(), BadImagePolicy::Skip);
    assert!(serde_json::from_str::<BadImagePolicy>("\"ignore\"").is_err());
}
