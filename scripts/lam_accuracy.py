"""Latent -> true action accuracy of a trained LAM alone (no dynamics needed), measured as
`genie eval` does: the best majority mapping fitted on half of a split's levels and scored on
the other half, beside the most frequent action and shuffled latents.

    python scripts/lam_accuracy.py --lam WORLD/lam --data DATA [--split test] \
        [--distinct] [--confusion confusion.png]

--distinct scores against the game's distinct actions (CoinRun's 15 buttons collapse to 6:
noop, left, right, jump, jump-left, jump-right); --confusion draws latent x true counts.
--effects FILE (from `scripts/action_ceiling.py --save`, CoinRun, with --distinct) also scores
by effect: a mapped action is right when it draws the same next frame as the one pressed
(jump in mid-air = noop), the accuracy a LAM can reach; and the plain accuracy on the
transitions whose action is the only one that draws that frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from genie.eval.protocol import latent_and_true_actions
from genie.models.lam import LatentActionModel
from genie.utils.metrics import action_accuracy, best_mapping_accuracy
from genie.world.folder import load_part


def confusion_png(latent, true, num_latent: int, labels: list, path: str) -> None:
    """Rows: latent codes, columns: true actions; each row normalised to sum 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.zeros((num_latent, len(labels)))
    np.add.at(counts, (latent, true), 1)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.9 + 0.45 * num_latent))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(rows):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if v > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=30, ha="right")
    ax.set_yticks(
        range(num_latent), [f"latent {i} ({int(n):,})" for i, n in enumerate(counts.sum(1))]
    )
    ax.set_xlabel("true action")
    ax.set_title("P(true action | latent action)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def effect_accuracy(latent, true, episode, step, num_latent: int, data: str, path: str) -> None:
    """Held-out accuracy by effect (the mapped action draws the true action's next frame) and
    on the transitions whose action alone draws that frame, over the levels in `path`."""
    from genie.data.format import open_dataset

    names = {e.id: e.name for e in open_dataset(data).episodes}
    effects = dict(np.load(path))
    keep = np.array(
        [names[int(e)] in effects and s < len(effects[names[int(e)]]) for e, s in
         zip(episode, step, strict=True)]
    )  # fmt: skip
    if not keep.any():
        raise SystemExit(f"{path} has none of the scored levels: run action_ceiling.py on them")
    latent, true, episode, step = latent[keep], true[keep], episode[keep], step[keep]
    same = np.stack([effects[names[int(e)]][s] for e, s in zip(episode, step, strict=True)])
    if not same[np.arange(len(true)), true].all():  # the pressed action always draws its frame
        raise SystemExit(f"{path} does not match {data}: made from another recording?")
    unique = same.sum(1) == 1
    first = np.isin(episode, np.unique(episode)[::2])  # fit on half the levels, score the rest
    _, mapping = best_mapping_accuracy(latent[first], true[first], num_latent, same.shape[1])
    pred = np.asarray(mapping)[latent]
    held = ~first & (pred >= 0)
    if not held.any() or not (held & unique).any():
        raise SystemExit(f"{path}: too few levels to score held out (give it several)")
    by_effect = same[np.arange(len(pred)), np.maximum(pred, 0)] & (pred >= 0)
    print(
        f"{int(held.sum()):,} held-out transitions with known effects: by effect "
        f"{by_effect[held].mean():.1%}; exact {(pred == true)[held].mean():.1%}; on the "
        f"{unique[held].mean():.0%} whose action alone draws its frame "
        f"{(pred == true)[held & unique].mean():.1%}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--lam",
        required=True,
        help="a LAM part folder (config.json + model.safetensors); a LAM that reads latents "
        "reads those of the tokenizer beside it (WORLD/lam -> WORLD/tokenizer)",
    )
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--transitions", type=int, default=20000)
    p.add_argument("--distinct", action="store_true", help="score the game's distinct actions")
    p.add_argument("--confusion", help="PNG of the latent x true action counts (row-normalised)")
    p.add_argument("--effects", help="scripts/action_ceiling.py --save output (needs --distinct)")
    args = p.parse_args()
    lam = LatentActionModel.from_pretrained(args.lam).eval()
    if lam.reads_latents:  # the autoencoder beside it, as its world loads it
        lam.read_through(load_part(Path(args.lam).parent, "tokenizer").eval())
    window = getattr(lam.config, "max_frames", 16)
    latent, true, episode, step = latent_and_true_actions(
        lam, args.data, args.split, window, args.transitions, 32
    )
    ok = true >= 0
    latent, true, episode, step = latent[ok], true[ok], episode[ok], step[ok]
    labels = None
    if args.distinct:
        from genie.data import ClipDataset

        distinct = ClipDataset(args.data, args.split, clip_len=1).distinct_actions
        if distinct is None:
            raise SystemExit(f"{args.data} does not know its game's distinct actions")
        true, labels = np.asarray(distinct["of"])[true], list(distinct["labels"])
    num_true = len(labels) if labels else int(true.max()) + 1
    r = action_accuracy(latent, true, episode, lam.num_actions, num_true)
    _, mapping = best_mapping_accuracy(latent, true, lam.num_actions, num_true)
    names = [labels[m] if labels and m >= 0 else str(m) for m in mapping]
    print("latent -> true (majority): " + ", ".join(f"{i}: {n}" for i, n in enumerate(names)))
    if args.confusion:
        confusion_png(
            latent, true, lam.num_actions, labels or list(range(num_true)), args.confusion
        )
    if args.effects:
        if not args.distinct:
            raise SystemExit("--effects scores CoinRun's distinct actions: add --distinct")
        effect_accuracy(latent, true, episode, step, lam.num_actions, args.data, args.effects)
    print(
        f"{r['action_transitions']:,} transitions of {args.data} ({args.split}): held-out levels "
        f"{r['action_accuracy_held_out']:.1%} ± {r['action_accuracy_held_out_stderr']:.1%}; "
        f"shuffled latents {r['action_accuracy_held_out_shuffled']:.1%}; "
        f"most frequent action {r['action_accuracy_chance']:.1%}"
    )


if __name__ == "__main__":
    main()
