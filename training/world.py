"""`genie train world --data D --world W`: every part a world needs, in order, in one command.

    genie train world --data data/coinrun-sticky --world worlds/mine --hours 3
    genie train world --data data/coinrun-sticky --world worlds/mine --resume   # after a kill

The plan (`plan_world`):
* parts: the frame autoencoder (diffusion worlds, the default backend) or the VQ tokenizer
  (`--backend maskgit`); the LAM when the data has no action labels (or `--action-source lam`);
  then the dynamics, conditioned on the recorded actions when there are any, else on the LAM's.
* preset: `tiny` for frames of 32 px or less, else `coinrun-play` (sized for 64x64; other
  power-of-two sizes scale their patches, `training.presets.fit_frame_size`); `--preset` wins.
* time: with `--hours H` the budget is split by a written rule, `BUDGET_SHARES`: the dynamics
  gets the largest share (it is what a player sees move), the autoencoder/tokenizer the next
  (it draws every frame), the LAM the smallest. Each part's steps = its share / its step time,
  measured on 3 training steps of its preset's batch before it starts (so the LR schedule ends
  when the time does). Without `--hours` each part runs its preset's steps.
* resumable as a whole: `W/train-world.json` records the plan and which parts are done; every
  part trains in its own run folder (`runs/<world>-world/<part>`) with checkpoints, so
  `--resume` after a kill -9 continues the part it was in from its last checkpoint and skips
  the finished ones.
* at the end: start frames (`W/examples/`, a handful of validation frames from different
  episodes and moments), names and keys for latent actions (`genie.world.naming`: what each
  code does in the world), a short protocol evaluation with its strip/GIFs (`W/eval/`), and
  the command to play it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genie.utils.errors import UserError
from training import presets

PLAN_FILE = "train-world.json"
# share of --hours per part, renormalised over the parts the world needs
BUDGET_SHARES = {"tokenizer": 0.35, "autoencoder": 0.35, "lam": 0.15, "dynamics": 0.5}
EXAMPLES = 6  # start frames exported


@dataclass
class PartPlan:
    name: str  # the `genie train` part: tokenizer | autoencoder | lam | dynamics
    preset: str
    run_dir: str
    steps: int | None = None  # None: the preset's
    seconds: float | None = None  # budget
    done: bool = False


@dataclass
class WorldPlan:
    data: str
    world: str
    backend: str  # diffusion | maskgit
    action_source: str  # true | lam
    parts: list[PartPlan] = field(default_factory=list)
    hours: float | None = None

    def save(self) -> None:
        path = Path(self.world) / PLAN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, world: str | Path) -> WorldPlan:
        path = Path(world) / PLAN_FILE
        if not path.is_file():
            raise UserError(f"--resume: {path} not found (start without --resume)")
        data = json.loads(path.read_text())
        data["parts"] = [PartPlan(**p) for p in data["parts"]]
        return cls(**data)


def default_preset(frame_size: int) -> str:
    return "tiny" if frame_size <= 32 else "coinrun-play"


def plan_world(args, manifest) -> WorldPlan:
    """What to train, with which preset and budget (see the module doc)."""
    size = int(manifest.frame_size[0])
    preset = args.preset or default_preset(size)
    has_actions = bool(manifest.action_space and manifest.action_space.get("n"))
    source = args.action_source or ("true" if has_actions else "lam")
    if source == "true" and not has_actions:
        raise UserError(f"{args.data} has no action labels: train on latent actions (the default)")
    backend = args.backend or "diffusion"
    names = ["autoencoder" if backend == "diffusion" else "tokenizer"]
    names += ["lam"] if source == "lam" else []
    names += ["dynamics"]
    runs = Path(args.runs) / f"{Path(args.world).resolve().name}-world"
    plan = WorldPlan(str(args.data), str(args.world), backend, source, hours=args.hours)
    total = sum(BUDGET_SHARES[n] for n in names)
    for n in names:
        seconds = args.hours * 3600 * BUDGET_SHARES[n] / total if args.hours else None
        kind = "diffusion" if n == "dynamics" and backend == "diffusion" else n
        steps = None if args.hours else presets.load(preset, kind).train.steps
        plan.parts.append(PartPlan(n, preset, str(runs / n), steps=steps, seconds=seconds))
    return plan


def seconds_per_step(part: str, preset: str, backend: str, precision: str) -> float:
    """Median time of 3 training steps of the part at its preset's batch (random data)."""
    from training.bench import measure

    kind = "diffusion" if part == "dynamics" and backend == "diffusion" else part
    return measure(kind, preset, steps=3, warmup=1, peaks={precision: 1.0})[0]["s_per_step"]


def budget_to_steps(plan: WorldPlan, precision: str) -> None:
    """Each part's share of the budget -> steps at its measured step time; prints the plan."""
    from genie.utils.precision import resolve_precision

    prec = resolve_precision(precision if precision != "fp16" else "fp32")[0]
    for part in plan.parts:
        sps = seconds_per_step(part.name, part.preset, plan.backend, prec)
        part.steps = max(10, int(part.seconds / sps))
        print(
            f"  {part.name:<12} {part.seconds / 60:6.1f} min at {sps:.2f} s/step -> {part.steps} steps"
        )
    print(f"  total        {sum(p.seconds for p in plan.parts) / 60:6.1f} min ({prec})")


def cadence(part: PartPlan, backend: str) -> dict[str, int]:
    """Validation, sample strips and checkpoints about 10, 5 and 20 times a part, never more
    often than its preset says: a tiny preset's every-10-steps would spend a budget that gives
    it thousands of steps on writing files (its data-loading share is measured, this is not)."""
    kind = "diffusion" if part.name == "dynamics" and backend == "diffusion" else part.name
    train = presets.load(part.preset, kind).train
    steps = part.steps or train.steps
    return {
        "eval_every": max(train.eval_every, steps // 10),
        "sample_every": max(train.sample_every, steps // 5),
        "ckpt_every": max(train.ckpt_every, steps // 20),
    }


def train_args(args, plan: WorldPlan, part: PartPlan, resume: bool) -> argparse.Namespace:
    """The `genie train PART` arguments of one part of the plan."""
    dyn = part.name == "dynamics"
    return argparse.Namespace(
        **cadence(part, plan.backend),
        part=part.name, data=plan.data, world=plan.world, preset=part.preset, steps=part.steps,
        resume=resume, run_dir=part.run_dir, batch_size=None, lr=None, clip_len=None,
        ema_decay=None, precision=args.precision, mixed_precision=None,
        action_source=plan.action_source if dyn else None,
        backend=plan.backend if dyn else None, workers=0, seed=args.seed, stop_at=None,
        init_from=None, freeze_encoder=False, log_every=10, eval_batches=4, debug_shards=False,
        keep_process_group=True,  # one process group for all the parts (several processes)
    )  # fmt: skip


def run(args) -> int:
    from genie.data.format import open_dataset
    from training.checkpoint import find
    from training.train import requested_precision, train

    if args.hours is not None and args.hours <= 0:
        raise UserError("--hours must be > 0")
    main = (
        int(os.environ.get("RANK", "0")) == 0
    )  # under accelerate launch / torchrun: rank 0 writes
    if args.resume:
        plan = WorldPlan.load(args.world)
    else:
        if main and (Path(args.world) / PLAN_FILE).is_file():
            raise UserError(
                f"{args.world} already has a training plan: add --resume, or use another --world"
            )
        plan = plan_world(args, open_dataset(args.data))
    args.precision = requested_precision(args)
    print(f"world {plan.world}: {plan.backend} dynamics on {plan.action_source} actions; parts: "
          + ", ".join(p.name + ("" if not p.done else " (done)") for p in plan.parts))  # fmt: skip
    started = time.time()
    for i, part in enumerate(plan.parts):
        if part.done:
            continue
        resuming = find(Path(part.run_dir)) is not None
        if part.seconds and part.steps is None and not main:  # every process the same steps
            part.steps = wait_for_steps(plan.world, i)
        if part.seconds and part.steps is None:  # the budget becomes steps, once, before starting
            from genie.utils.precision import resolve_precision

            prec = resolve_precision(args.precision if args.precision != "fp16" else "fp32")[0]
            sps = seconds_per_step(part.name, part.preset, plan.backend, prec)
            part.steps = max(10, int(part.seconds / sps))
            print(
                f"{part.name}: {part.seconds / 60:.0f} min at {sps:.2f} s/step -> {part.steps} steps"
            )
        if main:
            plan.save()
        print(f"[{i + 1}/{len(plan.parts)}] {part.name} ({'resuming' if resuming else 'starting'}, "
              f"run dir {part.run_dir})")  # fmt: skip
        rc = train(train_args(args, plan, part, resume=resuming))
        if rc:
            return rc
        part.done = True
        if main:
            plan.save()
    _end_process_group()
    if not main:  # the other processes trained their share; start frames and names: rank 0's
        return 0
    finish(plan, args)
    minutes = (time.time() - started) / 60
    print(
        f"world ready in {minutes:.1f} min this sitting. Play it: genie play --world {plan.world}"
    )
    return 0


def _end_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wait_for_steps(world: str, index: int, timeout_s: float = 600.0) -> int:
    """Processes other than rank 0 take a part's step count from the plan rank 0 measured and
    saved (two processes counting steps apart would wait for each other forever)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            steps = WorldPlan.load(world).parts[index].steps
        except (UserError, json.JSONDecodeError, IndexError):
            steps = None
        if steps is not None:
            return steps
        time.sleep(0.5)
    raise UserError(f"rank 0 did not plan part {index} of {world} within {timeout_s:.0f} s")


def finish(plan: WorldPlan, args) -> None:
    """Start frames, names for latent actions, a short evaluation with its strip."""
    from genie.eval.cli import add_cli as add_eval_cli

    n = export_examples(plan.data, Path(plan.world))
    print(f"exported {n} start frames to {Path(plan.world) / 'examples'}")
    if plan.action_source == "lam":  # no labels: name the codes by what they do, give them keys
        from genie.world.naming import motion_table, name_world_actions

        print("naming the latent actions by the motion each makes in the world:")
        print(motion_table(name_world_actions(plan.world, plan.data, seed=args.seed)))
    out = Path(plan.world) / "eval"
    parser = argparse.ArgumentParser(prog="genie")
    add_eval_cli(parser.add_subparsers())
    eval_args = parser.parse_args(
        ["eval", "--world", plan.world, "--data", plan.data, "--split", _eval_split(plan.data),
         "--out", str(out), "--episodes", str(args.eval_episodes), "--context", "2"]
    )  # fmt: skip
    try:
        eval_args.func(eval_args)
        print(f"evaluation: {out / 'report.md'} (PSNR by horizon, strips and example GIFs)")
    except UserError as e:  # the world is trained; an evaluation that can't run is a note
        print(f"note: no closing evaluation ({e})")


def _eval_split(data: str) -> str:
    from genie.data.format import open_dataset

    splits = open_dataset(data).splits()
    return next((s for s in ("test", "val") if s in splits), "train")


def export_examples(data: str, world: Path, n: int = EXAMPLES) -> int:
    """A handful of varied start frames: frames from different episodes of the validation
    split (else test, else train), each from a different moment (start, a third, two thirds)."""
    import numpy as np
    from PIL import Image

    from genie.data.format import open_dataset, shard_path

    m = open_dataset(data)
    split = next((s for s in ("val", "test") if s in m.splits()), "train")
    episodes = [e for e in m.episodes if e.split == split]
    rng = np.random.default_rng(0)
    picks = rng.choice(len(episodes), size=min(n, len(episodes)), replace=False)
    out = world / "examples"
    out.mkdir(parents=True, exist_ok=True)
    for j, k in enumerate(sorted(picks)):
        e = episodes[int(k)]
        frames = np.load(shard_path(data, e.shard, "frames"), mmap_mode="r")
        t = e.start + (e.length - 1) * (j % 3) // 3
        Image.fromarray(np.asarray(frames[t])).save(out / f"{split}_{j}.png")
    return len(picks)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder (genie record / import-videos)")
    p.add_argument("--world", required=True, help="world folder to create")
    p.add_argument("--hours", type=float,
                   help="time budget for all parts, split by training/world.py's BUDGET_SHARES "
                   "(default: each part's preset steps)")  # fmt: skip
    p.add_argument("--preset", help="default: tiny for frames <= 32 px, else coinrun-play")
    p.add_argument("--backend", choices=("diffusion", "maskgit"),
                   help="diffusion (default: a frame autoencoder + diffusion dynamics) or maskgit "
                   "(VQ tokenizer + MaskGIT)")  # fmt: skip
    p.add_argument("--action-source", choices=("true", "lam"),
                   help="default: the data's recorded actions if it has any, else a LAM's")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run: finished parts are skipped, the current one "
                   "resumes from its last checkpoint")  # fmt: skip
    p.add_argument("--runs", default="runs", help="where the parts' run folders go (default runs/)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32", "fp16"),
                   help="as `genie train` (default auto)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=8,
                   help="episodes of the closing evaluation (default 8)")  # fmt: skip
