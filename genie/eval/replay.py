"""Re-play the real game from a level seed with given actions, deterministically, so a world's
frames can be compared with the game's at any horizon (`genie playtest`).

    play = coinrun_player(size=64)            # or atari_player("ALE/Pong-v5", size=64)
    frames, restarts = play([10500, 10501], actions)   # actions: the game's (L, K)

frames: uint8 (L, K+1, size, size, 3), frame 0 the start and frame t the one after actions
[:, t-1]; restarts: bool (L, K+1), True where the game restarted (death, win, game over).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

GamePlayer = Callable[[list[int], np.ndarray], tuple[np.ndarray, np.ndarray]]


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., H, W, 3) -> (..., size, size, 3), resampled as the recorder does."""
    from genie.utils.images import fit_square

    if frames.shape[-3:-1] == (size, size):
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:])
    return np.stack([fit_square(f, size, crop=False) for f in flat]).reshape(
        *frames.shape[:-3], size, size, 3
    )


def coinrun_player(size: int, seed: int = 0) -> GamePlayer:
    """CoinRun re-played from each level seed (procgen, deterministic); frame 0 is the start."""
    from genie.data.record import record_coinrun_batch

    def play(levels: list[int], actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        acts = np.concatenate([actions, actions[:, -1:]], 1).astype(np.int32)  # (L, K+1)
        played = record_coinrun_batch(list(levels), acts.shape[1], acts, seed)
        frames = np.stack([p["frames"] for p in played])  # (L, K+1, 64, 64, 3)
        return _resize(frames, size), np.stack([p["firsts"] for p in played])

    return play


def atari_player(env_id: str, size: int) -> GamePlayer:
    """An Atari game re-played from env.reset(seed=level) with sticky actions off (ALE's
    repeat_action_probability 0): the same actions give the same frames."""
    from genie.data.atari import _import_atari, record_atari_episode

    env = _import_atari().make(env_id, repeat_action_probability=0.0)

    def play(levels: list[int], actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        acts = np.concatenate([actions, actions[:, -1:]], 1)
        played = [
            record_atari_episode(env, lv, a, size) for lv, a in zip(levels, acts, strict=True)
        ]
        return np.stack([p["frames"] for p in played]), np.stack([p["firsts"] for p in played])

    return play
