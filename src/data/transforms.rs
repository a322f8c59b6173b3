//! Seeded image augmentations on 8-bit RGB images, and the conversion to normalised CHW floats.
//!
//! Users list transforms under `augment.train` / `augment.val`; the loader runs the list on each
//! decoded sample with an RNG derived from (seed, epoch, sample index) by [`sample_rng`], so a
//! batch never depends on which worker thread built it, and a resumed run sees the same pixels.
//! Parameters and random draws follow torchvision (`RandomResizedCrop`, `ColorJitter`,
//! `GaussianBlur`, ...) so recipes written for PyTorch carry over; where we differ it is said at
//! the variant. Every transform works on `u8` pixels and rounds after each step, like
//! torchvision on PIL images.

use crate::data::image::shorter_side_size;
use crate::data::kernels;
use crate::field::FieldError;
use image::imageops;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One augmentation step, written in YAML as `- name: {parameters}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Resize: an integer sets the shorter side (aspect kept), `[height, width]` sets both.
    Resize(Resize),
    /// Crop a random area and aspect ratio, then resize to the pipeline's image size.
    RandomResizedCrop(RandomResizedCrop),
    /// Crop the centre: an integer is a square; a crop larger than the image pads with black.
    CenterCrop(CenterCrop),
    /// Pad every border, then crop a window at a uniform position: small random shifts.
    RandomCrop(RandomCrop),
    /// Mirror left-right with probability `p`.
    HorizontalFlip(Flip),
    /// Mirror top-bottom with probability `p`.
    VerticalFlip(Flip),
    /// Rotate by a uniform angle in ±`degrees` about the centre.
    Rotation(Rotation),
    /// Random brightness, contrast, saturation and hue, applied in a random order.
    ColorJitter(ColorJitter),
    /// Gaussian blur with σ drawn uniformly from `sigma`.
    GaussianBlur(GaussianBlur),
    /// Paint `holes` square holes at uniform centres.
    Cutout(Cutout),
}

/// A size: one integer, or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Size {
    Side(u32),
    HeightWidth([u32; 2]),
}

/// A fill colour: one grey level, or `[red, green, blue]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Fill {
    Gray(u8),
    Rgb([u8; 3]),
}

impl Default for Fill {
    fn default() -> Self {
        Fill::Gray(0)
    }
}

impl Fill {
    fn pixel(self) -> Rgb<u8> {
        match self {
            Fill::Gray(level) => Rgb([level; 3]),
            Fill::Rgb(channels) => Rgb(channels),
        }
    }
}

/// Parameters of [`Transform::Resize`] (bilinear with antialiasing, like PIL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    pub size: Size,
}

/// Parameters of [`Transform::RandomResizedCrop`] (torchvision semantics: ten attempts to find
/// a crop with area fraction in `scale` and aspect ratio in `ratio`, then a centre crop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomResizedCrop {
    /// `[min, max]` fraction of the image area.
    #[serde(default = "default_crop_scale")]
    pub scale: [f64; 2],
    /// `[min, max]` width/height ratio, drawn log-uniformly.
    #[serde(default = "default_crop_ratio")]
    pub ratio: [f64; 2],
}

/// Parameters of [`Transform::CenterCrop`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CenterCrop {
    pub size: Size,
}

/// Parameters of [`Transform::RandomCrop`] (torchvision's `RandomCrop` with constant padding
/// and `pad_if_needed`): `padding` pixels of `fill` go around every border, then a `size` window
/// is cut at a position drawn uniformly, the row first. A window larger than the padded image
/// is padded further on both sides, so the output always has the window's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomCrop {
    /// The window; the pipeline's image size when absent.
    #[serde(default)]
    pub size: Option<Size>,
    /// Pixels added on each side before cropping: with the image's own size as the window, the
    /// content moves by up to this much either way.
    #[serde(default)]
    pub padding: u32,
    #[serde(default)]
    pub fill: Fill,
}

/// Parameters of the flips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flip {
    /// Probability of flipping.
    #[serde(default = "default_flip_probability")]
    pub p: f64,
}

/// Parameters of [`Transform::Rotation`]. Unlike torchvision's default (nearest neighbour), the
/// resampling is bilinear; corners uncovered by the rotation get `fill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Largest angle either way; positive angles turn counter-clockwise.
    pub degrees: f64,
    #[serde(default)]
    pub fill: Fill,
}

/// Parameters of [`Transform::ColorJitter`] (torchvision semantics: factors drawn from
/// `[max(0, 1 − x), 1 + x]` for brightness, contrast and saturation, a hue shift from
/// `[−hue, hue]` in turns; a zero disables that part and draws nothing).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColorJitter {
    #[serde(default)]
    pub brightness: f64,
    #[serde(default)]
    pub contrast: f64,
    #[serde(default)]
    pub saturation: f64,
    /// At most 0.5 (half a turn of the colour wheel).
    #[serde(default)]
    pub hue: f64,
}

/// Parameters of [`Transform::GaussianBlur`] (torchvision's kernel, reflected borders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GaussianBlur {
    /// Odd kernel side in pixels.
    pub kernel_size: u32,
    /// `[min, max]` of the uniformly drawn standard deviation, in pixels.
    #[serde(default = "default_blur_sigma")]
    pub sigma: [f64; 2],
}

/// Parameters of [`Transform::Cutout`] (DeVries & Taylor 2017, arXiv 1708.04552): each hole's
/// centre is uniform over the image and the hole is clipped at the borders, so holes near an
/// edge are smaller. Give exactly one of `size` (pixels) or `fraction` (of the image height and
/// width at that point of the list). Holes are painted on the 8-bit image, so the default fill 0
/// is black, which after normalisation is `−mean/std` rather than 0 (the paper cut normalised
/// tensors; the blog's template, like us, cut the 8-bit image before `ToTensor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cutout {
    #[serde(default = "default_holes")]
    pub holes: u32,
    #[serde(default)]
    pub size: Option<u32>,
    #[serde(default)]
    pub fraction: Option<f64>,
    #[serde(default)]
    pub fill: Fill,
}

fn default_crop_scale() -> [f64; 2] {
    [0.08, 1.0]
}

fn default_crop_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}

fn default_flip_probability() -> f64 {
    0.5
}

fn default_blur_sigma() -> [f64; 2] {
    [0.1, 2.0]
}

fn default_holes() -> u32 {
    1
}

/// The RNG for one sample of one epoch: a ChaCha8 key built from the three numbers, so streams
/// are independent across samples and epochs and identical across runs and thread schedules.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0_u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    // A fixed tag keeps these streams apart from any RNG seeded from the same numbers elsewhere.
    key[24..].copy_from_slice(b"augment\0");
    ChaCha8Rng::from_seed(key)
}

/// Runs `transforms` in order and returns an `output_size`×`output_size` image, resizing at the
/// end when the list leaves another size.
pub fn apply_pipeline(
    transforms: &[Transform],
    image: &RgbImage,
    output_size: u32,
    rng: &mut ChaCha8Rng,
) -> RgbImage {
    apply_pipeline_with(
        transforms,
        image.clone(),
        output_size,
        rng,
        &mut Scratch::default(),
    )
}

/// [`apply_pipeline`] on an owned image, reusing `scratch`'s buffers: a caller that hands the
/// result back as the next sample's input (the loader) allocates nothing per sample.
pub fn apply_pipeline_with(
    transforms: &[Transform],
    image: RgbImage,
    output_size: u32,
    rng: &mut ChaCha8Rng,
    scratch: &mut Scratch,
) -> RgbImage {
    let output_size = output_size.max(1);
    let mut current = image;
    for transform in transforms {
        current = transform.apply_with(current, output_size, rng, scratch);
    }
    if current.dimensions() != (output_size, output_size) {
        let window = (0, 0, current.width(), current.height());
        let resized = scratch.resample(&current, window, output_size, output_size);
        scratch.give_back(current);
        current = resized;
    }
    current
}

/// Buffers the transforms reuse from one sample to the next.
#[derive(Debug, Default)]
pub struct Scratch {
    /// An image buffer to write the next out-of-place result into.
    spare: Vec<u8>,
    /// The blur's intermediate rows.
    blur: Vec<f32>,
    /// The resampler and its buffers.
    resizer: fast_image_resize::Resizer,
}

impl Scratch {
    /// A `width`×`height` image over the spare buffer (its pixels are stale, not zero: every
    /// caller overwrites all of them).
    fn take_image(&mut self, width: u32, height: u32) -> RgbImage {
        let mut buffer = std::mem::take(&mut self.spare);
        buffer.resize(width as usize * height as usize * 3, 0);
        match RgbImage::from_raw(width, height, buffer) {
            Some(image) => image,
            // `from_raw` accepts any buffer of at least that length, which `resize` made.
            None => RgbImage::new(width, height),
        }
    }

    /// The `(left, top, width, height)` window of `image` resized to `width`×`height`: PIL's
    /// bilinear filter with its antialiasing (support widened by the downscaling factor), in
    /// SIMD by `fast_image_resize`, which reproduces PIL's fixed-point arithmetic.
    fn resample(
        &mut self,
        image: &RgbImage,
        (left, top, window_width, window_height): (u32, u32, u32, u32),
        width: u32,
        height: u32,
    ) -> RgbImage {
        use fast_image_resize::images::{Image, ImageRef};
        use fast_image_resize::{FilterType as Filter, PixelType, ResizeAlg, ResizeOptions};
        let mut resized = self.take_image(width, height);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(Filter::Bilinear))
            .crop(
                f64::from(left),
                f64::from(top),
                f64::from(window_width),
                f64::from(window_height),
            );
        let outcome = ImageRef::new(
            image.width(),
            image.height(),
            image.as_raw(),
            PixelType::U8x3,
        )
        .and_then(|source| {
            let destination = Image::from_slice_u8(width, height, &mut resized, PixelType::U8x3)?;
            Ok((source, destination))
        })
        .map_err(|error| error.to_string())
        .and_then(|(source, mut destination)| {
            self.resizer
                .resize(&source, &mut destination, &options)
                .map_err(|error| error.to_string())
        });
        match outcome {
            Ok(()) => resized,
            // Buffers of exactly the declared sizes and one pixel type cannot be refused.
            Err(error) => unreachable!("resampling a checked image failed: {error}"),
        }
    }

    /// Keeps `image`'s buffer for a later [`Scratch::take_image`].
    fn give_back(&mut self, image: RgbImage) {
        self.spare = image.into_raw();
    }
}

/// Writes `image` as `[3, height, width]` floats `(x/255 − mean)/std` into `out`.
///
/// # Panics
/// When `out.len() != 3·height·width` (a caller bug: the buffer is sized from the same image size).
pub fn to_normalized_chw(image: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = image.width() as usize * image.height() as usize;
    assert_eq!(out.len(), 3 * plane, "CHW buffer does not match the image");
    // A per-channel table computes the exact formula once per level instead of once per pixel.
    let mut table = [[0.0_f32; 256]; 3];
    for (channel, levels) in table.iter_mut().enumerate() {
        for (level, value) in levels.iter_mut().enumerate() {
            *value = (level as f32 / 255.0 - mean[channel]) / std[channel];
        }
    }
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let pixels = image.as_raw().chunks_exact(3);
    for (((pixel, red), green), blue) in pixels.zip(red).zip(green).zip(blue) {
        *red = table[0][pixel[0] as usize];
        *green = table[1][pixel[1] as usize];
        *blue = table[2][pixel[2] as usize];
    }
}

impl Transform {
    /// The variant's name as written in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Resize(_) => "resize",
            Transform::RandomResizedCrop(_) => "random_resized_crop",
            Transform::CenterCrop(_) => "center_crop",
            Transform::RandomCrop(_) => "random_crop",
            Transform::HorizontalFlip(_) => "horizontal_flip",
            Transform::VerticalFlip(_) => "vertical_flip",
            Transform::Rotation(_) => "rotation",
            Transform::ColorJitter(_) => "color_jitter",
            Transform::GaussianBlur(_) => "gaussian_blur",
            Transform::Cutout(_) => "cutout",
        }
    }

    /// Checks the parameters; the error is the message tail after `augment.train[i].`,
    /// e.g. `rotation.degrees: must be ≥ 0 (got -5)`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let name = self.name();
        let field_error = |field: &str, rule: &str, got: String| -> Result<(), FieldError> {
            Err(crate::field_error!("{name}.{field}", "{rule} (got {got})"))
        };
        match self {
            Transform::Resize(Resize { size })
            | Transform::CenterCrop(CenterCrop { size })
            | Transform::RandomCrop(RandomCrop {
                size: Some(size), ..
            }) => {
                let (height, width) = size_pair(*size);
                if height == 0 || width == 0 {
                    return field_error("size", "must be > 0", format_size(*size));
                }
            }
            Transform::RandomCrop(RandomCrop { size: None, .. }) => {}
            Transform::RandomResizedCrop(crop) => {
                let [low, high] = crop.scale;
                if !(0.0 < low && low <= high && high <= 1.0) {
                    return field_error(
                        "scale",
                        "must satisfy 0 < min ≤ max ≤ 1",
                        pair(crop.scale),
                    );
                }
                let [low, high] = crop.ratio;
                if !(0.0 < low && low <= high && high.is_finite()) {
                    return field_error("ratio", "must satisfy 0 < min ≤ max", pair(crop.ratio));
                }
            }
            Transform::HorizontalFlip(flip) | Transform::VerticalFlip(flip) => {
                if !(0.0..=1.0).contains(&flip.p) {
                    return field_error("p", "must be in [0, 1]", flip.p.to_string());
                }
            }
            Transform::Rotation(rotation) => {
                let degrees = rotation.degrees;
                if degrees.is_nan() || degrees < 0.0 {
                    return field_error("degrees", "must be ≥ 0", degrees.to_string());
                }
                if degrees > 180.0 {
                    return field_error("degrees", "must be ≤ 180", degrees.to_string());
                }
            }
            Transform::ColorJitter(jitter) => {
                for (field, value) in [
                    ("brightness", jitter.brightness),
                    ("contrast", jitter.contrast),
                    ("saturation", jitter.saturation),
                ] {
                    if !(value >= 0.0 && value.is_finite()) {
                        return field_error(field, "must be ≥ 0", value.to_string());
                    }
                }
                if !(0.0..=0.5).contains(&jitter.hue) {
                    return field_error("hue", "must be in [0, 0.5]", jitter.hue.to_string());
                }
            }
            Transform::GaussianBlur(blur) => {
                if blur.kernel_size == 0 || blur.kernel_size % 2 == 0 {
                    return field_error(
                        "kernel_size",
                        "must be odd and positive",
                        blur.kernel_size.to_string(),
                    );
                }
                let [low, high] = blur.sigma;
                if !(0.0 < low && low <= high && high.is_finite()) {
                    return field_error("sigma", "must satisfy 0 < min ≤ max", pair(blur.sigma));
                }
            }
            Transform::Cutout(cutout) => {
                if cutout.holes == 0 {
                    return field_error("holes", "must be ≥ 1", "0".to_string());
                }
                match (cutout.size, cutout.fraction) {
                    (Some(0), _) => return field_error("size", "must be > 0", "0".to_string()),
                    (Some(_), None) => {}
                    (None, Some(fraction)) => {
                        if !(fraction > 0.0 && fraction <= 1.0) {
                            return field_error(
                                "fraction",
                                "must be in (0, 1]",
                                fraction.to_string(),
                            );
                        }
                    }
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(crate::field_error!(
                            "{name}",
                            "give exactly one of `size` or `fraction`"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies this transform; `output_size` is the pipeline's final side, used by
    /// `random_resized_crop` and by `random_crop` without a size. Draws from `rng` in a fixed
    /// order, so a given RNG state always gives the same image.
    pub fn apply(&self, image: RgbImage, output_size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
        self.apply_with(image, output_size, rng, &mut Scratch::default())
    }

    /// [`Transform::apply`], reusing `scratch`'s buffers.
    pub fn apply_with(
        &self,
        image: RgbImage,
        output_size: u32,
        rng: &mut ChaCha8Rng,
        scratch: &mut Scratch,
    ) -> RgbImage {
        match self {
            Transform::Resize(resize) => resize_to(image, resize.size, scratch),
            Transform::RandomResizedCrop(crop) => {
                let window = random_resized_crop_window(&image, crop, rng);
                let resized = scratch.resample(&image, window, output_size, output_size);
                scratch.give_back(image);
                resized
            }
            Transform::CenterCrop(crop) => center_crop(&image, crop.size),
            Transform::RandomCrop(crop) => {
                let size = crop.size.unwrap_or(Size::Side(output_size));
                random_crop(&image, size, crop.padding, crop.fill.pixel(), rng)
            }
            Transform::HorizontalFlip(flip) => {
                let mut image = image;
                if rng.random::<f64>() < flip.p {
                    imageops::flip_horizontal_in_place(&mut image);
                }
                image
            }
            Transform::VerticalFlip(flip) => {
                let mut image = image;
                if rng.random::<f64>() < flip.p {
                    imageops::flip_vertical_in_place(&mut image);
                }
                image
            }
            Transform::Rotation(rotation) => {
                let angle = uniform(rng, -rotation.degrees, rotation.degrees);
                let mut rotated = scratch.take_image(image.width(), image.height());
                rotate_into(&image, angle, rotation.fill.pixel(), &mut rotated);
                scratch.give_back(image);
                rotated
            }
            Transform::ColorJitter(jitter) => color_jitter(image, jitter, rng),
            Transform::GaussianBlur(blur) => {
                let sigma = uniform(rng, blur.sigma[0], blur.sigma[1]);
                let mut blurred = scratch.take_image(image.width(), image.height());
                gaussian_blur_into(
                    &image,
                    blur.kernel_size as usize,
                    sigma,
                    &mut blurred,
                    &mut scratch.blur,
                );
                scratch.give_back(image);
                blurred
            }
            Transform::Cutout(cutout) => {
                let mut image = image;
                paint_holes(&mut image, cutout, rng);
                image
            }
        }
    }
}

fn format_size(size: Size) -> String {
    match size {
        Size::Side(side) => side.to_string(),
        Size::HeightWidth([height, width]) => format!("[{height}, {width}]"),
    }
}

/// `(height, width)` of a size.
fn size_pair(size: Size) -> (u32, u32) {
    match size {
        Size::Side(side) => (side, side),
        Size::HeightWidth([height, width]) => (height, width),
    }
}

fn pair([low, high]: [f64; 2]) -> String {
    format!("[{low}, {high}]")
}

/// Uniform in `[low, high)`; never panics on an empty range, so unvalidated input stays safe.
fn uniform(rng: &mut ChaCha8Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

/// Uniform integer in `[0, upper)`, or 0 when the range is empty.
fn below(rng: &mut ChaCha8Rng, upper: u32) -> u32 {
    if upper == 0 {
        0
    } else {
        rng.random_range(0..upper)
    }
}

fn resize_to(image: RgbImage, size: Size, scratch: &mut Scratch) -> RgbImage {
    let (width, height) = image.dimensions();
    let (new_width, new_height) = match size {
        // torchvision: the shorter side becomes `side`, the longer one is truncated.
        Size::Side(side) => shorter_side_size(width, height, side),
        Size::HeightWidth([height, width]) => (width, height),
    };
    let (new_width, new_height) = (new_width.max(1), new_height.max(1));
    if (new_width, new_height) == (width, height) {
        return image;
    }
    let resized = scratch.resample(&image, (0, 0, width, height), new_width, new_height);
    scratch.give_back(image);
    resized
}

/// torchvision's `RandomResizedCrop.get_params` (Python's `round`, half to even, included),
/// returning `(left, top, width, height)`.
fn random_resized_crop_window(
    image: &RgbImage,
    crop: &RandomResizedCrop,
    rng: &mut ChaCha8Rng,
) -> (u32, u32, u32, u32) {
    let (width, height) = image.dimensions();
    let area = width as f64 * height as f64;
    let log_ratio = [crop.ratio[0].ln(), crop.ratio[1].ln()];
    for _ in 0..10 {
        let target_area = area * uniform(rng, crop.scale[0], crop.scale[1]);
        let aspect_ratio = uniform(rng, log_ratio[0], log_ratio[1]).exp();
        let crop_width = (target_area * aspect_ratio).sqrt().round_ties_even();
        let crop_height = (target_area / aspect_ratio).sqrt().round_ties_even();
        if crop_width > 0.0
            && crop_width <= width as f64
            && crop_height > 0.0
            && crop_height <= height as f64
        {
            let (crop_width, crop_height) = (crop_width as u32, crop_height as u32);
            let top = below(rng, height - crop_height + 1);
            let left = below(rng, width - crop_width + 1);
            return (left, top, crop_width, crop_height);
        }
    }
    let input_ratio = width as f64 / height as f64;
    let (crop_width, crop_height) = if input_ratio < crop.ratio[0] {
        (
            width,
            ((width as f64 / crop.ratio[0]).round_ties_even() as u32).clamp(1, height),
        )
    } else if input_ratio > crop.ratio[1] {
        (
            ((height as f64 * crop.ratio[1]).round_ties_even() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    (
        (width - crop_width) / 2,
        (height - crop_height) / 2,
        crop_width,
        crop_height,
    )
}

/// torchvision's `CenterCrop`: offsets round half to even (Python's `round`), and a crop larger
/// than the image pads it with black first, the odd pixel going to the bottom/right.
fn center_crop(image: &RgbImage, size: Size) -> RgbImage {
    let (crop_height, crop_width) = size_pair(size);
    let (width, height) = image.dimensions();
    let offset = |extent: u32, crop: u32| -> i64 {
        if crop > extent {
            -(((crop - extent) / 2) as i64)
        } else {
            ((extent - crop) as f64 / 2.0).round_ties_even() as i64
        }
    };
    let top = offset(height, crop_height);
    let left = offset(width, crop_width);
    window(image, left, top, crop_width, crop_height, Rgb([0, 0, 0]))
}

/// The `width`×`height` window whose top-left corner is at (`left`, `top`) in image coordinates,
/// which may lie partly or wholly outside the image; pixels outside read as `fill`.
fn window(
    image: &RgbImage,
    left: i64,
    top: i64,
    width: u32,
    height: u32,
    fill: Rgb<u8>,
) -> RgbImage {
    let (image_width, image_height) = (image.width() as i64, image.height() as i64);
    if left >= 0
        && top >= 0
        && left + width as i64 <= image_width
        && top + height as i64 <= image_height
    {
        return imageops::crop_imm(image, left as u32, top as u32, width, height).to_image();
    }
    RgbImage::from_fn(width, height, |x, y| {
        let source_x = x as i64 + left;
        let source_y = y as i64 + top;
        if (0..image_width).contains(&source_x) && (0..image_height).contains(&source_y) {
            *image.get_pixel(source_x as u32, source_y as u32)
        } else {
            fill
        }
    })
}

/// torchvision's `RandomCrop` with constant padding: the image is padded by `padding` on every
/// side (and further, evenly, where the window is still larger), then the window's top and left
/// are drawn uniformly, in that order. Pixels outside the image read as `fill`.
fn random_crop(
    image: &RgbImage,
    size: Size,
    padding: u32,
    fill: Rgb<u8>,
    rng: &mut ChaCha8Rng,
) -> RgbImage {
    let (crop_height, crop_width) = size_pair(size);
    let (width, height) = image.dimensions();
    // The padded extent along one axis, grown to the window if needed (`pad_if_needed`), and
    // the padding before the image on that axis.
    let padded = |extent: u32, crop: u32| -> (u32, u32) {
        let extent = extent + 2 * padding;
        if crop > extent {
            let extra = crop - extent;
            // torchvision pads `extra` on both sides; the surplus past the window is cropped off.
            (extent + 2 * extra, padding + extra)
        } else {
            (extent, padding)
        }
    };
    let (padded_height, pad_top) = padded(height, crop_height);
    let (padded_width, pad_left) = padded(width, crop_width);
    let top = below(rng, padded_height - crop_height + 1);
    let left = below(rng, padded_width - crop_width + 1);
    // In image coordinates the window starts inside the padding when these are negative.
    let left = left as i64 - pad_left as i64;
    let top = top as i64 - pad_top as i64;
    window(image, left, top, crop_width, crop_height, fill)
}

/// Rotates counter-clockwise by `degrees` about the image centre with bilinear sampling; source
/// positions outside the image read as `fill`, which also softens the new corners' edges.
#[cfg(test)]
fn rotate(image: &RgbImage, degrees: f64, fill: Rgb<u8>) -> RgbImage {
    let mut rotated = RgbImage::new(image.width(), image.height());
    rotate_into(image, degrees, fill, &mut rotated);
    rotated
}

/// [`rotate`] into an image of the same size.
fn rotate_into(image: &RgbImage, degrees: f64, fill: Rgb<u8>, rotated: &mut RgbImage) {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let rotation = kernels::Rotation {
        sin,
        cos,
        fill: fill.0,
    };
    kernels::rotate(image, rotation, rotated);
}

/// Rounds half up and clamps to a level: `as` saturates (and maps NaN to 0). Written without
/// `round`, which compiles to a libm call on baseline x86-64 and dominated the per-pixel cost.
fn to_level(value: f64) -> u8 {
    (value + 0.5) as u8
}

/// One image's draws of a colour jitter: the order of the four adjustments (0 brightness,
/// 1 contrast, 2 saturation, 3 hue) and the factor of each enabled one.
struct JitterDraws {
    order: [usize; 4],
    brightness: Option<f64>,
    contrast: Option<f64>,
    saturation: Option<f64>,
    hue: Option<f64>,
}

impl JitterDraws {
    /// torchvision's `ColorJitter.forward`: a random order of the four adjustments, then each
    /// enabled factor drawn in the fixed order brightness, contrast, saturation, hue.
    fn draw(jitter: &ColorJitter, rng: &mut ChaCha8Rng) -> Self {
        let mut order = [0_usize, 1, 2, 3];
        for index in (1..order.len()).rev() {
            let other = rng.random_range(0..=index);
            order.swap(index, other);
        }
        let mut factor = |amount: f64| -> Option<f64> {
            (amount > 0.0).then(|| uniform(rng, (1.0 - amount).max(0.0), 1.0 + amount))
        };
        let brightness = factor(jitter.brightness);
        let contrast = factor(jitter.contrast);
        let saturation = factor(jitter.saturation);
        let hue = (jitter.hue > 0.0).then(|| uniform(rng, -jitter.hue, jitter.hue));
        Self {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        }
    }
}

/// torchvision's `ColorJitter` ([`JitterDraws::draw`]), brightness and contrast composed into
/// one level table.
fn color_jitter(mut image: RgbImage, jitter: &ColorJitter, rng: &mut ChaCha8Rng) -> RgbImage {
    let JitterDraws {
        order,
        brightness,
        contrast,
        saturation,
        hue,
    } = JitterDraws::draw(jitter, rng);
    let mut levels = PendingLevels::new(&mut image);
    for adjustment in order {
        match (adjustment, brightness, contrast, saturation, hue) {
            (0, Some(brightness), ..) => levels.brighten(brightness),
            (1, _, Some(contrast), ..) => levels.contrast(contrast),
            (2, _, _, Some(saturation), _) => kernels::saturate(levels.apply(), saturation),
            (3, .., Some(hue)) => adjust_hue(levels.apply_image(), hue),
            _ => {}
        }
    }
    levels.apply();
    image
}

/// An image with a per-level mapping not yet applied: brightness and contrast map every channel
/// level through a table, so consecutive ones compose into one table, applied to the pixels once
/// (the contrast's mean luma reads the pixels through the table). Each table entry is what
/// mapping the level step by step gives, so the result is the same as applying them one by one.
struct PendingLevels<'a> {
    image: &'a mut RgbImage,
    table: Option<[u8; 256]>,
}

impl<'a> PendingLevels<'a> {
    fn new(image: &'a mut RgbImage) -> PendingLevels<'a> {
        PendingLevels { image, table: None }
    }

    /// Blend with black: `factor · x`.
    fn brighten(&mut self, factor: f64) {
        self.map(|level| level * factor);
    }

    /// Blend with the mean grey level of the whole image.
    fn contrast(&mut self, factor: f64) {
        let pixel_count = (self.image.width() as f64 * self.image.height() as f64).max(1.0);
        let pixels = self.image.as_raw().chunks_exact(3);
        let sum = match &self.table {
            None => pixels.map(kernels::luma).sum::<f64>(),
            Some(table) => pixels
                .map(|pixel| {
                    kernels::luma(
                        &[pixel[0], pixel[1], pixel[2]].map(|level| table[usize::from(level)]),
                    )
                })
                .sum::<f64>(),
        };
        let mean = sum / pixel_count;
        self.map(|level| factor * level + (1.0 - factor) * mean);
    }

    /// Composes `mapping` (rounded half up to a level) after the pending table.
    fn map(&mut self, mapping: impl Fn(f64) -> f64) {
        let step: [u8; 256] = std::array::from_fn(|level| to_level(mapping(level as f64)));
        self.table = Some(match &self.table {
            None => step,
            Some(table) => table.map(|level| step[usize::from(level)]),
        });
    }

    /// The pixels with the pending table applied.
    fn apply(&mut self) -> &mut [u8] {
        self.apply_image()
    }

    fn apply_image(&mut self) -> &mut RgbImage {
        if let Some(table) = self.table.take() {
            for value in self.image.iter_mut() {
                *value = table[usize::from(*value)];
            }
        }
        self.image
    }
}

/// Blend with black: `factor · x`.
#[cfg(test)]
fn adjust_brightness(image: &mut RgbImage, factor: f64) {
    let mut levels = PendingLevels::new(image);
    levels.brighten(factor);
    levels.apply();
}

/// Blend with the mean grey level of the whole image.
#[cfg(test)]
fn adjust_contrast(image: &mut RgbImage, factor: f64) {
    let mut levels = PendingLevels::new(image);
    levels.contrast(factor);
    levels.apply();
}

/// Blend each pixel with its own grey level.
#[cfg(test)]
fn adjust_saturation(image: &mut RgbImage, factor: f64) {
    kernels::saturate(image, factor);
}

/// Rotate the hue by `shift` turns through HSV, as torchvision's `adjust_hue`.
fn adjust_hue(image: &mut RgbImage, shift: f64) {
    for pixel in image.chunks_exact_mut(3) {
        let [red, green, blue] = [pixel[0], pixel[1], pixel[2]].map(|level| level as f64 / 255.0);
        let (hue, saturation, value) = rgb_to_hsv(red, green, blue);
        let shifted = (hue + shift).rem_euclid(1.0);
        let rgb = hsv_to_rgb(shifted, saturation, value);
        for (level, channel) in pixel.iter_mut().zip(rgb) {
            *level = to_level(channel * 255.0);
        }
    }
}

/// HSV with all three components in [0, 1].
fn rgb_to_hsv(red: f64, green: f64, blue: f64) -> (f64, f64, f64) {
    let max = red.max(green).max(blue);
    let min = red.min(green).min(blue);
    let chroma = max - min;
    let saturation = if max > 0.0 { chroma / max } else { 0.0 };
    if chroma == 0.0 {
        return (0.0, saturation, max);
    }
    let sector = if max == red {
        (green - blue) / chroma
    } else if max == green {
        2.0 + (blue - red) / chroma
    } else {
        4.0 + (red - green) / chroma
    };
    ((sector / 6.0).rem_euclid(1.0), saturation, max)
}

fn hsv_to_rgb(hue: f64, saturation: f64, value: f64) -> [f64; 3] {
    let scaled = hue * 6.0;
    let sector = scaled.floor();
    let fraction = scaled - sector;
    let low = value * (1.0 - saturation);
    let falling = value * (1.0 - saturation * fraction);
    let rising = value * (1.0 - saturation * (1.0 - fraction));
    match (sector as i64).rem_euclid(6) {
        0 => [value, rising, low],
        1 => [falling, value, low],
        2 => [low, value, rising],
        3 => [low, falling, value],
        4 => [rising, low, value],
        _ => [value, low, falling],
    }
}

/// torchvision's `_get_gaussian_kernel1d`: samples of exp(−x²/2σ²) at integer offsets, summing
/// to one.
fn gaussian_kernel(kernel_size: usize, sigma: f64) -> Vec<f64> {
    let half = (kernel_size as f64 - 1.0) / 2.0;
    let mut kernel: Vec<f64> = (0..kernel_size)
        .map(|index| {
            let offset = index as f64 - half;
            (-0.5 * (offset / sigma).powi(2)).exp()
        })
        .collect();
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|weight| *weight /= sum);
    kernel
}

/// Separable Gaussian blur with reflected borders, rounded to u8 at the end.
#[cfg(test)]
fn gaussian_blur(image: &RgbImage, kernel_size: usize, sigma: f64) -> RgbImage {
    let mut blurred = RgbImage::new(image.width(), image.height());
    gaussian_blur_into(image, kernel_size, sigma, &mut blurred, &mut Vec::new());
    blurred
}

/// [`gaussian_blur`] into an image of the same size, `rows` holding the intermediate floats.
fn gaussian_blur_into(
    image: &RgbImage,
    kernel_size: usize,
    sigma: f64,
    blurred: &mut RgbImage,
    rows: &mut Vec<f32>,
) {
    let kernel: Vec<f32> = gaussian_kernel(kernel_size.max(1), sigma.max(f64::MIN_POSITIVE))
        .into_iter()
        .map(|weight| weight as f32)
        .collect();
    kernels::blur(image, &kernel, blurred, rows);
}

fn paint_holes(image: &mut RgbImage, cutout: &Cutout, rng: &mut ChaCha8Rng) {
    let (width, height) = image.dimensions();
    let (hole_height, hole_width) = match (cutout.size, cutout.fraction) {
        (Some(size), _) => (size, size),
        (None, Some(fraction)) => (
            (height as f64 * fraction).round() as u32,
            (width as f64 * fraction).round() as u32,
        ),
        (None, None) => return,
    };
    let fill = cutout.fill.pixel();
    for _ in 0..cutout.holes {
        let rows = hole_span(below(rng, height), hole_height, height);
        let columns = hole_span(below(rng, width), hole_width, width);
        for y in rows {
            for x in columns.clone() {
                image.put_pixel(x, y, fill);
            }
        }
    }
}

/// The pixels `center − side/2 .. center − side/2 + side`, clipped to `0..extent`.
fn hole_span(center: u32, side: u32, extent: u32) -> std::ops::Range<u32> {
    let start = i64::from(center) - i64::from(side / 2);
    let end = start + i64::from(side);
    let clip = |position: i64| position.clamp(0, i64::from(extent)) as u32;
    clip(start)..clip(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic colourful test image (no two neighbouring pixels alike).
    fn test_image(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                ((x * 37 + y * 11) % 256) as u8,
                ((x * 5 + y * 53 + 40) % 256) as u8,
                ((x * 23 + y * 29 + 90) % 256) as u8,
            ])
        })
    }

    fn parse(json: &str) -> Transform {
        serde_json::from_str(json).unwrap()
    }

    fn all_transforms() -> Vec<Transform> {
        [
            r#"{"resize": {"size": 20}}"#,
            r#"{"random_resized_crop": {"scale": [0.08, 1.0], "ratio": [0.75, 1.3333]}}"#,
            r#"{"center_crop": {"size": [14, 12]}}"#,
            r#"{"random_crop": {"padding": 2, "fill": 7}}"#,
            r#"{"horizontal_flip": {"p": 0.5}}"#,
            r#"{"vertical_flip": {}}"#,
            r#"{"rotation": {"degrees": 10}}"#,
            r#"{"color_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.1}}"#,
            r#"{"gaussian_blur": {"kernel_size": 5, "sigma": [0.1, 3.0]}}"#,
            r#"{"cutout": {"holes": 2, "fraction": 0.25, "fill": [10, 20, 30]}}"#,
        ]
        .into_iter()
        .map(parse)
        .collect()
    }

    #[test]
    fn every_transform_is_valid_deterministic_and_seed_dependent() {
        let image = test_image(24, 18);
        for transform in all_transforms() {
            assert_eq!(transform.validate(), Ok(()), "{transform:?}");
            let first = transform.apply(image.clone(), 16, &mut sample_rng(7, 1, 3));
            let second = transform.apply(image.clone(), 16, &mut sample_rng(7, 1, 3));
            assert_eq!(first, second, "{} is not deterministic", transform.name());
            if !matches!(transform, Transform::Resize(_) | Transform::CenterCrop(_)) {
                let differs = (0..20).any(|index| {
                    transform.apply(image.clone(), 16, &mut sample_rng(7, 1, index)) != first
                });
                assert!(differs, "{} ignores its RNG", transform.name());
            }
        }
    }

    #[test]
    fn pipeline_always_returns_the_output_size() {
        let transforms = all_transforms();
        for (width, height) in [(24, 18), (9, 31), (64, 64)] {
            let image = test_image(width, height);
            for length in 0..=transforms.len() {
                let output =
                    apply_pipeline(&transforms[..length], &image, 16, &mut sample_rng(1, 0, 0));
                assert_eq!(output.dimensions(), (16, 16));
            }
        }
    }

    #[test]
    fn sample_rngs_depend_on_every_coordinate() {
        let draw = |seed, epoch, index| sample_rng(seed, epoch, index).random::<u64>();
        let reference = draw(1, 2, 3);
        assert_eq!(draw(1, 2, 3), reference);
        assert_ne!(draw(0, 2, 3), reference);
        assert_ne!(draw(1, 3, 3), reference);
        assert_ne!(draw(1, 2, 4), reference);
        assert_ne!(draw(2, 1, 3), reference);
    }

    #[test]
    fn flip_probability_zero_is_identity_and_one_always_flips() {
        let image = test_image(7, 5);
        let mut mirrored = image.clone();
        imageops::flip_horizontal_in_place(&mut mirrored);
        assert_eq!(mirrored.get_pixel(0, 2), image.get_pixel(6, 2));
        let mut upside_down = image.clone();
        imageops::flip_vertical_in_place(&mut upside_down);
        for index in 0..20 {
            let mut rng = sample_rng(3, 0, index);
            let never = Transform::HorizontalFlip(Flip { p: 0.0 });
            let always = Transform::HorizontalFlip(Flip { p: 1.0 });
            let always_vertical = Transform::VerticalFlip(Flip { p: 1.0 });
            assert_eq!(never.apply(image.clone(), 7, &mut rng), image);
            assert_eq!(always.apply(image.clone(), 7, &mut rng), mirrored);
            assert_eq!(
                always_vertical.apply(image.clone(), 7, &mut rng),
                upside_down
            );
        }
    }

    #[test]
    fn resize_keeps_the_aspect_for_an_integer_size() {
        let image = test_image(40, 30);
        let side = Transform::Resize(Resize {
            size: Size::Side(15),
        });
        assert_eq!(
            side.apply(image.clone(), 8, &mut sample_rng(0, 0, 0))
                .dimensions(),
            (20, 15)
        );
        let exact = Transform::Resize(Resize {
            size: Size::HeightWidth([10, 12]),
        });
        assert_eq!(
            exact.apply(image, 8, &mut sample_rng(0, 0, 0)).dimensions(),
            (12, 10)
        );
    }

    #[test]
    fn center_crop_takes_the_middle_and_pads_when_too_small() {
        let image = test_image(10, 8);
        let cropped = center_crop(&image, Size::Side(4));
        // Offsets (10−4)/2 = 3 and (8−4)/2 = 2.
        assert_eq!(cropped.get_pixel(0, 0), image.get_pixel(3, 2));
        assert_eq!(cropped.get_pixel(3, 3), image.get_pixel(6, 5));
        // (10−5)/2 = 2.5 rounds to 2, half to even like Python.
        assert_eq!(
            center_crop(&image, Size::HeightWidth([8, 5])).get_pixel(0, 0),
            image.get_pixel(2, 0)
        );
        let padded = center_crop(&image, Size::HeightWidth([11, 10]));
        assert_eq!(padded.dimensions(), (10, 11));
        assert_eq!(padded.get_pixel(0, 0), &Rgb([0, 0, 0]));
        assert_eq!(padded.get_pixel(4, 1), image.get_pixel(4, 0));
        assert_eq!(padded.get_pixel(4, 10), &Rgb([0, 0, 0]));
    }

    /// The shift (dx, dy) that maps `image` onto `output` with `fill` where the source is
    /// outside, if there is one within ±`limit`.
    fn shift_of(
        image: &RgbImage,
        output: &RgbImage,
        limit: i64,
        fill: Rgb<u8>,
    ) -> Option<(i64, i64)> {
        let (width, height) = (image.width() as i64, image.height() as i64);
        let shifts = (-limit..=limit).flat_map(|dy| (-limit..=limit).map(move |dx| (dx, dy)));
        shifts.into_iter().find(|&(dx, dy)| {
            output.enumerate_pixels().all(|(x, y, pixel)| {
                let (source_x, source_y) = (x as i64 - dx, y as i64 - dy);
                let inside = (0..width).contains(&source_x) && (0..height).contains(&source_y);
                let expected = if inside {
                    *image.get_pixel(source_x as u32, source_y as u32)
                } else {
                    fill
                };
                *pixel == expected
            })
        })
    }

    #[test]
    fn random_crop_with_padding_shifts_by_every_offset_in_range_and_no_further() {
        let image = test_image(12, 10);
        let crop = parse(r#"{"random_crop": {"size": [10, 12], "padding": 2, "fill": [1, 2, 3]}}"#);
        let mut seen = std::collections::BTreeSet::new();
        for index in 0..400 {
            let output = crop.apply(image.clone(), 99, &mut sample_rng(3, 0, index));
            assert_eq!(output.dimensions(), (12, 10));
            let shift = shift_of(&image, &output, 2, Rgb([1, 2, 3]));
            seen.insert(shift.expect("the output is not a shifted copy of the image"));
        }
        // 5 × 5 offsets, each drawn with probability 1/25: all appear in 400 draws.
        assert_eq!(seen.len(), 25, "{seen:?}");
        // Without a size the window is the pipeline's output side; without padding nothing moves.
        let square = test_image(16, 16);
        let plain = parse(r#"{"random_crop": {}}"#);
        assert_eq!(
            plain.apply(square.clone(), 16, &mut sample_rng(3, 0, 0)),
            square
        );
    }

    #[test]
    fn random_crop_pads_a_window_larger_than_the_image() {
        // torchvision's pad_if_needed: a 6-wide image in a 10-wide window sits anywhere from
        // flush left to flush right; the height matches, so rows never move.
        let image = test_image(6, 8);
        let crop = parse(r#"{"random_crop": {"size": [8, 10]}}"#);
        let mut offsets = std::collections::BTreeSet::new();
        for index in 0..200 {
            let output = crop.apply(image.clone(), 99, &mut sample_rng(5, 2, index));
            assert_eq!(output.dimensions(), (10, 8));
            let (dx, dy) = shift_of(&image, &output, 4, Rgb([0, 0, 0])).expect("not a shift");
            assert_eq!(dy, 0);
            offsets.insert(dx);
        }
        assert_eq!(offsets, (0..=4).collect());
    }

    #[test]
    fn random_resized_crop_falls_back_to_the_centre() {
        // No 1×1 area can have aspect ratio 10, so all ten attempts fail; the fallback crops the
        // centre to the closest allowed ratio.
        let crop = RandomResizedCrop {
            scale: [0.5, 0.5],
            ratio: [10.0, 12.0],
        };
        let image = test_image(20, 20);
        let window = random_resized_crop_window(&image, &crop, &mut sample_rng(0, 0, 0));
        assert_eq!(window, (0, 9, 20, 2));
        let full = RandomResizedCrop {
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
        };
        let window = random_resized_crop_window(&image, &full, &mut sample_rng(0, 0, 0));
        assert_eq!(window, (0, 0, 20, 20));
    }

    #[test]
    fn rotation_by_a_right_angle_moves_pixels_exactly() {
        let image = test_image(5, 5);
        let turned = rotate(&image, 90.0, Rgb([0, 0, 0]));
        // Counter-clockwise: the right edge's middle lands on the top edge's middle.
        assert_eq!(turned.get_pixel(2, 0), image.get_pixel(4, 2));
        assert_eq!(turned.get_pixel(0, 2), image.get_pixel(2, 0));
        assert_eq!(turned.get_pixel(2, 2), image.get_pixel(2, 2));
        let zero = Transform::Rotation(Rotation {
            degrees: 0.0,
            fill: Fill::default(),
        });
        assert_eq!(
            zero.apply(image.clone(), 5, &mut sample_rng(0, 0, 0)),
            image
        );
        // An 8×8 image turned 45°: the corners fall outside the source and take the fill.
        let filled = rotate(&test_image(8, 8), 45.0, Rgb([1, 2, 3]));
        assert_eq!(filled.get_pixel(0, 0), &Rgb([1, 2, 3]));
    }

    #[test]
    fn color_jitter_with_zero_factors_is_identity() {
        let image = test_image(9, 7);
        let jitter = Transform::ColorJitter(ColorJitter::default());
        for index in 0..5 {
            assert_eq!(
                jitter.apply(image.clone(), 9, &mut sample_rng(0, 0, index)),
                image
            );
        }
    }

    /// The fused jitter (composed level tables, the vector saturation) against the adjustments
    /// applied one at a time as written in their definitions, on the same random draws.
    #[test]
    fn color_jitter_matches_the_adjustments_applied_one_by_one() {
        fn remap(image: &mut RgbImage, mapping: impl Fn(f64) -> f64) {
            for value in image.iter_mut() {
                *value = to_level(mapping(f64::from(*value)));
            }
        }
        fn luma(pixel: &[u8]) -> f64 {
            0.299 * pixel[0] as f64 + 0.587 * pixel[1] as f64 + 0.114 * pixel[2] as f64
        }
        fn reference(mut image: RgbImage, jitter: &ColorJitter, rng: &mut ChaCha8Rng) -> RgbImage {
            let JitterDraws {
                order,
                brightness,
                contrast,
                saturation,
                hue,
            } = JitterDraws::draw(jitter, rng);
            for adjustment in order {
                match (adjustment, brightness, contrast, saturation, hue) {
                    (0, Some(factor), ..) => remap(&mut image, |level| level * factor),
                    (1, _, Some(factor), ..) => {
                        let count = f64::from(image.width() * image.height());
                        let mean = image.as_raw().chunks_exact(3).map(luma).sum::<f64>() / count;
                        remap(&mut image, |level| factor * level + (1.0 - factor) * mean);
                    }
                    (2, _, _, Some(factor), _) => {
                        for pixel in image.chunks_exact_mut(3) {
                            let gray = luma(pixel);
                            for value in pixel.iter_mut() {
                                *value = to_level(factor * *value as f64 + (1.0 - factor) * gray);
                            }
                        }
                    }
                    (3, .., Some(shift)) => adjust_hue(&mut image, shift),
                    _ => {}
                }
            }
            image
        }
        let image = test_image(37, 29);
        for jitter in [
            ColorJitter {
                brightness: 0.5,
                contrast: 0.5,
                saturation: 0.5,
                hue: 0.0,
            },
            ColorJitter {
                brightness: 0.9,
                contrast: 0.8,
                saturation: 0.0,
                hue: 0.1,
            },
            ColorJitter {
                brightness: 0.0,
                contrast: 0.4,
                saturation: 1.0,
                hue: 0.2,
            },
        ] {
            for index in 0..60 {
                let fused = color_jitter(image.clone(), &jitter, &mut sample_rng(4, 1, index));
                let expected = reference(image.clone(), &jitter, &mut sample_rng(4, 1, index));
                assert_eq!(fused, expected, "{jitter:?}, sample {index}");
            }
        }
    }

    #[test]
    fn color_adjustments_match_their_definitions() {
        let mut image = RgbImage::from_pixel(2, 1, Rgb([100, 50, 200]));
        image.put_pixel(1, 0, Rgb([0, 0, 0]));
        let mut brighter = image.clone();
        adjust_brightness(&mut brighter, 1.5);
        assert_eq!(brighter.get_pixel(0, 0), &Rgb([150, 75, 255]));
        let mut gray = image.clone();
        adjust_saturation(&mut gray, 0.0);
        // 0.299·100 + 0.587·50 + 0.114·200 = 82.15
        assert_eq!(gray.get_pixel(0, 0), &Rgb([82, 82, 82]));
        let mut flat = image.clone();
        adjust_contrast(&mut flat, 0.0);
        // Mean luma over the two pixels: 82.15 / 2 = 41.075.
        assert_eq!(flat.get_pixel(1, 0), &Rgb([41, 41, 41]));
        let mut red = RgbImage::from_pixel(1, 1, Rgb([255, 0, 0]));
        adjust_hue(&mut red, 0.5);
        assert_eq!(red.get_pixel(0, 0), &Rgb([0, 255, 255]));
        let mut unchanged = test_image(6, 6);
        adjust_hue(&mut unchanged, 0.0);
        assert_eq!(unchanged, test_image(6, 6));
    }

    /// Reference values from Pillow 13 and Python's colorsys (what torchvision uses on PIL
    /// images, and an independent HSV implementation):
    /// ```python
    /// import colorsys
    /// from PIL import Image, ImageEnhance
    /// pixels = [(200, 120, 40), (10, 200, 90), (255, 255, 255), (0, 0, 0), (90, 30, 160)]
    /// image = Image.new("RGB", (5, 1)); image.putdata(pixels)
    /// ImageEnhance.Brightness(image).enhance(1.3)  # likewise Contrast 0.6, Color 1.7
    /// def hue(p, shift):
    ///     h, s, v = colorsys.rgb_to_hsv(*[c / 255 for c in p])
    ///     return tuple(int(c * 255 + 0.5) for c in colorsys.hsv_to_rgb((h + shift) % 1, s, v))
    /// ```
    #[test]
    fn color_adjustments_match_pillow_and_colorsys_within_one_level() {
        let pixels = [
            [200, 120, 40],
            [10, 200, 90],
            [255, 255, 255],
            [0, 0, 0],
            [90, 30, 160],
        ];
        let image = RgbImage::from_fn(5, 1, |x, _| Rgb(pixels[x as usize]));
        type Adjustment = fn(&mut RgbImage, f64);
        let cases: [(Adjustment, f64, [[u8; 3]; 5]); 5] = [
            (
                adjust_brightness,
                1.3,
                [
                    [255, 156, 52],
                    [13, 255, 116],
                    [255; 3],
                    [0; 3],
                    [116, 39, 208],
                ],
            ),
            (
                adjust_contrast,
                0.6,
                [
                    [166, 118, 70],
                    [52, 166, 100],
                    [199; 3],
                    [46; 3],
                    [100, 64, 142],
                ],
            ),
            (
                adjust_saturation,
                1.7,
                [[245, 109, 0], [0, 248, 61], [255; 3], [0; 3], [108, 6, 227]],
            ),
            (
                adjust_hue,
                0.1,
                [
                    [184, 200, 40],
                    [10, 196, 200],
                    [255; 3],
                    [0; 3],
                    [160, 30, 152],
                ],
            ),
            (
                adjust_hue,
                -0.3,
                [
                    [152, 40, 200],
                    [200, 128, 10],
                    [255; 3],
                    [0; 3],
                    [30, 160, 116],
                ],
            ),
        ];
        for (adjust, factor, expected) in cases {
            let mut adjusted = image.clone();
            adjust(&mut adjusted, factor);
            for (pixel, reference) in adjusted.pixels().zip(expected) {
                for (actual, wanted) in pixel.0.into_iter().zip(reference) {
                    assert!(
                        actual.abs_diff(wanted) <= 1,
                        "{factor}: {pixel:?} vs {reference:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn gaussian_blur_keeps_flat_images_and_spreads_an_impulse() {
        let flat = RgbImage::from_pixel(6, 5, Rgb([90, 120, 30]));
        assert_eq!(gaussian_blur(&flat, 5, 2.0), flat);
        let mut impulse = RgbImage::new(7, 7);
        impulse.put_pixel(3, 3, Rgb([255, 255, 255]));
        let blurred = gaussian_blur(&impulse, 3, 1.0);
        let kernel = gaussian_kernel(3, 1.0);
        // Centre weight (1/(1 + 2e^(−1/2)))² ≈ 0.1621.
        assert!((kernel[1] - 1.0 / (1.0 + 2.0 * (-0.5_f64).exp())).abs() < 1e-12);
        assert_eq!(
            blurred.get_pixel(3, 3)[0],
            to_level(255.0 * kernel[1] * kernel[1])
        );
        assert_eq!(
            blurred.get_pixel(2, 3)[0],
            to_level(255.0 * kernel[0] * kernel[1])
        );
        assert_eq!(blurred.get_pixel(0, 0)[0], 0);
        assert_eq!(kernels::reflect(-1, 5), 1);
        assert_eq!(kernels::reflect(5, 5), 3);
        assert_eq!(kernels::reflect(-9, 3), 1);
    }

    #[test]
    fn cutout_paints_a_clipped_square_of_the_expected_side() {
        let white = RgbImage::from_pixel(20, 16, Rgb([255, 255, 255]));
        let cutout = Transform::Cutout(Cutout {
            holes: 1,
            size: Some(6),
            fraction: None,
            fill: Fill::default(),
        });
        let mut saw_whole_hole = false;
        for index in 0..50 {
            let output = cutout.apply(white.clone(), 20, &mut sample_rng(0, 0, index));
            let black: Vec<(u32, u32)> = output
                .enumerate_pixels()
                .filter(|(_, _, pixel)| pixel.0 == [0, 0, 0])
                .map(|(x, y, _)| (x, y))
                .collect();
            assert!(
                output
                    .pixels()
                    .all(|pixel| pixel.0 == [0, 0, 0] || pixel.0 == [255; 3])
            );
            let left = black.iter().map(|point| point.0).min().unwrap();
            let right = black.iter().map(|point| point.0).max().unwrap() + 1;
            let top = black.iter().map(|point| point.1).min().unwrap();
            let bottom = black.iter().map(|point| point.1).max().unwrap() + 1;
            // The black pixels fill their bounding box: one rectangle.
            assert_eq!(black.len() as u32, (right - left) * (bottom - top));
            assert!(right - left <= 6 && bottom - top <= 6);
            let touches_border = left == 0 || top == 0 || right == 20 || bottom == 16;
            if !touches_border {
                assert_eq!((right - left, bottom - top), (6, 6));
                saw_whole_hole = true;
            }
        }
        assert!(saw_whole_hole);
        let quarter = Transform::Cutout(Cutout {
            holes: 1,
            size: None,
            fraction: Some(1.0),
            fill: Fill::Gray(7),
        });
        // A hole as large as the image, centred anywhere, covers at least a quarter of it.
        let output = quarter.apply(white, 20, &mut sample_rng(0, 0, 0));
        let painted = output.pixels().filter(|pixel| pixel.0 == [7; 3]).count();
        assert!(painted >= 20 * 16 / 4, "{painted}");
    }

    #[test]
    fn normalisation_writes_channel_planes() {
        let mut image = RgbImage::new(2, 1);
        image.put_pixel(0, 0, Rgb([0, 255, 51]));
        image.put_pixel(1, 0, Rgb([255, 0, 102]));
        let mean = [0.5, 0.25, 0.2];
        let std = [0.5, 0.25, 0.1];
        let mut out = [f32::NAN; 6];
        to_normalized_chw(&image, mean, std, &mut out);
        let expected = [-1.0, 1.0, 3.0, -1.0, 0.0, 2.0];
        for (actual, expected) in out.iter().zip(expected) {
            assert!((actual - expected).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn validation_messages_name_the_field() {
        let cases = [
            (
                r#"{"rotation": {"degrees": -5}}"#,
                "rotation.degrees: must be ≥ 0 (got -5)",
            ),
            (
                r#"{"horizontal_flip": {"p": 1.5}}"#,
                "horizontal_flip.p: must be in [0, 1] (got 1.5)",
            ),
            (
                r#"{"gaussian_blur": {"kernel_size": 4}}"#,
                "gaussian_blur.kernel_size: must be odd and positive (got 4)",
            ),
            (
                r#"{"random_resized_crop": {"scale": [0.9, 0.1]}}"#,
                "random_resized_crop.scale: must satisfy 0 < min ≤ max ≤ 1 (got [0.9, 0.1])",
            ),
            (
                r#"{"color_jitter": {"hue": 0.7}}"#,
                "color_jitter.hue: must be in [0, 0.5] (got 0.7)",
            ),
            (
                r#"{"center_crop": {"size": 0}}"#,
                "center_crop.size: must be > 0 (got 0)",
            ),
            (
                r#"{"random_crop": {"size": [0, 4], "padding": 2}}"#,
                "random_crop.size: must be > 0 (got [0, 4])",
            ),
            (
                r#"{"cutout": {"size": 4, "fraction": 0.2}}"#,
                "cutout: give exactly one of `size` or `fraction`",
            ),
        ];
        for (json, message) in cases {
            assert_eq!(parse(json).validate().unwrap_err().to_string(), message);
        }
        let unknown = serde_json::from_str::<Transform>(r#"{"rotation": {"degree": 5}}"#);
        assert!(unknown.unwrap_err().to_string().contains("degree"));
    }

    #[test]
    fn the_documented_yaml_list_parses() {
        let list: Vec<Transform> = serde_json::from_str(
            r#"[{"random_resized_crop": {"scale": [0.08, 1.0], "ratio": [0.75, 1.3333]}},
                {"horizontal_flip": {"p": 0.5}}, {"rotation": {"degrees": 10}},
                {"color_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.0}},
                {"gaussian_blur": {"kernel_size": 5, "sigma": [0.1, 3.0]}},
                {"cutout": {"holes": 1, "size": 8}}, {"resize": {"size": 32}},
                {"center_crop": {"size": 28}}, {"random_crop": {"padding": 2}}]"#,
        )
        .unwrap();
        assert_eq!(list.len(), 9);
        assert!(list.iter().all(|transform| transform.validate().is_ok()));
    }
}
