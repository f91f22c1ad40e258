"""`genie train tokenizer|lam|dynamics ...` and `genie plot RUN_DIR`. torch is imported only
when a command runs, so `genie --help` stays fast."""

from __future__ import annotations

import argparse
import sys

from genie.models.registry import BACKENDS, SLOTS

PARTS = (*SLOTS, "autoencoder")  # "autoencoder": the tokenizer slot's continuous kind


def add_train_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
    """The arguments of `genie train PART` (shared with `python -m training PART`)."""
    if positional:
        p.add_argument(
            "part",
            choices=PARTS,
            help="which part to train (tokenizer or autoencoder, then lam, then dynamics); "
            "'autoencoder' is the continuous frame autoencoder a diffusion world draws with",
        )
    p.add_argument(
        "--data",
        required=True,
        help="dataset folder (from `genie record` or `genie import-videos`)",
    )
    p.add_argument("--world", required=True, help="world folder the trained part is exported into")
    p.add_argument(
        "--preset",
        help="tiny | coinrun-cpu | coinrun-gpu (training/presets/); taken from the checkpoint with --resume",
    )
    p.add_argument(
        "--steps", type=int, help="override the preset's number of steps (the whole LR schedule)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its checkpoint"
    )
    p.add_argument(
        "--run-dir", help="checkpoint, metrics.csv and samples/ (default: runs/<world-name>-<part>)"
    )
    p.add_argument(
        "--batch-size", type=int, help="override the preset's clips per process per step"
    )
    p.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    p.add_argument("--clip-len", type=int, help="override the preset's frames per training clip")
    p.add_argument("--ema-decay", type=float,
                   help="override the preset's EMA decay of the exported weights (short fine-tunes "
                   "want a shorter average, e.g. 0.99)")  # fmt: skip
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32", "fp16"),
        default=None,
        help="auto (default; GENIE_PRECISION overrides): bf16 where this CPU or GPU runs it "
        "faster than fp32 (CPU flags + a sub-second matmul probe), else fp32. Attention, norms "
        "and losses stay fp32 on a CPU. fp16: GPUs only",
    )
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help=argparse.SUPPRESS)
    p.add_argument(
        "--action-source",
        choices=("lam", "true"),
        help="dynamics only: condition on latent actions from the world's LAM (default) or on the "
        "dataset's recorded actions ('true', needs a dataset with actions)",
    )
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        help="dynamics only: MaskGIT over code ids (default) or diffusion over continuous latents "
        "(preset file <preset>/diffusion.json); taken from the checkpoint with --resume",
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed for weights, data order and masks (default 0)"
    )
    p.add_argument(
        "--stop-at",
        type=int,
        help="stop (after a checkpoint) at this step, keeping the full schedule; continue with --resume",
    )
    p.add_argument(
        "--init-from",
        metavar="PART_DIR",
        help="start from these weights (a part folder such as WORLD/tokenizer: config.json + "
        "model.safetensors) instead of a fresh model: fine-tuning, or a new schedule for a "
        "part trained before; its config replaces the preset's model config",
    )
    p.add_argument(
        "--set",
        dest="model_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace one field of the model config (the preset's, or --init-from's), e.g. "
        "--set adv_weight=0.05 to sharpen a trained autoencoder's decoder with a PatchGAN; "
        "VALUE is JSON (numbers, true/false, lists) or a plain string; repeatable",
    )
    p.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="tokenizer only: train the decoder alone; the encoder and codebook (every frame's "
        "code ids) stay fixed, so a dynamics trained on this tokenizer stays valid. Use with "
        "--init-from WORLD/tokenizer",
    )
    for flag, what in (
        ("eval-every", "validations"),
        ("sample-every", "sample strips"),
        ("ckpt-every", "checkpoints (and exports of the world)"),
    ):
        p.add_argument(f"--{flag}", type=int,
                       help=f"override the preset's steps between {what} (fast GPU steps want "
                       "them further apart)")  # fmt: skip
    p.add_argument(
        "--log-every", type=int, default=10, help="steps between metrics.csv rows (default 10)"
    )
    p.add_argument(
        "--eval-batches", type=int, default=4, help="validation batches per evaluation (default 4)"
    )
    # tests: each process logs the clip indices it trained on and dumps its final weights in RUN_DIR/debug/
    p.add_argument("--debug-shards", action="store_true", help=argparse.SUPPRESS)


PART_HELP = {
    "tokenizer": "the VQ video tokenizer (MaskGIT worlds)",
    "autoencoder": "the continuous frame autoencoder (diffusion worlds)",
    "lam": "the latent action model (worlds learned from unlabeled video)",
    "dynamics": "the dynamics (MaskGIT, or --backend diffusion)",
}


def add_parts(p: argparse.ArgumentParser) -> None:
    """`world` and one subcommand per part, under `genie train` and `python -m training`."""
    parts = p.add_subparsers(dest="part", metavar="PART", required=True)
    w = parts.add_parser("world", help="every part a world needs, in order (training/world.py)")
    from training.world import add_args as add_world_args

    add_world_args(w)
    w.set_defaults(func=run_world)
    for name in PARTS:
        q = parts.add_parser(name, help=PART_HELP[name])
        add_train_args(q, positional=False)
        q.set_defaults(func=run_train, part=name)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a whole world (genie train world), or one part of it",
        description="Train a world: `genie train world` trains every part it needs, in order, "
        "under one time budget; `genie train PART` trains one part (order: tokenizer or "
        "autoencoder, lam, dynamics). Multi-process: accelerate launch --num_processes N -m "
        "training PART ... (same arguments).",
    )
    add_parts(p)

    p = sub.add_parser("plot", help="plot a training run's loss and validation curves")
    p.add_argument("run_dir", help="run folder holding metrics.csv")
    p.add_argument("--out", help="PNG to write (default: RUN_DIR/curves.png)")
    p.set_defaults(func=run_plot)


def _check_numbers(args) -> None:
    from genie.utils.errors import UserError

    for name in (
        "steps",
        "batch_size",
        "clip_len",
        "stop_at",
        "log_every",
        "eval_batches",
        "eval_every",
        "sample_every",
        "ckpt_every",
    ):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.lr is not None and args.lr <= 0:
        raise UserError("--lr must be > 0")
    if args.workers < 0:
        raise UserError("--workers must be >= 0")


def run_train(args) -> int:
    _check_numbers(args)
    from training.train import train

    return train(args)


def run_world(args) -> int:
    from training.world import run

    return run(args)


def run_plot(args) -> int:
    from training.plot import plot

    out = plot(args.run_dir, args.out)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m training world|PART ...` (what `accelerate launch -m training` runs):
    `genie train`'s arguments, its one-line errors and exit code 2."""
    from genie.utils.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m training")
    add_parts(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"genie train: error: {e}", file=sys.stderr)
        return 2
