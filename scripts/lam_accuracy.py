"""Latent -> true action accuracy of a trained LAM alone (no dynamics needed), measured as
`genie eval` does: the best majority mapping fitted on half of a split's levels and scored on
the other half, beside the most frequent action and shuffled latents.

    python scripts/lam_accuracy.py --lam WORLD/lam --data DATA [--split test]
"""

from __future__ import annotations

import argparse

from genie.evaluate import latent_and_true_actions
from genie.lam import LatentActionModel
from genie.metrics import action_accuracy


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
    r = action_accuracy(latent[ok], true[ok], episode[ok], lam.num_actions, int(true.max()) + 1)
    print(
        f"{r['action_transitions']:,} transitions of {args.data} ({args.split}): held-out levels "
        f"{r['action_accuracy_held_out']:.1%} ± {r['action_accuracy_held_out_stderr']:.1%}; "
        f"shuffled latents {r['action_accuracy_held_out_shuffled']:.1%}; "
        f"most frequent action {r['action_accuracy_chance']:.1%}"
    )


if __name__ == "__main__":
    main()
