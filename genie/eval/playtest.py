"""`genie playtest`: judge a world the way it is used: holding keys from one start frame.

From ONE start frame per test level, the real game and the world are played side by side
under the same scripted, held-key play; the game is re-played from the level seed (procgen
for CoinRun, ALE for Atari), so every horizon has a true frame to compare with:

    genie playtest --world worlds/coinrun --data data/coinrun-sticky --split test \\
        --levels 10500:10520 --horizon 64 --out eval/playtest

Scripts are written over a player's verbs (noop, left, right, jump, jump-left, jump-right);
each verb is one of the game's distinct actions (CoinRun's 6; an Atari game's minimal set:
RIGHT for "right", FIRE or UP for "jump", ...). A script whose verbs the game lacks is
skipped and said so. Each distinct action plays the world action of the same meaning: by
label, or for worlds trained on true actions by the game action behind it. Distinct actions
with no such world action have no key ("controls"); the world then plays a fallback (the
action labelled noop if any, else action 0). Metrics: `score`; output: `genie.eval.report`.

The core (`run_playtest`) takes two player functions, so tests can pass fake games and worlds:
    game(levels, game_actions (L, K)) -> frames uint8 (L, K+1, H, W, 3), restarts bool (L, K+1)
    world(starts uint8 (L, H, W, 3), world_actions (L, K)) -> frames uint8 (L, K, H, W, 3)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from genie.eval.replay import GamePlayer
from genie.utils.metrics import (
    PSNR_CAP_DB,
    colour_drift,
    gradient_magnitude,
    psnr,
    ssim,
    track_colour,
    track_scroll,
)

HORIZONS = (1, 4, 8, 16, 32, 64)
MOVE_PX = 2  # the game "moves" on an axis when its scroll there is at least this many pixels
WINDOW = 4  # frames per window of the per-window motion metrics
MIN_DISTANCE_PX = 8  # a level counts in the distance ratio when the game moved this far
REANCHOR_PX = 8  # scroll tracking: compare with a newer frame once content moved this far
HOLD_MEAN = 8.0  # sticky-random: mean frames an action is held
SCRIPTS = {
    "hold-right": "right, held the whole time",
    "run-and-jump": "right for 8 frames, then jump-right for 8, repeated",
    "left-right-jump": "left for the first third of the horizon, right for the second, jump for the last",
    "stand-still": "noop (no key) the whole time",
    "sticky-random": "one of the game's distinct actions (uniform) held for a geometric number "
    "of frames (mean 8), then another; drawn from --seed and the level",
}
SCRIPT_VERBS = {
    "hold-right": ["right"],
    "run-and-jump": ["right", "jump-right"],
    "left-right-jump": ["left", "right", "jump"],
    "stand-still": ["noop"],
    "sticky-random": [],  # draws from all the game's distinct actions
}
# a player's verbs -> the distinct-action labels that mean them (CoinRun's, then ALE's names)
VERBS = {
    "noop": ("noop",),
    "left": ("left",),
    "right": ("right",),
    "jump": ("jump", "fire", "up"),
    "jump-left": ("jumpleft", "leftfire", "upleft"),
    "jump-right": ("jumpright", "rightfire", "upright"),
}

WorldPlayer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def norm(label: str) -> str:
    """'Jump-Right', 'jump right', 'JUMP_RIGHT' -> 'jumpright'."""
    return "".join(ch for ch in label.lower() if ch.isalnum())


# ---------------------------------------------------------------------------- controls


@dataclass
class Controls:
    """How each of the game's distinct actions is played in the game and in the world."""

    labels: list[str]  # the game's distinct actions
    game: list[int]  # distinct id -> the game's action the replay presses
    world: list[int]  # distinct id -> the world action played
    keyed: list[bool]  # distinct id -> the world has an action of that meaning
    fallback: int  # world action played for a distinct action without one
    world_labels: list[str]

    @property
    def missing(self) -> list[str]:
        return [lab for lab, k in zip(self.labels, self.keyed, strict=True) if not k]

    def verb(self, name: str) -> int | None:
        """Distinct id of a verb ("right", "jump", ...), None if the game has no such action."""
        names = [norm(lab) for lab in self.labels]
        return next((names.index(v) for v in VERBS[name] if v in names), None)

    def to_json(self) -> dict:
        return {
            "distinct": self.labels,
            "world_action": {
                lab: (self.world_labels[w] if k else None)
                for lab, w, k in zip(self.labels, self.world, self.keyed, strict=True)
            },
            "missing": self.missing,
            "fallback": {"id": self.fallback, "label": self.world_labels[self.fallback]},
        }


def resolve_controls(
    labels: list[str],
    game_actions: list[int],
    world_labels: list[str],
    world_game_actions: list[int] | None = None,
) -> Controls:
    """Match the game's distinct actions to world actions: same label (any case, '-', '_' or
    ' '), else a name of the same verb (a world whose latent actions were named by their motion
    calls CoinRun's jump "up": the key both are played with), else (a world trained on true
    actions) the world action of the same game action."""
    names = [norm(lab) for lab in world_labels]
    fallback = names.index("noop") if "noop" in names else 0
    world, keyed = [], []
    for lab, g in zip(labels, game_actions, strict=True):
        same = [norm(lab)] + [norm(n) for v in VERBS.values() if norm(lab) in v for n in v]
        w = next((names.index(n) for n in same if n in names), None)
        if w is None and world_game_actions is not None and g in world_game_actions:
            w = list(world_game_actions).index(g)
        keyed.append(w is not None)
        world.append(fallback if w is None else w)
    return Controls(list(labels), list(game_actions), world, keyed, fallback, list(world_labels))


# ---------------------------------------------------------------------------- scripts


def script_actions(
    name: str, steps: int, controls: Controls, seed: int, level: int
) -> np.ndarray | None:
    """(steps,) distinct action ids of a script on one level; None if the game lacks a verb."""
    if missing_verbs(name, controls):
        return None
    v = {k: controls.verb(k) for k in VERBS}
    t = np.arange(steps)
    if name == "hold-right":
        out = np.full(steps, v["right"])
    elif name == "run-and-jump":
        out = np.where((t // 8) % 2 == 0, v["right"], v["jump-right"])
    elif name == "left-right-jump":
        third = -(-steps // 3)
        out = np.array([v["left"], v["right"], v["jump"]])[np.minimum(t // third, 2)]
    elif name == "stand-still":
        out = np.full(steps, v["noop"])
    else:
        rng = np.random.default_rng([seed, level, 2])
        out = np.empty(steps, np.int64)
        i = 0
        while i < steps:
            hold = int(rng.geometric(1.0 / HOLD_MEAN))
            out[i : i + hold] = rng.integers(len(controls.labels))
            i += hold
    return out.astype(np.int64)


def missing_verbs(name: str, controls: Controls) -> list[str]:
    """The verbs a script needs that the game has no action for."""
    return [k for k in SCRIPT_VERBS[name] if controls.verb(k) is None]


# ---------------------------------------------------------------------------- metrics


def _motion(game: torch.Tensor, world: torch.Tensor) -> dict[str, float | int | None]:
    """Scroll agreement of (N, 2) world vs game scrolls (dy, dx): direction agreement where the
    game moved >= MOVE_PX on an axis, pooled and per axis; mean absolute error in px."""
    moving = game.abs() >= MOVE_PX  # (N, 2)
    same = torch.sign(world) == torch.sign(game)

    def agree(mask: torch.Tensor) -> float | None:
        return same[mask].float().mean().item() if mask.any() else None

    return {
        "motion_agreement": agree(moving),
        "motion_agreement_x": agree(moving & torch.tensor([False, True])),
        "motion_agreement_y": agree(moving & torch.tensor([True, False])),
        "motion_moving": int(moving.sum()),
        "motion_error_px": (world - game).abs().mean().item() if len(game) else None,
    }


def _window_motion(
    sg: torch.Tensor, sw: torch.Tensor, end: int, restarts: torch.Tensor | None = None
) -> dict[str, float | int | None]:
    """How far and which way the world moves compared with the game, per WINDOW-frame window
    ending at frame <= `end`. sg, sw: (L, K+1, 2) positions (dy, dx) against frame 0.

    window_agreement: where the game moved >= MOVE_PX on an axis within a window, the share of
    those (window, axis) pairs where the world moved the same way (direction counted from the
    start alone hides a world that moves a little and stops). scroll_distance_ratio: per level,
    the world's motion along the game's direction over the game's distance, summed over the
    moving windows (1.0 = exactly as far; 0.35 = a third as far; < 0 = the wrong way); the
    median over levels where the game moved >= MIN_DISTANCE_PX. A window in which the game
    restarted its level (`restarts` (L, K+1) bool: a death or a win puts the camera back at
    the level's start) has no motion to compare and is left out (window_restarts counts them)."""
    none = {"window_agreement": None, "window_moving": 0, "scroll_distance_ratio": None}
    last = min(end, sg.shape[1] - 1)
    if last < WINDOW:
        return {**none, "window_restarts": 0}
    idx = torch.arange(WINDOW, last + 1, WINDOW)
    dg = sg[:, idx] - sg[:, idx - WINDOW]  # (L, W, 2)
    dw = sw[:, idx] - sw[:, idx - WINDOW]
    cut = torch.zeros(dg.shape[:2], dtype=torch.bool)  # (L, W) windows holding a restart
    if restarts is not None:
        for k in range(WINDOW):  # frames idx - WINDOW + 1 .. idx
            cut |= restarts[:, idx - k]
    moving = (dg.abs() >= MOVE_PX) & ~cut[..., None]
    none["window_restarts"] = int(cut.sum())
    if not moving.any():
        return none
    agree = (torch.sign(dw) == torch.sign(dg))[moving].float().mean().item()
    along = (dw * torch.sign(dg) * moving).sum((1, 2))  # (L,) px the world moved the game's way
    distance = (dg.abs() * moving).sum((1, 2))  # (L,) px the game moved
    keep = distance >= MIN_DISTANCE_PX
    ratio = (along[keep] / distance[keep]).median().item() if keep.any() else None
    return {
        "window_agreement": agree,
        "window_moving": int(moving.sum()),
        "scroll_distance_ratio": ratio,
        "window_restarts": none["window_restarts"],
    }


def score(
    game: np.ndarray,
    world: np.ndarray,
    horizons: list[int],
    track: tuple | None = None,
    restarts: np.ndarray | None = None,
) -> dict:
    """Metrics of world vs game frames, uint8 (L, K+1, H, W, 3) both, frame 0 the shared start:
    per horizon (means over the L levels) and over all frames 1..K ("all"). Motion is the
    camera's scroll, or with `track` (an RGB colour 0-255) the position of the sprite of that
    colour (games whose camera stands still). `restarts` (L, K+1) bool marks the frames where
    the game restarted its level: the game's motion is not compared across them (the
    direction from the start stops there; a window holding one is left out)."""
    g = torch.from_numpy(np.ascontiguousarray(game)).float() / 255
    w = torch.from_numpy(np.ascontiguousarray(world)).float() / 255
    start = g[:, :1].expand_as(g).contiguous()
    per = {
        "psnr": psnr(w, g),  # (L, K+1)
        "ssim": ssim(w, g),
        "hold_start_psnr": psnr(start, g),
        "hold_start_ssim": ssim(start, g),
        "colour_drift_pct": colour_drift(w, g),
    }
    grad_w, grad_g = gradient_magnitude(w), gradient_magnitude(g)
    cuts = None
    if restarts is not None:  # a copy: the caller's array stays as it was
        cuts = torch.tensor(np.asarray(restarts), dtype=torch.bool)
        cuts[:, 0] = False  # frame 0 is the shared start
    if track is None:
        sg, sw = track_scroll(g, REANCHOR_PX, cuts), track_scroll(w, REANCHOR_PX)  # (L, K+1, 2)
    else:
        rgb = tuple(c / 255 for c in track)
        sg, sw = track_colour(g, rgb), track_colour(w, rgb)
    # the direction from the start is the game's until its first restart
    before = torch.ones(g.shape[:2], dtype=torch.bool) if cuts is None else ~cuts.cummax(1).values
    out: dict = {}
    for h in [*horizons, "all"]:
        t = slice(1, None) if h == "all" else slice(h, h + 1)
        row = {k: v[:, t].mean().item() for k, v in per.items()}
        row["sharpness"] = (grad_w[:, t].mean() / grad_g[:, t].mean().clamp_min(1e-8)).item()
        keep = before[:, t].reshape(-1)
        row.update(_motion(sg[:, t].reshape(-1, 2)[keep], sw[:, t].reshape(-1, 2)[keep]))
        row.update(_window_motion(sg, sw, g.shape[1] - 1 if h == "all" else h, cuts))
        out[str(h)] = row
    return out


def mean_over_scripts(results: dict[str, dict]) -> dict:
    """Per horizon, each metric averaged over the scripts where it is defined."""
    first = next(iter(results.values()))
    out: dict = {}
    for h, row in first.items():
        out[h] = {}
        for k in row:
            vals = [r[h][k] for r in results.values() if r[h][k] is not None]
            if k in ("motion_moving", "window_moving", "window_restarts"):
                out[h][k] = int(sum(vals))
            else:
                out[h][k] = float(np.mean(vals)) if vals else None
    return out


# ---------------------------------------------------------------------------- players


def play_world(
    engine, starts: np.ndarray, actions: np.ndarray, seed: int = 0, progress: bool = False
) -> np.ndarray:
    """The world from each start frame under its actions: starts uint8 (B, H, W, 3), world
    action ids (B, K) -> uint8 (B, K, H, W, 3). One batched rollout of the `WorldEngine` the
    playground uses; every row draws from its own generator seeded `seed`, so a row plays as
    that level would alone."""
    engine.reset(starts[:, None], seed=[seed] * len(starts))  # (B, T=1, H, W, 3) prompts
    return engine.rollout(np.asarray(actions), progress=progress)


# ---------------------------------------------------------------------------- the play test


def run_playtest(
    game: GamePlayer,
    world: WorldPlayer,
    controls: Controls,
    levels: list[int],
    horizon: int = 64,
    scripts: list[str] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    track: tuple[int, int, int] | None = None,
    prefix: np.ndarray | None = None,
) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Play every script on every level in the game and in the world, from the game's frame 0,
    or with `prefix` (L, P) game actions from the frame after the game played them.
    Returns (metrics, per script {"game", "world": uint8 (L, K+1, H, W, 3), "actions" (L, K)})."""
    horizons = sorted({h for h in HORIZONS if h <= horizon} | {horizon})
    results, frames, skipped = {}, {}, {}
    for name in scripts or list(SCRIPTS):
        lacking = missing_verbs(name, controls)
        if lacking:
            skipped[name] = f"the game has no action for {', '.join(lacking)}"
            continue
        distinct = np.stack([script_actions(name, horizon, controls, seed, lv) for lv in levels])
        t0 = time.perf_counter()
        pressed = np.asarray(controls.game)[distinct]
        if prefix is not None and prefix.shape[1]:
            pressed = np.concatenate([np.asarray(prefix, pressed.dtype), pressed], 1)
        real, restarts = game(levels, pressed)
        skip = pressed.shape[1] - horizon  # frames of the prefix
        real, restarts = real[:, skip:], restarts[:, skip:]
        t1 = time.perf_counter()
        imagined = world(real[:, 0], np.asarray(controls.world)[distinct])
        t2 = time.perf_counter()
        dream = np.concatenate([real[:, :1], imagined], 1)  # (L, K+1, H, W, 3)
        results[name] = score(real, dream, horizons, track, restarts)
        results[name]["restarts"] = int(restarts[:, 1:].any(1).sum())
        frames[name] = {"game": real, "world": dream, "actions": distinct}
        if log:
            log(f"{name}: game {t1 - t0:.1f}s, world {t2 - t1:.1f}s")
    by_script = {k: {h: v for h, v in r.items() if h != "restarts"} for k, r in results.items()}
    metrics = {
        "levels": list(levels),
        "horizon": horizon,
        "horizons": horizons,
        "seed": seed,
        "psnr_cap_db": PSNR_CAP_DB,
        "move_px": MOVE_PX,
        "start_at": 0 if prefix is None else int(prefix.shape[1]),
        "motion": "scroll" if track is None else f"sprite of colour {','.join(map(str, track))}",
        "scripts": {k: {"description": SCRIPTS[k], **v} for k, v in results.items()},
        "skipped_scripts": skipped,
        "mean": mean_over_scripts(by_script) if by_script else {},
        "controls": controls.to_json(),
    }
    return metrics, frames
