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
    """One recording of the game: (frames uint8 (LENGTH, SIZE, SIZE, 3), moves (LENGTH,)). A
    player pressing a new key each step; the sprite stops at the walls, so a move is what
    happened: the key pressed, or "stay" where a wall blocked it (the frames cannot tell)."""
    rng = np.random.default_rng(seed)
    y, x = (int(v) * SPEED for v in rng.integers(0, (SIZE - SPRITE) // SPEED + 1, size=2))
    frames, moves = [], []
    for _ in range(LENGTH):
        frames.append(draw(background, y, x, SPRITE, wrap=False))
        a = int(rng.integers(len(ACTIONS)))
        dy, dx = MOVES[a]
        ny = int(np.clip(y + dy * SPEED, 0, SIZE - SPRITE))
        nx = int(np.clip(x + dx * SPEED, 0, SIZE - SPRITE))
        moves.append(a if (ny, nx) != (y, x) else ACTIONS.index("stay"))
        y, x = ny, nx
    return np.stack(frames), np.array(moves)


def code_meanings(world: Path, background: np.ndarray) -> tuple[list[str], float]:
    """What each LAM code means: the move made most often where the LAM gives that code, on 6
    fresh recordings ("" for a code it never gives); and how often those meanings are right on
    6 more (the LAM's accuracy against the true moves, held out)."""
    lam = load_part(world, "lam").eval()
    games = [play(10_000 + i, background) for i in range(12)]
    frames = torch.from_numpy(np.stack([f for f, _ in games]))
    moves = np.stack([m for _, m in games])
    clip = lam.config.max_frames
    codes, truth = [], []
    # clips as long as the LAM was trained on, each starting on the last frame of the one before
    for s in range(0, LENGTH - clip + 1, clip - 1):
        codes.append(lam.infer_actions(frames[:, s : s + clip]).numpy())
        truth.append(moves[:, s : s + clip - 1])
    codes, truth = np.concatenate(codes, 1), np.concatenate(truth, 1)  # (12, transitions)
    fit_codes, fit_truth = codes[:6].ravel(), truth[:6].ravel()
    meanings = []
    for c in range(lam.num_actions):
        votes = np.bincount(fit_truth[fit_codes == c], minlength=len(ACTIONS))
        meanings.append(ACTIONS[int(votes.argmax())] if votes.sum() else "")
    held_out = np.array([meanings[c] for c in codes[6:].ravel()])
    return meanings, float((held_out == np.array(ACTIONS)[truth[6:].ravel()]).mean())


@pytest.mark.slow
def test_a_world_trained_on_unlabeled_video_names_its_keys_by_what_was_pressed(tmp_path):
    """Also the LAM's learning test: its codes match the true moves of fresh recordings."""
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
    meanings, accuracy = code_meanings(world, background)
    # the LAM found the game's moves in the compressed video alone (chance: 20%)
    assert accuracy >= 0.9, (accuracy, meanings)
    # every direction has an arrow key, on a code whose moves went that way; the noop is the
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
