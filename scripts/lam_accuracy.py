"""Latent -> true action accuracy of a trained LAM alone (no dynamics needed), measured as
`genie eval` does: the best majority mapping fitted on half of a split's levels and scored on
the other half, beside the most frequent action and shuffled latents.

    python scripts/lam_accuracy.py --lam WORLD/lam --data DATA [--split test]
"""

from __future__ import annotations

import argparse

import numpy as np

from genie.evaluate import latent_and_true_actions
from genie.lam import LatentActionModel, best_mapping_accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--lam", required=True, help="a LAM part folder (config.json + model.safetensors)"
    )
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--transitions", type=int, default=20000)
    args = p.parse_args()
    lam = LatentActionModel.from_pretrained(args.lam).eval()
    window = getattr(lam.config, "max_frames", 16)
    latent, true, episode = latent_and_true_actions(
        lam, args.data, args.split, window, args.transitions, 32
    )
    ok = true >= 0
    latent, true, episode = latent[ok], true[ok], episode[ok]
    n_true = int(true.max()) + 1
    first = np.isin(episode, np.unique(episode)[::2])
    _, mapping = best_mapping_accuracy(latent[first], true[first], lam.num_actions, n_true)
    held, _ = best_mapping_accuracy(latent[~first], true[~first], lam.num_actions, n_true, mapping)
    shuffled = np.random.default_rng(0).permutation(latent)
    _, smap = best_mapping_accuracy(shuffled[first], true[first], lam.num_actions, n_true)
    held_s, _ = best_mapping_accuracy(shuffled[~first], true[~first], lam.num_actions, n_true, smap)
    chance = np.bincount(true).max() / len(true)
    se = np.sqrt(held * (1 - held) / (~first).sum())
    print(
        f"{len(true):,} transitions of {args.data} ({args.split}): held-out levels {held:.1%} "
        f"± {se:.1%}; shuffled latents {held_s:.1%}; most frequent action {chance:.1%}"
    )


if __name__ == "__main__":
    main()
