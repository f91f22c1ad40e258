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

Written to RUN_DIR/checkpoint.tmp, then renamed; the previous checkpoint is kept as
checkpoint.old until the new one is in place, so a crash at any moment leaves a whole one.
Released weights go to the world folder instead (`genie.world.export_part`).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genie.errors import UserError

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


def save(
    run_dir: Path,
    accelerator,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    ema,
    state: dict[str, Any],
) -> Path:
    """Write a checkpoint atomically. Called by every process (each saves its RNG state)."""
    tmp, final, old = run_dir / (NAME + ".tmp"), run_dir / NAME, run_dir / (NAME + ".old")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
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


def load_training_state(path: Path, optimizer, scheduler, ema, rank: int) -> None:
    """Restore optimizer, schedule, EMA and this process's RNG states in place."""
    optimizer.load_state_dict(_load(path / "optimizer.pt"))
    scheduler.load_state_dict(_load(path / "scheduler.pt"))
    if ema is not None:
        if not (path / "ema.pt").is_file():
            raise UserError(
                f"{path} has no EMA state but ema_decay is set: resume with the run's settings"
            )
        ema.load_state_dict(_load(path / "ema.pt"))
    set_rng_state(_load(path / f"rng_{rank}.pt"))
