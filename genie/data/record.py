"""`genie record coinrun|atari`: record gameplay of a scripted policy (docs/DATA.md).

Two policies (`--policy`): `uniform` draws one of the game's buttons uniformly every step
(Genie's CoinRun protocol; the benchmark numbers use it), `sticky` holds one of the game's
*distinct* actions for a geometric number of steps (mean `--hold-mean`), with a bias toward
making progress (in CoinRun: right and jump-right more often than left), so the data looks
like play: the character runs, jumps and scrolls the level.

CoinRun follows Genie's protocol (Bruce et al. 2024, appendix F): procgen `coinrun`, hard mode,
random actions over the 15 buttons, one dataset episode = one level seed played for
`--steps-per-episode` steps (1,000 by default); when the agent dies or wins inside those steps
procgen restarts the same level, and that frame is flagged in `firsts`. Level seeds per split:
train 0..9,999, val 10,000..10,499, test 10,500..10,999 (Jasmine's 10,000/500/500).

Each episode's actions come from its own RNG (seeded by --seed and the level seed) and procgen
is deterministic given the level, so an episode's data does not depend on which other episodes
are recorded with it: a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genie.data.format import DatasetWriter, EpisodeData
from genie.utils.errors import UserError

# Genie / Jasmine seed ranges [start, stop) per split
SPLITS = {"train": (0, 10_000), "val": (10_000, 10_500), "test": (10_500, 11_000)}
# procgen's 15 button combos in `ProcgenGym3Env.get_combos()` order, named for CoinRun (up = jump).
# In CoinRun "down" does nothing, so down-left == left, down-right == right, and down, D, A, W,
# S, Q, E all act as noop.
COINRUN_KEYS = [
    ("LEFT", "DOWN"), ("LEFT",), ("LEFT", "UP"), ("DOWN",), (), ("UP",), ("RIGHT", "DOWN"),
    ("RIGHT",), ("RIGHT", "UP"), ("D",), ("A",), ("W",), ("S",), ("Q",), ("E",),
]  # fmt: skip
COINRUN_LABELS = [
    "down-left", "left", "jump-left", "down", "noop", "jump", "down-right", "right",
    "jump-right", "D", "A", "W", "S", "Q", "E",
]  # fmt: skip
# CoinRun's distinct actions: what the 15 buttons collapse to ("down" and the letters do nothing)
COINRUN_DISTINCT = ["noop", "left", "right", "jump", "jump-left", "jump-right"]
COINRUN_DISTINCT_BUTTON = [4, 1, 7, 5, 2, 8]  # the procgen button that plays each distinct action
COINRUN_BUTTON_TO_DISTINCT = [1, 1, 4, 0, 0, 3, 2, 2, 5, 0, 0, 0, 0, 0, 0]  # button -> distinct
# sticky policy over COINRUN_DISTINCT: mostly forward, as a player trying to finish does
COINRUN_STICKY_WEIGHTS = [0.08, 0.14, 0.30, 0.08, 0.08, 0.32]
POLICIES = ("uniform", "sticky")
COINRUN_FPS = 15.0  # procgen's native rate


@dataclass
class RecordResult:
    recorded: int  # episodes recorded by this run
    skipped: int  # planned episodes already in the folder
    frames: int  # frames recorded by this run
    seconds: float  # wall time of the recording loop

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


# ---------------------------------------------------------------------------- planning


def plan_episodes(
    episodes: int | None, seeds: tuple[int, int] | None, split: str | None
) -> list[tuple[str, int]]:
    """(split, seed) of every episode to record.

    --seeds A:B records seeds A..B-1 as --split (default train). Otherwise --episodes N: with
    --split train|val|test the first N seeds of that split's range; with no --split the N are
    shared like Genie's 10,000/500/500 (val and test get N/22 each, at least 1 when N >= 3).
    """
    if seeds is not None:
        a, b = seeds
        if episodes is not None:
            b = min(b, a + episodes)
        return [(split or "train", s) for s in range(a, b)]
    if episodes is None:
        raise UserError("say how much to record: --episodes N (or --levels A:B with --split NAME)")
    if episodes < 1:
        raise UserError(f"--episodes must be >= 1 (got {episodes})")
    if split is not None:
        if split not in SPLITS:
            raise UserError(
                f"split '{split}' has no default seed range (train, val, test): give --levels A:B with it"
            )
        a, b = SPLITS[split]
        if episodes > b - a:
            raise UserError(
                f"split {split} has {b - a} seeds ({a}..{b - 1}); for more use --levels A:B"
            )
        return [(split, s) for s in range(a, a + episodes)]
    held = max(1, int(episodes / 22 + 0.5)) if episodes >= 3 else 0
    counts = {"train": episodes - 2 * held, "val": held, "test": held}
    for name, n in counts.items():
        if n > SPLITS[name][1] - SPLITS[name][0]:
            raise UserError(
                f"--episodes {episodes} needs more than the {name} split's seeds: use --levels A:B"
            )
    return [
        (name, s) for name, n in counts.items() for s in range(SPLITS[name][0], SPLITS[name][0] + n)
    ]


def _parse_range(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (e.g. 0:100), got '{text}'") from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"expected 0 <= A < B, got '{text}'")
    return a, b


def episode_actions(seed: int, level: int, steps: int, n: int, repeat: int) -> np.ndarray:
    """(steps,) int32 uniform random actions, each held `repeat` steps; depends only on its args."""
    rng = np.random.default_rng([seed, level])
    return rng.integers(0, n, size=-(-steps // repeat)).repeat(repeat)[:steps].astype(np.int32)


def sticky_actions(
    seed: int,
    level: int,
    steps: int,
    buttons: list[int],
    weights: list[float] | None = None,
    hold_mean: float = 8.0,
) -> np.ndarray:
    """(steps,) int32 game buttons: one of `buttons` (drawn with `weights`) held for a geometric
    number of steps with mean `hold_mean`, then another; depends only on its args."""
    if hold_mean < 1:
        raise UserError(f"--hold-mean must be >= 1 (got {hold_mean})")
    rng = np.random.default_rng([seed, level, 1])
    p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    out = np.empty(steps, np.int32)
    t = 0
    while t < steps:
        hold = int(rng.geometric(1.0 / hold_mean))
        out[t : t + hold] = buttons[int(rng.choice(len(buttons), p=p))]
        t += hold
    return out


def _todo(writer: DatasetWriter, plan: list[tuple[str, int]], prefix: str) -> list[tuple[str, int]]:
    todo = []
    for split, seed in plan:
        have = writer.episode(f"{prefix}-{seed}")
        if have is None:
            todo.append((split, seed))
        elif have.split != split:
            raise UserError(
                f"{prefix} {seed} is already recorded in {writer.root} as split '{have.split}', not '{split}': "
                "splits must not share seeds"
            )
    return todo


# ---------------------------------------------------------------------------- CoinRun


def _import_procgen():
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # gym's "unmaintained" notice on import
            from procgen import ProcgenGym3Env
    except ImportError:
        raise UserError(
            "procgen is not installed: run scripts/setup.sh or pip install 'genie-worlds[coinrun]' (Python 3.11)"
        ) from None
    return ProcgenGym3Env


def coinrun_source(
    steps: int, action_repeat: int, seed: int, policy: str = "uniform", hold_mean: float = 8.0
) -> dict[str, Any]:
    source = {
        "kind": "coinrun",
        "env": "coinrun",
        "distribution_mode": "hard",
        "policy": "uniform-random" if policy == "uniform" else policy,
        "steps_per_episode": steps,
        "action_repeat": action_repeat,
        "seed": seed,
    }
    if policy == "sticky":
        source["policy_params"] = {
            "hold_mean": hold_mean,
            "weights": dict(zip(COINRUN_DISTINCT, COINRUN_STICKY_WEIGHTS, strict=True)),
        }
    return source


def coinrun_action_space() -> dict[str, Any]:
    """The manifest's action space: the 15 buttons, and the distinct actions they collapse to."""
    return {
        "n": 15,
        "labels": COINRUN_LABELS,
        "keys": [list(k) for k in COINRUN_KEYS],
        "distinct": {
            "labels": COINRUN_DISTINCT,
            "of": COINRUN_BUTTON_TO_DISTINCT,
            "game_action": COINRUN_DISTINCT_BUTTON,
        },
    }


def coinrun_episode_actions(
    seed: int, level: int, steps: int, action_repeat: int, policy: str, hold_mean: float
) -> np.ndarray:
    if policy == "sticky":
        return sticky_actions(
            seed, level, steps, COINRUN_DISTINCT_BUTTON, COINRUN_STICKY_WEIGHTS, hold_mean
        )
    return episode_actions(seed, level, steps, 15, action_repeat)


def record_coinrun_batch(
    levels: list[int],
    steps: int,
    actions: np.ndarray,
    seed: int = 0,
    out: dict[str, np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Play `levels` side by side in one vectorised procgen env; actions (n, steps).

    Each level is created in its own 1-env procgen (cheap after the first) and its state moved
    into one n-env procgen, which then keeps replaying each env's own level after a death: the
    same frames as n separate envs (tested), about 2x faster. `out`: buffers to fill (see
    `_buffers`), so a long recording does not fault in fresh memory for every batch.
    Returns per level {"frames" (steps, 64, 64, 3) uint8, "rewards" (steps,), "firsts" (steps,)}.
    """
    ProcgenGym3Env = _import_procgen()
    kw = dict(env_name="coinrun", distribution_mode="hard", num_levels=1)
    states = [
        ProcgenGym3Env(
            num=1, start_level=lv, rand_seed=(seed * 1_000_003 + lv) % 2**31, **kw
        ).get_state()[0]
        for lv in levels
    ]
    n = len(levels)
    env = ProcgenGym3Env(num=n, start_level=levels[0], rand_seed=0, **kw)
    env.set_state(states)
    out = out or _buffers(n, steps)
    frames, rewards, firsts = out["frames"][:n], out["rewards"][:n], out["firsts"][:n]
    _, obs, first = env.observe()
    for t in range(steps):
        frames[:, t], firsts[:, t] = obs["rgb"], first
        env.act(np.ascontiguousarray(actions[:, t]))
        rewards[:, t], obs, first = env.observe()  # reward for actions[t]; obs is frame t+1
    return [{"frames": frames[i], "rewards": rewards[i], "firsts": firsts[i]} for i in range(n)]


def _buffers(n: int, steps: int) -> dict[str, np.ndarray]:
    return {
        "frames": np.empty((n, steps, 64, 64, 3), np.uint8),
        "rewards": np.empty((n, steps), np.float32),
        "firsts": np.empty((n, steps), bool),
    }


def record_coinrun(
    out: str | Path,
    plan: list[tuple[str, int]],
    steps: int = 1000,
    action_repeat: int = 1,
    num_envs: int = 16,
    seed: int = 0,
    progress: bool = True,
    policy: str = "uniform",
    hold_mean: float = 8.0,
) -> RecordResult:
    """Record the (split, level) episodes of `plan` into `out`, skipping those already there.

    Batches of `num_envs` levels are played in turn, each written as one shard by a background
    thread while the next batch plays (two buffers, used alternately)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm import tqdm

    source = coinrun_source(steps, action_repeat, seed, policy, hold_mean)
    space = coinrun_action_space()
    ProcgenGym3Env = _import_procgen()
    with DatasetWriter(
        out, frame_size=(64, 64), source=source, fps=COINRUN_FPS, action_space=space
    ) as w:
        todo = _todo(w, plan, "level")
        if todo:
            ProcgenGym3Env(num=1, env_name="coinrun")  # procgen's one-off start-up (~2 s), untimed
        bar = tqdm(
            total=len(todo) * steps,
            unit="frame",
            unit_scale=True,
            disable=not progress,
            desc="coinrun",
        )
        n_buf = min(num_envs, len(todo))
        buffers: list[dict[str, np.ndarray]] = []
        writing: Future | None = None
        t0, frames = time.perf_counter(), 0
        # on an interrupt the pool's exit waits for the shard being written: it lands whole
        with ThreadPoolExecutor(max_workers=1) as pool:
            for k, i in enumerate(range(0, len(todo), num_envs)):
                batch = todo[i : i + num_envs]
                levels = [lv for _, lv in batch]
                actions = np.stack(
                    [
                        coinrun_episode_actions(seed, lv, steps, action_repeat, policy, hold_mean)
                        for lv in levels
                    ]
                )
                if len(buffers) <= k % 2:
                    buffers.append(_buffers(n_buf, steps))
                played = record_coinrun_batch(levels, steps, actions, seed, out=buffers[k % 2])
                episodes = [
                    EpisodeData(f"level-{lv}", split, actions=a, seed=lv, **p)
                    for (split, lv), a, p in zip(batch, actions, played, strict=True)
                ]
                if writing is not None:
                    writing.result()  # the other buffer is free again; re-raises a write error
                writing = pool.submit(w.write_shard, episodes)
                frames += len(batch) * steps
                bar.update(len(batch) * steps)
            if writing is not None:
                writing.result()
        bar.close()
        return RecordResult(len(todo), len(plan) - len(todo), frames, time.perf_counter() - t0)
