"""Fixed-length clips of a recorded or imported dataset, for training (docs/DATA.md).

    ds = ClipDataset("data/coinrun", split="train", clip_len=16)
    item = ds[0]          # {"frames": uint8 (T, H, W, 3), "actions": long (T,) or None}
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2, collate_fn=collate_clips)

Clips are cut from each episode at fixed offsets (0, stride, 2*stride, ...), in episode order,
so clip i is always the same frames. A clip never crosses the end of an episode, nor (unless
`cross_resets=True`) a restart of the game inside one. Shards are memory-mapped on first use in
each process: the object holds no open file when pickled into DataLoader workers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genie.data.format import Manifest, open_dataset, shard_path
from genie.utils.errors import UserError


class ClipDataset(torch.utils.data.Dataset):
    """Clips of `clip_len` frames taken every `frame_skip` source frames.

    Args:
        root: dataset folder (holds manifest.json).
        split: episodes of this split ("train", "val", "test", ...); None: all episodes.
        clip_len: T, frames per clip.
        stride: source frames between the starts of consecutive clips; default clip_len *
            frame_skip (clips don't overlap).
        frame_skip: take every k-th frame. actions[t] of a clip is the action recorded at its
            t-th frame (with k > 1 the actions of the skipped frames are dropped).
        cross_resets: let clips span a restart of the game inside an episode (CoinRun restarts
            the level when the agent dies); default False.

    Items: {"frames": torch.uint8 (T, H, W, 3), "actions": torch.long (T,) or None}; actions are
    None when the dataset has no action space and -1 where an action is unknown.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        clip_len: int = 16,
        stride: int | None = None,
        frame_skip: int = 1,
        cross_resets: bool = False,
    ) -> None:
        self.root = Path(root)
        self.manifest: Manifest = open_dataset(self.root)
        self.split, self.clip_len, self.frame_skip = split, int(clip_len), int(frame_skip)
        self.stride = int(stride) if stride is not None else self.clip_len * self.frame_skip
        if self.clip_len < 1 or self.frame_skip < 1 or self.stride < 1:
            raise UserError(
                f"clip_len, stride and frame_skip must be >= 1 (got {clip_len}, {stride}, {frame_skip})"
            )
        self.span = (self.clip_len - 1) * self.frame_skip + 1  # source frames one clip covers
        episodes = [e for e in self.manifest.episodes if split is None or e.split == split]
        if not episodes:
            have = ", ".join(
                f"{k} ({v['episodes']} episodes)" for k, v in self.manifest.splits().items()
            )
            raise UserError(
                f"{self.root} has no episodes in split '{split}' (it has: {have or 'none'})"
            )
        self.episodes = sorted(episodes, key=lambda e: e.id)
        self._shards = sorted({e.shard for e in self.episodes})
        shard_index = {s: i for i, s in enumerate(self._shards)}

        by_shard: dict[str, list] = {s: [] for s in self._shards}
        for e in self.episodes:
            by_shard[e.shard].append(e)
        shard_ids, starts, longest = [], [], 0
        for shard, mine in by_shard.items():
            firsts = (
                None
                if cross_resets
                else np.load(shard_path(self.root, shard, "firsts"), mmap_mode="r")
            )
            for e in mine:
                # stretches of the episode a clip may lie in: [a, b) in shard rows
                cuts = [e.start, e.start + e.length]
                if firsts is not None:
                    resets = np.flatnonzero(firsts[e.start + 1 : e.start + e.length]) + e.start + 1
                    cuts = [e.start, *resets.tolist(), e.start + e.length]
                for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                    longest = max(longest, b - a)
                    s = np.arange(a, b - self.span + 1, self.stride, dtype=np.int64)
                    starts.append(s)
                    shard_ids.append(np.full(len(s), shard_index[shard], np.int32))
            del firsts
        self._clip_start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self._clip_shard = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        if len(self._clip_start) == 0:
            what = "episode" if cross_resets else "episode stretch between game restarts"
            raise UserError(
                f"clips of {self.clip_len} frames (spanning {self.span} with frame_skip {self.frame_skip}) "
                f"are longer than every {what} in split '{split}' of {self.root} (longest: {longest} frames): "
                "use a shorter clip_len"
            )
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._pid = -1

    # -- metadata
    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of every frame."""
        return tuple(self.manifest.frame_size)

    @property
    def num_actions(self) -> int | None:
        a = self.manifest.action_space
        return None if a is None else int(a["n"])

    @property
    def action_labels(self) -> list[str] | None:
        a = self.manifest.action_space
        return None if a is None or a.get("labels") is None else list(a["labels"])

    @property
    def distinct_actions(self) -> dict[str, Any] | None:
        """The game's distinct actions, if the recorder knows them: {"labels": [...], "of": raw
        action -> distinct id, "game_action": distinct id -> the game's action}. CoinRun's 15
        buttons collapse to 6; recordings from before this field get it from their source."""
        a = self.manifest.action_space
        if a is None:
            return None
        if a.get("distinct"):
            return dict(a["distinct"])
        if (self.manifest.source or {}).get("kind") == "coinrun" and int(a["n"]) == 15:
            from genie.data.record import coinrun_action_space

            return coinrun_action_space()["distinct"]
        return None

    @property
    def game(self) -> dict[str, Any] | None:
        """The game a recording came from (kind, env, game), for replaying it; None if imported."""
        src = self.manifest.source or {}
        if src.get("kind") not in ("coinrun", "atari"):
            return None
        return {k: src[k] for k in ("kind", "env", "game", "distribution_mode") if k in src}

    @property
    def num_frames(self) -> int:
        """Frames in this split's episodes."""
        return sum(e.length for e in self.episodes)

    # -- items
    def __len__(self) -> int:
        return len(self._clip_start)

    def clip_location(self, i: int) -> tuple[str, int]:
        """(shard, first row) of clip i."""
        return self._shards[self._clip_shard[i]], int(self._clip_start[i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range ({len(self)} clips)")
        shard, a = self.clip_location(int(i) % len(self))
        frames, actions = self._open(shard)
        rows = slice(a, a + self.span, self.frame_skip)
        out_frames = torch.from_numpy(
            np.array(frames[rows])
        )  # (T, H, W, 3), a copy: never the mmap
        if len(out_frames) != self.clip_len:
            raise UserError(f"{self.root}: shard {shard} is truncated (re-record or re-import it)")
        out_actions = None
        if self.manifest.action_space is not None:
            out_actions = torch.from_numpy(actions[rows].astype(np.int64))  # (T,)
        return {"frames": out_frames, "actions": out_actions}

    def _open(self, shard: str) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None or self._pid != os.getpid():
            self._arrays, self._pid = {}, os.getpid()
        if shard not in self._arrays:
            try:
                self._arrays[shard] = (
                    np.load(shard_path(self.root, shard, "frames"), mmap_mode="r"),
                    np.load(shard_path(self.root, shard, "actions"), mmap_mode="r"),
                )
            except (OSError, ValueError) as e:
                raise UserError(f"{self.root}: shard {shard} is unreadable ({e})") from None
        return self._arrays[shard]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"], state["_pid"] = None, -1  # workers open their own memory maps
        return state


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ClipDataset items: {"frames": uint8 (B, T, H, W, 3), "actions": long (B, T) or None}."""
    shape = (len(items), *items[0]["frames"].shape)
    if torch.utils.data.get_worker_info() is not None:
        # in shared memory, a worker's batch reaches the main process without another copy
        frames = torch.empty(shape, dtype=torch.uint8).share_memory_()
    else:
        frames = torch.from_numpy(np.empty(shape, np.uint8))
    out = frames.numpy()
    for i, it in enumerate(items):
        # numpy copies: torch.stack/cat/copy_ on (T, H, W, 3) uint8 measured 10-100x slower here
        out[i] = it["frames"].numpy()
    acts = [it["actions"] for it in items]
    if all(a is None for a in acts):
        actions = None
    elif any(a is None for a in acts):
        raise ValueError("cannot batch clips with actions together with clips without")
    else:
        actions = torch.stack(acts)
    return {"frames": frames, "actions": actions}
