"""genie.utils.metrics: each number means what its name says, on frames where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genie.utils.metrics import (
    action_accuracy,
    colour_drift,
    gradient_magnitude,
    phase_shift,
    psnr,
    ssim,
    track_colour,
    track_scroll,
)


def shapes(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, size, size, 3) frames in [0, 1]: a textured ground of 4-px blocks (like a game's
    tiles) under a few coloured rectangles per 64x64 area."""
    g = torch.Generator().manual_seed(seed)
    blocks = 0.3 + 0.4 * torch.rand(n, size // 4, size // 4, 1, generator=g)
    out = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2).expand(-1, -1, -1, 3).clone()
    for i in range(n):
        for _ in range(6 * (size // 64) ** 2):
            y, x = torch.randint(0, size - 12, (2,), generator=g).tolist()
            h, w = torch.randint(6, 20, (2,), generator=g).tolist()
            out[i, y : y + h, x : x + w] = torch.rand(3, generator=g)
    return out


def test_ssim_and_psnr_of_identical_frames():
    a = shapes(3)
    assert torch.allclose(ssim(a, a), torch.ones(3))
    assert torch.equal(psnr(a, a), torch.full((3,), 50.0))  # capped
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert (ssim(noisy, a) < 0.9).all() and (psnr(noisy, a) < 25).all()
    assert ssim(a[None].expand(2, -1, -1, -1, -1), noisy[None].expand(2, -1, -1, -1, -1)).shape == (
        2,
        3,
    )
    small = shapes(2, size=8)  # smaller than the 11-px window: still a number
    assert torch.allclose(ssim(small, small), torch.ones(2))


def test_blur_lowers_the_gradient_and_a_brighter_frame_drifts():
    a = shapes(2)
    blurred = F.avg_pool2d(a.permute(0, 3, 1, 2), 5, stride=1, padding=2).permute(0, 2, 3, 1)
    assert (gradient_magnitude(blurred) < 0.8 * gradient_magnitude(a)).all()
    assert torch.equal(colour_drift(a, a), torch.zeros(2))
    assert torch.allclose(
        colour_drift(a.clamp(0, 0.8) + 0.1, a.clamp(0, 0.8)), torch.full((2,), 10.0)
    )


@pytest.mark.parametrize("whiten", [0.0, 1.0])
def test_phase_shift_finds_a_known_shift(whiten):
    a = shapes(2)
    b = torch.roll(a, (3, -5), dims=(-3, -2))  # content down 3, left 5
    assert phase_shift(a, b, whiten).tolist() == [[3, -5], [3, -5]]
    assert phase_shift(a, a, whiten).tolist() == [[0, 0], [0, 0]]


def test_track_scroll_follows_a_camera_further_than_the_frame_is_wide():
    wide = shapes(1, size=256)[0]  # a level 256 px wide; the camera shows 64x64 of it
    x = torch.arange(41) * 3  # scrolling right 3 px a frame: 120 px in all
    frames = torch.stack([wide[96:160, int(c) : int(c) + 64] for c in x])[
        None
    ]  # (1, 41, 64, 64, 3)
    s = track_scroll(frames)
    assert s[0, :, 0].abs().max() == 0
    assert s[0, -1, 1].item() == -120  # content moves left as the camera goes right
    assert (s[0, :, 1] == -x.float()).float().mean() > 0.9


def test_track_colour_follows_a_sprite_past_a_static_score_of_its_colour():
    t, h, w = 12, 32, 32
    frames = torch.zeros(1, t, h, w, 3)
    frames[..., 1] = 0.6  # green ring
    frames[:, :, 1:3, 1:6] = 0.84  # a white score, there in every frame
    for i in range(t):
        y, x = 10 + i // 2, 4 + i  # the white sprite walks right and down
        frames[0, i, y : y + 4, x : x + 3] = 0.84
    frames[0, 9:] = frames[0, 8]  # then stands still
    frames[0, 10, 5:20, 5:20, :] = 0.0  # and is hidden for one frame (black box over it)
    pos = track_colour(frames, (0.84, 0.84, 0.84))
    assert pos.shape == (1, t, 2)
    assert torch.allclose(pos[0, :9, 1], torch.arange(9.0))  # x: 1 px per frame
    assert torch.allclose(pos[0, :9, 0], torch.arange(9.0) // 2)
    assert torch.equal(pos[0, 10], pos[0, 9])  # hidden: held where it was last seen


def test_action_accuracy_fits_and_holds_out_by_episode():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 400)
    latent = (true + 1) % 3  # a relabelling: a perfect mapping exists
    episode = np.repeat(np.arange(8), 50)
    out = action_accuracy(latent, true, episode, 3, 3)
    assert out["action_accuracy"] == 1.0 and out["action_accuracy_held_out"] == 1.0
    assert out["action_accuracy_held_out_shuffled"] < 0.6
