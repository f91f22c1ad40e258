"""Naming latent actions from the world's own frames: the player's motion is measured from
frames alone (a moving sprite, or a scrolling camera that follows the player), and actions
get names and keys from it."""

from __future__ import annotations

import numpy as np
import torch
from synthetic import ACTIONS, MOVES, SPRITE_COLOR, make_background, make_episode

from genie.utils.motion import player_path
from genie.world.folder import default_keys
from genie.world.naming import ActionMotion, measure_actions, name_motions


def test_sprite_motion_follows_the_true_actions():
    """On the synthetic world (static camera) the measured step agrees with the true move
    (sign on both axes) >= 90% of the time; misses are the torus wrap-around at the edges."""
    ok = n = 0
    for seed in range(6):
        frames, actions = make_episode(seed=seed, length=30, hold=1)
        path = player_path(torch.from_numpy(frames)[None])[0]
        steps = (path[1:] - path[:-1]).round().sign().numpy()
        for t in range(29):
            ok += bool((steps[t] == np.array(MOVES[int(actions[t])])).all())
            n += 1
    assert ok / n >= 0.9, f"{ok}/{n}"


def test_a_following_camera_means_the_player_moved_the_other_way():
    """A textured level scrolled left 1 px a frame (the camera follows a player running
    right): the player's path goes right by about the scroll."""
    rng = np.random.default_rng(0)
    level = make_background(rng, 128)
    level = np.clip(level.astype(int) + rng.integers(-40, 40, level.shape), 0, 255).astype(np.uint8)
    frames = np.stack([level[32:96, 16 + t : 80 + t] for t in range(12)])  # camera moves right
    path = player_path(torch.from_numpy(frames)[None])[0]
    assert path[-1, 1] >= 9 and abs(path[-1, 0]) <= 1, path[-1]


class SpriteWorld:
    """A fake engine whose action i moves the synthetic sprite by ACTIONS' moves (4: stays)."""

    num_actions = len(ACTIONS)

    def reset(self, prompts):
        self.starts = np.asarray(prompts)[:, -1]

    def rollout(self, held):
        out = []
        for start, row in zip(self.starts, held, strict=True):
            bg = start.copy()
            mask = (bg == SPRITE_COLOR).all(-1)
            ys, xs = np.nonzero(mask)
            y, x = ys.min(), xs.min()
            bg[mask] = bg[~mask].reshape(-1, 3).mean(0).astype(np.uint8)
            clip = []
            for a in row:
                dy, dx = MOVES[int(a)]
                y, x = y + 2 * dy, x + 2 * dx
                f = bg.copy()
                f[max(y, 0) : y + 4, max(x, 0) : x + 4] = SPRITE_COLOR
                clip.append(f)
            out.append(np.stack(clip))
        return np.stack(out)


def test_actions_are_named_by_what_they_do_in_the_world():
    rng = np.random.default_rng(1)
    starts = []
    for _ in range(4):
        f = make_background(rng, 64)
        f[28:32, 28:32] = SPRITE_COLOR
        starts.append(f)
    motions = measure_actions(SpriteWorld(), np.stack(starts), frames=8)
    names = name_motions(motions)
    assert names == ["up", "down", "left", "right", "noop"], names  # top-down: nothing falls back
    assert motions[3].dx > 10 and motions[0].rise > 10 and motions[4].rise == 0
    keys = default_keys(names)
    assert keys[3] == ["ArrowRight", "d"] and keys[0] == ["ArrowUp", "w"] and keys[4] == []


def test_platformer_names_duplicates_and_keys():
    """Codes that go up and come down (none goes down): jump names; a name taken twice goes to
    the code that does it most, the other gets a number; the stillest code is the noop."""
    m = [
        ActionMotion(0, dx=0.2, rise=0.5, drop=0.0, back=0.0),
        ActionMotion(1, dx=-4.0, rise=0.0, drop=0.0, back=0.0),
        ActionMotion(2, dx=5.0, rise=0.3, drop=0.0, back=0.0),
        ActionMotion(3, dx=0.5, rise=12.0, drop=0.0, back=0.6),
        ActionMotion(4, dx=6.0, rise=11.0, drop=0.0, back=0.5),
        ActionMotion(5, dx=3.0, rise=0.0, drop=0.0, back=0.0),
        ActionMotion(6, dx=0.8, rise=0.2, drop=0.0, back=0.0),
    ]
    names = name_motions(m)
    assert names == ["noop", "left", "right", "jump", "jump-right", "right 2", "noop 2"], names
    keys = default_keys(names)
    assert keys[2][:2] == ["ArrowRight", "d"] and keys[4][0] == "ArrowUp+ArrowRight"
    assert keys[5] == ["6"] and "ArrowRight" not in keys[5]  # the second "right": a number key
