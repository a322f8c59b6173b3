#!/usr/bin/env python3
"""PyTorch training throughput of the same Vision-LSTM (v1) vilab trains, for scripts/gpu-check.sh.

The model is written here from the description in the project's VIL_SPEC.md (sections 2-3): patch
embedding, learned positional embedding, blocks alternating direction, each a pre-norm residual
mLSTM layer (up-projection, causal depthwise conv, block-diagonal q/k/v, input/forget gates, the
stabilised parallel mLSTM, per-head norm, learnable skip, SiLU gate, down-projection), bilateral
average pooling, two norms and a linear head. The parameter count is printed so it can be checked
against vilab's (`vilab model info`).

The step is vilab's: soft-target cross-entropy, AdamW (no decay on 1-D parameters and pos_embed),
global-norm clipping. Inputs are random tensors already on the GPU, so this measures the model and
optimiser alone; vilab's figure also includes its data loader.

Usage: torch_throughput.py --dim 192 --depth 24 --image-size 224 --batch 64 --steps 20 \
           --precision f32|bf16 [--compile] [--mode train|eval]
Prints one line: `pytorch <device> <precision> <mode> 1 device(s): <images/s> img/s (<params> parameters, peak <MiB> MiB)`.
"""

import argparse
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class OffsetLayerNorm(nn.Module):
    """Layer norm whose scale is stored as a zero-initialised offset (scale = 1 + weight)."""

    def __init__(self, dim, eps, bias=False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), 1.0 + self.weight, self.bias, self.eps)


class BlockDiagonal(nn.Module):
    """y[b*s + o] = sum_d W[b, o, d] x[b*s + d] over blocks of `size` channels."""

    def __init__(self, inner, size, dim):
        super().__init__()
        self.size = size
        std = math.sqrt(2.0 / (5.0 * dim))
        self.weight = nn.Parameter(torch.randn(inner // size, size, size) * std)

    def forward(self, x):
        shape = x.shape
        x = x.reshape(*shape[:-1], shape[-1] // self.size, self.size)
        return torch.einsum("...bd,bod->...bo", x, self.weight).reshape(shape)


class MlstmLayer(nn.Module):
    def __init__(self, dim, heads=4, proj_factor=2, kernel=4, block=4):
        super().__init__()
        inner = proj_factor * dim
        self.inner, self.heads, self.kernel = inner, heads, kernel
        self.proj_up = nn.Linear(dim, 2 * inner, bias=False)
        nn.init.normal_(self.proj_up.weight, std=math.sqrt(2.0 / (5.0 * dim)))
        self.conv = nn.Conv1d(inner, inner, kernel, groups=inner)
        self.q_proj = BlockDiagonal(inner, block, dim)
        self.k_proj = BlockDiagonal(inner, block, dim)
        self.v_proj = BlockDiagonal(inner, block, dim)
        self.igate = nn.Linear(3 * inner, heads)
        self.fgate = nn.Linear(3 * inner, heads)
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, heads))
        self.outnorm = nn.Parameter(torch.zeros(inner))
        self.skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, dim, bias=False)
        nn.init.normal_(self.proj_down.weight, std=2.0 / math.sqrt(dim))

    def cell(self, q, k, v, igate, fgate):
        # Stabilised parallel mLSTM (equations M1-M7): q, k, v [B, NH, S, DH]; gates [B, NH, S].
        batch, heads, tokens, head_dim = q.shape
        log_forget = F.logsigmoid(fgate.float())
        cumulative = torch.cumsum(log_forget, dim=-1)
        log_decay = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2) + igate.float().unsqueeze(-2)
        causal = torch.ones(tokens, tokens, dtype=torch.bool, device=q.device).tril()
        log_decay = log_decay.masked_fill(~causal, float("-inf"))
        row_max = log_decay.amax(dim=-1, keepdim=True)
        decay = torch.exp(log_decay - row_max)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim) * decay.to(q.dtype)
        normaliser = torch.maximum(scores.sum(-1, keepdim=True).abs().float(), torch.exp(-row_max))
        return (scores @ v) / (normaliser.to(q.dtype) + 1e-6)

    def forward(self, x):
        batch, tokens, _ = x.shape
        up = self.proj_up(x)
        x_m, z = up.chunk(2, dim=-1)
        padded = F.pad(x_m.transpose(1, 2), (self.kernel - 1, 0))
        x_c = F.silu(self.conv(padded).transpose(1, 2))
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m)
        gate_input = torch.cat([q, k, v], dim=-1)
        igate = self.igate(gate_input).transpose(1, 2)
        fgate = self.fgate(gate_input).transpose(1, 2)
        split = lambda t: t.reshape(batch, tokens, self.heads, -1).transpose(1, 2)
        h = self.cell(split(q), split(k), split(v), igate, fgate)
        h = F.group_norm(h.transpose(1, 2).reshape(batch * tokens, self.inner), self.heads, eps=1e-5)
        h = h.reshape(batch, tokens, self.inner) * (1.0 + self.outnorm)
        h = (h + self.skip * x_c) * F.silu(z)
        return self.proj_down(h)


class Block(nn.Module):
    def __init__(self, dim, reverse):
        super().__init__()
        self.norm = OffsetLayerNorm(dim, 1e-5)
        self.layer = MlstmLayer(dim)
        self.reverse = reverse

    def forward(self, x):
        u = self.norm(x)
        if self.reverse:
            return x + self.layer(u.flip(1)).flip(1)
        return x + self.layer(u)


class VisionLstm(nn.Module):
    def __init__(self, dim, depth, image_size, patch, classes):
        super().__init__()
        grid = image_size // patch
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, index % 2 == 1) for index in range(depth))
        self.legacy_norm = OffsetLayerNorm(dim, 1e-5)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.legacy_norm(x)
        pooled = (x[:, 0] + x[:, -1]) / 2
        return self.head(self.norm(pooled))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument(
        "--mode",
        choices=["train", "eval"],
        default="train",
        help="train: the whole training step; eval: the forward pass alone (eval mode, inference_mode)",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    model = VisionLstm(args.dim, args.depth, args.image_size, args.patch, args.classes).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and n != "pos_embed"]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n == "pos_embed"]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3
    )
    step_model = torch.compile(model) if args.compile else model
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    targets = F.one_hot(torch.arange(args.batch, device=device) % args.classes, args.classes).float()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            logits = step_model(images)
        loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    if args.mode == "eval":
        model.eval()

        def step():  # noqa: F811 - the forward pass alone, as validation and prediction run it
            with torch.inference_mode(), torch.autocast(
                device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"
            ):
                step_model(images)

    for _ in range(args.warmup_steps):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    seconds = time.perf_counter() - start
    print(
        f"pytorch {device.type} {args.precision} {args.mode} 1 device(s): {args.batch * args.steps / seconds:.1f} img/s "
        f"({params} parameters, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
