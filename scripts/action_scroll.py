"""What does each recorded action do to the camera, one step at a time?

A latent action model sees frames, not keys: a key it can recover is one whose effect shows.
For each of the game's distinct actions, this measures the camera's scroll from x_t to x_{t+1}
(Fourier-domain shift, `genie.utils.metrics.phase_shift`) on random transitions of a recording
and prints the share of steps where the camera moved left, moved less than `--still` px, or
moved right, with the mean shift in x and y (camera motion in image axes: +x right, +y down).

    python scripts/action_scroll.py --data data/coinrun-sticky --split test --transitions 6000

On CoinRun at 64 x 64 most single steps move the camera by under half a pixel, and a character
with momentum keeps going after its key changes (docs/RESULTS.md, "Latent actions on CoinRun").
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from genie.data.dataset import ClipDataset
from genie.utils.metrics import phase_shift


def camera_steps(
    data: str, split: str, n: int, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """n random transitions of the split -> camera motion (n, 2) (dy, dx) px in image axes
    (+y down, +x right), the distinct action taken (n,) and the distinct actions' labels."""
    ds = ClipDataset(data, split=split, clip_len=2, stride=1)
    distinct = ds.distinct_actions
    if distinct is None:
        raise SystemExit(f"{data} does not know its game's distinct actions")
    idx = np.random.default_rng(seed).choice(len(ds), min(n, len(ds)), replace=False)
    a, b, acts = [], [], []
    for i in idx:
        item = ds[int(i)]
        a.append(item["frames"][0])
        b.append(item["frames"][1])
        acts.append(int(item["actions"][0]))
    x0 = torch.stack(a).float() / 255
    x1 = torch.stack(b).float() / 255
    chunks = range(0, len(idx), 512)
    content = torch.cat([phase_shift(x0[i : i + 512], x1[i : i + 512]) for i in chunks])
    # the content moving left on screen = the camera moving right
    return -content, np.asarray(distinct["of"])[acts], list(distinct["labels"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a recording with actions")
    p.add_argument("--split", default="test")
    p.add_argument("--transitions", type=int, default=6000)
    p.add_argument("--still", type=float, default=0.5, help="px under which the camera 'stood'")
    args = p.parse_args()
    cam, act, labels = camera_steps(args.data, args.split, args.transitions)
    dx, dy = cam[:, 1].numpy(), cam[:, 0].numpy()
    print(f"{len(act):,} transitions of {args.data} ({args.split}); camera step per action:")
    print("action       steps   left  still  right   mean dx   mean dy")
    for k, name in enumerate(labels):
        sel = act == k
        if not sel.any():
            continue
        x = dx[sel]
        print(
            f"{name:11s} {sel.sum():6d}  {(x <= -args.still).mean():5.0%}  "
            f"{(np.abs(x) < args.still).mean():5.0%}  {(x >= args.still).mean():5.0%}  "
            f"{x.mean():+7.2f}  {dy[sel].mean():+7.2f}"
        )


if __name__ == "__main__":
    main()
