"""A tiny synthetic world for tests: a bright sprite moved by actions over a textured background.

Every episode (deterministic given its seed):

* a background drawn once per episode and then fixed: a palette colour with a gentle gradient
  plus a few axis-aligned rectangles in palette colours (`PALETTE`, muted). Its values stay in [16, 176], so the sprite (values >= 220 in
  the red and green channels, 40 in blue) is always the brightest yellow thing in a frame;
* a `sprite` x `sprite` yellow square that each action moves `speed` pixels:
  0 up, 1 down, 2 left, 3 right, 4 stay (`ACTIONS`). With `border="wrap"` (default) the world
  is a torus, so every action has a visible effect and the true action is always recoverable
  from two consecutive frames (what the LAM test needs); `border="clip"` stops at the edges.
* the sprite starts at a multiple of `speed` (and stays on that grid unless clipped);
* actions drawn uniformly at random, each held for `hold` steps (1 = a new action each step).

Conventions match the dataset: frames uint8 (L, H, W, 3) channels-last; actions[t] is the action
taken at frame t that leads to frame t+1 (gym convention), so the last action of an episode has
no successor frame. `make_batch` stacks episodes into the `{"frames", "actions"}` batch dict the
models. `compute_loss` takes; `write_dataset` writes episodes in the dataset format (genie.data).

    frames, actions = make_episode(seed=0, length=16)        # (16, 32, 32, 3), (16,)
    batch = make_batch(batch=8, T=8, seed=1)                  # {"frames": (8, 8, 32, 32, 3) uint8, "actions": (8, 8) long}
    y, x = sprite_position(frames[3])                        # top-left corner (wrap: modulo size)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ACTIONS = ("up", "down", "left", "right", "stay")  # action id -> name
MOVES = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1), 4: (0, 0)}  # action id -> (dy, dx) unit move
SPRITE_COLOR = np.array(
    [255, 230, 40], dtype=np.uint8
)  # bright yellow, brighter than any background


# muted background colours (values in [16, 176]): a small palette, like a game's tile set, so
# a tokenizer with a small codebook can represent the backgrounds exactly
PALETTE = np.array(
    [
        [40, 60, 120], [60, 110, 70], [120, 80, 50], [90, 90, 100],
        [30, 120, 140], [130, 60, 110], [150, 140, 90], [70, 40, 40],
        [20, 70, 40], [110, 130, 160], [160, 100, 60], [50, 50, 70],
    ],
    dtype=np.float32,
)  # fmt: skip


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a palette colour with a gentle gradient, plus 3-5 palette-coloured
    rectangles; values in [16, 176]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    gy, gx = rng.uniform(-16, 16, size=2)
    img = PALETTE[rng.integers(len(PALETTE))] + (yy * gy + xx * gx)[..., None]  # (size, size, 3)
    for _ in range(rng.integers(3, 6)):
        h, w = rng.integers(size // 8, size // 2, size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        img[y : y + h, x : x + w] = PALETTE[rng.integers(len(PALETTE))]
    return np.clip(img, 16, 176).astype(np.uint8)


def draw(background: np.ndarray, y: int, x: int, sprite: int, wrap: bool) -> np.ndarray:
    """The background with the sprite's top-left corner at (y, x) (wrapping around on a torus)."""
    frame = background.copy()
    size = background.shape[0]
    rows = np.arange(y, y + sprite) % size if wrap else np.arange(y, min(y + sprite, size))
    cols = np.arange(x, x + sprite) % size if wrap else np.arange(x, min(x + sprite, size))
    frame[np.ix_(rows, cols)] = SPRITE_COLOR
    return frame


def make_episode(
    seed: int,
    length: int,
    size: int = 32,
    sprite: int = 4,
    speed: int = 2,
    num_actions: int = 5,
    hold: int = 1,
    border: str = "wrap",
) -> tuple[np.ndarray, np.ndarray]:
    """One episode -> (frames uint8 (length, size, size, 3), actions int64 (length,)).

    num_actions: 4 (moves only) or 5 (moves + stay); hold: steps each random action is held;
    border: "wrap" (torus) or "clip" (the sprite stops at the edges)."""
    if border not in ("wrap", "clip"):
        raise ValueError(f"border must be 'wrap' or 'clip', got {border!r}")
    if num_actions not in (4, 5):
        raise ValueError("num_actions must be 4 (moves) or 5 (moves + stay)")
    rng = np.random.default_rng(seed)
    background = make_background(rng, size)
    wrap = border == "wrap"
    # start on the `speed` grid, so the sprite's offset within a model's patch grid takes few
    # values (speed == patch size: always aligned, and each action looks the same everywhere)
    cells = -(-size // speed) if wrap else (size - sprite) // speed + 1
    y, x = (int(v) * speed % size for v in rng.integers(0, cells, size=2))
    n_draws = -(-length // hold)
    actions = np.repeat(rng.integers(0, num_actions, size=n_draws), hold)[:length].astype(np.int64)
    frames = np.empty((length, size, size, 3), dtype=np.uint8)
    for t in range(length):
        frames[t] = draw(background, y, x, sprite, wrap)
        dy, dx = MOVES[int(actions[t])]
        if wrap:
            y, x = (y + dy * speed) % size, (x + dx * speed) % size
        else:
            y = int(np.clip(y + dy * speed, 0, size - sprite))
            x = int(np.clip(x + dx * speed, 0, size - sprite))
    return frames, actions


def make_batch(batch: int, T: int, seed: int, **episode_kw) -> dict[str, torch.Tensor]:
    """`batch` episodes of `T` frames, episode i seeded with seed * 100_003 + i, so distinct
    seeds give disjoint episodes (use seeds >= 10_000 for held-out data)."""
    eps = [make_episode(seed * 100_003 + i, T, **episode_kw) for i in range(batch)]
    frames = torch.from_numpy(np.stack([f for f, _ in eps]))
    actions = torch.from_numpy(np.stack([a for _, a in eps]))
    return {"frames": frames, "actions": actions}


def sprite_position(frame: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """Top-left corner (y, x) of the sprite in a uint8 (H, W, 3) frame, or (-1, -1) if absent.

    On a wrapped sprite (split across an edge) it returns the corner modulo the frame size."""
    frame = np.asarray(frame)
    mask = (frame[..., 0] >= 200) & (frame[..., 1] >= 200) & (frame[..., 2] <= 100)
    if not mask.any():
        return -1, -1
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return _first_of_run(rows, frame.shape[0]), _first_of_run(cols, frame.shape[1])


def _first_of_run(idx: np.ndarray, size: int) -> int:
    """Start of a (possibly wrapping) run of consecutive indices, e.g. [0, 1, 30, 31] -> 30."""
    gaps = np.flatnonzero(np.diff(idx) > 1)
    return int(idx[gaps[0] + 1]) if len(gaps) else int(idx[0])


def write_dataset(
    root: str | Path, episodes: int, length: int, val_episodes: int = 0, seed: int = 0, **episode_kw
) -> Path:
    """Write `episodes` train + `val_episodes` val episodes (seeds seed, seed+1, ...) to `root`
    in the project's dataset format (genie.data.format), with the action labels. Returns root."""
    from genie.data.format import DatasetWriter, EpisodeData

    size = episode_kw.get("size", 32)
    n = episode_kw.get("num_actions", 5)
    space = {"n": n, "labels": list(ACTIONS[:n])}
    source = {"kind": "synthetic", **{k: v for k, v in episode_kw.items()}}
    with DatasetWriter(
        root, frame_size=(size, size), source=source, fps=15.0, action_space=space
    ) as writer:
        eps = []
        for i in range(episodes + val_episodes):
            frames, actions = make_episode(seed + i, length, **episode_kw)
            split = "train" if i < episodes else "val"
            eps.append(
                EpisodeData(
                    name=f"ep-{seed + i}",
                    split=split,
                    frames=frames,
                    actions=actions,
                    seed=seed + i,
                )
            )
        writer.write_shard(eps)
    return Path(root)
