"""Naming latent actions from the world's own frames: the player's motion is measured from
frames alone (a moving sprite, or a scrolling camera that follows the player), and actions
get names and keys from it."""

from __future__ import annotations

import numpy as np
import torch
from synthetic import ACTIONS, MOVES, SPRITE_COLOR, make_background, make_episode, write_dataset

from genie.models.lam import LAMConfig, LatentActionModel
from genie.utils.motion import player_path
from genie.world.folder import World, default_keys, export_part
from genie.world.naming import (
    ActionMotion,
    code_usage,
    measure_actions,
    name_motions,
    name_world_actions,
)
from worlds import make_tiny_world


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


def test_a_sprite_that_vanishes_has_not_moved():
    """A world that loses its sprite in mid-level (it fades into the background) has not moved
    it: the path stops where the sprite was last seen. (At the frame's edge a sprite that is gone
    may have left the frame, which two frames cannot tell apart.)"""
    from synthetic import draw

    background = make_background(np.random.default_rng(0), 32)
    for y, x in ((12, 12), (4, 20), (16, 4)):
        frames = np.stack([draw(background, y, x, 4, wrap=False),
                           draw(background, y + 4, x, 4, wrap=False), background, background])  # fmt: skip
        path = player_path(torch.from_numpy(frames)[None])[0]
        assert path[1].tolist() == [4.0, 0.0] and path[-1].tolist() == [4.0, 0.0], (y, x, path)


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
    # measured over the first MOTION_FRAMES (4) frames of 2 px moves: about 8 px
    assert motions[3].dx > 6 and motions[0].rise > 6 and motions[4].rise == 0
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


def test_a_little_side_motion_is_drift_not_a_diagonal():
    """A code that goes left and rises a third as far as the up code does is "left"; one whose
    rise is as big as its run is a diagonal."""
    m = [
        ActionMotion(0, dx=0.0, rise=16.0, drop=0.0, back=0.0),
        ActionMotion(1, dx=0.5, rise=0.0, drop=16.0, back=1.0),
        ActionMotion(2, dx=-16.0, rise=5.0, drop=0.0, back=0.0),
        ActionMotion(3, dx=-12.0, rise=12.0, drop=0.0, back=0.0),
        ActionMotion(4, dx=14.0, rise=0.0, drop=6.0, back=1.0),
        ActionMotion(5, dx=0.0, rise=0.0, drop=0.0, back=1.0),
    ]
    assert name_motions(m) == ["up", "down", "left", "upleft", "right", "noop"]


def test_a_code_the_lam_never_gives_is_unused_and_sets_no_scale():
    """An unused code's motion means nothing: named "unused", no key, and its big move does not
    make the used codes' moves look small."""
    m = [
        ActionMotion(0, dx=5.0, rise=0.0, drop=0.0, back=0.0),
        ActionMotion(1, dx=-5.0, rise=0.0, drop=0.0, back=0.0),
        ActionMotion(2, dx=0.0, rise=0.0, drop=0.0, back=0.0),
        ActionMotion(3, dx=40.0, rise=30.0, drop=0.0, back=0.0),
        ActionMotion(4, dx=-30.0, rise=0.0, drop=20.0, back=0.0),
    ]
    assert name_motions(m) == ["noop 2", "noop 3", "noop", "upright", "downleft"]
    names = name_motions(m, used=[True, True, True, False, False])
    assert names == ["right", "left", "noop", "unused", "unused 2"], names
    keys = default_keys(names)
    assert keys[3] == keys[4] == [] and keys[0][0] == "ArrowRight"


def test_codes_the_worlds_lam_never_gives_on_its_data_are_named_unused(tmp_path):
    world = make_tiny_world(tmp_path / "w", num_actions=5)
    torch.manual_seed(0)
    lam = LatentActionModel(
        LAMConfig(frame_size=32, patch_size=4, num_actions=5, action_dim=8, width=32,
                  enc_depth=1, dec_depth=1, heads=2, max_frames=4)
    ).eval()  # fmt: skip
    with torch.no_grad():
        lam.vq.codebook[3] = 1e4  # never the nearest code to any latent
    export_part(world, "lam", lam, {"note": "random init, code 3 out of reach"})
    data = write_dataset(tmp_path / "d", episodes=3, length=12)
    usage = code_usage(world, data)
    assert usage.shape == (5,) and usage[3] == 0 and abs(usage.sum() - 1) < 1e-6
    name_world_actions(world, data)
    w = World.from_folder(world)
    assert w.action_labels[3].startswith("unused") and w.action_keys[3] == []
    assert (usage >= 0.01).any()  # the codes it gives keep their names from their motion
    assert all(not lab.startswith("unused") for i, lab in enumerate(w.action_labels)
               if usage[i] >= 0.01)  # fmt: skip
    assert code_usage(world, write_dataset(tmp_path / "big", episodes=1, length=4, size=64)) is None
