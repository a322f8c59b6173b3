"""Golden fixtures for tests/suite/model_golden.rs: tiny ViL v1 and v2 models in PyTorch.

Run by hand (not in CI), on the CPU, from the repository root:

    pip install torch safetensors
    python tests/golden/make_golden.py

It rebuilds the official Vision-LSTM module layout (NX-AI/vision-lstm, vision_lstm.py = v1 and
vision_lstm2.py = v2) from the architecture description in VIL_SPEC, with the official parameter
names, for two tiny configurations (dim 32, patch 8, image 32, 5 classes; v1 with 2 blocks, v2
with 1 block pair). Every parameter is then overwritten with random values, so that each one
moves the logits (the real initialisation leaves the head at ~1e-5 and the gates at zero).

Written files, all under tests/golden/:
  vil_v1_tiny.th            v1 state dict nested under "state_dict", as the official .th files
  vil_v2_tiny.safetensors   v2 state dict
  vil_io.safetensors        inputs and float64 reference logits:
                            input_32 [2,3,32,32], input_48 [2,3,48,48],
                            logits_v1 / logits_v2 (32x32 input),
                            logits_v1_48 (48x48 input, positional embedding resized bicubically)
The weights are stored in float32 and the logits are computed in float64 from those same float32
values, so the Rust port (float32) is compared against an exact reference.
"""

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).resolve().parent
DIM, PATCH, IMAGE, CLASSES, CHANNELS = 32, 8, 32, 5, 3
EXPANSION, BLOCK, HEADS = 2, 4, 4


class ViLNorm(nn.Module):
    """The ViL LayerNorm: scale stored as an offset (effective 1 + weight), optional bias."""

    def __init__(self, dim, bias, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), 1 + self.weight, self.bias, self.eps)


class HeadNorm(ViLNorm):
    """Group norm with one group per head on (B, NH, S, DH) input."""

    def forward(self, x):
        b, nh, s, dh = x.shape
        flat = x.transpose(1, 2).reshape(b * s, nh * dh)
        out = F.group_norm(flat, nh, 1 + self.weight, self.bias, self.eps)
        return out.view(b, s, nh, dh).transpose(1, 2)


class BlockDiagonal(nn.Module):
    def __init__(self, dim, block, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim // block, block, block))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        blocks = x.unflatten(-1, (self.weight.shape[0], -1))
        out = torch.einsum("...nd,nod->...no", blocks, self.weight).flatten(-2)
        return out if self.bias is None else out + self.bias


class CausalConv(nn.Module):
    def __init__(self, dim, kernel):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel - 1, groups=dim)
        self.pad = kernel - 1

    def forward(self, x):
        return self.conv(x.transpose(1, 2))[:, :, : -self.pad].transpose(1, 2)


class GridConv(nn.Conv2d):
    def forward(self, x):
        side = int(math.isqrt(x.shape[1]))
        grid = x.transpose(1, 2).unflatten(2, (side, side))
        return super().forward(grid).flatten(2).transpose(1, 2)


def mlstm_parallel(q, k, v, igate, fgate):
    """Equations M1-M7, (B, NH, S, DH) inputs and (B, NH, S, 1) gate pre-activations."""
    s, dh = q.shape[-2:]
    cumulative = torch.cumsum(F.logsigmoid(fgate), dim=-2)
    log_d = cumulative - cumulative.transpose(-2, -1) + igate.transpose(-2, -1)
    causal = torch.tril(torch.ones(s, s, dtype=torch.bool))
    log_d = log_d.masked_fill(~causal, float("-inf"))
    row_max = log_d.max(dim=-1, keepdim=True).values
    c = (q @ (k / math.sqrt(dh)).transpose(-2, -1)) * torch.exp(log_d - row_max)
    normaliser = torch.maximum(c.sum(-1, keepdim=True).abs(), torch.exp(-row_max))
    return (c / (normaliser + 1e-6)) @ v


class Cell(nn.Module):
    def __init__(self, inner, norm_bias):
        super().__init__()
        self.igate = nn.Linear(3 * inner, HEADS)
        self.fgate = nn.Linear(3 * inner, HEADS)
        self.outnorm = HeadNorm(inner, norm_bias)

    def forward(self, q, k, v):
        b, s, e = q.shape
        gate_input = torch.cat([q, k, v], dim=-1)
        heads = lambda t: t.view(b, s, HEADS, -1).transpose(1, 2)
        gate = lambda g: g(gate_input).transpose(1, 2).unsqueeze(-1)
        h = mlstm_parallel(heads(q), heads(k), heads(v), gate(self.igate), gate(self.fgate))
        return self.outnorm(h).transpose(1, 2).reshape(b, s, e)


class Layer(nn.Module):
    def __init__(self, reverse, v2):
        super().__init__()
        inner = EXPANSION * DIM
        self.reverse = reverse
        self.proj_up = nn.Linear(DIM, 2 * inner, bias=v2)
        self.q_proj = BlockDiagonal(inner, BLOCK, v2)
        self.k_proj = BlockDiagonal(inner, BLOCK, v2)
        self.v_proj = BlockDiagonal(inner, BLOCK, v2)
        if v2:
            self.conv = GridConv(inner, inner, 3, padding=1, groups=inner)
        else:
            self.conv1d = CausalConv(inner, 4)
        self.mlstm_cell = Cell(inner, v2)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, DIM, bias=v2)

    def forward(self, x):
        if self.reverse:
            x = x.flip(1)
        x_mlstm, z = self.proj_up(x).chunk(2, dim=-1)
        conv = self.conv if hasattr(self, "conv") else self.conv1d
        x_conv = F.silu(conv(x_mlstm))
        h = self.mlstm_cell(self.q_proj(x_conv), self.k_proj(x_conv), self.v_proj(x_mlstm))
        x = self.proj_down((h + self.learnable_skip * x_conv) * F.silu(z))
        return x.flip(1) if self.reverse else x


class Block(nn.Module):
    def __init__(self, reverse, v2):
        super().__init__()
        self.norm = ViLNorm(DIM, v2)
        self.layer = Layer(reverse, v2)

    def forward(self, x):
        return x + self.layer(self.norm(x))


class BlockPair(nn.Module):
    def __init__(self):
        super().__init__()
        self.rowwise_from_top_left = Block(False, True)
        self.rowwise_from_bot_right = Block(True, True)

    def forward(self, x):
        return self.rowwise_from_bot_right(self.rowwise_from_top_left(x))


class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(CHANNELS, DIM, PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class PosEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Parameter(torch.zeros(1, IMAGE // PATCH, IMAGE // PATCH, DIM))

    def forward(self, x):
        embed = self.embed
        if x.shape[1:3] != embed.shape[1:3]:
            embed = F.interpolate(
                embed.permute(0, 3, 1, 2), size=x.shape[1:3], mode="bicubic"
            ).permute(0, 2, 3, 1)
        return x + embed


class ViL(nn.Module):
    def __init__(self, v2):
        super().__init__()
        self.v2 = v2
        self.patch_embed = PatchEmbed()
        self.pos_embed = PosEmbed()
        if v2:
            self.blocks = nn.ModuleList([BlockPair()])
            self.norm = ViLNorm(DIM, True, eps=1e-6)
            self.legacy_norm = nn.LayerNorm(2 * DIM)
            self.head = nn.Linear(2 * DIM, CLASSES)
        else:
            self.blocks = nn.ModuleList([Block(False, False), Block(True, False)])
            self.legacy_norm = ViLNorm(DIM, False)
            self.norm = nn.LayerNorm(DIM, eps=1e-6)
            self.head = nn.Linear(DIM, CLASSES)

    def forward(self, images):
        x = self.pos_embed(self.patch_embed(images)).flatten(1, 2)
        for block in self.blocks:
            x = block(x)
        if self.v2:
            x = self.norm(x)
            x = self.legacy_norm(torch.cat([x[:, 0], x[:, -1]], dim=1))
        else:
            x = self.legacy_norm(x)
            x = self.norm((x[:, 0] + x[:, -1]) / 2)
        return self.head(x)


def randomise(model, generator):
    """Overwrite every parameter so that all of them matter for the logits."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.5 if parameter.dim() == 1 else 1.0 / math.sqrt(max(parameter[0].numel(), 1))
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def main():
    generator = torch.Generator().manual_seed(20240606)
    input_32 = torch.randn(2, CHANNELS, 32, 32, generator=generator)
    input_48 = torch.randn(2, CHANNELS, 48, 48, generator=generator)
    io = {"input_32": input_32, "input_48": input_48}
    for v2 in (False, True):
        model = ViL(v2).float()
        randomise(model, generator)
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        if v2:
            save_file(state, str(OUT / "vil_v2_tiny.safetensors"))
        else:
            torch.save({"state_dict": state}, OUT / "vil_v1_tiny.th")
        reference = model.double().eval()
        with torch.no_grad():
            tag = "v2" if v2 else "v1"
            io[f"logits_{tag}"] = reference(input_32.double()).float()
            if not v2:
                io["logits_v1_48"] = reference(input_48.double()).float()
    save_file({name: tensor.contiguous() for name, tensor in io.items()}, str(OUT / "vil_io.safetensors"))
    for name, tensor in io.items():
        if name.startswith("logits"):
            print(name, tensor.tolist())


if __name__ == "__main__":
    main()
