"""`genie record coinrun|atari` (genie/data/record.py, genie/data/atari.py), and `genie data
info DIR` / `genie data preview DIR --out strip.png`: look at a dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from genie.data.format import Manifest, open_dataset, shard_path
from genie.data.record import POLICIES, _parse_range
from genie.utils.errors import UserError


def summary(root: str | Path, manifest: Manifest | None = None) -> dict[str, Any]:
    """What `genie data info --json` prints."""
    m = manifest or open_dataset(root)
    size = sum(p.stat().st_size for p in (Path(root) / "shards").rglob("*.npy"))
    return {
        "path": str(root),
        **m.summary(),
        "shards": len({e.shard for e in m.episodes}),
        "bytes": size,
    }


def episode_frames(root: str | Path, m: Manifest, index: int, columns: int) -> np.ndarray:
    """`columns` frames spread evenly over episode `index`: (columns, H, W, 3) uint8."""
    e = m.episodes[index]
    frames = np.load(shard_path(root, e.shard, "frames"), mmap_mode="r")
    rows = np.linspace(e.start, e.start + e.length - 1, columns).round().astype(np.int64)
    return np.asarray(frames[rows])


def write_grid(path: Path, rows: list[np.ndarray], scale: int, gap: int = 2) -> None:
    """PNG of frame rows: rows[i] (K, H, W, 3) -> row i of the image, `gap` black pixels apart."""
    from PIL import Image

    from genie.utils.images import grid

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(np.stack(rows), gap=gap, scale=scale)).save(path)


def add_cli(sub: argparse._SubParsersAction) -> None:
    _add_record(sub)
    p = sub.add_parser("data", help="look at a dataset: info, preview")
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    i = dsub.add_parser("info", help="episodes, frames, splits, actions of a dataset")
    i.add_argument("dir", type=Path, help="dataset folder")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)
    v = dsub.add_parser("preview", help="PNG grid: one row per episode, frames spread along it")
    v.add_argument("dir", type=Path, help="dataset folder")
    v.add_argument("--out", type=Path, required=True, help="PNG file to write")
    v.add_argument("--episodes", type=int, default=4, help="rows (default 4)")
    v.add_argument("--frames", type=int, default=8, help="columns (default 8)")
    v.add_argument("--split", help="only episodes of this split")
    v.add_argument("--scale", type=int, default=2, help="pixel upscale (default 2)")
    v.set_defaults(func=run_preview)


def run_info(args: argparse.Namespace) -> int:
    s = summary(args.dir)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    h, w = s["frame_size"]
    src = ", ".join(f"{k}={v}" for k, v in s["source"].items())
    fps = f", {s['fps']:g} fps" if s["fps"] else ""
    print(f"{s['path']}: {s['episodes']} episodes, {s['frames']:,} frames of {h}x{w}{fps}, "
          f"{s['shards']} shards, {s['bytes'] / 2**20:,.1f} MiB")  # fmt: skip
    print(f"  source: {src}")
    for name, v in s["splits"].items():
        print(f"  {name}: {v['episodes']} episodes, {v['frames']:,} frames")
    a = s["action_space"]
    print(
        f"  actions: {a['n']} ({', '.join(a['labels'])})" if a else "  actions: none (video only)"
    )
    return 0


def run_preview(args: argparse.Namespace) -> int:
    m = open_dataset(args.dir)
    if args.episodes < 1 or args.frames < 1 or args.scale < 1:
        raise UserError("--episodes, --frames and --scale must be >= 1")
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out {args.out}: give a file name ending in .png")
    picked = [i for i, e in enumerate(m.episodes) if args.split is None or e.split == args.split]
    if not picked:
        raise UserError(
            f"{args.dir} has no episodes in split '{args.split}' (it has: {', '.join(m.splits())})"
        )
    rows = [episode_frames(args.dir, m, i, args.frames) for i in picked[: args.episodes]]
    write_grid(args.out, rows, args.scale)
    print(f"wrote {args.out}: {len(rows)} episodes x {args.frames} frames")
    return 0


# ---------------------------------------------------------------------------- genie record


def _add_record(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record gameplay of a random policy (CoinRun, Atari)")
    rsub = p.add_subparsers(dest="game_kind", metavar="GAME", required=True)

    c = rsub.add_parser("coinrun", help="procgen CoinRun, hard mode, Genie's protocol")
    _common(c)
    c.add_argument("--levels", "--seeds", dest="seeds", type=_parse_range, metavar="A:B",
                   help="record level seeds A..B-1 as --split (default train)")  # fmt: skip
    c.add_argument(
        "--num-envs", type=int, default=16, help="levels played side by side (default 16)"
    )
    c.set_defaults(func=run_record)

    a = rsub.add_parser(
        "atari", help="an Atari game (gymnasium + ale-py), frames resized to --size"
    )
    a.add_argument("--game", help="e.g. Pong, Breakout (see --list-games)")
    a.add_argument("--list-games", action="store_true", help="print the available games and exit")
    _common(a)
    a.add_argument(
        "--seeds", type=_parse_range, metavar="A:B", help="record env seeds A..B-1 as --split"
    )
    a.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    a.add_argument("--actions", metavar="A,B,..",
                   help="play only these of the game's actions (e.g. NOOP,FIRE,UP,RIGHT,LEFT,DOWN); "
                   "they become the dataset's distinct actions (default: the whole minimal set)")  # fmt: skip
    a.set_defaults(func=run_record)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, help="dataset folder (created; rerun the same command to resume)"
    )
    p.add_argument("--episodes", type=int, help="episodes to record (see --split)")
    p.add_argument(
        "--steps-per-episode", type=int, default=1000, help="frames per episode (default 1000)"
    )
    p.add_argument(
        "--split", help="train|val|test (or any name with --levels); default: N shared 20:1:1"
    )
    p.add_argument(
        "--action-repeat", type=int, default=1, help="hold each random action K steps (default 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy (default 0)")
    p.add_argument("--policy", choices=POLICIES, default="uniform",
                   help="uniform: a random button every step (Genie's protocol, default); "
                   "sticky: distinct actions held for --hold-mean steps on average, biased forward")  # fmt: skip
    p.add_argument("--hold-mean", type=float, default=8.0,
                   help="sticky policy: mean steps an action is held (default 8)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_record(args: argparse.Namespace) -> int:
    from genie.data.record import plan_episodes, record_coinrun

    if getattr(args, "list_games", False):
        from genie.data.atari import atari_games

        print("\n".join(atari_games()))
        return 0
    if args.out is None:
        raise UserError("give the dataset folder with --out DIR")
    if args.steps_per_episode < 1 or args.action_repeat < 1:
        raise UserError("--steps-per-episode and --action-repeat must be >= 1")
    plan = plan_episodes(args.episodes, args.seeds, args.split)
    if args.hold_mean < 1:
        raise UserError(f"--hold-mean must be >= 1 (got {args.hold_mean})")
    common = dict(
        steps=args.steps_per_episode,
        action_repeat=args.action_repeat,
        seed=args.seed,
        policy=args.policy,
        hold_mean=args.hold_mean,
    )
    try:
        if args.game_kind == "coinrun":
            if args.num_envs < 1:
                raise UserError("--num-envs must be >= 1")
            res = record_coinrun(
                args.out, plan, num_envs=args.num_envs, progress=not args.quiet, **common
            )
        else:
            if not args.game:
                raise UserError("say which game: --game Pong (list them with --list-games)")
            if not 8 <= args.size <= 512:
                raise UserError(f"--size must be in 8..512 (got {args.size})")
            from genie.data.atari import record_atari

            subset = [a.strip() for a in args.actions.split(",")] if args.actions else None
            res = record_atari(
                args.out, args.game, plan, size=args.size, progress=not args.quiet,
                actions=subset, **common,
            )  # fmt: skip
    except KeyboardInterrupt:
        print(
            f"the episodes saved in {args.out} are intact; rerun the same command to continue",
            file=sys.stderr,
        )
        raise
    if res.recorded == 0:
        print(f"nothing to record: all {res.skipped} episodes are already in {args.out}")
        return 0
    note = f"; {res.skipped} were already there" if res.skipped else ""
    print(
        f"recorded {res.recorded} episodes ({res.frames:,} frames) into {args.out} in {res.seconds:.1f}s "
        f"({res.frames_per_s:,.0f} frames/s){note}"
    )
    return 0
