"""What a training run trains with: a preset's settings for a fresh run, the checkpoint's when
resuming (flags may change what is safe to change: steps, learning rate)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genie.utils.errors import UserError
from training import checkpoint, presets


def default_run_dir(world: str | Path, part: str) -> Path:
    return Path("runs") / f"{Path(world).resolve().name}-{part}"


@dataclasses.dataclass
class Settings:
    part: str  # the world slot trained: tokenizer | lam | dynamics
    kind: str  # the registry kind trained (tokenizer | autoencoder | lam | dynamics | diffusion)
    run_dir: Path
    world: Path
    data: str  # the dataset folder as given (world.json records it so, never made absolute)
    preset: str  # preset name (or folder)
    model: dict[str, Any] | None  # preset "model" section; None when resuming (checkpoint's)
    train: presets.TrainConfig
    seed: int
    stop_at: int  # the step this invocation stops at (<= train.steps)
    action_source: str | None  # dynamics: "lam" | "true"; None: default
    backend: str | None = None  # dynamics: "maskgit" | "diffusion"; None: default (maskgit)
    init_from: str | None = None  # part folder the weights started from, as given
    freeze_encoder: bool = False  # tokenizer: train the decoder alone
    model_set: dict[str, Any] = dataclasses.field(default_factory=dict)  # --set KEY=VALUE
    checkpoint: Path | None = None  # the checkpoint to resume
    saved: dict[str, Any] = dataclasses.field(default_factory=dict)  # its trainer.json


def resolve_settings(args) -> Settings:
    from genie.models.registry import dynamics_kind, slot_of

    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.world, args.part)
    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "clip_len": args.clip_len,
        "ema_decay": getattr(args, "ema_decay", None),
        # `genie train world` spaces these out when a time budget gives a part many steps
        **{k: getattr(args, k, None) for k in ("eval_every", "sample_every", "ckpt_every")},
    }
    backend = getattr(args, "backend", None)
    model_set = parse_sets(getattr(args, "model_set", None) or [])
    found = checkpoint.find(run_dir)
    if not args.resume:
        if found is not None:
            raise UserError(
                f"{run_dir} already holds a training checkpoint: add --resume to continue it, "
                "or pass another --run-dir"
            )
        if not args.preset:
            raise UserError(f"--preset is required (available: {', '.join(presets.available())})")
        preset_part = args.part
        if args.part == "dynamics":
            preset_part = dynamics_kind(backend).name
        elif backend:
            raise UserError("--backend only applies to `genie train dynamics`")
        preset = presets.load(args.preset, preset_part, overrides)
        saved: dict[str, Any] = {}
        name, model, train, seed = preset.name, preset.model, preset.train, args.seed
        if model_set and not args.init_from:
            model = {**(model or {}), **model_set}
        action_source, init_from = args.action_source, args.init_from
    else:
        if found is None:
            raise UserError(f"--resume: no checkpoint in {run_dir} (train without --resume first)")
        saved = checkpoint.read_state(found)
        check_resumable(saved, args, overrides, run_dir)
        if model_set:
            raise UserError("--set can't change a run when resuming (its model is saved)")
        model_set = saved.get("model_set") or {}
        train = presets.make_train_config(
            {**saved["train"], **{k: v for k, v in overrides.items() if v}}
        )
        name, model, seed = saved["preset"], None, saved["seed"]
        action_source, backend = saved.get("action_source"), saved.get("backend")
        init_from = saved.get("init_from")
    freeze = bool(getattr(args, "freeze_encoder", False) or saved.get("freeze_encoder"))
    if freeze and slot_of(args.part) != "tokenizer":
        raise UserError(
            "--freeze-encoder is for the tokenizer or autoencoder (it keeps the latents fixed)"
        )
    slot = slot_of(args.part)
    kind = dynamics_kind(backend).name if slot == "dynamics" else args.part
    if model_set:
        from genie.models.pretrained import check_overrides

        model_set = check_overrides(presets.config_class(kind), model_set)
    return Settings(
        part=slot,
        kind=kind,
        run_dir=run_dir,
        world=Path(args.world),
        data=str(args.data),
        preset=name,
        model=model,
        train=train,
        seed=seed,
        stop_at=min(args.stop_at or train.steps, train.steps),
        action_source=action_source,
        backend=backend,
        init_from=init_from,
        freeze_encoder=freeze,
        model_set=model_set,
        checkpoint=found if args.resume else None,
        saved=saved,
    )


def parse_sets(items: list[str]) -> dict[str, Any]:
    """["adv_weight=0.05", "widths=[32,64]", "arch=conv"] -> {field: value}; VALUE is JSON, or
    a plain string where it is not JSON."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set takes KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def check_resumable(saved: dict[str, Any], args, overrides: dict[str, Any], run_dir: Path) -> None:
    """A resumed run continues the same run: flags may not contradict its checkpoint."""
    from genie.models.registry import slot_of

    kind = saved.get("kind", saved["part"])
    if saved["part"] != slot_of(args.part) or (args.part != "dynamics" and kind != args.part):
        raise UserError(f"{run_dir} is a {kind} run, not a {args.part} run")
    if args.preset and args.preset != saved["preset"]:
        raise UserError(
            f"{run_dir} was trained with preset '{saved['preset']}', not '{args.preset}'"
        )
    for key in ("batch_size", "clip_len"):  # the saved data position counts batches of these
        if overrides[key] and overrides[key] != saved["train"][key]:
            raise UserError(
                f"--{key.replace('_', '-')} can't change when resuming (the run uses {saved['train'][key]})"
            )
    if args.action_source and args.action_source != saved.get("action_source"):
        raise UserError(f"{run_dir} was trained with --action-source {saved.get('action_source')}")
    backend = getattr(args, "backend", None)
    if backend and backend != (saved.get("backend") or "maskgit"):
        raise UserError(f"{run_dir} was trained with --backend {saved.get('backend') or 'maskgit'}")
