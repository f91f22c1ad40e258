"""Training checkpoints: everything needed to continue a run exactly (STYLE 4).

    RUN_DIR/checkpoint/
        trainer.json            step, data order (epoch, position), part, preset, train
                                settings, seed, processes, world, data, wall-clock so far
        model/                  config.json + model.safetensors (raw weights, not EMA)
        buffers.safetensors     every buffer, including non-persistent ones (VQ usage counters)
        ema.pt                  EMA shadow weights and step (only with ema_decay)
        optimizer.pt            AdamW state
        scheduler.pt            LR schedule state
        rng_<rank>.pt           python / numpy / torch RNG states of each process
        process_<rank>.json     each process's metrics not yet logged (`RunningMeans`)

Written to RUN_DIR/checkpoint.tmp, then renamed; the previous checkpoint is kept as
checkpoint.old until the new one is in place, so a crash at any moment leaves a whole one.
Released weights go to the world folder instead (`release`, through
`genie.world.folder.export_part`), with a record of how they were trained (`export_info`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genie.utils.errors import UserError

NAME = "checkpoint"


def find(run_dir: Path) -> Path | None:
    """The newest whole checkpoint in run_dir (checkpoint/, else checkpoint.old/), or None."""
    for name in (NAME, NAME + ".old"):
        path = run_dir / name
        if (path / "trainer.json").is_file():
            return path
    return None


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "trainer.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}/trainer.json could not be read ({e}): start a new run") from None


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclasses.dataclass
class Progress:
    """Where a run is: optimizer steps, data order (epoch, batches into it), wall clock."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    elapsed_s: float = 0.0


def trainer_state(settings, progress: Progress, part, num_processes: int) -> dict[str, Any]:
    """trainer.json: what `--resume` needs besides the tensors (settings: `Settings`)."""
    from training.parts import world_fingerprints

    s = settings
    return {
        "part": s.part,
        "kind": s.kind,
        "preset": s.preset,
        **dataclasses.asdict(progress),
        "seed": s.seed,
        "train": dataclasses.asdict(s.train),
        "num_processes": num_processes,
        "world": str(s.world),
        "data": s.data,
        "action_source": part.action_source,
        "backend": s.backend,
        "init_from": s.init_from,
        "fingerprints": world_fingerprints(s.world, s.part, part.action_source),
        "freeze_encoder": s.freeze_encoder,
        "model_set": s.model_set,
    }


def save(
    run_dir: Path,
    accelerator,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    ema,
    state: dict[str, Any],
    process_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically. Called by every process (each saves its RNG state and
    its `process_state`)."""
    tmp, final, old = run_dir / (NAME + ".tmp"), run_dir / NAME, run_dir / (NAME + ".old")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
    (tmp / f"process_{accelerator.process_index}.json").write_text(json.dumps(process_state or {}))
    if accelerator.is_main_process:
        model.save_pretrained(tmp / "model")
        buffers = {k: v.detach().contiguous().cpu() for k, v in model.named_buffers()}
        save_file(buffers or {"_none": torch.zeros(0)}, str(tmp / "buffers.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if ema is not None:
            torch.save(ema.state_dict(), tmp / "ema.pt")
        (tmp / "trainer.json").write_text(
            json.dumps(state, indent=2) + "\n"
        )  # last: marks it whole
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_model(path: Path, model_class: type, device) -> torch.nn.Module:
    """The raw (training) model of a checkpoint, buffers included."""
    model = model_class.from_pretrained(path / "model", device=device)
    buffers = load_file(str(path / "buffers.safetensors"), device=str(device))
    own = dict(model.named_buffers())
    for name, value in buffers.items():
        if name in own:
            own[name].copy_(value)
    return model.train()


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise UserError(f"{path} could not be read ({e}): start a new run") from None


def load_training_state(path: Path, optimizer, scheduler, ema, rank: int) -> dict[str, Any]:
    """Restore optimizer, schedule, EMA and this process's RNG states in place; returns the
    process state saved with them ({} for checkpoints from before it was saved)."""
    optimizer.load_state_dict(_load(path / "optimizer.pt"))
    scheduler.load_state_dict(_load(path / "scheduler.pt"))
    if ema is not None:
        if not (path / "ema.pt").is_file():
            raise UserError(
                f"{path} has no EMA state but ema_decay is set: resume with the run's settings"
            )
        ema.load_state_dict(_load(path / "ema.pt"))
    set_rng_state(_load(path / f"rng_{rank}.pt"))
    process = path / f"process_{rank}.json"
    return json.loads(process.read_text()) if process.is_file() else {}


def export_info(settings, progress: Progress, part, accelerator, metrics: dict) -> dict[str, Any]:
    """world.json "training.<part>": how the released weights were made. The data folder as it
    was given and what it holds, never a machine's absolute path."""
    from genie.data.format import open_dataset

    s = settings
    return {
        "preset": s.preset,
        "steps": progress.step,
        "schedule_steps": s.train.steps,
        "data": s.data,
        "dataset": open_dataset(s.data).summary(),
        "clip_len": s.train.clip_len,
        "batch_size": s.train.batch_size * accelerator.num_processes,
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "wall_clock_s": round(progress.elapsed_s, 1),
        **({"init_from": s.init_from} if s.init_from else {}),
        **({"init_from_training": base} if (base := _base_training(s.init_from)) else {}),
        **({"decoder_only": True} if s.freeze_encoder else {}),
        **({"set": s.model_set} if s.model_set else {}),
        "ema": s.train.ema_decay,
        "metrics": metrics,
        **part.export_info(),
    }


def _base_training(init_from: str | None) -> dict[str, Any] | None:
    """How the weights a run started from were trained (the world.json beside the part folder
    given to --init-from), so a fine-tuned part keeps its whole lineage and its CPU time."""
    if not init_from:
        return None
    from genie.world.folder import WORLD_JSON

    part_dir = Path(init_from)
    try:
        meta = json.loads((part_dir.parent / WORLD_JSON).read_text())
    except (OSError, ValueError):
        return None
    record = meta.get("training", {}).get(part_dir.name)
    return record if isinstance(record, dict) else None


def release(world: Path, part: str, model: torch.nn.Module, ema, info: dict[str, Any]) -> None:
    """Export the run's weights (the EMA weights when it keeps them) into the world folder."""
    from genie.world.folder import export_part

    released = copy.deepcopy(model)
    if ema is not None:
        ema.copy_to(released.parameters())
    export_part(world, part, released.eval(), info)
