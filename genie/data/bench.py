"""`genie bench data`: recording throughput and clip-loading throughput (frames/s).

Without --data it records a CoinRun dataset of --frames frames (1,000-step episodes) into a
temporary folder, timing the recorder, then times a shuffled torch DataLoader over its clips.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="an existing dataset (default: record CoinRun first)")
    p.add_argument(
        "--frames", type=int, default=100_000, help="frames to record without --data (default 100k)"
    )
    p.add_argument(
        "--keep", type=Path, help="record into this folder and keep it (default: a temp folder)"
    )
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--batch", type=int, default=32, help="clips per batch (default 32)")
    p.add_argument("--clip-len", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument(
        "--seconds", type=float, default=10.0, help="how long to time loading (default 10)"
    )
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def time_loading(
    root: Path, clip_len: int, batch: int, workers: int, seconds: float
) -> dict[str, float]:
    """Iterate a shuffled DataLoader for `seconds` (after one warm-up batch); frames/s loaded."""
    import torch

    from genie.data.dataset import ClipDataset, collate_clips

    ds = ClipDataset(root, split=None, clip_len=clip_len)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_clips,
        drop_last=True,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    clips, t0, checksum = 0, None, 0
    while True:
        for b in loader:
            checksum += int(b["frames"].view(-1)[::4096].sum())  # touch every page that arrived
            if t0 is None:  # the first batch pays for starting workers
                t0 = time.perf_counter()
                continue
            clips += len(b["frames"])
            if time.perf_counter() - t0 >= seconds:
                dt = time.perf_counter() - t0
                return {
                    "clips": len(ds),
                    "clips_per_s": clips / dt,
                    "frames_per_s": clips * clip_len / dt,
                    "batches_per_s": clips / batch / dt,
                }


def run(args: argparse.Namespace) -> int:
    from genie.data.format import open_dataset
    from genie.data.record import record_coinrun
    from genie.utils.errors import UserError

    if (
        args.frames < 1
        or args.workers < 0
        or args.batch < 1
        or args.clip_len < 1
        or args.seconds <= 0
    ):
        raise UserError("--frames, --batch, --clip-len and --seconds must be > 0, --workers >= 0")
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    tmp = None
    if args.data is not None:
        root = args.data
        open_dataset(root)
    else:
        if args.keep is not None:
            root = args.keep
        else:
            tmp = tempfile.TemporaryDirectory(prefix="genie-bench-data-")
            root = Path(tmp.name) / "coinrun"
        episodes = math.ceil(args.frames / 1000)
        res = record_coinrun(root, [("train", s) for s in range(episodes)], steps=1000)
        out["record"] = {
            "episodes": res.recorded,
            "frames": res.frames,
            "seconds": round(res.seconds, 2),
            "frames_per_s": round(res.frames_per_s) if res.recorded else None,
        }
    try:
        m = open_dataset(root)
        out["dataset"] = {"path": str(root), "frames": m.num_frames, "episodes": len(m.episodes)}
        load = time_loading(root, args.clip_len, args.batch, args.workers, args.seconds)
        out["load"] = {
            "workers": args.workers,
            "batch": args.batch,
            "clip_len": args.clip_len,
            **{k: round(v, 1) for k, v in load.items()},
        }
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if "record" in out and out["record"]["frames_per_s"]:
        r = out["record"]
        print(
            f"record coinrun: {r['frames']:,} frames in {r['seconds']} s = {r['frames_per_s']:,} frames/s (incl. writing)"
        )
    ld = out["load"]
    print(
        f"load clips: {ld['frames_per_s']:,.0f} frames/s ({ld['clips_per_s']:,.0f} clips/s of {args.clip_len} frames, "
        f"batch {args.batch}, {args.workers} workers, shuffled) from {out['dataset']['frames']:,} frames"
    )
    return 0
