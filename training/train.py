"""One training loop for the tokenizer, the LAM and the dynamics (STYLE 7, 8).

Read it top to bottom: settings, accelerator, data, model, optimizer + schedule + EMA,
resume, then the loop (forward `compute_loss`, backward, clip, step, EMA, log, evaluate,
sample, checkpoint + export). What differs between parts lives in `training/parts.py`.

Runs as `genie train PART ...`, or under accelerate for several processes/GPUs:

    accelerate launch --num_processes 2 -m training.train tokenizer --data D --world W --preset P

Each process reads its own shard of every epoch's shuffled order; gradients are all-reduced,
so every process holds the same weights. The LR schedule counts optimizer steps, whatever
the number of processes (batch_size is per process).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from genie.data import ClipDataset
from genie.errors import UserError
from genie.world import export_part, read_meta
from training import checkpoint, presets
from training.data import EpochSampler, Indexed, collate_indexed, to_device, val_split_or_none
from training.metrics_log import MetricsLog
from training.parts import check_world_unchanged, make_part, world_fingerprints


def default_run_dir(world: str | Path, part: str) -> Path:
    return Path("runs") / f"{Path(world).resolve().name}-{part}"


@dataclasses.dataclass
class Settings:
    """What a run trains with: the preset's (fresh run) or the checkpoint's (--resume)."""

    run_dir: Path
    preset: str  # preset name (or folder)
    model: (
        dict[str, Any] | None
    )  # preset "model" section; None when resuming (the checkpoint has it)
    train: presets.TrainConfig
    seed: int
    action_source: str | None  # dynamics: "lam" | "true"; None: default
    backend: str | None = None  # dynamics: "maskgit" | "diffusion"; None: default (maskgit)
    checkpoint: Path | None = None  # the checkpoint to resume
    saved: dict[str, Any] = dataclasses.field(default_factory=dict)  # its trainer.json


def resolve_settings(args) -> Settings:
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.world, args.part)
    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "clip_len": args.clip_len,
    }
    found = checkpoint.find(run_dir)
    if not args.resume:
        if found is not None:
            raise UserError(
                f"{run_dir} already holds a training checkpoint: add --resume to continue it, "
                "or pass another --run-dir"
            )
        if not args.preset:
            raise UserError(f"--preset is required (available: {', '.join(presets.available())})")
        backend = getattr(args, "backend", None)
        preset_part = args.part
        if args.part == "dynamics":
            from genie.registry import dynamics_kind

            preset_part = dynamics_kind(backend).name
        elif backend:
            raise UserError("--backend only applies to `genie train dynamics`")
        preset = presets.load(args.preset, preset_part, overrides)
        return Settings(
            run_dir, preset.name, preset.model, preset.train, args.seed, args.action_source, backend
        )
    if found is None:
        raise UserError(f"--resume: no checkpoint in {run_dir} (train without --resume first)")
    saved = checkpoint.read_state(found)
    if saved["part"] != args.part:
        raise UserError(f"{run_dir} is a {saved['part']} run, not a {args.part} run")
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
    train = presets.make_train_config(
        {**saved["train"], **{k: v for k, v in overrides.items() if v}}
    )
    return Settings(
        run_dir,
        saved["preset"],
        None,
        train,
        saved["seed"],
        saved.get("action_source"),
        saved.get("backend"),
        found,
        saved,
    )


def load_init(part, folder: str, dataset, device) -> nn.Module:
    """The model of a part folder (config.json + model.safetensors), checked against the data."""
    model = part.model_class.from_pretrained(folder)  # a clear UserError if incomplete or wrong
    part.check_model(model, dataset)
    return model.to(device).train()


def train(args) -> int:
    # ------------------------------------------------------------------ settings
    part_name, world = args.part, Path(args.world)
    settings = resolve_settings(args)
    run_dir, cfg, seed = settings.run_dir, settings.train, settings.seed
    ckpt, saved = settings.checkpoint, settings.saved  # None, {} for a fresh run
    stop_at = min(args.stop_at or cfg.steps, cfg.steps)
    freeze = bool(getattr(args, "freeze_encoder", False) or saved.get("freeze_encoder"))
    if freeze and part_name != "tokenizer":
        raise UserError("--freeze-encoder is for the tokenizer (it keeps the code ids fixed)")

    # ------------------------------------------------------------------ accelerator
    if args.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UserError(
            "--mixed-precision fp16 needs a GPU; on a CPU train in fp32 (--mixed-precision no)"
        )
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # also what makes torchrun's processes use gloo on a CPU
        mixed_precision=args.mixed_precision,
    )
    device, main = accelerator.device, accelerator.is_main_process
    say = accelerator.print
    if args.mixed_precision == "bf16" and device.type == "cpu":
        say("note: bf16 on a CPU is far slower than fp32 on most CPUs (see DESIGN.md)")

    # ------------------------------------------------------------------ data
    train_ds = ClipDataset(args.data, split="train", clip_len=cfg.clip_len)
    if len(train_ds) == 0:
        raise UserError(f"{args.data} has no training clips of {cfg.clip_len} frames (clip_len)")
    val_ds = val_split_or_none(args.data, cfg.clip_len)
    if val_ds is None:
        say(f"note: {args.data} has no val split: validating on the train split")
        val_ds = train_ds
    part = make_part(part_name, world, train_ds, settings.action_source, settings.backend).to(
        device
    )
    trained_on = read_meta(world).get("dynamics_trained_on", {}) if world.is_dir() else {}
    if (part_name == "lam" and "lam" in trained_on) or (
        part_name == "tokenizer" and trained_on and not freeze
    ):
        say(
            f"note: the dynamics in {world} was trained on its current {part_name}: retrain it after"
            + (
                " (or train the decoder alone: --freeze-encoder)"
                if part_name == "tokenizer"
                else ""
            )
        )
    loader_gen = torch.Generator()
    loader = torch.utils.data.DataLoader(
        Indexed(train_ds),
        batch_size=cfg.batch_size,
        sampler=EpochSampler(len(train_ds), seed),
        drop_last=True,
        collate_fn=collate_indexed,
        num_workers=args.workers,
        generator=loader_gen,  # worker seeds come from here, not from the global RNG
    )
    val_loader = torch.utils.data.DataLoader(
        Indexed(val_ds), batch_size=cfg.batch_size, collate_fn=collate_indexed, num_workers=0
    )

    # ------------------------------------------------------------------ model
    set_seed(seed)  # identical initial weights on every process
    if ckpt is not None:
        model = checkpoint.load_model(ckpt, part.model_class, device)
        part.check_model(model, train_ds)
        check_world_unchanged(world, saved, part_name, settings.action_source)
    elif args.init_from:
        model = load_init(part, args.init_from, train_ds, device)
    else:
        model = part.model_class(part.build_config(settings.model, train_ds)).to(device).train()
    if freeze:
        if ckpt is None and not args.init_from:
            say("note: --freeze-encoder without --init-from trains a decoder for a random encoder")
        model.freeze_encoder()
    for note in part.notes:
        say(f"note: {note}")
    n_params = sum(p.numel() for p in model.parameters())

    # ------------------------------------------------------------------ optimizer, schedule, EMA
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]  # no weight decay on biases, norms, 1-d gains
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
    )  # stepped by hand once per optimizer step (not prepared: accelerate would step it per process)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None:
        ema.to(device)
    loss_module, optimizer, loader = accelerator.prepare(LossModule(model), optimizer, loader)
    if len(loader) == 0:
        raise UserError(
            f"{len(train_ds)} training clips are fewer than batch_size {cfg.batch_size} x "
            f"{accelerator.num_processes} process(es): lower --batch-size"
        )

    # ------------------------------------------------------------------ resume
    step, epoch, position, elapsed = 0, 0, 0, 0.0
    if ckpt is not None:
        if saved["num_processes"] != accelerator.num_processes:
            n = saved["num_processes"]
            raise UserError(
                f"{run_dir} was trained with {n} process(es); resume with the same number"
            )
        checkpoint.load_training_state(ckpt, optimizer, scheduler, ema, accelerator.process_index)
        step, epoch, position = saved["step"], saved["epoch"], saved["position"]
        elapsed = saved["elapsed_s"]
        say(f"resuming {run_dir} at step {step} (epoch {epoch}, batch {position})")
    else:
        set_seed(seed, device_specific=True)  # per-process randomness (masks, VQ restarts)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run_dir / "metrics.csv")
    if main:
        log.truncate_after(step)
        (run_dir / "samples").mkdir(exist_ok=True)
    clip_log = None
    if args.debug_shards:  # test hook: which clips each process trained on, and its final weights
        (run_dir / "debug").mkdir(exist_ok=True)
        clip_log = open(run_dir / "debug" / f"clips_rank{accelerator.process_index}.txt", "a")
    say(
        f"training {part_name} ({n_params / 1e6:.2f}M params, preset {settings.preset}) on "
        f"{len(train_ds)} clips x {cfg.clip_len} frames, {accelerator.num_processes} process(es) "
        f"on {device}, steps {step}->{stop_at} of {cfg.steps}, run dir {run_dir}"
    )

    def with_ema_weights(fn):
        """Run fn() with the EMA weights in the model (what gets exported), then restore."""
        if ema is None:
            return fn()
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
        try:
            return fn()
        finally:
            ema.restore(model.parameters())

    def validate() -> dict[str, float]:
        totals: dict[str, list[float]] = {}
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for i, raw in enumerate(val_loader):
                if i >= args.eval_batches:
                    break
                for k, v in part.evaluate(model, part.batch(to_device(raw, device))).items():
                    totals.setdefault(k, []).append(float(v))
        model.train()
        return {f"val_{k}": float(np.mean(v)) for k, v in totals.items()}

    def sample(step: int) -> None:
        raw = to_device(next(iter(val_loader)), device)
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            image = part.visualize(model, part.batch(raw))
        model.train()
        img = Image.fromarray(image)
        if min(img.size) < 256:  # small frames: nearest-neighbour upscale so a person can see them
            img = img.resize((img.width * 2, img.height * 2), Image.NEAREST)
        img.save(run_dir / "samples" / f"step_{step:07d}.png")

    last_val: dict[str, float] = {}
    last_train: dict[str, float] = {}

    def save_and_export() -> None:
        state = {
            "part": part_name,
            "preset": settings.preset,
            "step": step,
            "epoch": epoch,
            "position": position,
            "seed": seed,
            "train": dataclasses.asdict(cfg),
            "num_processes": accelerator.num_processes,
            "world": str(world),
            "data": str(args.data),
            "action_source": part.action_source,
            "backend": settings.backend,
            "elapsed_s": elapsed,
            "init_from": saved.get(
                "init_from", args.init_from and str(Path(args.init_from).resolve())
            ),
            "fingerprints": world_fingerprints(world, part_name, part.action_source),
            "freeze_encoder": freeze,
        }
        checkpoint.save(run_dir, accelerator, model, optimizer, scheduler, ema, state)
        if main:
            released = copy.deepcopy(model)
            if ema is not None:
                ema.copy_to(released.parameters())
            info = {
                "preset": settings.preset,
                "steps": step,
                "schedule_steps": cfg.steps,
                "data": str(Path(args.data).resolve()),
                "clip_len": cfg.clip_len,
                "batch_size": cfg.batch_size * accelerator.num_processes,
                "processes": accelerator.num_processes,
                "device": str(device),
                "wall_clock_s": round(elapsed, 1),
                **({"init_from": state["init_from"]} if state["init_from"] else {}),
                **({"decoder_only": True} if freeze else {}),
                "ema": cfg.ema_decay,
                "metrics": {**last_train, **last_val},
                **part.export_info(),
            }
            export_part(world, part_name, released.eval(), info)
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ the loop
    if step == 0 and main:  # baseline: validation and a sample of the untrained model
        last_val = with_ema_weights(validate)
        log.append({"step": 0, "epoch": 0, **last_val})
        with_ema_weights(lambda: sample(0))
    accelerator.wait_for_everyone()

    loader_gen.manual_seed(seed + epoch)
    loader.set_epoch(epoch)
    batches = iter(skip_first_batches(loader, position) if position else loader)
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    sums: dict[str, float] = {}  # metric sums since the last log row
    n_sum, frames_seen, tokens_seen, busy = (
        0,
        0,
        0,
        0.0,
    )  # busy: seconds spent training (not evaluating)
    t_session = time.perf_counter() - elapsed
    while step < stop_at:
        t0 = time.perf_counter()
        try:
            raw = next(batches)
        except StopIteration:  # next epoch: a new permutation of the clips
            epoch, position = epoch + 1, 0
            loader_gen.manual_seed(seed + epoch)
            loader.set_epoch(epoch)
            batches = iter(loader)
            continue
        position += 1
        if clip_log is not None:
            clip_log.write(f"{step + 1} " + " ".join(str(int(i)) for i in raw["index"]) + "\n")
            clip_log.flush()

        batch = part.batch(raw)
        loss, metrics = loss_module(batch)
        accelerator.backward(loss)
        if cfg.grad_clip:
            metrics["grad_norm"] = float(
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(model.parameters())
        step += 1

        # bookkeeping: running sums for the next log row
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        frames, tokens = part.frames_per_clip_step(batch)
        n_sum, frames_seen, tokens_seen = n_sum + 1, frames_seen + frames, tokens_seen + tokens
        busy += time.perf_counter() - t0
        elapsed = time.perf_counter() - t_session
        bar.update(1)
        bar.set_postfix(loss=f"{loss.detach().item():.4f}")

        row: dict[str, Any] = {}
        if step % args.log_every == 0 or step == stop_at:  # averaged over steps and processes
            keys = sorted(sums)
            means = accelerator.reduce(
                torch.tensor([sums[k] / n_sum for k in keys], device=device), "mean"
            )
            counts = torch.tensor(
                [frames_seen, tokens_seen, busy], device=device, dtype=torch.float64
            )
            counts = accelerator.reduce(counts, "sum")
            busy_s = counts[2].item() / accelerator.num_processes
            last_train = dict(zip(keys, means.tolist(), strict=True))
            row = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], **last_train}
            row["frames_per_s"] = counts[0].item() / busy_s
            if part_name == "dynamics":
                row["tokens_per_s"] = counts[1].item() / busy_s
            row["elapsed_s"] = elapsed
            sums, n_sum, frames_seen, tokens_seen, busy = {}, 0, 0, 0, 0.0
        evaluating = step % cfg.eval_every == 0 or step == cfg.steps
        sampling = step % cfg.sample_every == 0 or step == cfg.steps
        if main and evaluating:
            last_val = with_ema_weights(validate)
            row = {"step": step, "epoch": epoch, **row, **last_val}
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last_val.items()))
        if main and row:
            log.append(row)
        if main and sampling:
            with_ema_weights(lambda s=step: sample(s))
        if evaluating or sampling:
            accelerator.wait_for_everyone()  # the other processes wait for the main one
        if step % cfg.ckpt_every == 0 or step == stop_at:
            save_and_export()
    bar.close()
    if (
        accelerator.num_processes > 1
    ):  # running statistics: rank 0's, as DDP's next forward would do
        for buf in model.buffers():
            torch.distributed.broadcast(buf.data, src=0)
    if clip_log is not None:
        clip_log.close()
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(
            weights, str(run_dir / "debug" / f"weights_rank{accelerator.process_index}.safetensors")
        )
    if step < cfg.steps:
        say(
            f"stopped at step {step} of {cfg.steps}: continue with --resume (checkpoint in {run_dir / 'checkpoint'})"
        )
    else:
        say(
            f"done: {step} steps in {elapsed / 60:.1f} min; {part_name} exported to {world / part_name}"
        )
    accelerator.wait_for_everyone()
    del batches, loss_module, loader  # DDP and loader state go before the process group
    accelerator.free_memory()
    accelerator.end_training()
    return 0


# ---------------------------------------------------------------------- helpers


class LossModule(nn.Module):
    """Wraps a part so `forward` is its `compute_loss`: DDP syncs gradients only for
    computations that go through the wrapped module's forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.compute_loss(batch)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.train PART ...` (what `accelerate launch -m training.train` runs)."""
    import argparse

    from training.cli import add_train_args, run_train

    parser = argparse.ArgumentParser(prog="python -m training.train")
    add_train_args(parser)
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    except UserError as e:
        print(f"genie train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
