"""From an unlabeled video to keys that mean what they say: mp4 clips of a small sprite game the
project did not record -> `genie import-videos` -> `genie train world` with no labels (tokenizer,
LAM, MaskGIT dynamics on the LAM's codes) -> every code named by the motion it makes in the
world (`genie.world.naming`). The names are then checked against what the video's player
pressed, which the test knows and the training never saw, and the keys are played."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from synthetic import ACTIONS, MOVES, draw, make_background, sprite_position

from genie.cli import main
from genie.world.engine import WorldEngine
from genie.world.folder import load_part

SIZE, SPRITE, SPEED = 32, 4, 4  # the sprite moves one LAM patch a step
CLIPS, LENGTH = 60, 40  # 2,400 frames: fewer and the dynamics learns the clips by heart
PRESET = Path(__file__).parent / "data" / "presets" / "sprites"
DIRECTIONS = ("up", "down", "left", "right")


def play(seed: int, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One recording of the game: (frames uint8 (LENGTH, SIZE, SIZE, 3), actions (LENGTH,)).
    A player pressing a new key each step; the sprite stops at the walls."""
    rng = np.random.default_rng(seed)
    y, x = (int(v) * SPEED for v in rng.integers(0, (SIZE - SPRITE) // SPEED + 1, size=2))
    frames, actions = [], []
    for _ in range(LENGTH):
        frames.append(draw(background, y, x, SPRITE, wrap=False))
        a = int(rng.integers(len(ACTIONS)))
        dy, dx = MOVES[a]
        y = int(np.clip(y + dy * SPEED, 0, SIZE - SPRITE))
        x = int(np.clip(x + dx * SPEED, 0, SIZE - SPRITE))
        actions.append(a)
    return np.stack(frames), np.array(actions)


def code_meanings(world: Path, background: np.ndarray) -> list[str]:
    """What each LAM code means: the key the player pressed most often on fresh recordings
    where the LAM gives that code ("" for a code it never gives)."""
    lam = load_part(world, "lam").eval()
    games = [play(10_000 + i, background) for i in range(12)]
    frames = torch.from_numpy(np.stack([f for f, _ in games]))
    pressed = np.stack([a for _, a in games])
    clip = lam.config.max_frames
    codes, keys = [], []
    # clips as long as the LAM was trained on, each starting on the last frame of the one before
    for s in range(0, LENGTH - clip + 1, clip - 1):
        codes.append(lam.infer_actions(frames[:, s : s + clip]).numpy())
        keys.append(pressed[:, s : s + clip - 1])
    codes, keys = np.concatenate(codes, 1).ravel(), np.concatenate(keys, 1).ravel()
    meanings = []
    for c in range(lam.num_actions):
        votes = np.bincount(keys[codes == c], minlength=len(ACTIONS))
        meanings.append(ACTIONS[int(votes.argmax())] if votes.sum() else "")
    return meanings


@pytest.mark.slow
def test_a_world_trained_on_unlabeled_video_names_its_keys_by_what_was_pressed(tmp_path):
    background = make_background(np.random.default_rng(0), SIZE)  # one level, as in a game
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(CLIPS):
        frames, _ = play(i, background)
        iio.imwrite(videos / f"clip{i:03d}.mp4", frames, plugin="pyav", codec="libx264", fps=15)
    data, world = tmp_path / "data", tmp_path / "world"
    assert main(["import-videos", str(videos), "--out", str(data), "--size", str(SIZE),
                 "--val-fraction", "0.1", "--quiet"]) == 0  # fmt: skip
    argv = ["train", "world", "--data", data, "--world", world, "--runs", tmp_path / "runs",
            "--preset", PRESET, "--backend", "maskgit", "--precision", "auto",
            "--eval-episodes", "1"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0

    engine = WorldEngine.load(world)
    names = engine.world.action_labels
    meanings = code_meanings(world, background)
    # every direction has an arrow key, on a code the player pressed that way; no key moves the
    # stay code. (A second code named after a move, "right 2", gets a number key: it is named by
    # what the world does with it, which the played check below covers for the arrows.)
    assert set(DIRECTIONS) <= set(names), (names, meanings)
    for name, meaning in zip(names, meanings, strict=True):
        if name in DIRECTIONS:
            assert meaning == name, (name, meaning, names, meanings)
        if name == "noop":
            assert meaning in ("stay", ""), (name, meaning, names, meanings)

    # played: the key named after each direction, held 2 frames from a frame the test draws, moves
    # the sprite 2 moves that way, as the game would, from every start where those moves stay in
    # the level (a move into a wall leaves the frame as it was, so the LAM calls it "stay" and
    # the dynamics never learns it)
    inside = range(0, SIZE - SPRITE + 1, SPEED)
    for direction in DIRECTIONS:
        dy, dx = (2 * SPEED * m for m in MOVES[ACTIONS.index(direction)])
        starts = [(y, x) for y in inside for x in inside if y + dy in inside and x + dx in inside]
        arrived = 0
        for y, x in starts:
            engine.reset(draw(background, y, x, SPRITE, wrap=False))
            last = engine.rollout([direction] * 2)[-1]
            arrived += sprite_position(last) == (y + dy, x + dx)
        assert arrived >= 0.75 * len(starts), (direction, arrived, len(starts), names)
