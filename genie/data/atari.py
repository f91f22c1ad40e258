"""`genie record atari`: Atari games through gymnasium + ale-py (the ROMs ship inside ale-py),
recorded as `genie/data/record.py` records CoinRun (same splits, policies, resuming).

The emulator runs without sticky actions (`repeat_action_probability=0`): an episode is then a
function of its seed and actions, so `genie playtest` can replay it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from genie.data.format import DatasetWriter, EpisodeData
from genie.data.record import RecordResult, _todo, episode_actions, sticky_actions
from genie.utils.errors import UserError

ATARI_FPS = 15.0  # 60 Hz console, v5 envs repeat each action for 4 console frames
SHARD_FRAMES = 16_384  # episodes per shard ~ this many frames


def atari_env_id(game: str) -> str:
    """'Pong' -> 'ALE/Pong-v5' after checking the game exists; UserError with close names if not."""
    import difflib

    gymnasium = _import_atari()
    env_id = f"ALE/{game}-v5"
    if env_id not in gymnasium.registry:
        names = atari_games()
        close = difflib.get_close_matches(game, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(
            f"unknown Atari game '{game}': {hint}list them with `genie record atari --list-games`"
        )
    return env_id


def atari_games() -> list[str]:
    gymnasium = _import_atari()
    return sorted(k[4:-3] for k in gymnasium.registry if k.startswith("ALE/") and k.endswith("-v5"))


def _import_atari():
    try:
        import ale_py
        import gymnasium
    except ImportError:
        raise UserError(
            "Atari needs gymnasium and ale-py: pip install 'genie-worlds[atari]'"
        ) from None
    gymnasium.register_envs(ale_py)
    return gymnasium


def atari_action_space(game: str, labels: list[str], actions: list[str] | None) -> dict:
    """The manifest's action space. v5 envs use the game's minimal action set, whose actions are
    already distinct; `actions` keeps a subset of them (the policy plays only those). A game
    action outside the subset maps to the subset action it contains ("UPFIRE" -> "UP"), else to
    the first one."""
    n = len(labels)
    if actions is None:
        return {
            "n": n,
            "labels": labels,
            "distinct": {"labels": labels, "of": list(range(n)), "game_action": list(range(n))},
        }
    upper = [a.upper() for a in actions]
    unknown = [a for a in upper if a not in labels]
    if unknown or not upper or len(set(upper)) != len(upper):
        what = f"unknown {', '.join(unknown)}" if unknown else "each once, at least one"
        raise UserError(f"--actions for {game}: {what}; its actions are {','.join(labels)}")
    game_action = [labels.index(a) for a in upper]

    def collapse(label: str) -> int:
        if label in upper:
            return upper.index(label)
        inside = [i for i, a in enumerate(upper) if a != "NOOP" and a in label]
        return max(inside, key=lambda i: len(upper[i])) if inside else 0

    return {
        "n": n,
        "labels": labels,
        "distinct": {
            "labels": upper,
            "of": [collapse(lab) for lab in labels],
            "game_action": game_action,
        },
    }


def record_atari_episode(env, level: int, actions: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Play one episode from env.reset(seed=level); a game over resets and flags `firsts`."""
    from genie.utils.images import fit_square

    steps = len(actions)
    frames = np.empty((steps, size, size, 3), np.uint8)
    rewards = np.zeros(steps, np.float32)
    firsts = np.zeros(steps, bool)
    obs, _ = env.reset(seed=level)
    first = True
    for t in range(steps):
        frames[t] = fit_square(obs, size, crop=False)  # the whole screen squashed (DIAMOND)
        firsts[t] = first
        obs, rewards[t], terminated, truncated, _ = env.step(int(actions[t]))
        first = terminated or truncated
        if first:
            obs, _ = env.reset()
    return {"frames": frames, "rewards": rewards, "firsts": firsts}


def record_atari(
    out: str | Path,
    game: str,
    plan: list[tuple[str, int]],
    steps: int = 1000,
    action_repeat: int = 1,
    size: int = 64,
    seed: int = 0,
    progress: bool = True,
    policy: str = "uniform",
    hold_mean: float = 8.0,
    actions: list[str] | None = None,
) -> RecordResult:
    """Record Atari episodes (split, env seed) of `plan` into `out`, skipping those already there.

    `actions` (names from the game's minimal set) restricts what the policy plays; they become
    the dataset's distinct actions."""
    from tqdm import tqdm

    gymnasium = _import_atari()
    env_id = atari_env_id(game)
    # no sticky actions in the emulator: an episode is a function of its seed and actions, so
    # `genie playtest` can replay it
    env = gymnasium.make(env_id, repeat_action_probability=0.0)
    source = {
        "kind": "atari",
        "game": game,
        "env": env_id,
        "policy": "uniform-random" if policy == "uniform" else policy,
        "steps_per_episode": steps,
        "action_repeat": action_repeat,
        "seed": seed,
        "repeat_action_probability": 0.0,
    }
    if policy == "sticky":
        source["policy_params"] = {"hold_mean": hold_mean, "weights": "uniform"}
    labels = [str(a) for a in env.unwrapped.get_action_meanings()]
    space = atari_action_space(game, labels, actions)
    played = space["distinct"]["game_action"]
    if actions is not None:
        source["actions"] = space["distinct"]["labels"]
    with DatasetWriter(
        out, frame_size=(size, size), source=source, fps=ATARI_FPS, action_space=space
    ) as w:
        todo = _todo(w, plan, "seed")
        per_shard = max(1, SHARD_FRAMES // steps)
        bar = tqdm(
            total=len(todo) * steps, unit="frame", unit_scale=True, disable=not progress, desc=game
        )
        t0, frames = time.perf_counter(), 0
        for i in range(0, len(todo), per_shard):
            pending = []
            for split, lv in todo[i : i + per_shard]:
                actions = (
                    sticky_actions(seed, lv, steps, played, None, hold_mean)
                    if policy == "sticky"
                    else np.asarray(played, np.int32)[
                        episode_actions(seed, lv, steps, len(played), action_repeat)
                    ]
                )
                p = record_atari_episode(env, lv, actions, size)
                pending.append(EpisodeData(f"seed-{lv}", split, actions=actions, seed=lv, **p))
                bar.update(steps)
            w.write_shard(pending)
            frames += len(pending) * steps
        bar.close()
        env.close()
        return RecordResult(len(todo), len(plan) - len(todo), frames, time.perf_counter() - t0)
