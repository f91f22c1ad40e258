"""One training loop for the tokenizer, the LAM and the dynamics (STYLE 7, 8).

`train()` reads top to bottom: settings, accelerator, data, model, optimizer + schedule + EMA,
resume, then the loop (forward `compute_loss`, backward, clip, step, EMA, log, evaluate,
sample, checkpoint + export). What differs between parts lives in `training/parts.py`; what a
run is resumed from in `training/settings.py` and `training/checkpoint.py`.

Runs as `genie train PART ...`, or under accelerate for several processes/GPUs:

    accelerate launch --num_processes 2 -m training tokenizer --data D --world W --preset P

Each process reads its own shard of every epoch's shuffled order; gradients are all-reduced,
so every process holds the same weights. The LR schedule counts optimizer steps, whatever
the number of processes (batch_size is per process).
"""

from __future__ import annotations

import time
from pathlib import Path

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
from genie.utils.errors import UserError
from genie.world.folder import read_meta
from training import checkpoint
from training.checkpoint import Progress
from training.data import EpochSampler, Indexed, collate_indexed, to_device, val_split_or_none
from training.metrics_log import MetricsLog, RunningMeans
from training.parts import check_world_unchanged, make_part
from training.settings import Settings, resolve_settings


def train(args) -> int:
    s = resolve_settings(args)
    cfg, run_dir = s.train, s.run_dir
    precision = requested_precision(args)
    accelerator = make_accelerator(precision)
    device, main, say = accelerator.device, accelerator.is_main_process, accelerator.print
    train_ds, val_ds = load_data(s, say)
    part = make_part(s.kind, s.world, train_ds, s.action_source, s.backend).to(device)
    warn_dynamics_trained_on(s, say)
    loader_gen = torch.Generator()  # worker seeds come from here, not from the global RNG
    loader, val_loader = make_loaders(train_ds, val_ds, cfg, s.seed, args.workers, loader_gen)
    set_seed(s.seed)  # identical initial weights on every process
    model = build_model(s, part, train_ds, device, say)
    optimizer, scheduler, ema = make_optimizer(model, cfg, device)
    loss_module, optimizer, loader = accelerator.prepare(LossModule(model), optimizer, loader)
    if len(loader) == 0:
        raise UserError(
            f"{len(train_ds)} training clips are fewer than batch_size {cfg.batch_size} x "
            f"{accelerator.num_processes} process(es): lower --batch-size"
        )
    progress, means = Progress(), RunningMeans()
    if s.checkpoint is not None:  # resume: the weights came above, the rest of the state here
        progress = resume(s, optimizer, scheduler, ema, means, accelerator)
        at = f"step {progress.step} (epoch {progress.epoch}, batch {progress.position})"
        say(f"resuming {run_dir} at {at}")
    else:
        set_seed(s.seed, device_specific=True)  # per-process randomness (masks, VQ restarts)
    log = open_log(run_dir, progress.step, main)
    clip_log = debug_clip_log(run_dir, accelerator) if args.debug_shards else None
    n_params = sum(p.numel() for p in model.parameters())
    say(
        f"training {s.kind} ({n_params / 1e6:.2f}M params, preset {s.preset}) on {len(train_ds)} "
        f"clips x {cfg.clip_len} frames, {accelerator.num_processes} process(es) on {device}, "
        f"steps {progress.step}->{s.stop_at} of {cfg.steps}, run dir {run_dir}"
    )
    evaluate = Evaluator(model, part, ema, val_loader, args.eval_batches, run_dir, device)
    last_val: dict[str, float] = {}
    last_train: dict[str, float] = {}

    # ------------------------------------------------------------------ the loop
    if progress.step == 0 and main:  # baseline: validation and a sample of the untrained model
        last_val = evaluate.validate()
        log.append({"step": 0, "epoch": 0, **last_val})
        evaluate.sample(0)
    accelerator.wait_for_everyone()
    loader_gen.manual_seed(s.seed + progress.epoch)
    loader.set_epoch(progress.epoch)
    batches = iter(skip_first_batches(loader, progress.position) if progress.position else loader)
    bar = tqdm(
        total=cfg.steps,
        initial=progress.step,
        desc=getattr(args, "progress_desc", None) or s.kind,
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    t_session = time.perf_counter() - progress.elapsed_s
    while progress.step < s.stop_at:
        t0 = time.perf_counter()
        try:
            raw = next(batches)
        except StopIteration:  # next epoch: a new permutation of the clips
            progress.epoch, progress.position = progress.epoch + 1, 0
            loader_gen.manual_seed(s.seed + progress.epoch)
            loader.set_epoch(progress.epoch)
            batches = iter(loader)
            continue
        progress.position += 1
        if clip_log is not None:
            clip_log.write(
                f"{progress.step + 1} " + " ".join(map(str, raw["index"].tolist())) + "\n"
            )

        with accelerator.autocast():  # the frozen tokenizer/LAM encode at the run's precision
            batch = part.batch(raw)
        loss, metrics = loss_module(batch)
        accelerator.backward(loss)
        if cfg.grad_clip:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            metrics["grad_norm"] = float(grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(model.parameters())
        progress.step += 1
        step = progress.step

        means.add(metrics, *part.frames_per_clip_step(batch), time.perf_counter() - t0)
        progress.elapsed_s = time.perf_counter() - t_session
        bar.update(1)
        bar.set_postfix(loss=f"{loss.detach().item():.4f}")
        row = {}
        if step % args.log_every == 0 or step == s.stop_at:  # averaged over steps and processes
            last_train, speed = means.row(accelerator)
            row = {"step": step, "epoch": progress.epoch, "lr": scheduler.get_last_lr()[0]}
            row |= {**last_train, **speed, "elapsed_s": progress.elapsed_s}
        evaluating = step % cfg.eval_every == 0 or step == cfg.steps
        sampling = step % cfg.sample_every == 0 or step == cfg.steps
        if main and evaluating:
            last_val = evaluate.validate()
            row = {"step": step, "epoch": progress.epoch, **row, **last_val}
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in last_val.items()))
        if main and row:
            log.append(row)
        if main and sampling:
            evaluate.sample(step)
        if evaluating or sampling:
            accelerator.wait_for_everyone()  # the other processes wait for the main one
        if step % cfg.ckpt_every == 0 or step == s.stop_at:
            state = checkpoint.trainer_state(s, progress, part, accelerator.num_processes)
            checkpoint.save(
                run_dir, accelerator, model, optimizer, scheduler, ema, state, means.state_dict()
            )
            if main:
                info = checkpoint.export_info(s, progress, part, accelerator, last_train | last_val)
                checkpoint.release(s.world, s.part, model, ema, info)
            accelerator.wait_for_everyone()
    bar.close()

    if accelerator.num_processes > 1:  # running statistics: rank 0's, as DDP's next forward would
        for buf in model.buffers():
            torch.distributed.broadcast(buf.data, src=0)
    if clip_log is not None:
        clip_log.close()
        dump_weights(model, run_dir, accelerator.process_index)
    if progress.step < cfg.steps:
        say(
            f"stopped at step {progress.step} of {cfg.steps}: continue with --resume (checkpoint in {run_dir / 'checkpoint'})"
        )
    else:
        say(
            f"done: {progress.step} steps in {progress.elapsed_s / 60:.1f} min; {s.part} exported to {s.world / s.part}"
        )
    accelerator.wait_for_everyone()
    del batches, loss_module, loader  # DDP and loader state go before the process group
    accelerator.free_memory()
    if not getattr(args, "keep_process_group", False):  # `genie train world` trains more parts
        accelerator.end_training()
    return 0


# ---------------------------------------------------------------------- setup


def requested_precision(args) -> str:
    """--precision, or the old --mixed-precision spelling (no = fp32), or GENIE_PRECISION."""
    from genie.utils.precision import default_precision

    legacy = getattr(args, "mixed_precision", None)
    if getattr(args, "precision", None):
        return args.precision
    if legacy:
        return "fp32" if legacy == "no" else legacy
    return default_precision()


def make_accelerator(precision: str) -> Accelerator:
    """An Accelerator whose mixed precision is `precision` resolved on this machine (auto: bf16
    where it measured faster than fp32); says which, and why, in the run's log."""
    from genie.utils.precision import resolve_precision

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "fp16":
        if device_type == "cpu":
            raise UserError("--precision fp16 needs a GPU; on a CPU use auto, bf16 or fp32")
        chosen, why = "fp16", "precision fp16 (asked for)"
    else:
        chosen, why = resolve_precision(precision, device_type)
    from accelerate.state import AcceleratorState

    # a second run in the same process (tests, `genie train world`) may ask for another
    # precision: accelerate keeps one global state, so start it afresh (the process group of a
    # multi-process run, PartialState, is kept)
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=device_type == "cpu",  # also what makes torchrun's processes use gloo on a CPU
        mixed_precision="no" if chosen == "fp32" else chosen,
    )
    accelerator.print(why)
    return accelerator


def load_data(s: Settings, say) -> tuple[ClipDataset, ClipDataset]:
    train_ds = ClipDataset(s.data, split="train", clip_len=s.train.clip_len)
    if len(train_ds) == 0:
        raise UserError(f"{s.data} has no training clips of {s.train.clip_len} frames (clip_len)")
    val_ds = val_split_or_none(s.data, s.train.clip_len)
    if val_ds is None:
        say(f"note: {s.data} has no val split: validating on the train split")
        val_ds = train_ds
    return train_ds, val_ds


def warn_dynamics_trained_on(s: Settings, say) -> None:
    """Retraining a part the world's dynamics was trained on invalidates that dynamics."""
    trained_on = read_meta(s.world).get("dynamics_trained_on", {}) if s.world.is_dir() else {}
    if (s.part == "lam" and "lam" in trained_on) or (
        s.part == "tokenizer" and trained_on and not s.freeze_encoder
    ):
        hint = " (or train the decoder alone: --freeze-encoder)" if s.part == "tokenizer" else ""
        say(
            f"note: the dynamics in {s.world} was trained on its current {s.part}: retrain it after{hint}"
        )


def make_loaders(train_ds, val_ds, cfg, seed: int, workers: int, generator: torch.Generator):
    loader = torch.utils.data.DataLoader(
        Indexed(train_ds),
        batch_size=cfg.batch_size,
        sampler=EpochSampler(len(train_ds), seed),
        drop_last=True,
        collate_fn=collate_indexed,
        num_workers=workers,
        generator=generator,
    )
    val_loader = torch.utils.data.DataLoader(
        Indexed(val_ds), batch_size=cfg.batch_size, collate_fn=collate_indexed, num_workers=0
    )
    return loader, val_loader


def build_model(s: Settings, part, train_ds, device, say) -> nn.Module:
    """The checkpoint's model (--resume), the --init-from weights, or a fresh one."""
    if s.checkpoint is not None:
        model = checkpoint.load_model(s.checkpoint, part.model_class, device)
        part.check_model(model, train_ds)
        check_world_unchanged(s.world, s.saved, s.part, s.action_source)
    elif s.init_from:
        # a UserError if incomplete/wrong; --set fields replace the saved config's
        model = part.model_class.from_pretrained(s.init_from, overrides=s.model_set)
        part.check_model(model, train_ds)
        model = model.to(device).train()
    else:
        preset = fit_vq_warmup(s.model, s.train.steps, say) if s.kind == "lam" else s.model
        model = part.model_class(part.build_config(preset, train_ds)).to(device).train()
    model = part.attach(model)
    if s.freeze_encoder:
        if s.checkpoint is None and not s.init_from:
            say("note: --freeze-encoder without --init-from trains a decoder for a random encoder")
        model.freeze_encoder()
    for note in part.notes:
        say(f"note: {note}")
    return model


def fit_vq_warmup(model: dict, steps: int, say) -> dict:
    """A LAM's codebook is seeded by k-means at the end of its continuous warm-up: a run shorter
    than the preset's warm-up (a short --steps, a small `genie train world` budget) would end
    with the random codebook, so the warm-up becomes the first half of the run."""
    from genie.models.lam import LAMConfig

    warmup = model.get("vq_warmup_steps", LAMConfig.vq_warmup_steps)
    if warmup <= steps // 2:
        return model
    say(f"note: lam vq_warmup_steps {warmup} -> {steps // 2}: half of this run's {steps} steps")
    return {**model, "vq_warmup_steps": steps // 2}


def make_optimizer(model: nn.Module, cfg, device):
    """AdamW (no weight decay on biases, norms, 1-d gains), warmup + cosine, optional EMA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
    )  # stepped by hand once per optimizer step (not prepared: accelerate would step it per process)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None:
        ema.to(device)
    return optimizer, scheduler, ema


def resume(s: Settings, optimizer, scheduler, ema, means: RunningMeans, accelerator) -> Progress:
    """Optimizer, schedule, EMA, RNG states, this process's metrics not yet logged, and the
    data position of the checkpoint."""
    saved = s.saved
    if saved["num_processes"] != accelerator.num_processes:
        n = saved["num_processes"]
        raise UserError(
            f"{s.run_dir} was trained with {n} process(es); resume with the same number"
        )
    rank = accelerator.process_index
    pending = checkpoint.load_training_state(s.checkpoint, optimizer, scheduler, ema, rank)
    means.load_state_dict(pending)
    return Progress(saved["step"], saved["epoch"], saved["position"], saved["elapsed_s"])


def open_log(run_dir: Path, step: int, main: bool) -> MetricsLog:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run_dir / "metrics.csv")
    if main:
        log.truncate_after(step)  # rows past the checkpoint belong to steps about to be redone
        (run_dir / "samples").mkdir(exist_ok=True)
    return log


class Evaluator:
    """Validation and sample strips, with the EMA weights when the run keeps them (what gets
    exported), on fixed data and without touching the training RNG."""

    def __init__(self, model, part, ema, val_loader, batches: int, run_dir: Path, device):
        self.model, self.part, self.ema, self.val_loader = model, part, ema, val_loader
        self.batches, self.run_dir, self.device = batches, run_dir, device

    def _with_ema(self, fn):
        if self.ema is not None:
            self.ema.store(self.model.parameters())
            self.ema.copy_to(self.model.parameters())
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                return fn()
        finally:
            self.model.train()
            if self.ema is not None:
                self.ema.restore(self.model.parameters())

    def validate(self) -> dict[str, float]:
        def run() -> dict[str, float]:
            totals: dict[str, list[float]] = {}
            for i, raw in enumerate(self.val_loader):
                if i >= self.batches:
                    break
                batch = self.part.batch(to_device(raw, self.device))
                for k, v in self.part.evaluate(self.model, batch).items():
                    totals.setdefault(k, []).append(float(v))
            return {f"val_{k}": float(np.mean(v)) for k, v in totals.items()}

        return self._with_ema(run)

    def sample(self, step: int) -> None:
        raw = to_device(next(iter(self.val_loader)), self.device)
        image = self._with_ema(lambda: self.part.visualize(self.model, self.part.batch(raw)))
        img = Image.fromarray(image)
        if min(img.size) < 256:  # small frames: nearest-neighbour upscale so a person can see them
            img = img.resize((img.width * 2, img.height * 2), Image.NEAREST)
        img.save(self.run_dir / "samples" / f"step_{step:07d}.png")


class LossModule(nn.Module):
    """Wraps a part so `forward` is its `compute_loss`: DDP syncs gradients only for
    computations that go through the wrapped module's forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.compute_loss(batch)


# ---------------------------------------------------------------------- test hooks (--debug-shards)


def debug_clip_log(run_dir: Path, accelerator):
    """Which clips each process trains on (RUN_DIR/debug/clips_rank<r>.txt), line-buffered."""
    (run_dir / "debug").mkdir(exist_ok=True)
    return open(run_dir / "debug" / f"clips_rank{accelerator.process_index}.txt", "a", buffering=1)


def dump_weights(model: nn.Module, run_dir: Path, rank: int) -> None:
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(run_dir / "debug" / f"weights_rank{rank}.safetensors"))
