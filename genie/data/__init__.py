"""Gameplay data: recorders (CoinRun, Atari), a video importer, the on-disk format and the clip
dataset that training reads (docs/DATA.md).

    from genie.data import ClipDataset, collate_clips, open_dataset

torch is imported only when ClipDataset or collate_clips is first used, so the CLI stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genie.data.format import DatasetWriter, Episode, EpisodeData, Manifest, open_dataset

if TYPE_CHECKING:
    from genie.data.dataset import ClipDataset, collate_clips

__all__ = [
    "ClipDataset",
    "DatasetWriter",
    "Episode",
    "EpisodeData",
    "Manifest",
    "collate_clips",
    "open_dataset",
]


def __getattr__(name: str) -> Any:
    if name in ("ClipDataset", "collate_clips"):
        from genie.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'genie.data' has no attribute {name!r}")
