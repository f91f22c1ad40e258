"""Random draws for a batch whose rows may each follow their own generator.

A sampler takes `generator`: None (torch's global RNG), one `torch.Generator` for the whole
batch, or a list of B generators, one per row. With a list, row i draws exactly what a batch
of one with `generator[i]` draws, so B players stepped together see the frames each would
see alone (`WorldEngine` relies on it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(shape: tuple[int, ...], generator: Generators, device=None) -> torch.Tensor:
    """Standard normal noise of `shape` (B, ...)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device)
    _check(generator, shape[0])
    rows = [torch.randn((1, *shape[1:]), generator=g, device=device) for g in generator]
    return torch.cat(rows)


def multinomial(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One draw from each categorical of probs (B, ..., V) -> ids (B, ...)."""
    flat_shape = probs.shape[:-1]
    if generator is None or isinstance(generator, torch.Generator):
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).reshape(flat_shape)
    _check(generator, probs.shape[0])
    rows = [
        torch.multinomial(p.reshape(-1, probs.shape[-1]), 1, generator=g)
        for p, g in zip(probs, generator, strict=True)
    ]
    return torch.stack(rows).reshape(flat_shape)


def _check(generators: Sequence[torch.Generator], rows: int) -> None:
    if len(generators) != rows:
        raise ValueError(f"{len(generators)} generators for a batch of {rows}")
