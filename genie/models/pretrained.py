"""Weights on disk the way the ecosystem expects: DIR/config.json + DIR/model.safetensors.

Mix `PretrainedMixin` into an `nn.Module` whose constructor takes one config dataclass
(`config_class`). Loading rebuilds the module from the config and loads tensors with
safetensors: nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file

from genie.utils.errors import UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T", bound="PretrainedMixin")


def config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, data: dict) -> Any:
    """Build a config dataclass, ignoring keys it does not know and converting lists to tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            continue
        if isinstance(value, list) and "tuple" in str(fields[key].type):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def with_legacy_defaults(cls: type, data: dict) -> dict:
    """A saved config of an older `config_version` (none written: version 1): the fields it does
    not name take the defaults of its version (`cls.LEGACY_DEFAULTS`), not today's."""
    legacy = getattr(cls, "LEGACY_DEFAULTS", None)
    if not legacy:
        return data
    version = int(data.get("config_version", 1))
    out = dict(data, config_version=version)
    for v in sorted(legacy):  # LEGACY_DEFAULTS[v]: defaults in force up to version v
        if version <= v:  # the oldest such v (closest to the config's version) wins
            out = {**legacy[v], **out}
    return out


def check_overrides(config_class: type, overrides: dict[str, Any], current: Any = None) -> dict:
    """`genie train --set` fields for a config of `config_class`: each must be a field and take
    a value of the type of the field's current value (`current`, a config) or default; returns
    the values converted (int -> float, list -> tuple). Anything else is a UserError."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise UserError(
            f"--set: {config_class.__name__} has no field {', '.join(unknown)} "
            f"(fields: {', '.join(sorted(fields))})"
        )

    def like(name: str) -> Any:
        if current is not None:
            return getattr(current, name)
        default = fields[name].default
        return None if default is dataclasses.MISSING else default

    return {k: check_field_value(k, v, like(k)) for k, v in overrides.items()}


def override_config(config: Any, overrides: dict[str, Any]) -> Any:
    """config with some fields replaced (`genie train --set KEY=VALUE`), checked as
    `check_overrides` says and by the config's own checks (one-line UserErrors)."""
    if not overrides:
        return config
    checked = check_overrides(type(config), overrides, config)
    try:
        return config_from_dict(type(config), {**config_to_dict(config), **checked})
    except (AssertionError, ValueError, TypeError) as e:  # the config's own checks
        raise UserError(f"--set {', '.join(overrides)}: {e or type(e).__name__}") from None


def check_field_value(name: str, value: Any, like: Any) -> Any:
    """value for a config field whose current (or default) value is `like`, converted where
    it is safe (int -> float, list -> tuple); a value of another type is a UserError."""
    if like is None:
        return value
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        tuple: isinstance(value, (list, tuple)),
        str: isinstance(value, str),
    }
    kind = next((t for t in ok if isinstance(like, t)), None)
    if kind is None:
        return value
    if not ok[kind]:
        want = {tuple: "a list", bool: "true or false"}.get(kind, f"a {kind.__name__}")
        raise UserError(f"--set {name}={value!r}: {name} takes {want} (like {like!r})")
    return float(value) if kind is float else tuple(value) if kind is tuple else value


class PretrainedMixin:
    config_class: ClassVar[type]
    model_type: ClassVar[str]  # written into config.json so a wrong folder is caught
    # weight-name prefixes of modules only training uses (a discriminator): weights saved
    # without them load, and those modules start fresh (a fine-tune that adds one)
    TRAINING_ONLY: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def pruned_prefixes(cls, saved: Any, config: Any) -> tuple[str, ...]:
        """Weight-name prefixes of saved weights that `config` (the saved config with --set
        overrides) leaves out on purpose, e.g. decoder blocks pruned; none by default."""
        return ()

    def save_pretrained(self, directory: str | Path, training_only: bool = True) -> Path:
        """Config + weights into `directory`. training_only=False leaves out the weights only
        training uses (`TRAINING_ONLY`, e.g. an autoencoder's discriminator): what a world
        ships; a run's checkpoint keeps them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = {"model_type": self.model_type, **config_to_dict(self.config)}
        tmp_cfg = directory / (CONFIG_NAME + ".tmp")
        tmp_cfg.write_text(json.dumps(data, indent=2) + "\n")
        state = {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if training_only or not k.startswith(self.TRAINING_ONLY)
        }
        tmp_w = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp_w), metadata={"model_type": self.model_type})
        tmp_w.replace(directory / WEIGHTS_NAME)
        tmp_cfg.replace(directory / CONFIG_NAME)
        return directory

    @classmethod
    def load_config(cls, directory: str | Path):
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise UserError(f"{path} not found: is {directory} a saved {cls.model_type}?")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e})") from None
        if data.get("model_type") != cls.model_type:
            raise UserError(
                f"{directory} holds a '{data.get('model_type')}', expected a '{cls.model_type}'"
            )
        return config_from_dict(cls.config_class, with_legacy_defaults(cls.config_class, data))

    @classmethod
    def from_pretrained(
        cls: type[T],
        directory: str | Path,
        device: str | torch.device = "cpu",
        overrides: dict[str, Any] | None = None,
    ) -> T:
        """overrides: config fields replaced before the model is built (loss weights, an added
        discriminator); one that changes a saved tensor's shape fails in one line."""
        directory = Path(directory)
        saved = cls.load_config(directory)
        config = override_config(saved, overrides or {})
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise UserError(f"{weights} not found")
        try:
            model = cls(config)
        except (AssertionError, ValueError, TypeError) as e:  # e.g. width not divisible by heads
            raise UserError(
                f"{directory / CONFIG_NAME} describes no buildable {cls.model_type} ({e or type(e).__name__}): "
                "restore the config.json saved with these weights"
            ) from None
        try:
            state = load_file(str(weights), device=str(device))
        except Exception as e:  # corrupt or truncated file
            raise UserError(f"{weights} could not be read ({e})") from None
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # tensors of other shapes: config.json was edited or swapped
            sizes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
            first = sizes[0].rstrip(".") if sizes else str(e).splitlines()[0]
            fix = (
                f"--set {', '.join(overrides)} changes the shape of saved weights: only fields "
                "that keep them (loss weights, a discriminator) can change"
                if overrides
                else "restore the config.json saved with these weights"
            )
            raise UserError(
                f"{weights} does not match {directory / CONFIG_NAME} ({len(sizes)} tensors "
                f"differ; {first}): {fix}"
            ) from None
        # a world's part is saved without its training-only weights: such a module starts fresh
        missing = [k for k in missing if not k.startswith(cls.TRAINING_ONLY)]
        if overrides:  # dropping a training-only module (a discriminator) or pruned blocks by --set
            dropped = cls.TRAINING_ONLY + cls.pruned_prefixes(saved, config)
            unexpected = [k for k in unexpected if not k.startswith(dropped)]
        if missing and overrides:  # e.g. more decoder blocks than were saved
            raise UserError(
                f"--set {', '.join(overrides)} asks for weights {weights} does not have "
                f"({list(missing)[:3]}): only fields that keep or drop saved weights can change"
            )
        if missing or unexpected:
            raise UserError(
                f"{weights} does not match its config.json "
                f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
            )
        return model.to(device).eval()
