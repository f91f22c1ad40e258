"""One registry of world parts: a model kind is one entry here.

A world folder has three slots (`tokenizer/`, `lam/`, `dynamics/`); each holds one model kind,
named by the `model_type` its config.json records. The tokenizer slot holds the VQ tokenizer
(`genie/models/tokenizer.py`) or the continuous frame autoencoder (`genie/models/autoencoder.py`, for
diffusion worlds). The dynamics slot holds either the MaskGIT
transformer (`genie/models/dynamics.py`) or the diffusion transformer (`genie/models/diffusion.py`).
Training presets name kinds too: `training/presets/<preset>/<kind>.json`.

The play contract every dynamics kind keeps (what `genie.world.engine.WorldEngine` calls):
`representation` ("ids": frames -> `tokenizer.encode`, decoded by `tokenizer.decode_step`;
"latents": `tokenizer.encode_latents` / `decode_latents_step`), `new_state(max_context)` (a
state with `.clone()` and `.repeat(n)`), `append_frame(state, x, action_or_None)`,
`sample_next(state, action (B,), steps, temperature, generator, commit, **options)`,
`commit_frame(state, x, action, generator=, **options)` (what commit=True does after sampling,
run on its own: the engine runs it beside decoding), and
`sampling_defaults()`: world.json's "sampling", whose one `*_steps` key is sample_next's
`steps`, "temperature" its temperature, and any other key one of its keyword options.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from genie.utils.errors import UserError

SLOTS = ("tokenizer", "lam", "dynamics")  # the folders of a world


@dataclass(frozen=True)
class PartKind:
    name: str  # registry key and preset file stem
    slot: str  # the world folder it lives in
    module: str  # imported lazily: loading a world never imports what it does not use
    model: str  # nn.Module class (PretrainedMixin)
    config: str  # its config dataclass
    backend: str | None = None  # dynamics only: the `--backend` name

    @property
    def model_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.model)

    @property
    def config_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.config)


KINDS = {
    k.name: k
    for k in (
        PartKind(
            "tokenizer", "tokenizer", "genie.models.tokenizer", "VideoTokenizer", "TokenizerConfig"
        ),
        PartKind(
            "autoencoder",
            "tokenizer",
            "genie.models.autoencoder",
            "FrameAutoencoder",
            "AutoencoderConfig",
        ),
        PartKind("lam", "lam", "genie.models.lam", "LatentActionModel", "LAMConfig"),
        PartKind(
            "dynamics",
            "dynamics",
            "genie.models.dynamics",
            "DynamicsModel",
            "DynamicsConfig",
            "maskgit",
        ),
        PartKind(
            "diffusion",
            "dynamics",
            "genie.models.diffusion",
            "DiffusionDynamics",
            "DiffusionConfig",
            "diffusion",
        ),
    )
}
BACKENDS = {k.backend: k for k in KINDS.values() if k.backend}


def kind(name: str) -> PartKind:
    if name not in KINDS:
        raise UserError(f"unknown part kind '{name}' (known: {', '.join(KINDS)})")
    return KINDS[name]


def slot_of(name: str) -> str:
    """The world slot a part name trains: a slot itself, or a kind's slot ("autoencoder")."""
    return name if name in SLOTS else kind(name).slot


def dynamics_kind(backend: str | None) -> PartKind:
    """The dynamics kind of a `--backend` name (default MaskGIT)."""
    backend = backend or "maskgit"
    if backend not in BACKENDS:
        raise UserError(f"unknown dynamics backend '{backend}' (known: {', '.join(BACKENDS)})")
    return BACKENDS[backend]


def kind_of_model(model) -> PartKind:
    """The kind of a model instance, by its class's `model_type`."""
    for k in KINDS.values():
        if k.model_class.model_type == type(model).model_type:
            return k
    raise ValueError(f"{type(model).__name__} is not a registered part kind")


def kind_of_folder(part_dir: str | Path, slot: str) -> PartKind:
    """The kind saved in a part folder, by the `model_type` in its config.json."""
    path = Path(part_dir) / "config.json"
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} could not be read ({e})") from None
    for k in KINDS.values():
        if k.slot == slot and k.model_class.model_type == model_type:
            return k
    raise UserError(f"{part_dir} holds a '{model_type}', which is not a {slot} this genie knows")
