"""What differs between the three trainable parts, so that `train.py` stays one loop.

Every model exposes `compute_loss(batch) -> (loss, metrics)` (STYLE 7); a `Part` only says
which model class it is, which frozen parts of the world it needs, how a dataset batch
{"frames": uint8 (B, T, H, W, 3), "actions": (B, T) or None} becomes the model's batch, and
how to call `evaluate` / `visualize`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genie.models.pretrained import config_from_dict
from genie.utils.errors import UserError
from genie.world.folder import load_part
from training.presets import config_class, fit_frame_size

ACTION_SOURCES = ("lam", "true")


def model_class(part: str) -> type:
    """The model class of a registry kind (tokenizer, lam, dynamics, diffusion)."""
    from genie.models.registry import kind

    return kind(part).model_class


def square_size(frame_size: Any) -> int | tuple:
    """Dataset frame size (int or (H, W)) -> int for square frames, else the tuple."""
    if isinstance(frame_size, (tuple, list)):
        h, w = (int(v) for v in frame_size[:2])
        return h if h == w else (h, w)
    return int(frame_size)


@dataclass
class Part:
    name: str  # the world slot: "tokenizer" | "lam" | "dynamics"
    kind: str = ""  # the registry kind (dynamics: "dynamics" = MaskGIT, or "diffusion")
    tokenizer: nn.Module | None = None  # frozen, dynamics only
    lam: nn.Module | None = None  # frozen, dynamics with latent actions only
    action_source: str | None = None  # dynamics: "lam" or "true"
    action_labels: list[str] | None = None  # dynamics with true actions: the dataset's labels
    # dynamics with true actions: raw action id -> distinct id (CoinRun's 15 buttons -> 6), the
    # game's action for each distinct one, and the game (for replaying it in `genie playtest`)
    action_map: list[int] | None = None
    game_actions: list[int] | None = None
    game: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # things the trainer should tell the user
    world_dir: Path | None = None  # the world folder (a LAM reading latents loads its tokenizer)

    @property
    def model_class(self) -> type:
        return model_class(self.kind or self.name)

    def to(self, device) -> Part:
        for m in (self.tokenizer, self.lam):
            if m is not None:
                m.to(device).eval().requires_grad_(False)
        return self

    def build_config(self, preset_model: dict[str, Any], dataset) -> Any:
        """The model config for a fresh run: preset fields plus the ones the data or the frozen
        parts fix (frame size, vocabulary, token grid, number of actions)."""
        model = dict(preset_model)
        if self.name == "dynamics":
            fixed = self.model_class.fixed_config(self.tokenizer, self.num_actions(dataset))
            for key, value in fixed.items():
                if key in model and _norm(model[key]) != _norm(value):
                    self.notes.append(
                        f"dynamics {key} set to {value} (the preset says {model[key]})"
                    )
                model[key] = value
        elif self.name == "lam" and model.get("inputs") == "latents":
            autoencoder = self.frame_autoencoder()
            model["latent_grid"], model["latent_dim"] = (
                autoencoder.grid[0],
                autoencoder.config.code_dim,
            )
            model["frame_size"] = autoencoder.config.frame_size
        elif isinstance(square_size(dataset.frame_size), int):
            model, note = fit_frame_size(model, square_size(dataset.frame_size))
            if note:
                self.notes.append(f"{self.name} {note}")
        try:
            config = config_from_dict(config_class(self.kind or self.name), model)
        except (TypeError, ValueError) as e:  # a preset whose fields don't fit together
            raise UserError(f"{self.name} settings are invalid: {e}") from None
        self.check_frame_size(config, dataset)
        return config

    def frame_autoencoder(self) -> nn.Module:
        """The world's frozen tokenizer, loaded once (a LAM that reads latents needs it)."""
        if self.tokenizer is None:
            self.tokenizer = _load_needed(self.world_dir, "tokenizer").eval().requires_grad_(False)
        return self.tokenizer

    def attach(self, model: nn.Module) -> nn.Module:
        """Give a model being trained the frozen parts it reads through (a LAM on latents)."""
        if getattr(model, "reads_latents", False):
            from genie.world.folder import check_lam_encoder

            if (Path(self.world_dir) / "world.json").is_file():
                check_lam_encoder(self.world_dir)  # a resumed run: still the same encoder
            device = next(model.parameters()).device
            try:
                model.read_through(self.frame_autoencoder().to(device))
            except ValueError as e:
                raise UserError(f"the LAM can't read this world's tokenizer: {e}") from None
        return model

    def num_actions(self, dataset) -> int:
        if self.action_source == "lam":
            return self.lam.num_actions
        if self.action_map is not None:
            return len(self.action_labels)
        return int(dataset.num_actions)

    def check_frame_size(self, config: Any, dataset) -> None:
        want = square_size(dataset.frame_size)
        have = self.tokenizer.config.frame_size if self.name == "dynamics" else config.frame_size
        if want != have:
            what = "the world's tokenizer" if self.name == "dynamics" else f"the {self.name} config"
            raise UserError(
                f"the dataset's frames are {_px(want)} but {what} expects {_px(have)}: "
                "record/import the data at that size or pick a preset that matches"
            )

    def check_model(self, model: nn.Module, dataset) -> None:
        """A model resumed from a checkpoint must still fit the data and the world's parts."""
        self.check_frame_size(model.config, dataset)
        if self.name == "dynamics":
            from genie.world.folder import check_compatible

            check_compatible(self.tokenizer, None, model)
            want = self.num_actions(dataset)
            if model.config.num_actions != want:
                raise UserError(
                    f"the checkpoint's dynamics has {model.config.num_actions} actions but the "
                    f"{self.action_source} actions number {want}"
                )

    # ------------------------------------------------------------------ batches

    @torch.no_grad()
    def batch(self, raw: dict) -> dict:
        """Dataset batch -> the batch the model's compute_loss/evaluate take."""
        if self.name == "tokenizer":
            return {"frames": raw["frames"]}
        if self.name == "lam":
            out = {"frames": raw["frames"], "actions": raw.get("actions")}
            if self.tokenizer is not None:  # a LAM reading latents: encoded here, under autocast
                out["latents"] = self.tokenizer.encode_latents(raw["frames"]).float()
            return out
        if self.action_source == "true" and (raw["actions"][:, :-1] < 0).any():
            raise UserError(
                "the dataset has frames whose action is unknown (-1): train the dynamics on "
                "latent actions (--action-source lam)"
            )
        if self.action_source == "true" and self.action_map is not None:
            table = torch.tensor(self.action_map, dtype=torch.long, device=raw["actions"].device)
            raw = {**raw, "actions": table[raw["actions"].long().clamp(min=0)]}
        batch = self.model_class.make_batch(raw, self.tokenizer, self.lam)
        # the frozen parts may run under the trainer's autocast (bf16): the model sees fp32
        return {k: v.float() if torch.is_floating_point(v) else v for k, v in batch.items()}

    def frames_per_clip_step(self, batch: dict) -> tuple[int, int]:
        """(frames, tokens) a training batch holds: throughput units."""
        if self.name == "dynamics":
            b, t = batch["frames"].shape[:2]
            h, w = self.tokenizer.grid
            return b * t, b * t * h * w
        b, t = batch["frames"].shape[:2]
        return b * t, 0

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: dict) -> dict[str, float]:
        if self.name == "dynamics":
            return model.evaluate(batch, self.tokenizer)
        return model.evaluate(batch)

    @torch.no_grad()
    def visualize(self, model: nn.Module, batch: dict) -> np.ndarray:
        if self.name == "dynamics":
            return model.visualize(batch, self.tokenizer)
        return model.visualize(batch)

    def export_info(self) -> dict[str, Any]:
        if self.name != "dynamics":
            return {}
        info = {"action_source": self.action_source, "action_labels": self.action_labels}
        if self.game_actions is not None:
            info["game_actions"] = self.game_actions
        if self.game is not None:
            info["game"] = self.game
        return info


def _px(size: int | tuple) -> str:
    return f"{size}x{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def make_part(
    name: str, world_dir, dataset, action_source: str | None, backend: str | None = None
) -> Part:
    """Load what the part needs from the world folder. Dynamics: the tokenizer, plus the LAM
    unless action_source == "true". Default action source: "lam" (Genie's setting; works on
    any video); "true" uses the dataset's recorded actions and must be asked for."""
    from genie.models.registry import KINDS, SLOTS, dynamics_kind

    if name not in SLOTS and name not in KINDS:
        raise UserError(f"unknown part '{name}' (expected one of {', '.join(SLOTS)})")
    if name in ("dynamics", "diffusion"):
        backend = backend or ("diffusion" if name == "diffusion" else None)
        name = "dynamics"
    else:
        if action_source is not None or backend is not None:
            raise UserError("--action-source and --backend only apply to `genie train dynamics`")
        return Part(KINDS[name].slot, kind=name, world_dir=Path(world_dir))
    source = action_source or "lam"
    if source not in ACTION_SOURCES:
        raise UserError(f"--action-source must be one of {', '.join(ACTION_SOURCES)}")
    if source == "true" and not getattr(dataset, "num_actions", None):
        raise UserError(
            "--action-source true needs a dataset with recorded actions; this one has none "
            "(train the LAM and use --action-source lam)"
        )
    tokenizer = _load_needed(world_dir, "tokenizer")
    lam = _load_needed(world_dir, "lam") if source == "lam" else None
    labels = list(dataset.action_labels) if source == "true" and dataset.action_labels else None
    part = Part(
        name,
        kind=dynamics_kind(backend).name,
        tokenizer=tokenizer,
        lam=lam,
        action_source=source,
        action_labels=labels,
    )
    distinct = getattr(dataset, "distinct_actions", None) if source == "true" else None
    if distinct:
        part.action_labels = list(distinct["labels"])
        part.action_map = [int(v) for v in distinct["of"]]
        part.game_actions = [int(v) for v in distinct["game_action"]]
        part.game = getattr(dataset, "game", None)
    return part


def _load_needed(world_dir, part: str) -> nn.Module:
    if not (Path(world_dir) / part / "config.json").is_file():
        hint = (
            " (or use --action-source true with a dataset that has actions)"
            if part == "lam"
            else ""
        )
        raise UserError(
            f"world {world_dir} has no trained {part}, which this part needs: "
            f"run `genie train {part} --world {world_dir} ...` first{hint}"
        )
    return load_part(world_dir, part)


def world_fingerprints(world: Path, part: str, action_source: str | None) -> dict[str, str]:
    """Fingerprints of the world parts a run depends on (dynamics: tokenizer, and LAM)."""
    from genie.world.folder import TOKENS_KEY, part_fingerprints

    if part != "dynamics":
        return {}
    prints = part_fingerprints(world)
    needed = [TOKENS_KEY] + (["lam"] if action_source == "lam" else [])
    return {p: prints[p] for p in needed if p in prints}


def check_world_unchanged(world: Path, saved: dict, part: str, action_source: str | None) -> None:
    """A resumed dynamics run must still see the tokenizer encoder (and LAM) it started with.
    Its decoder may have been trained further: the code ids it learned are the same."""
    from genie.world.folder import part_fingerprints

    if part != "dynamics":
        return
    now = part_fingerprints(world)
    for key, before in saved.get("fingerprints", {}).items():
        p = "lam" if key == "lam" else "tokenizer"
        if now.get(key) != before:
            raise UserError(
                f"the world's {p} changed since this {part} run started: the dynamics must be trained "
                f"on the {p} it will play with; start a new run (another --run-dir)"
            )
