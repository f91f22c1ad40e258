"""What a world can draw: its tokenizer's or autoencoder's reconstruction of real frames.

`genie eval` reports it for every world (metrics.json "tokenizer"); on a world folder whose
dynamics is not trained yet (a frame autoencoder in training) it reports only this, with a
strip of 8 episodes, real above reconstruction:

    genie eval --world runs/coinrun-ae-world --data data/coinrun-sticky --split test --out eval/ae
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAX_FRAMES = 1024  # frames of the split measured (evenly spread)


def reconstruct(tok, frames, representation: str):
    """What a world can draw: frames uint8 (B, T, H, W, 3) encoded and decoded by its tokenizer
    (code ids) or autoencoder / continuous latents -> (float reconstruction, ids or None)."""
    if representation == "ids":
        ids = tok.encode(frames)
        return tok.decode(ids), ids
    return tok.decode_latents(tok.encode_latents(frames)), None


def reconstruct_each(tok, frames: np.ndarray, representation: str, precision: str = "fp32",
                     batch: int = 64) -> np.ndarray:  # fmt: skip
    """uint8 frames (..., H, W, 3), each encoded and decoded alone (as a prompt frame is) ->
    uint8, same shape: what the world's decoder can draw of them (the play-test strips)."""
    import torch

    from genie.utils.images import to_uint8
    from genie.utils.precision import autocast

    flat = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, 1, *frames.shape[-3:])))
    out = []
    with torch.no_grad(), autocast(precision):
        for i in range(0, len(flat), batch):
            recon, _ = reconstruct(tok, flat[i : i + batch], representation)
            out.append(to_uint8(recon.float()).numpy())
    return np.concatenate(out).reshape(frames.shape)


def reconstruction_only(args) -> int:
    """`genie eval` on a world folder with a tokenizer or autoencoder and no dynamics yet: the
    reconstruction numbers (metrics.json "tokenizer") and a strip, real above reconstruction,
    of one frame from each of 8 episodes (reconstruction.png)."""
    import torch
    from PIL import Image

    from genie.data import ClipDataset, collate_clips
    from genie.utils.images import grid, to_float
    from genie.utils.metrics import gradient_magnitude, psnr, ssim
    from genie.world.folder import load_part

    tok = load_part(args.world, "tokenizer")
    representation = "ids" if type(tok).model_type == "tokenizer" else "latents"
    ds = ClipDataset(args.data, split=args.split, clip_len=1, stride=5)
    clips = np.unique(np.linspace(0, len(ds) - 1, min(len(ds), MAX_FRAMES)).round().astype(int))
    shown = np.linspace(0, len(ds) - 1, 8).round().astype(int)  # spread over the episodes
    sums = {"psnr": [], "ssim": [], "grad": []}
    strip = []
    with torch.no_grad():
        for start in range(0, len(clips), 64):
            frames = collate_clips([ds[i] for i in clips[start : start + 64]])["frames"]
            recon, _ = reconstruct(tok, frames, representation)
            truth = to_float(frames)
            sums["psnr"].append(psnr(recon, truth).flatten())
            sums["ssim"].append(ssim(recon, truth).flatten())
            sums["grad"].append(
                torch.stack(
                    [gradient_magnitude(recon).flatten(), gradient_magnitude(truth).flatten()]
                )
            )
    with torch.no_grad():
        frames = collate_clips([ds[i] for i in shown])["frames"]
        strip = [to_float(frames)[:, 0], reconstruct(tok, frames, representation)[0][:, 0]]
    grads = torch.cat(sums["grad"], 1).mean(1)
    metrics = {
        "tokenizer": {
            "kind": type(tok).model_type,
            "representation": representation,
            "psnr": torch.cat(sums["psnr"]).mean().item(),
            "ssim": torch.cat(sums["ssim"]).mean().item(),
            "sharpness": (grads[0] / grads[1].clamp_min(1e-8)).item(),
            "frames": int(sum(len(x) for x in sums["psnr"])),
        },
        "protocol": {
            "world": str(args.world),
            "data": str(args.data),
            "split": args.split,
            "note": "no dynamics yet: reconstruction only",
        },  # fmt: skip
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    rows = torch.stack(strip)  # (2, 8, H, W, 3): real above reconstruction
    Image.fromarray(grid(rows, gap=2, scale=2)).save(out / "reconstruction.png")
    t = metrics["tokenizer"]
    print(f"{t['kind']} reconstruction of {t['frames']} {args.split} frames: PSNR {t['psnr']:.2f} dB, "
          f"SSIM {t['ssim']:.3f}, sharpness {t['sharpness']:.2f}; strip {out / 'reconstruction.png'}")  # fmt: skip
    return 0
