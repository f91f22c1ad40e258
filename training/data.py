"""Data order for training: a seeded permutation per epoch, so (epoch, position) is the whole
data-order state a checkpoint needs, and every process of a multi-process run draws the same
permutation (accelerate then hands each process its own share of the batches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genie.data import ClipDataset, collate_clips
from genie.utils.errors import UserError


class EpochSampler(torch.utils.data.Sampler):
    """Epoch e visits the clips in the permutation fixed by (seed, e)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class Indexed(torch.utils.data.Dataset):
    """Items carry their clip index (logged with --debug-shards to check sharding)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


def collate_indexed(items) -> dict[str, Any]:
    """{"frames": uint8 (B, T, H, W, 3), "actions": (B, T) or None, "index": (B,)}"""
    batch = collate_clips([item for _, item in items])
    batch["index"] = torch.tensor([i for i, _ in items])
    return batch


def val_split_or_none(root: str | Path, clip_len: int) -> ClipDataset | None:
    """The val split, or None when the dataset has none (or none with clips that long)."""
    try:
        ds = ClipDataset(root, split="val", clip_len=clip_len)
    except UserError:
        return None
    return ds if len(ds) > 0 else None


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
