"""The world folder: the unit users share, train into and play.

    WORLD/world.json            frame size, context length, actions (labels, keys), sampling
                                defaults, how each part was trained, fingerprints
    WORLD/tokenizer/            config.json + model.safetensors
    WORLD/lam/                  config.json + model.safetensors (not needed to play)
    WORLD/dynamics/             config.json + model.safetensors
    WORLD/examples/*.png        start frames

The dynamics model is only valid with the tokenizer (and LAM) it was trained on: world.json
records a fingerprint of each part's weights and the fingerprints the dynamics was trained
against, so a swapped part is caught with a clear error instead of playing noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from genie.models.registry import SLOTS as PARTS
from genie.models.registry import kind_of_folder, kind_of_model
from genie.utils.errors import UserError
from genie.utils.precision import cast_for_autocast

WORLD_JSON = "world.json"
TOKENS_KEY = "tokenizer_encoder"  # fingerprint of the tokenizer weights that decide the code ids
FORMAT = "genie-world"


def fingerprint(part_dir: str | Path, prefixes: tuple[str, ...] | None = None) -> str:
    """Short sha256 of a part's weights file, or (prefixes) of just the tensors whose names
    start with one of them, by name and bytes."""
    import torch

    h = hashlib.sha256()
    path = Path(part_dir) / "model.safetensors"
    if prefixes is None:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for name in sorted(k for k in f.keys() if k.startswith(prefixes)):
            t = f.get_tensor(name).contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def part_fingerprints(world_dir: str | Path) -> dict[str, str]:
    """Fingerprints of the parts in a world folder. "tokenizer_encoder" covers only the weights
    that decide the code ids (`VideoTokenizer.ENCODER_PREFIXES`): what the dynamics depends on,
    so a decoder trained further (`genie train tokenizer --freeze-encoder`) keeps it valid."""
    root = Path(world_dir)
    prints = {p: fingerprint(root / p) for p in PARTS if (root / p / "model.safetensors").is_file()}
    if "tokenizer" in prints:
        cls = kind_of_folder(root / "tokenizer", "tokenizer").model_class
        prints[TOKENS_KEY] = fingerprint(root / "tokenizer", cls.ENCODER_PREFIXES)
    return prints


def read_meta(world_dir: str | Path) -> dict[str, Any]:
    path = Path(world_dir) / WORLD_JSON
    if not path.is_file():
        return {"format": FORMAT, "version": 1}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a genie world.json (format={meta.get('format')!r})")
    return meta


def write_meta(world_dir: str | Path, meta: dict[str, Any]) -> None:
    path = Path(world_dir) / WORLD_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)


# a game's distinct actions and the keys a player expects; "A+B" is a chord (both held)
CHORDS = {
    "noop": [],
    "left": ["ArrowLeft", "a"],
    "right": ["ArrowRight", "d"],
    "jump": ["ArrowUp", "w", " "],
    "jump-left": ["ArrowUp+ArrowLeft", "w+a", " +ArrowLeft", "q"],
    "jump-right": ["ArrowUp+ArrowRight", "w+d", " +ArrowRight", "e"],
    # Atari minimal action sets (ALE's names)
    "up": ["ArrowUp", "w"],
    "down": ["ArrowDown", "s"],
    "fire": [" "],
    "upright": ["ArrowUp+ArrowRight", "w+d"],
    "upleft": ["ArrowUp+ArrowLeft", "w+a"],
    "downright": ["ArrowDown+ArrowRight", "s+d"],
    "downleft": ["ArrowDown+ArrowLeft", "s+a"],
    "rightfire": ["ArrowRight+ ", "d+ "],
    "leftfire": ["ArrowLeft+ ", "a+ "],
    "upfire": ["ArrowUp+ ", "w+ "],
    "downfire": ["ArrowDown+ ", "s+ "],
}


UNUSED = "unused"  # the name of a latent code its LAM never gives (genie.world.naming)


def is_unused(label: str) -> bool:
    """A latent code named unused ("unused", "unused 2"): no key, no button."""
    return label.lower().startswith(UNUSED)


def default_keys(labels: list[str]) -> list[list[str]]:
    """Keyboard keys for each action. Keys are KeyboardEvent.key values; "A+B" is a chord.

    When every label is a distinct action a player knows (CoinRun's noop/left/right/jump/
    jump-left/jump-right, Atari's NOOP/FIRE/LEFT/UPRIGHT...), the keys are the arrows, WASD and
    space, chords combine them (↑ + → = jump-right) and noop has no key (no key held = noop).
    Otherwise arrows/WASD/space go where a label names a direction, then number keys."""
    low = [lab.lower().replace("_", "") for lab in labels]
    if low and all(lab in CHORDS for lab in low) and len(set(low)) == len(low):
        return [list(CHORDS[lab]) for lab in low]
    keys: list[list[str]] = [[] for _ in labels]
    taken: set[str] = set()
    for i, lab in enumerate(low):  # known actions first ("right 2", a second code, gets a digit)
        if lab in CHORDS and CHORDS[lab] and not taken.intersection(CHORDS[lab]):
            keys[i] = list(CHORDS[lab])
            taken.update(CHORDS[lab])
    named = [
        ("jump right", ["e"]),
        ("up-right", ["e"]),
        ("jump left", ["q"]),
        ("up-left", ["q"]),
        ("right", ["ArrowRight", "d"]),
        ("left", ["ArrowLeft", "a"]),
        ("jump", ["ArrowUp", "w", " "]),
        ("up", ["ArrowUp", "w"]),
        ("down", ["ArrowDown", "s"]),
        ("fire", [" "]),
        ("noop", ["x"]),
        ("idle", ["x"]),
    ]
    for i, label in enumerate(labels):
        low = label.lower()
        if keys[i] or is_unused(low):
            continue
        for name, ks in named:
            if name in low and not any(k in taken for k in ks):
                keys[i] = list(ks)
                taken.update(ks)
                break
    digits = [str(d) for d in range(1, 10)] + ["0"]
    for i in range(len(labels)):
        if is_unused(labels[i]):
            continue
        if i < len(digits) and digits[i] not in taken:
            keys[i].append(digits[i])
    return keys


def load_part(world_dir: str | Path, part: str, device: str = "cpu"):
    if part not in PARTS:
        raise UserError(f"unknown world part '{part}' (expected one of {', '.join(PARTS)})")
    world_dir = Path(world_dir)
    if not world_dir.is_dir():
        raise UserError(f"world folder {world_dir} does not exist")
    part_dir = world_dir / part
    if not (part_dir / "config.json").is_file():
        raise UserError(f"{world_dir} has no trained {part} ({part_dir}/config.json missing)")
    model = kind_of_folder(part_dir, part).model_class.from_pretrained(part_dir, device=device)
    if getattr(model, "reads_latents", False):  # a LAM reading the world's autoencoder latents
        check_lam_encoder(world_dir)
        try:
            model.read_through(load_part(world_dir, "tokenizer", device).eval())
        except ValueError as e:
            raise UserError(f"{part_dir}: {e}") from None
    return model


def check_lam_encoder(world_dir: str | Path) -> None:
    """A LAM that reads latents must read those of the autoencoder encoder it was trained on
    (world.json "lam_trained_on", written when it was exported)."""
    want = read_meta(world_dir).get("lam_trained_on", {}).get(TOKENS_KEY)
    have = part_fingerprints(world_dir).get(TOKENS_KEY)
    if want and have and want != have:
        raise UserError(
            f"{world_dir}: the LAM reads the latents of a different autoencoder encoder "
            f"(fingerprint {want}, world has {have}): retrain the LAM or restore that tokenizer"
        )


def check_compatible(tokenizer=None, lam=None, dynamics=None, meta: dict | None = None) -> None:
    """Raise UserError when parts don't fit together."""
    if tokenizer is not None and dynamics is not None:
        problem = dynamics.tokenizer_mismatch(tokenizer)
        if problem:
            raise UserError(problem)
    if lam is not None and dynamics is not None and meta is not None:
        if (
            meta.get("actions", {}).get("source") == "lam"
            and lam.num_actions != dynamics.config.num_actions
        ):
            raise UserError(
                f"dynamics has {dynamics.config.num_actions} actions but the LAM has {lam.num_actions}"
            )
    if meta is not None:
        trained_on = meta.get("dynamics_trained_on", {})
        prints = meta.get("fingerprints", {})
        for key in ("tokenizer", TOKENS_KEY, "lam"):  # "tokenizer": worlds from before TOKENS_KEY
            want, have = trained_on.get(key), prints.get(key)
            if want and have and want != have:
                part = "lam" if key == "lam" else "tokenizer"
                what = "tokenizer encoder (its code ids)" if key == TOKENS_KEY else part
                raise UserError(
                    f"the dynamics was trained on a different {what} (fingerprint {want}, "
                    f"world has {have}): retrain the dynamics or restore that {part}"
                )


def export_part(world_dir: str | Path, part: str, model, info: dict[str, Any]) -> Path:
    """Save a trained part into the world folder and record how it was trained. Parts may train
    (and export) in parallel processes: world.json updates are serialised by a file lock."""
    world_dir = Path(world_dir)
    world_dir.mkdir(parents=True, exist_ok=True)
    kind = kind_of_model(model)
    if kind.slot != part:
        raise ValueError(f"a {kind.name} model cannot be the world's {part}")
    with FileLock(world_dir / ".world.lock"):
        meta = read_meta(world_dir)
        # a tokenizer says which of its weights decide the code ids the dynamics learned
        encoder = getattr(model, "ENCODER_PREFIXES", None)
        if encoder:
            _rekey_trained_on(meta, world_dir / part, encoder)
        part_dir = model.save_pretrained(world_dir / part, training_only=False)
        prints = meta.setdefault("fingerprints", {})
        prints[part] = fingerprint(part_dir)
        if encoder:
            prints[TOKENS_KEY] = fingerprint(part_dir, encoder)
        meta.setdefault("training", {})[part] = info
        if part == "tokenizer":
            meta["frame_size"] = [model.config.frame_size, model.config.frame_size]
        elif part == "dynamics":
            _record_dynamics(meta, model, info)
        elif getattr(model, "reads_latents", False):  # a LAM: the encoder whose latents it reads
            meta["lam_trained_on"] = {TOKENS_KEY: prints.get(TOKENS_KEY)}
        write_meta(world_dir, meta)
    return part_dir


def _rekey_trained_on(meta: dict, part_dir: Path, encoder_prefixes: tuple[str, ...]) -> None:
    """A world from before TOKENS_KEY: re-express what its dynamics was trained on by the
    encoder's fingerprint, if the tokenizer on disk is still that one."""
    trained_on = meta.get("dynamics_trained_on", {})
    if "tokenizer" in trained_on and part_dir.is_dir():
        if fingerprint(part_dir) == trained_on["tokenizer"]:
            trained_on[TOKENS_KEY] = fingerprint(part_dir, encoder_prefixes)
            del trained_on["tokenizer"]


def _record_dynamics(meta: dict, model, info: dict[str, Any]) -> None:
    """What playing needs to know of a new dynamics: context, sampling, actions, and the parts
    it was trained on (its fingerprints)."""
    cfg = model.config
    meta["context_frames"] = cfg.max_frames - 1
    same_backend = meta.get("backend") == model.model_type
    meta["backend"] = model.model_type
    old = meta.get("sampling", {})
    meta["sampling"] = model.sampling_defaults()
    if same_backend:  # the world's sampler (chosen by a user or a sampler table) outlives a
        # retrained or fine-tuned dynamics; a new backend starts from its own defaults
        meta["sampling"].update({k: v for k, v in old.items() if k in meta["sampling"]})
    if model.representation == "ids":  # skip-block decoding is the world's (a user's) choice
        meta["sampling"].update({k: old.get(k, v) for k, v in CARRY_DEFAULTS.items()})
    source = info.get("action_source", "lam")
    labels = info.get("action_labels") or [f"action {i}" for i in range(cfg.num_actions)]
    old = meta.get("actions", {})
    if old.get("source") == source and len(old.get("labels", [])) == cfg.num_actions:
        labels = old["labels"]  # keep human names given to latent actions
    meta["actions"] = {"source": source, "labels": labels, "keys": default_keys(labels)}
    for key in ("game_actions", "game"):  # true actions: how `genie playtest` replays the game
        if info.get(key) is not None:
            meta["actions"][key] = info[key]
    trained_on = {TOKENS_KEY: meta["fingerprints"].get(TOKENS_KEY)}
    if source == "lam":
        trained_on["lam"] = meta["fingerprints"].get("lam")
    meta["dynamics_trained_on"] = trained_on


# skip-block decoding (`genie.world.engine.carry_unchanged`), for dynamics over code ids
CARRY_DEFAULTS = {"carry_unchanged": True, "carry_margin": 0}


@dataclass(frozen=True)
class Sampling:
    """How a world samples its frames: world.json "sampling" over the dynamics'
    `sampling_defaults()`; `replace` applies a caller's overrides (the one place they meet)."""

    steps: int  # MaskGIT / denoising steps per generated frame
    steps_key: str  # what world.json calls them ("maskgit_steps", "diffusion_steps")
    temperature: float | None = None  # None: the dynamics' own default
    carry_unchanged: bool = False  # ids only: unchanged tokens keep the last frame's pixels
    carry_margin: int = 0  # ...and so do their neighbours within this many patches
    options: dict[str, Any] = field(default_factory=dict)  # more sample_next keywords

    @classmethod
    def of(cls, dynamics, saved: dict[str, Any]) -> Sampling:
        defaults = dict(dynamics.sampling_defaults())
        if dynamics.representation == "ids":
            defaults.update(CARRY_DEFAULTS)
        values = {**defaults, **{k: v for k, v in saved.items() if k in defaults}}
        steps_key = next(k for k in defaults if k.endswith("_steps"))
        return cls(
            steps=int(values.pop(steps_key)),
            steps_key=steps_key,
            temperature=values.pop("temperature", None),
            carry_unchanged=bool(values.pop("carry_unchanged", False)),
            carry_margin=int(values.pop("carry_margin", 0)),
            options=values,
        )

    def replace(self, **overrides) -> Sampling:
        """A copy with the given settings (None: keep this one's)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def set_action_labels(
    world_dir: str | Path, labels: list[str], keys: list[list[str]] | None = None
) -> None:
    meta = read_meta(world_dir)
    actions = meta.setdefault("actions", {"source": "lam"})
    actions["labels"] = list(labels)
    actions["keys"] = keys if keys is not None else default_keys(list(labels))
    write_meta(world_dir, meta)


class World:
    """A loaded world: tokenizer + dynamics (+ LAM when asked) and world.json."""

    def __init__(self, root: Path, meta: dict, tokenizer, dynamics, lam=None):
        self.root, self.meta = root, meta
        self.tokenizer, self.dynamics, self.lam = tokenizer, dynamics, lam
        self._play_parts: dict[str, tuple] = {}  # precision -> (tokenizer, dynamics) to play
        self._play_lock = threading.Lock()

    def play_parts(self, precision: str) -> tuple:
        """(tokenizer, dynamics) as an engine plays them in `precision`: in bf16, copies made
        once per world with their Linear and Conv weights already in bf16
        (`genie.utils.precision.cast_for_autocast`: the same frames, about 3 ms less a frame);
        in fp32 the world's own. Shared by every engine of this world (the batcher makes one
        per batched step)."""
        with self._play_lock:
            if precision not in self._play_parts:
                self._play_parts[precision] = (
                    cast_for_autocast(self.tokenizer, precision),
                    cast_for_autocast(self.dynamics, precision),
                )
            return self._play_parts[precision]

    @classmethod
    def from_folder(cls, path: str | Path, device: str = "cpu", with_lam: bool = False) -> World:
        root = Path(path)
        if not root.is_dir():
            raise UserError(f"world folder {root} does not exist")
        if not (root / WORLD_JSON).is_file():
            raise UserError(f"{root} is not a world folder ({WORLD_JSON} missing)")
        meta = read_meta(root)
        for part in ("tokenizer", "dynamics") + (("lam",) if with_lam else ()):
            if not (root / part / "model.safetensors").is_file():
                raise UserError(
                    f"world {root} is missing its {part} ({root / part}/model.safetensors)"
                )
        # recompute fingerprints: a part replaced on disk must not pass as the original
        meta = dict(meta)
        meta["fingerprints"] = part_fingerprints(root)
        tokenizer = load_part(root, "tokenizer", device)
        dynamics = load_part(root, "dynamics", device)
        lam = load_part(root, "lam", device) if with_lam else None
        check_compatible(tokenizer, lam, dynamics, meta)
        world = cls(root, meta, tokenizer, dynamics, lam)
        world.check_examples()
        return world

    def check_examples(self) -> None:
        """Every examples/*.png must be a readable image: a corrupt one fails the load in one
        line, instead of a playground whose page shows "Error" and refuses every key."""
        from genie.utils.images import load_image

        for path in self.examples:
            try:
                load_image(path, self.frame_size[0])
            except UserError as e:
                raise UserError(f"{path}: {e}; replace or delete this start frame") from None

    @property
    def name(self) -> str:
        return self.meta.get("name", self.root.name)

    @property
    def frame_size(self) -> tuple[int, int]:
        s = self.tokenizer.config.frame_size
        return (s, s)

    @property
    def num_actions(self) -> int:
        return self.dynamics.config.num_actions

    @property
    def action_labels(self) -> list[str]:
        labels = self.meta.get("actions", {}).get("labels")
        if not labels or len(labels) != self.num_actions:
            labels = [f"action {i}" for i in range(self.num_actions)]
        return list(labels)

    @property
    def action_keys(self) -> list[list[str]]:
        keys = self.meta.get("actions", {}).get("keys")
        if not keys or len(keys) != self.num_actions:
            keys = default_keys(self.action_labels)
        return [list(k) for k in keys]

    @property
    def sampling(self) -> Sampling:
        return Sampling.of(self.dynamics, self.meta.get("sampling", {}))

    @property
    def context_frames(self) -> int:
        return int(self.meta.get("context_frames", self.dynamics.config.max_frames - 1))

    @property
    def examples(self) -> list[Path]:
        d = self.root / "examples"
        return sorted(d.glob("*.png")) if d.is_dir() else []
