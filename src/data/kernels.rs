//! The per-pixel loops of the expensive augmentations (rotation, Gaussian blur, saturation), each
//! with a plain version and an AVX2 version chosen at run time.
//!
//! The loader runs these on every sample of every epoch, so at 224² they decide whether it can
//! feed a GPU. No image crate implements torchvision's semantics for them (bilinear rotation
//! about the centre with a fill, the reflected-border Gaussian kernel, PIL's saturation blend),
//! and faster approximations (fixed-point weights, box blurs) would change the pixels a recipe
//! promises; so they are hand-written here, twice. The AVX2 version performs, lane by lane, the
//! same IEEE operations in the same order as the plain one (no fused multiply-add, no
//! reassociation), so both give bit-identical images: which one runs depends on the processor,
//! never the result. The tests below hold them to that on random inputs.
//!
//! The plain versions are the specification; the AVX2 ones live in [`avx2`] and are only called
//! after `is_x86_feature_detected!("avx2")`.

use image::RgbImage;

/// Whether the AVX2 versions may run on this processor (checked once, then cached by std).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How a rotation maps output pixels to source positions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rotation {
    pub sin: f64,
    pub cos: f64,
    pub fill: [u8; 3],
}

/// Rotates `image` counter-clockwise about its centre into `rotated` (same size) with bilinear
/// sampling; source positions outside the image read as `fill`.
pub(crate) fn rotate(image: &RgbImage, rotation: Rotation, rotated: &mut RgbImage) {
    debug_assert_eq!(image.dimensions(), rotated.dimensions());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && avx2::fits(image) {
        // SAFETY: AVX2 was detected on this processor just above.
        unsafe { avx2::rotate(image, rotation, rotated) };
        return;
    }
    let geometry = RotationGeometry::new(image, rotation);
    for (row, output_row) in rotated.chunks_exact_mut(geometry.row_len).enumerate() {
        geometry.rotate_span(image.as_raw(), row, 0, output_row);
    }
}

/// What every pixel of a rotation shares.
struct RotationGeometry {
    width: i64,
    height: i64,
    row_len: usize,
    sin: f64,
    cos: f64,
    center_x: f64,
    center_y: f64,
    fill: [f32; 4],
}

impl RotationGeometry {
    fn new(image: &RgbImage, rotation: Rotation) -> RotationGeometry {
        let (width, height) = image.dimensions();
        let [red, green, blue] = rotation.fill.map(f32::from);
        RotationGeometry {
            width: i64::from(width),
            height: i64::from(height),
            row_len: width as usize * 3,
            sin: rotation.sin,
            cos: rotation.cos,
            center_x: (f64::from(width) - 1.0) / 2.0,
            center_y: (f64::from(height) - 1.0) / 2.0,
            fill: [red, green, blue, 0.0],
        }
    }

    /// Output row `row` from column `first` on, into `output` (three bytes a pixel).
    fn rotate_span(&self, raw: &[u8], row: usize, first: usize, output: &mut [u8]) {
        // Inverse mapping: the output pixel comes from the source rotated back by the angle
        // (image rows grow downwards, hence the signs).
        let offset_y = row as f64 - self.center_y;
        let (row_sin, row_cos) = (offset_y * self.sin, offset_y * self.cos);
        for (column, pixel) in (first..).zip(output.chunks_exact_mut(3)) {
            let offset_x = column as f64 - self.center_x;
            let source_x = self.center_x + offset_x * self.cos - row_sin;
            let source_y = self.center_y + offset_x * self.sin + row_cos;
            pixel.copy_from_slice(&self.sample(raw, source_x, source_y));
        }
    }

    /// The bilinear sample at (`source_x`, `source_y`), rounded half up.
    fn sample(&self, raw: &[u8], source_x: f64, source_y: f64) -> [u8; 3] {
        let (base_x, weight_x) = split_floor(source_x);
        let (base_y, weight_y) = split_floor(source_y);
        let at = |start: usize| [raw[start], raw[start + 1], raw[start + 2]].map(f32::from);
        let read = |x: i64, y: i64| -> [f32; 3] {
            if (0..self.width).contains(&x) && (0..self.height).contains(&y) {
                at((y * self.width + x) as usize * 3)
            } else {
                [self.fill[0], self.fill[1], self.fill[2]]
            }
        };
        let [top_left, top_right, bottom_left, bottom_right] = [
            read(base_x, base_y),
            read(base_x + 1, base_y),
            read(base_x, base_y + 1),
            read(base_x + 1, base_y + 1),
        ];
        std::array::from_fn(|channel| {
            let top = top_left[channel] + (top_right[channel] - top_left[channel]) * weight_x;
            let bottom =
                bottom_left[channel] + (bottom_right[channel] - bottom_left[channel]) * weight_x;
            (top + (bottom - top) * weight_y + 0.5) as u8
        })
    }
}

/// Blurs `image` into `blurred` (same size) with the separable `kernel` (odd length) along rows
/// and then columns, borders reflected, rounding half up to u8 at the end.
/// `rows` holds the intermediate floats between calls.
pub(crate) fn blur(image: &RgbImage, kernel: &[f32], blurred: &mut RgbImage, rows: &mut Vec<f32>) {
    debug_assert_eq!(image.dimensions(), blurred.dimensions());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 was detected on this processor just above.
        unsafe { avx2::blur(image, kernel, blurred, rows) };
        return;
    }
    blur_loops(image, kernel, blurred, rows, |sums, levels| {
        for (level, sum) in levels.iter_mut().zip(sums) {
            *level = to_level(sum);
        }
    });
}

/// A blurred sum as a level: rounded half up and clamped (the sums lie in [0, 255] up to
/// rounding).
fn to_level(sum: f32) -> u8 {
    (sum + 0.5).clamp(0.0, 255.0) as u8
}

/// A horizontal pass over reflected-padded rows into floats, then a vertical pass. Each output
/// value is the sum over the taps in kernel order starting from zero; eight neighbouring values
/// are summed side by side in an array the compiler keeps in vector registers, and inlined into
/// the AVX2 version the same loops get twice the vector width.
/// `to_levels` turns eight sums into levels as [`to_level`] does; the AVX2 version passes a vector
/// one, since the compiler does not vectorise the saturating cast.
#[inline(always)]
fn blur_loops(
    image: &RgbImage,
    kernel: &[f32],
    blurred: &mut RgbImage,
    rows: &mut Vec<f32>,
    to_levels: impl Fn([f32; LANES], &mut [u8]),
) {
    let radius = kernel.len() / 2;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let row_len = width * 3;
    let raw = image.as_raw();
    let mut padded = vec![0.0_f32; (width + 2 * radius) * 3];
    // Every value is overwritten below; `resize` only zeroes what the buffer lacked.
    rows.resize(raw.len(), 0.0);
    let horizontal = rows.as_mut_slice();
    for (source_row, output_row) in raw
        .chunks_exact(row_len)
        .zip(horizontal.chunks_exact_mut(row_len))
    {
        for (value, &level) in padded[radius * 3..].iter_mut().zip(source_row) {
            *value = f32::from(level);
        }
        for position in (0..radius).chain(radius + width..width + 2 * radius) {
            let column = reflect(position as i64 - radius as i64, width);
            for channel in 0..3 {
                padded[position * 3 + channel] = f32::from(source_row[column * 3 + channel]);
            }
        }
        let taps: Vec<&[f32]> = (0..kernel.len()).map(|tap| &padded[tap * 3..]).collect();
        convolve_row(kernel, &taps, output_row, |sums, values| {
            for (value, sum) in values.iter_mut().zip(sums) {
                *value = sum;
            }
        });
    }
    for (row, output_row) in blurred.chunks_exact_mut(row_len).enumerate() {
        let taps: Vec<&[f32]> = (0..kernel.len())
            .map(|tap| {
                let source_row = reflect(row as i64 + tap as i64 - radius as i64, height);
                &horizontal[source_row * row_len..(source_row + 1) * row_len]
            })
            .collect();
        convolve_row(kernel, &taps, output_row, &to_levels);
    }
}

/// Sums computed side by side in [`convolve_row`].
const LANES: usize = 8;

/// `output[i] = finish(Σ_tap kernel[tap] · taps[tap][i])`, the sum taken in tap order from 0;
/// `finish` takes eight sums at a time (fewer, zero-padded, at the end of the row).
#[inline(always)]
fn convolve_row<T>(
    kernel: &[f32],
    taps: &[&[f32]],
    output: &mut [T],
    finish: impl Fn([f32; LANES], &mut [T]),
) {
    for (block, values) in output.chunks_mut(LANES).enumerate() {
        let start = block * LANES;
        let mut sums = [0.0_f32; LANES];
        if values.len() == LANES {
            for (&weight, input) in kernel.iter().zip(taps) {
                let source = &input[start..start + LANES];
                for (sum, &value) in sums.iter_mut().zip(source) {
                    *sum += weight * value;
                }
            }
        } else {
            for (&weight, input) in kernel.iter().zip(taps) {
                for (sum, &value) in sums.iter_mut().zip(&input[start..start + values.len()]) {
                    *sum += weight * value;
                }
            }
        }
        finish(sums, values);
    }
}

/// Index into `0..length` for an offset past either edge, mirroring without repeating the edge
/// (PyTorch's "reflect" padding), for any distance.
pub(crate) fn reflect(index: i64, length: usize) -> usize {
    if length == 1 {
        return 0;
    }
    let period = 2 * (length as i64 - 1);
    let folded = index.rem_euclid(period);
    (if folded >= length as i64 {
        period - folded
    } else {
        folded
    }) as usize
}

/// Blends every pixel of `pixels` (RGB bytes) with its own grey level (ITU-R 601-2 luma, in
/// `f64`): `factor·x + (1 − factor)·luma`, rounded half up and clamped to a level.
pub(crate) fn saturate(pixels: &mut [u8], factor: f64) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 was detected on this processor just above.
        unsafe { avx2::saturate(pixels, factor) };
        return;
    }
    saturate_plain(pixels, factor);
}

fn saturate_plain(pixels: &mut [u8], factor: f64) {
    for pixel in pixels.chunks_exact_mut(3) {
        let gray = luma(pixel);
        for value in pixel.iter_mut() {
            *value = (factor * f64::from(*value) + (1.0 - factor) * gray + 0.5) as u8;
        }
    }
}

/// ITU-R 601-2 luma, the weights of PIL's `convert("L")` and torchvision's `rgb_to_grayscale`.
pub(crate) fn luma(pixel: &[u8]) -> f64 {
    0.299 * f64::from(pixel[0]) + 0.587 * f64::from(pixel[1]) + 0.114 * f64::from(pixel[2])
}

/// `(⌊value⌋, value − ⌊value⌋)` without the libm `floor` call.
fn split_floor(value: f64) -> (i64, f32) {
    let truncated = value as i64;
    let floor = if (truncated as f64) > value {
        truncated - 1
    } else {
        truncated
    };
    (floor, (value - floor as f64) as f32)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Eight output pixels at a time: positions and weights in `f64`/`f32` vectors, the four
    //! neighbours fetched with gathers, the channels interpolated as three `f32` vectors.

    use std::arch::x86_64::*;

    use image::RgbImage;

    use super::{Rotation, RotationGeometry};

    /// Whether byte offsets into `image` fit the 32-bit gather indices (always true for images
    /// under `image::MAX_PIXELS`, checked anyway).
    pub(super) fn fits(image: &RgbImage) -> bool {
        image.as_raw().len() < (i32::MAX as usize) / 2
    }

    /// [`super::rotate`] with AVX2.
    ///
    /// # Safety
    /// The processor must support AVX2, and `image` must satisfy [`fits`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rotate(image: &RgbImage, rotation: Rotation, rotated: &mut RgbImage) {
        let geometry = RotationGeometry::new(image, rotation);
        let raw = image.as_raw();
        let width = geometry.width as usize;
        let blocks = width / 8;
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let center_x = _mm256_set1_pd(geometry.center_x);
        let center_y = _mm256_set1_pd(geometry.center_y);
        let sin = _mm256_set1_pd(geometry.sin);
        let cos = _mm256_set1_pd(geometry.cos);
        let half = _mm256_set1_ps(0.5);
        let byte = _mm256_set1_epi32(0xff);
        let width_vector = _mm256_set1_epi32(geometry.width as i32);
        let height_vector = _mm256_set1_epi32(geometry.height as i32);
        let minus_one = _mm256_set1_epi32(-1);
        let three = _mm256_set1_epi32(3);
        let row_bytes = _mm256_set1_epi32(geometry.row_len as i32);
        let [fill_red, fill_green, fill_blue] = rotation.fill.map(i32::from);
        let fill = _mm256_set1_epi32(fill_red | fill_green << 8 | fill_blue << 16);
        let base = raw.as_ptr() as *const i32;
        // `low ≤ value < high` per lane, as a mask.
        let within = |value: __m256i, low: __m256i, high: __m256i| {
            _mm256_and_si256(
                _mm256_cmpgt_epi32(value, _mm256_add_epi32(low, minus_one)),
                _mm256_cmpgt_epi32(high, value),
            )
        };
        for (row, output_row) in rotated.chunks_exact_mut(geometry.row_len).enumerate() {
            let offset_y = row as f64 - geometry.center_y;
            let row_sin = _mm256_set1_pd(offset_y * geometry.sin);
            let row_cos = _mm256_set1_pd(offset_y * geometry.cos);
            for block in 0..blocks {
                let first = block * 8;
                let columns = _mm256_add_epi32(_mm256_set1_epi32(first as i32), lanes);
                let low = _mm256_sub_pd(
                    _mm256_cvtepi32_pd(_mm256_castsi256_si128(columns)),
                    center_x,
                );
                let high = _mm256_sub_pd(
                    _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(columns)),
                    center_x,
                );
                // The plain version's expressions, in its order.
                let source_x = |offset: __m256d| {
                    _mm256_sub_pd(_mm256_add_pd(center_x, _mm256_mul_pd(offset, cos)), row_sin)
                };
                let source_y = |offset: __m256d| {
                    _mm256_add_pd(_mm256_add_pd(center_y, _mm256_mul_pd(offset, sin)), row_cos)
                };
                let (base_x, weight_x) = split_floor(source_x(low), source_x(high));
                let (base_y, weight_y) = split_floor(source_y(low), source_y(high));
                let zero = _mm256_setzero_si256();
                let left_inside = within(base_x, zero, width_vector);
                let right_inside =
                    within(base_x, minus_one, _mm256_add_epi32(width_vector, minus_one));
                let top_inside = within(base_y, zero, height_vector);
                let bottom_inside = within(
                    base_y,
                    minus_one,
                    _mm256_add_epi32(height_vector, minus_one),
                );
                // A 4-byte gather of the image's last pixel would read one byte past the buffer;
                // the few blocks whose neighbourhoods reach it go the plain way. So do positions
                // too far out for 32-bit integers (their conversions give i32::MIN).
                let near_last = _mm256_and_si256(
                    within(
                        base_x,
                        _mm256_sub_epi32(width_vector, _mm256_set1_epi32(2)),
                        width_vector,
                    ),
                    within(
                        base_y,
                        _mm256_sub_epi32(height_vector, _mm256_set1_epi32(2)),
                        height_vector,
                    ),
                );
                let overflow = _mm256_or_si256(
                    _mm256_cmpeq_epi32(base_x, _mm256_set1_epi32(i32::MIN)),
                    _mm256_cmpeq_epi32(base_y, _mm256_set1_epi32(i32::MIN)),
                );
                let output = &mut output_row[first * 3..(first + 8) * 3];
                if _mm256_movemask_epi8(_mm256_or_si256(near_last, overflow)) != 0 {
                    geometry.rotate_span(raw, row, first, output);
                    continue;
                }
                let top_left = _mm256_mullo_epi32(
                    _mm256_add_epi32(_mm256_mullo_epi32(base_y, width_vector), base_x),
                    three,
                );
                let top_right = _mm256_add_epi32(top_left, three);
                let bottom_left = _mm256_add_epi32(top_left, row_bytes);
                let bottom_right = _mm256_add_epi32(bottom_left, three);
                // SAFETY: only lanes whose neighbour lies inside the image are read (the mask),
                // and none of those is the last pixel (checked above), so each 4-byte read ends
                // inside `raw`; offsets fit in i32 (`fits`).
                let gather = |offsets: __m256i, mask: __m256i| unsafe {
                    _mm256_mask_i32gather_epi32::<1>(fill, base, offsets, mask)
                };
                let top_left = gather(top_left, _mm256_and_si256(left_inside, top_inside));
                let top_right = gather(top_right, _mm256_and_si256(right_inside, top_inside));
                let bottom_left = gather(bottom_left, _mm256_and_si256(left_inside, bottom_inside));
                let bottom_right =
                    gather(bottom_right, _mm256_and_si256(right_inside, bottom_inside));
                let channel = |pixels: __m256i, shift: i32| {
                    let shifted = match shift {
                        0 => pixels,
                        8 => _mm256_srli_epi32::<8>(pixels),
                        _ => _mm256_srli_epi32::<16>(pixels),
                    };
                    _mm256_cvtepi32_ps(_mm256_and_si256(shifted, byte))
                };
                let mut packed = _mm256_setzero_si256();
                for shift in [0, 8, 16] {
                    let top_left = channel(top_left, shift);
                    let top_right = channel(top_right, shift);
                    let bottom_left = channel(bottom_left, shift);
                    let bottom_right = channel(bottom_right, shift);
                    let top = _mm256_add_ps(
                        top_left,
                        _mm256_mul_ps(_mm256_sub_ps(top_right, top_left), weight_x),
                    );
                    let bottom = _mm256_add_ps(
                        bottom_left,
                        _mm256_mul_ps(_mm256_sub_ps(bottom_right, bottom_left), weight_x),
                    );
                    let level = _mm256_add_ps(
                        _mm256_add_ps(top, _mm256_mul_ps(_mm256_sub_ps(bottom, top), weight_y)),
                        half,
                    );
                    // Levels lie in [0.5, 255.5]: truncation is the plain version's `as u8`.
                    let level = _mm256_cvttps_epi32(level);
                    let level = match shift {
                        0 => level,
                        8 => _mm256_slli_epi32::<8>(level),
                        _ => _mm256_slli_epi32::<16>(level),
                    };
                    packed = _mm256_or_si256(packed, level);
                }
                let mut pixels = [0_u32; 8];
                // SAFETY: `pixels` is 32 writable bytes; the store has no alignment requirement.
                unsafe { _mm256_storeu_si256(pixels.as_mut_ptr().cast(), packed) };
                for (pixel, value) in output.chunks_exact_mut(3).zip(pixels) {
                    pixel.copy_from_slice(&value.to_le_bytes()[..3]);
                }
            }
            geometry.rotate_span(raw, row, blocks * 8, &mut output_row[blocks * 8 * 3..]);
        }
    }

    /// [`super::blur`] with AVX2: the same loops, compiled for wider vectors.
    ///
    /// # Safety
    /// The processor must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blur(
        image: &RgbImage,
        kernel: &[f32],
        blurred: &mut RgbImage,
        rows: &mut Vec<f32>,
    ) {
        let half = _mm256_set1_ps(0.5);
        super::blur_loops(image, kernel, blurred, rows, |sums, levels| {
            // SAFETY: `sums` is 32 readable bytes; the load has no alignment requirement.
            let sums = unsafe { _mm256_loadu_ps(sums.as_ptr()) };
            // Truncating, then saturating to [0, 255] when packing, is `to_level`'s clamp
            // followed by truncation.
            let integers = _mm256_cvttps_epi32(_mm256_add_ps(sums, half));
            let words = _mm_packs_epi32(
                _mm256_castsi256_si128(integers),
                _mm256_extracti128_si256::<1>(integers),
            );
            let bytes = _mm_packus_epi16(words, words);
            let packed = _mm_cvtsi128_si64(bytes).to_le_bytes();
            let count = levels.len();
            levels.copy_from_slice(&packed[..count]);
        });
    }

    /// [`super::saturate`] with AVX2, four pixels at a time in `f64` lanes.
    ///
    /// # Safety
    /// The processor must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn saturate(pixels: &mut [u8], factor: f64) {
        let red_weight = _mm256_set1_pd(0.299);
        let green_weight = _mm256_set1_pd(0.587);
        let blue_weight = _mm256_set1_pd(0.114);
        let keep = _mm256_set1_pd(factor);
        let blend = _mm256_set1_pd(1.0 - factor);
        let half = _mm256_set1_pd(0.5);
        // Bytes 3k + channel of the 16 loaded go to lane k of a 32-bit vector.
        let spread = |channel: i8| {
            _mm_setr_epi8(
                channel,
                -1,
                -1,
                -1,
                channel + 3,
                -1,
                -1,
                -1,
                channel + 6,
                -1,
                -1,
                -1,
                channel + 9,
                -1,
                -1,
                -1,
            )
        };
        let (red_bytes, green_bytes, blue_bytes) = (spread(0), spread(1), spread(2));
        // From [r0..r3 g0..g3 b0..b3 b0..b3] back to r0 g0 b0 r1 g1 b1 ...
        let interleave = _mm_setr_epi8(0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, 12, 13, 14, 15);
        // Twelve bytes are rewritten per step, sixteen read: stop while sixteen remain.
        let blocks = pixels.len().saturating_sub(4) / 12;
        for block in pixels.chunks_exact_mut(12).take(blocks) {
            // SAFETY: `block` is followed by at least four more bytes of `pixels` (`blocks`
            // leaves them), so the 16-byte load stays inside the slice.
            let loaded = unsafe { _mm_loadu_si128(block.as_ptr().cast()) };
            let channel = |mask: __m128i| _mm256_cvtepi32_pd(_mm_shuffle_epi8(loaded, mask));
            let (red, green, blue) = (
                channel(red_bytes),
                channel(green_bytes),
                channel(blue_bytes),
            );
            // The plain version's expressions, in its order.
            let gray = _mm256_add_pd(
                _mm256_add_pd(
                    _mm256_mul_pd(red_weight, red),
                    _mm256_mul_pd(green_weight, green),
                ),
                _mm256_mul_pd(blue_weight, blue),
            );
            let grey_part = _mm256_mul_pd(blend, gray);
            let level = |value: __m256d| {
                _mm256_cvttpd_epi32(_mm256_add_pd(
                    _mm256_add_pd(_mm256_mul_pd(keep, value), grey_part),
                    half,
                ))
            };
            // Truncation, then saturation to [0, 255] while packing: the plain `as u8`.
            let blue_level = level(blue);
            let bytes = _mm_packus_epi16(
                _mm_packs_epi32(level(red), level(green)),
                _mm_packs_epi32(blue_level, blue_level),
            );
            let mut out = [0_u8; 16];
            // SAFETY: `out` is 16 writable bytes; the store has no alignment requirement.
            unsafe {
                _mm_storeu_si128(out.as_mut_ptr().cast(), _mm_shuffle_epi8(bytes, interleave))
            };
            block.copy_from_slice(&out[..12]);
        }
        super::saturate_plain(&mut pixels[blocks * 12..], factor);
    }

    /// [`super::split_floor`] for eight positions given as two halves: the floors as integers
    /// and the fractions as `f32`.
    #[target_feature(enable = "avx2")]
    fn split_floor(low: __m256d, high: __m256d) -> (__m256i, __m256) {
        let floor_low = _mm256_floor_pd(low);
        let floor_high = _mm256_floor_pd(high);
        let integers = _mm256_set_m128i(
            _mm256_cvttpd_epi32(floor_high),
            _mm256_cvttpd_epi32(floor_low),
        );
        let fractions = _mm256_set_m128(
            _mm256_cvtpd_ps(_mm256_sub_pd(high, floor_high)),
            _mm256_cvtpd_ps(_mm256_sub_pd(low, floor_low)),
        );
        (integers, fractions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_image(width: u32, height: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        let mut image = RgbImage::new(width, height);
        rng.fill(image.as_mut());
        image
    }

    /// Both versions on odd sizes (partial blocks), all angles and fills: bit-identical.
    #[test]
    fn rotation_versions_agree_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (width, height) in [(224, 224), (37, 19), (8, 8), (5, 41), (1, 1)] {
            let image = random_image(width, height, &mut rng);
            for _ in 0..12 {
                let degrees: f64 = rng.random_range(-180.0..180.0);
                let (sin, cos) = degrees.to_radians().sin_cos();
                let rotation = Rotation {
                    sin,
                    cos,
                    fill: rng.random(),
                };
                let mut fast = RgbImage::new(width, height);
                rotate(&image, rotation, &mut fast);
                let geometry = RotationGeometry::new(&image, rotation);
                let mut plain = RgbImage::new(width, height);
                for (row, output) in plain.chunks_exact_mut(geometry.row_len).enumerate() {
                    geometry.rotate_span(image.as_raw(), row, 0, output);
                }
                assert_eq!(fast, plain, "{width}×{height} by {degrees}°");
            }
        }
    }

    /// Both versions on sizes narrower and shorter than the kernel, and on random kernels.
    #[test]
    fn blur_versions_agree_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for (width, height) in [(224, 224), (37, 19), (2, 9), (1, 1), (13, 3)] {
            let image = random_image(width, height, &mut rng);
            for size in [1, 3, 5, 9] {
                let mut kernel: Vec<f32> = (0..size).map(|_| rng.random_range(0.0..1.0)).collect();
                let sum: f32 = kernel.iter().sum();
                kernel.iter_mut().for_each(|weight| *weight /= sum);
                let mut fast = RgbImage::new(width, height);
                blur(&image, &kernel, &mut fast, &mut Vec::new());
                let mut plain = RgbImage::new(width, height);
                blur_loops(
                    &image,
                    &kernel,
                    &mut plain,
                    &mut Vec::new(),
                    |sums, levels| {
                        for (level, sum) in levels.iter_mut().zip(sums) {
                            *level = to_level(sum);
                        }
                    },
                );
                assert_eq!(fast, plain, "{width}×{height} with {size} taps");
            }
        }
    }

    /// Both versions on every factor the jitter can draw (and beyond), at lengths that leave
    /// every remainder: bit-identical.
    #[test]
    fn saturation_versions_agree_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for pixels in [0, 1, 4, 5, 6, 9, 50, 224 * 224] {
            let mut original = vec![0_u8; pixels * 3];
            rng.fill(original.as_mut_slice());
            for factor in [0.0, 0.5, 1.0, 1.5, 3.0, rng.random_range(0.0..2.0)] {
                let mut fast = original.clone();
                saturate(&mut fast, factor);
                let mut plain = original.clone();
                saturate_plain(&mut plain, factor);
                assert_eq!(fast, plain, "{pixels} pixels, factor {factor}");
            }
        }
    }
}
