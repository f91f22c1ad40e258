"""Presets: training/presets/<preset>/<part>.json = {"model": {...}, "train": {...}}.

A preset is a shipped name or any folder holding such <part>.json files.
"model" holds fields of the part's config dataclass (TokenizerConfig, LAMConfig,
DynamicsConfig); "train" holds the fields of `TrainConfig` below. Unknown keys in either are
errors, so a typo never silently trains the default. Command-line flags (--steps,
--batch-size, --lr) override "train" keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genie.models.registry import KINDS
from genie.utils.errors import UserError

PRESETS_DIR = Path(__file__).parent / "presets"
PARTS = tuple(KINDS)  # the registry's part kinds: <preset>/<kind>.json


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps in the whole schedule (LR decays to 0 at the last)
    batch_size: int = 8  # clips per process per step
    clip_len: int = 8  # T: frames per training clip
    lr: float = 3e-4  # peak AdamW learning rate, reached after warmup
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_steps: int = 100  # linear warmup, then cosine decay (diffusers "cosine" schedule)
    grad_clip: float | None = 1.0  # max global gradient norm; null: no clipping
    ema_decay: float | None = (
        None  # EMA of weights (exported instead of the raw weights); null: off
    )
    eval_every: int = 200  # steps between validation passes
    sample_every: int = 200  # steps between sample strips (RUN_DIR/samples/*.png)
    ckpt_every: int = 200  # steps between training checkpoints (and exports to the world)

    def __post_init__(self):
        for name in ("steps", "batch_size", "clip_len", "eval_every", "sample_every", "ckpt_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"train.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise UserError(
                f"train.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}"
            )
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise UserError(f"train.lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise UserError(f"train.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and (
            not isinstance(self.grad_clip, (int, float)) or self.grad_clip <= 0
        ):
            raise UserError(
                f"train.grad_clip must be a positive number or null, got {self.grad_clip!r}"
            )
        if self.ema_decay is not None and not (
            isinstance(self.ema_decay, (int, float)) and 0 < self.ema_decay < 1
        ):
            raise UserError(f"train.ema_decay must be in (0, 1) or null, got {self.ema_decay!r}")


@dataclass
class Preset:
    name: str
    part: str
    model: dict[str, Any]  # config fields for the part's model (validated against its dataclass)
    train: TrainConfig


def available() -> list[str]:
    """Names of the shipped presets (folders under training/presets/)."""
    if not PRESETS_DIR.is_dir():
        return []
    return sorted(p.name for p in PRESETS_DIR.iterdir() if p.is_dir() and any(p.glob("*.json")))


def resolve(name: str) -> Path:
    """A shipped preset's folder, or `name` itself when it is a folder of <part>.json files."""
    if "/" in name or name.startswith("."):
        if not Path(name).is_dir():
            raise UserError(f"preset folder {name} does not exist")
        return Path(name)
    names = available()
    if name not in names:
        raise UserError(
            f"unknown preset '{name}' (available: {', '.join(names) or 'none'}, or a folder of <part>.json)"
        )
    return PRESETS_DIR / name


def config_class(part: str) -> type:
    from genie.models.registry import kind

    return kind(part).config_class


def check_keys(section: str, given: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UserError(
            f"{where}: unknown {section} key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )


def make_train_config(data: dict, where: str = "train settings") -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    check_keys("train", data, fields, where)
    return TrainConfig(**data)


def load(name: str, part: str, overrides: dict[str, Any] | None = None) -> Preset:
    """Load and validate a preset's part file; `overrides` (None values ignored) replace
    train keys. Raises UserError for an unknown preset/part or bad keys."""
    if part not in PARTS:
        raise UserError(f"unknown part '{part}' (expected one of {', '.join(PARTS)})")
    folder = resolve(name)
    path = folder / f"{part}.json"
    if not path.is_file():
        raise UserError(f"preset '{name}' has no {part} settings ({path} missing)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    check_keys("top-level", data, {"model", "train"}, str(path))
    model = dict(data.get("model", {}))
    fields = {f.name for f in dataclasses.fields(config_class(part))}
    check_keys("model", model, fields, str(path))
    train = dict(data.get("train", {}))
    train.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Preset(name=name, part=part, model=model, train=make_train_config(train, str(path)))


def fit_frame_size(model: dict[str, Any], size: int) -> tuple[dict[str, Any], str | None]:
    """A preset's "model" section for frames of `size` pixels: the patch scales with the frame,
    so the token grid stays the preset's (a conv stem gains a stage, at its first width, per
    doubling, or loses its first per halving). Unchanged (and a note of None) when the frames
    already fit or no power-of-two scaling fits them."""
    have, patch = model.get("frame_size"), model.get("patch_size")
    if have is not None and have != size and "widths" in model:  # a frame autoencoder
        return _fit_autoencoder(model, have, size)
    if have is None or patch is None or have == size:
        return model, None
    ratio = size / have
    doublings = round(math.log2(ratio))
    if 2.0**doublings != ratio or patch * ratio < 1 or patch * ratio != int(patch * ratio):
        return model, None
    out = {**model, "frame_size": size, "patch_size": int(patch * ratio)}
    widths = list(model.get("conv_widths") or [])
    if widths:
        if doublings > 0:
            out["conv_widths"] = [widths[0]] * doublings + widths
        elif len(widths) + doublings >= 1:
            out["conv_widths"] = widths[-doublings:]
        else:
            return model, None
    grid = size // out["patch_size"]
    note = f"patch_size {patch} -> {out['patch_size']}"
    if widths:
        note += f", conv_widths {widths} -> {out['conv_widths']}"
    return out, f"{note}: the preset's {grid}x{grid} token grid at {size}x{size} frames"


def _fit_autoencoder(
    model: dict[str, Any], have: int, size: int
) -> tuple[dict[str, Any], str | None]:
    """A frame autoencoder preset for frames `size`: one resolution level more (at the first
    width) per doubling, one less per halving, so its latent grid (and the dynamics' tokens)
    stay the preset's."""
    ratio = size / have
    doublings = round(math.log2(ratio))
    widths = list(model["widths"])
    if 2.0**doublings != ratio or len(widths) + doublings < 1:
        return model, None
    new = [widths[0]] * doublings + widths if doublings > 0 else widths[-doublings:]
    grid = size // 2 ** (len(new) - 1)
    note = (
        f"widths {widths} -> {new}: the preset's {grid}x{grid} latent grid at {size}x{size} frames"
    )
    return {**model, "frame_size": size, "widths": new}, note
