"""Latent-action levers on the synthetic sprite world, without the trainer: how the way a
player holds keys and the LAM's settings change how well its codes recover the true actions.

    python scripts/lam_synthetic.py --hold 4 --border clip --steps 300 --batches 10 --decoder-sees last

Each step trains on one of `--batches` fixed batches of 16 six-frame clips (a small dataset,
as an imported video is; 0: a fresh batch every step), with tests/test_lam.py's settings
(conv stem, neighbourhood decoder, euclidean VQ seeded by k-means after half the steps). The
best majority mapping is fitted on 64 clips and scored on 64 held-out ones (5 true actions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import make_batch  # noqa: E402
from test_lam import LEARNS, tiny_config  # noqa: E402

from genie.models.lam import LatentActionModel  # noqa: E402
from genie.utils.metrics import best_mapping_accuracy  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hold", type=int, default=1, help="steps each random action is held")
    p.add_argument("--border", choices=("wrap", "clip"), default="wrap")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batches", type=int, default=0, help="distinct training batches (0: all new)")
    p.add_argument("--decoder-sees", choices=("past", "last"), default="past")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    world = dict(speed=4, hold=args.hold, border=args.border)
    cfg = {**LEARNS, "vq_warmup_steps": args.steps // 2, "decoder_sees": args.decoder_sees}
    model = LatentActionModel(tiny_config(**cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    for step in range(args.steps):
        seed = step % args.batches if args.batches else step
        loss, metrics = model.compute_loss(make_batch(16, 6, seed=seed, **world))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()
    fit, held = make_batch(64, 6, seed=5_000, **world), make_batch(64, 6, seed=10_000, **world)
    n = model.num_actions
    _, mapping = best_mapping_accuracy(
        model.infer_actions(fit["frames"]), fit["actions"][:, :-1], n, 5
    )
    acc, _ = best_mapping_accuracy(
        model.infer_actions(held["frames"]), held["actions"][:, :-1], n, 5, mapping=mapping
    )
    print(f"held-out accuracy {acc:.1%}; next-frame PSNR {metrics['psnr']:.1f} dB; "
          f"code perplexity {metrics['perplexity']:.2f} of {n}")  # fmt: skip


if __name__ == "__main__":
    main()
