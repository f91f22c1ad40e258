"""How many of CoinRun's recorded actions can any model tell apart from the frames at all?

The hard ceiling for latent-action accuracy, measured in the game itself: the recorded test
episodes are replayed in procgen and, at every step, the game's state is copied into six
environments that each press one of CoinRun's six distinct actions. Actions whose next frames
are identical (pixel for pixel) cannot be told apart by a model that sees the frames, a LAM
included: pressing jump in mid-air, left against a wall, right while dying all draw the same
frame as some other action. `--lookahead K` also compares the K-1 frames after that (every copy
then plays the recorded actions), for effects that show a frame late.

Two numbers per lookahead:
* **unique**: the share of transitions whose action is the only one that draws that next frame;
* **ceiling**: the best any frames -> action map can score: in each group of actions that draw
  the same frame, the most frequent one under the recording's policy is the best guess, so a
  transition counts as p(true) / p(group) (the policy's action weights as the prior). A model
  that also reads the policy's habits from earlier frames (a sticky player keeps pressing what it
  pressed) can do better than this; a LAM, whose codes say what changed, cannot.

    python scripts/action_ceiling.py --data data/coinrun-sticky --levels 10500:10520 \
        --save effects.npz
    python scripts/lam_accuracy.py --lam WORLD/lam --data data/coinrun-sticky --distinct \
        --effects effects.npz

--save keeps, per level and step, which actions draw the recorded next frame, so
`scripts/lam_accuracy.py --effects` can score a LAM by what its codes can know: a mapped action
counts as right when it draws the same next frame as the one pressed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from genie.data.format import open_dataset
from genie.data.record import (
    COINRUN_BUTTON_TO_DISTINCT,
    COINRUN_DISTINCT,
    COINRUN_DISTINCT_BUTTON,
    COINRUN_STICKY_WEIGHTS,
    _import_procgen,
    coinrun_episode_actions,
)


def replay_groups(
    level: int, actions: np.ndarray, seed: int, lookahead: int, reference: np.ndarray | None
) -> np.ndarray:
    """Replay one episode; per step t, (steps, lookahead, 6) group ids: for each lookahead k,
    actions with the same group id drew identical frames t+1..t+1+k. Checks the replayed frames
    against the recording (`reference`, (steps, 64, 64, 3)) when given."""
    env_cls = _import_procgen()
    kw = dict(env_name="coinrun", distribution_mode="hard", num_levels=1)
    rand_seed = (seed * 1_000_003 + level) % 2**31  # as `genie record coinrun` seeds a level
    state = env_cls(num=1, start_level=level, rand_seed=rand_seed, **kw).get_state()[0]
    n = len(COINRUN_DISTINCT_BUTTON)
    env = env_cls(num=n, start_level=level, rand_seed=0, **kw)
    buttons = np.array(COINRUN_DISTINCT_BUTTON, dtype=np.int32)
    steps = len(actions) - lookahead
    groups = np.zeros((steps, lookahead, n), np.int8)
    for t in range(steps):
        env.set_state([state] * n)
        if reference is not None:
            _, obs, _ = env.observe()
            if not np.array_equal(obs["rgb"][0], reference[t]):
                raise SystemExit(f"level {level}: the replay left the recording at frame {t}")
        env.act(buttons)
        _, obs, _ = env.observe()
        state = env.get_state()[COINRUN_BUTTON_TO_DISTINCT[actions[t]]]  # the recorded path
        seen = [obs["rgb"].reshape(n, -1).copy()]
        for k in range(1, lookahead):
            env.act(np.full(n, actions[t + k], dtype=np.int32))
            _, obs, _ = env.observe()
            seen.append(obs["rgb"].reshape(n, -1).copy())
        keys = [b""] * n
        for k in range(lookahead):
            keys = [key + seen[k][i].tobytes() for i, key in enumerate(keys)]
            first: dict[bytes, int] = {}
            groups[t, k] = [first.setdefault(key, len(first)) for key in keys]
    return groups


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a CoinRun recording (its source says how)")
    p.add_argument("--levels", default="10500:10520", help="test level seeds START:STOP")
    p.add_argument("--lookahead", type=int, default=3, help="frames compared after the action")
    p.add_argument("--steps", type=int, default=None, help="steps per episode (default: all)")
    p.add_argument("--save", help=".npz of each level's (steps, 6) 'draws the same next frame'")
    args = p.parse_args()
    src = open_dataset(args.data).source
    if src.get("kind") != "coinrun":
        raise SystemExit(f"{args.data} is not a CoinRun recording (source kind {src.get('kind')})")
    policy = "sticky" if src.get("policy") == "sticky" else "uniform"
    hold = float(src.get("policy_params", {}).get("hold_mean", 8.0))
    seed, total = int(src.get("seed", 0)), int(src["steps_per_episode"])
    if int(src.get("action_repeat", 1)) != 1:
        raise SystemExit("only recordings with --action-repeat 1 can be replayed step by step")
    start, stop = (int(x) for x in args.levels.split(":"))
    frames_of = _reference_frames(args.data)
    # the policy's prior over the distinct actions (uniform over 15 buttons: 3/15 noop-like...)
    if policy == "sticky":
        prior = np.asarray(COINRUN_STICKY_WEIGHTS, float)
    else:
        prior = np.bincount(COINRUN_BUTTON_TO_DISTINCT, minlength=len(COINRUN_DISTINCT)) * 1.0
    prior = prior / prior.sum()
    t0 = time.time()
    rows = []
    for level in tqdm(range(start, stop), desc="replaying levels", unit="level"):
        acts = coinrun_episode_actions(seed, level, total, 1, policy, hold)
        if args.steps:
            acts = acts[: args.steps + args.lookahead]
        groups = replay_groups(level, acts, seed, args.lookahead, frames_of(level))
        true = np.array([COINRUN_BUTTON_TO_DISTINCT[a] for a in acts[: len(groups)]])
        rows.append((groups, true))
    if args.save:
        same_of = {
            f"level-{lv}": g[:, 0] == g[np.arange(len(g)), 0, t][:, None]
            for lv, (g, t) in zip(range(start, stop), rows, strict=True)
        }
        np.savez_compressed(args.save, **same_of)
        print(f"wrote {args.save}")
    groups = np.concatenate([g for g, _ in rows])
    true = np.concatenate([t for _, t in rows])
    print(
        f"{len(true):,} transitions of {stop - start} levels ({policy} policy), {time.time() - t0:.0f} s"
    )
    print("lookahead  unique  ceiling   (per true action: ceiling)")
    for k in range(args.lookahead):
        g = groups[:, k]  # (N, 6)
        same = g == g[np.arange(len(g)), true][:, None]  # actions drawing the true action's frames
        unique = same.sum(1) == 1
        ceiling = prior[true] / (same * prior).sum(1)
        # the best guess in a group is its most likely action: right only when that is the truth
        best = np.where(same, prior, -1).argmax(1)
        hit = best == true
        per = "  ".join(
            f"{name} {hit[true == a].mean():.0%}"
            for a, name in enumerate(COINRUN_DISTINCT)
            if (true == a).any()
        )
        print(f"{k + 1:9d}  {unique.mean():6.1%}  {hit.mean():7.1%}   ({per})")
        print(f"{'':9s}  {'':6s}  {ceiling.mean():7.1%}   (soft: p(true)/p(group))")


def _reference_frames(root: str):
    """level -> the recorded frames of that level's episode (or None when not recorded)."""
    from genie.data.format import shard_path

    by_seed = {e.seed: e for e in open_dataset(root).episodes}

    def frames(level: int) -> np.ndarray | None:
        ep = by_seed.get(level)
        if ep is None:
            return None
        arr = np.load(shard_path(root, ep.shard, "frames"), mmap_mode="r")
        return np.asarray(arr[ep.start : ep.start + ep.length])

    return frames


if __name__ == "__main__":
    main()
