//! Patch embedding and the learned positional embedding of ViL (VIL_SPEC section 2, steps 1-3),
//! including the bicubic resize that lets a checkpoint trained on one grid run on another.
//!
//! The patch projection is a stride = kernel convolution; it is computed as one matrix product
//! over unfolded patches, which lands directly in the channels-last token layout the blocks use.
//! The bicubic resize is written as two small interpolation matrices (rows, then columns) that
//! reproduce `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)` exactly and
//! are differentiable on every backend.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::init;

/// Weights of the patch convolution with PyTorch's `Conv2d` layout.
#[derive(Module, Debug)]
pub struct PatchProjection<B: Backend> {
    /// `[dim, channels, patch, patch]`
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Param<Tensor<B, 1>>,
}

/// The official `VitPatchEmbed`: non-overlapping patches projected to the embedding width.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: PatchProjection<B>,
}

impl<B: Backend> PatchEmbed<B> {
    /// Xavier-uniform on the `[dim, channels·patch²]` view of the weight, bias 0.
    pub fn new(dim: usize, channels: usize, patch: usize, device: &B::Device) -> Self {
        let fan_in = channels * patch * patch;
        Self {
            proj: PatchProjection {
                weight: init::xavier_uniform([dim, channels, patch, patch], fan_in, dim, device),
                bias: init::zeros([dim], device),
            },
        }
    }

    pub fn patch_size(&self) -> usize {
        let [_, _, patch, _] = self.proj.weight.dims();
        patch
    }

    /// The patch grid `[height, width]` of an image size.
    pub fn grid(&self, height: usize, width: usize) -> [usize; 2] {
        let patch = self.patch_size();
        [height / patch, width / patch]
    }

    /// # Shapes
    /// `[batch, channels, height, width]` → `[batch, (height/p)·(width/p), dim]`, row-major
    /// over the patch grid. Height and width must be multiples of the patch size p.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, channels, height, width] = images.dims();
        let [dim, _, patch, _] = self.proj.weight.dims();
        let [rows, columns] = self.grid(height, width);
        let patches = images
            .reshape([batch, channels, rows, patch, columns, patch])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch, rows * columns, channels * patch * patch]);
        let weight = self
            .proj
            .weight
            .val()
            .reshape([dim, channels * patch * patch])
            .transpose();
        super::fused::linear::linear(patches, weight, Some(self.proj.bias.val()))
    }
}

/// The official `VitPosEmbed2d`: one learned vector per grid cell, added to the tokens.
#[derive(Module, Debug)]
pub struct PositionEmbedding<B: Backend> {
    /// `[1, height, width, dim]`
    pub embed: Param<Tensor<B, 4>>,
}

impl<B: Backend> PositionEmbedding<B> {
    /// Truncated normal, σ = 0.02.
    pub fn new(grid: [usize; 2], dim: usize, device: &B::Device) -> Self {
        Self {
            embed: init::truncated_normal([1, grid[0], grid[1], dim], 0.02, device),
        }
    }

    /// The grid `[height, width]` the embedding was learned for.
    pub fn grid(&self) -> [usize; 2] {
        let [_, height, width, _] = self.embed.dims();
        [height, width]
    }

    /// Adds the embedding, resized bicubically when the tokens come from another grid.
    ///
    /// # Shapes
    /// tokens `[batch, grid[0]·grid[1], dim]` → same
    pub fn forward(&self, tokens: Tensor<B, 3>, grid: [usize; 2]) -> Tensor<B, 3> {
        let [_, count, dim] = tokens.dims();
        let embed = if grid == self.grid() {
            self.embed.val()
        } else {
            resize_bicubic(self.embed.val(), grid)
        };
        tokens + embed.reshape([1, count, dim])
    }
}

/// Resizes a channels-last grid `[1, height, width, dim]` to `[1, size[0], size[1], dim]` like
/// PyTorch's bicubic interpolation (a = −0.75, half-pixel centres, borders clamped).
pub fn resize_bicubic<B: Backend>(embed: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, height, width, dim] = embed.dims();
    let device = embed.device();
    let [new_height, new_width] = size;
    let row_weights = Tensor::<B, 2>::from_data(
        TensorData::new(bicubic_weights(height, new_height), [new_height, height]),
        &device,
    );
    let column_weights = Tensor::<B, 3>::from_data(
        TensorData::new(bicubic_weights(width, new_width), [1, new_width, width]),
        &device,
    );
    // Rows: [H', H] @ [H, W·D]; columns: [1, W', W] @ [H', W, D], broadcast over H'.
    let resized_rows = row_weights
        .matmul(embed.reshape([height, width * dim]))
        .reshape([new_height, width, dim]);
    column_weights
        .matmul(resized_rows)
        .reshape([1, new_height, new_width, dim])
}

/// Row-major `[output, input]` matrix of 1-D bicubic interpolation weights, matching PyTorch's
/// `upsample_bicubic2d` with `align_corners=False`.
fn bicubic_weights(input: usize, output: usize) -> Vec<f32> {
    const A: f64 = -0.75;
    // Keys' cubic convolution kernel for |x| ≤ 1 and 1 < |x| < 2.
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f64 / output as f64;
    let mut weights = vec![0.0f64; output * input];
    for target in 0..output {
        let source = (target as f64 + 0.5) * scale - 0.5;
        let floor = source.floor();
        let fraction = source - floor;
        let coefficients = [
            far(fraction + 1.0),
            near(fraction),
            near(1.0 - fraction),
            far(2.0 - fraction),
        ];
        for (offset, coefficient) in coefficients.iter().enumerate() {
            let index = (floor as isize - 1 + offset as isize).clamp(0, input as isize - 1);
            weights[target * input + index as usize] += coefficient;
        }
    }
    weights.into_iter().map(|weight| weight as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::bicubic_weights;

    #[test]
    fn bicubic_rows_sum_to_one_and_same_size_is_the_identity() {
        for (input, output) in [(4, 6), (14, 12), (7, 7), (2, 9)] {
            let weights = bicubic_weights(input, output);
            for row in weights.chunks(input) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "{input}→{output}: {row:?}");
            }
        }
        let identity = bicubic_weights(5, 5);
        for (index, weight) in identity.iter().enumerate() {
            let expected = if index % 6 == 0 { 1.0 } else { 0.0 };
            assert!((weight - expected).abs() < 1e-7);
        }
    }

    #[test]
    fn upsampling_by_two_uses_the_pytorch_half_pixel_taps() {
        // Output 0 of 2→4 sits at source −0.25: taps at −2, −1, 0, 1 clamp onto 0, 0, 0, 1.
        let weights = bicubic_weights(2, 4);
        let t: f64 = 0.75;
        let far = |x: f64| ((-0.75 * x + 3.75) * x - 6.0) * x + 3.0;
        let near = |x: f64| (1.25 * x - 2.25) * x * x + 1.0;
        let last = far(2.0 - t);
        assert!((f64::from(weights[1]) - last).abs() < 1e-6);
        assert!((f64::from(weights[0]) - (far(t + 1.0) + near(t) + near(1.0 - t))).abs() < 1e-6);
    }
}
