"""How identifiable is a single recorded action from the frames around it?

A supervised probe, the ceiling check for latent-action accuracy: a small CNN sees the frames
(x_{t-before}, ..., x_t, x_{t+1}, ..., x_{t+after}) (default 1 and 1) and is trained *with the
true labels* to predict the action a_t taken between x_t and x_{t+1}. If even this cannot beat
chance on a dataset, no latent action model can name that dataset's actions step by step
(docs/RESULTS.md, "Latent actions on CoinRun"). --distinct scores the game's distinct actions
(CoinRun's 15 buttons -> 6). --latents WORLD: the probe sees the frames as that world's
tokenizer or frame autoencoder encodes them (its token grid, one channel per latent value)
instead of pixels: do the latents keep what tells the actions apart? (a lever for a LAM that
reads latents, as LAPO's does).

    python scripts/action_probe.py --data data/coinrun --steps 1500
    python scripts/action_probe.py --data data/coinrun-sticky --distinct --before 2 --after 1
    python scripts/action_probe.py --data data/coinrun-sticky --distinct --before 2 --after 1 \
        --latents runs/coinrun-ae-world
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from genie.data.dataset import ClipDataset


def load(
    root: str, split: str, n: int, stride: int, before: int = 1, after: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """n random clips of before + 1 + after frames -> frames uint8 (n, T, H, W, 3) and the
    action taken at frame `before` (n,)."""
    ds = ClipDataset(root, split=split, clip_len=before + 1 + after, stride=stride)
    idx = np.random.default_rng(0).choice(len(ds), min(n, len(ds)), replace=False)
    frames, actions = [], []
    for i in tqdm(idx, desc=f"loading {split}", unit="clip"):
        item = ds[int(i)]
        frames.append(item["frames"])
        actions.append(int(item["actions"][before]))
    return torch.stack(frames), torch.tensor(actions)


def encode(world: str, frames: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """uint8 frames (n, T, H, W, 3) -> the world tokenizer's latents on its token grid,
    (n, T, h, w, E) float16 (half the memory; the probe computes in fp32)."""
    from genie.world.folder import load_part

    tok = load_part(world, "tokenizer").eval()
    h, w = tok.grid
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(frames), batch), desc="encoding", unit="batch"):
            z = tok.encode_latents(frames[i : i + batch])  # (b, T, N, E)
            out.append(z.reshape(*z.shape[:2], h, w, -1).half())
    return torch.cat(out)


class Probe(nn.Module):
    """T frames (or latent grids) stacked as C*T channels -> stride-2 conv stages down to 4x4
    or less -> global mean -> logits."""

    def __init__(self, num_actions: int, frames: int, channels: int = 3, size: int = 64):
        super().__init__()
        # the same 4 stages for pixels and latents; each halves the size until it is 4 (64 px:
        # all 4, as before; an 8x8 latent grid: the first), so both probes have one capacity
        halvings = max(0, int(math.log2(size)) - 2)
        widths, layers = [channels * frames, 32, 64, 96, 128], []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers += [nn.Conv2d(a, b, 3, stride=2 if i < halvings else 1, padding=1), nn.GELU()]
            layers += [nn.Conv2d(b, b, 3, padding=1), nn.GELU()]
        self.features, self.head = nn.Sequential(*layers), nn.Linear(widths[-1], num_actions)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: uint8 pixels or float latents, (B, T, H, W, C)."""
        x = frames.float() / 255 * 2 - 1 if frames.dtype == torch.uint8 else frames.float()
        x = x.permute(0, 1, 4, 2, 3).flatten(1, 2)  # (B, C*T, H, W)
        return self.head(self.features(x).mean((2, 3)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--train-pairs", type=int, default=40000)
    p.add_argument("--test-pairs", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--before", type=int, default=1, help="frames seen before x_t")
    p.add_argument("--after", type=int, default=1, help="frames seen after x_t (>= 1)")
    p.add_argument("--distinct", action="store_true", help="score the game's distinct actions")
    p.add_argument(
        "--latents",
        metavar="WORLD",
        help="probe the latents of this world's tokenizer or autoencoder",
    )
    args = p.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    window = dict(before=args.before, after=args.after)
    x_train, a_train = load(args.data, "train", args.train_pairs, stride=3, **window)
    x_test, a_test = load(args.data, "test", args.test_pairs, stride=1, **window)
    if args.latents:
        x_train, x_test = encode(args.latents, x_train), encode(args.latents, x_test)
    n = int(ClipDataset(args.data, split="test", clip_len=1).num_actions)
    if args.distinct:
        distinct = ClipDataset(args.data, split="test", clip_len=1).distinct_actions
        if distinct is None:
            raise SystemExit(f"{args.data} does not know its game's distinct actions")
        of = torch.as_tensor(distinct["of"])
        a_train, a_test, n = of[a_train], of[a_test], len(distinct["labels"])
    net = Probe(n, args.before + 1 + args.after, x_train.shape[-1], x_train.shape[2])
    opt = torch.optim.AdamW(net.parameters(), args.lr)

    def test_accuracy() -> float:
        net.eval()
        with torch.no_grad():
            pred = torch.cat(
                [net(x_test[i : i + 256]).argmax(1) for i in range(0, len(x_test), 256)]
            )
        net.train()
        return (pred == a_test).float().mean().item()

    bar = tqdm(range(args.steps), desc="training the probe", unit="step")
    for step in bar:
        b = torch.randint(0, len(x_train), (args.batch_size,))
        loss = F.cross_entropy(net(x_train[b]), a_train[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 500 == 0:
            bar.write(
                f"step {step + 1}: train loss {loss.item():.3f} (ln {n} = {np.log(n):.3f}), "
                f"test accuracy {test_accuracy():.1%}"
            )
    chance = np.bincount(a_test.numpy(), minlength=n).max() / len(a_test)
    print(
        f"probe test accuracy {test_accuracy():.1%} on {len(a_test):,} transitions; "
        f"most frequent action {chance:.1%}; uniform {1 / n:.1%}; {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
