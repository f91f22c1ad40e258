"""`genie data info DIR` and `genie data preview DIR --out strip.png`: look at a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from genie.data.format import Manifest, open_dataset, shard_path
from genie.errors import UserError


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

    from genie.images import grid

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(np.stack(rows), gap=gap, scale=scale)).save(path)


def add_cli(sub: argparse._SubParsersAction) -> None:
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
