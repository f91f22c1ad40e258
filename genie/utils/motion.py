"""Where the player went, from frames alone: what names a latent action (genie/world/naming.py).

A frame pair's motion has two parts, measured in this order:

* **the camera**: `track_scroll` follows the content's shift along the clip (a step of play
  often scrolls less than a pixel, so it compares with an anchor frame); the camera moved when
  the content shifted and much of the picture changed (a scrolling platformer such as
  CoinRun, whose camera follows the player). The content then moves the other way, so the
  player moved by minus the scroll.
* **a sprite**: otherwise, step by step, `region_motion` finds the shift that best explains
  the pixels that changed (a boxer, the synthetic sprite): a game whose camera never moves.

`player_path` adds the steps up along a clip: (B, T, H, W, 3) -> (B, T, 2) (dy, dx) px, with
dy < 0 up and dx > 0 right, the first frame at (0, 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genie.utils.metrics import track_scroll

SCROLL_AREA = 0.2  # the camera moved when the content shifted and more of the picture than this
# changed against the first frame (a moving sprite changes a few %)
SPRITE_AREA = 0.002  # smaller changes (a few pixels flickering) are not a sprite moving
CHANGED = 0.1  # a pixel changed when its |difference| (0-1 range, summed over RGB) is above


def region_motion(a: torch.Tensor, b: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Displacement of what changed between a and b: float (N, H, W, 3) in [0, 1] -> (N, 2)
    (dy, dx) px. Every shift d within `radius` is scored on the changed pixels: how far b there is
    from a moved by d (where a sprite arrived) and a there from b moved back by d (where it
    left), averaged. A sprite that moved by d matches both ways on every pixel it changed; one
    that vanished matches only the first, so a disappearance is not read as a move. The best
    shift wins if it explains at least half the change, else (0, 0). One moving sprite: its
    motion; several: the one that changed most of the picture. Pixels a shift brings in from
    outside the frame do not count."""
    n, hgt, wid = a.shape[:3]
    changed = ((a - b).abs().sum(-1) > CHANGED).float()  # (N, H, W)
    area = changed.sum((1, 2)).clamp_min(1)
    pa = F.pad(a.permute(0, 3, 1, 2), (radius,) * 4, value=float("nan"))  # (N, 3, H+2r, W+2r)
    pb = F.pad(b.permute(0, 3, 1, 2), (radius,) * 4, value=float("nan"))
    ca, cb = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    costs, moves = [], []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            back = (slice(None), slice(None), slice(radius - dy, radius - dy + hgt),
                    slice(radius - dx, radius - dx + wid))  # fmt: skip
            ahead = (slice(None), slice(None), slice(radius + dy, radius + dy + hgt),
                     slice(radius + dx, radius + dx + wid))  # fmt: skip
            arrived = (pa[back] - cb).abs().sum(1)  # b[p] vs a[p - d]: (N, H, W)
            left = (ca - pb[ahead]).abs().sum(1)  # a[p] vs b[p + d]
            # a sprite that moved by d is explained both ways; one that vanished only one way
            # (its old place matches what was beside it), so it does not count as a move
            err = torch.stack([arrived, left]).nanmean(0).nan_to_num(3.0)  # outside: unexplained
            costs.append((err * changed).sum((1, 2)) / area + 1e-4 * (abs(dy) + abs(dx)))
            moves.append((dy, dx))
    costs_t = torch.stack(costs, -1)  # (N, D)
    best = costs_t.argmin(-1)
    disp = torch.tensor(moves, dtype=torch.float32)[best]  # (N, 2)
    still = costs_t[:, moves.index((0, 0))]
    explained = costs_t.gather(-1, best[:, None])[:, 0] < 0.5 * still
    return torch.where(explained[:, None], disp, torch.zeros_like(disp))


def sprite_steps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The moving sprite's motion from frame a to b: float (N, H, W, 3) in [0, 1] -> (N, 2)
    (dy, dx) px; (0, 0) where less than `SPRITE_AREA` of the picture changed."""
    changed = ((a - b).abs().sum(-1) > CHANGED).float().mean((1, 2))  # (N,) fraction
    sprite = region_motion(a, b)
    return torch.where((changed >= SPRITE_AREA)[:, None], sprite, torch.zeros_like(sprite))


def player_path(frames: torch.Tensor) -> torch.Tensor:
    """uint8 or float frames (B, T, H, W, 3) -> the player's position (B, T, 2) (dy, dx) px
    against the first frame (see the module doc)."""
    x = frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()
    b, t = x.shape[:2]
    if t < 2:
        return torch.zeros(b, t, 2)
    scroll = track_scroll(x)  # (B, T, 2) content against the first frame (sub-pixel steps add up)
    changed = ((x[:, 1:] - x[:, :1]).abs().sum(-1) > CHANGED).float().mean((-2, -1))  # (B, T-1)
    camera = (scroll[:, 1:].abs().sum(-1) > 0) & (changed > SCROLL_AREA)  # (B, T-1)
    steps = sprite_steps(x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1)).reshape(b, t - 1, 2)
    sprite = torch.cat([torch.zeros(b, 1, 2), steps.cumsum(1)], 1)
    scrolled = camera.any(1)  # (B,) the camera moved during the clip: follow it
    return torch.where(scrolled[:, None, None], -scroll, sprite)
