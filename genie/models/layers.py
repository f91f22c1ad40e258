"""Layers two or more models share, beside the transformer blocks in `blocks`: the conv
stem/upsampler of the VQ tokenizer and the LAM, their init, the latent centring before an
l2-normalised VQ, and the dynamics backends' two-stream attention mask and action ids."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CenteredLatent(nn.Module):
    """Centres and scales latents per channel before an l2-normalised VQ: batch statistics in
    training (updating running ones), running statistics otherwise, so a frame's codes never
    depend on the rest of its batch at inference. Without it the latents share a large common
    direction at initialisation (positive GELU features, biases), every one lands on the same
    cosine code, and dead-code restarts re-seed from those same latents: the codebook collapses."""

    def __init__(self, dim: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, z: torch.Tensor, update_stats: bool) -> torch.Tensor:
        """z: (..., E) -> same shape. update_stats: use and update batch statistics (training)."""
        flat = F.batch_norm(
            z.reshape(-1, z.shape[-1]),
            self.running_mean,
            self.running_var,
            training=update_stats,
            momentum=self.momentum,
        )
        return flat.reshape(z.shape)


def conv_stem(widths: tuple[int, ...], out_dim: int, in_channels: int = 3) -> nn.Sequential:
    """(B', C, H, W) -> (B', out_dim, H/2^k, W/2^k): per stage a stride-2 conv and a 3x3 conv."""
    layers, c_in = [], in_channels
    for c in widths:
        layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GELU()]
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.GELU()]
        c_in = c
    layers.append(nn.Conv2d(c_in, out_dim, 1))
    return nn.Sequential(*layers)


def conv_upsampler(in_dim: int, widths: tuple[int, ...]) -> nn.Sequential:
    """(B', in_dim, h, w) -> (B', 3, h*2^k, w*2^k): mirror of `conv_stem` (widths full-res first)."""
    rev = list(reversed(widths))
    layers, c_in = [nn.Conv2d(in_dim, rev[0], 1), nn.GELU()], rev[0]
    for c in rev[1:] + [rev[-1]]:
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.GELU()]
        layers += [nn.ConvTranspose2d(c_in, c, 4, stride=2, padding=1), nn.GELU()]
        c_in = c
    layers.append(nn.Conv2d(c_in, 3, 3, padding=1))
    return nn.Sequential(*layers)


def init_convs(module: nn.Module) -> None:
    """He-normal init for convs (GELU ~ ReLU gain): torch's default shrinks activations ~3x per
    layer, so after a 6-conv stem the image would be a faint perturbation of the position
    embeddings and every frame would get the same codes."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.ConvTranspose2d):  # weight (in, out, k, k), stride 2: in*k*k/4 inputs
            fan_in = m.weight.shape[0] * m.weight[0, 0].numel() // 4
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_in))
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def two_stream_mask(n: int, device) -> torch.Tensor:
    """(2n, 2n) bool: clean i -> clean j<=i; masked/noisy i (frame i+1) -> clean j<=i and itself."""
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    top = torch.cat([causal, torch.zeros(n, n, dtype=torch.bool, device=device)], dim=1)
    bottom = torch.cat([causal, torch.eye(n, dtype=torch.bool, device=device)], dim=1)
    return torch.cat([top, bottom], dim=0)


def action_ids(action, b: int, num_actions: int, device) -> torch.Tensor:
    """An action per row (B,) as long ids; None -> the null action (id num_actions), which the
    first frame of a clip gets."""
    if action is None:
        return torch.full((b,), num_actions, dtype=torch.long, device=device)
    action = torch.as_tensor(action, device=device).long().reshape(-1).expand(b)
    if (action < 0).any() or (action >= num_actions).any():
        raise ValueError(f"action ids must be in 0..{num_actions - 1}")
    return action
