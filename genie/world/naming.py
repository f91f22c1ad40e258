"""Name a world's latent actions by what they do in the world itself, with no action labels.

A world trained on latent actions (a LAM's codes) has actions "action 0..A-1". To name them,
each code is held for `HOLD_FRAMES` frames from several start frames (the world's examples, or
given its data, random frames of that), in one batched rollout of the world, and the player's motion is measured in the generated frames
(`genie.utils.motion.player_path`: minus the camera's scroll, or the moving sprite):

* dx: where the player is after `MOTION_FRAMES` frames, horizontally (px, right > 0), averaged
  over the starts;
* rise / drop: how far its mean path (over the starts) went up / down in those frames at its
  highest / lowest point (a world that jitters the sprite up in one start and down in another
  cancels out);
* back: how much of its rise it fell back by the end of the hold (a jump comes down again).

A code moves on an axis when its motion there is at least `MOVE_SHARE` of the largest any code
reaches (and at least `MIN_PX`); it moves diagonally when the weaker axis's share of that
largest motion is at least `DIAGONAL_SHARE` of the stronger one's (a little rise while running
right is drift). Names follow the game's kind: where codes go up but none goes down, or those
that go up come back down (gravity), a platformer's noop / left / right / jump / jump-left /
jump-right; else a top-down game's compass (up, downleft, ...). A name taken twice goes to the
code that does it most (drift off the name's axes counts against it); the others are
"right 2", "right 3" (a number key). The names then get
the usual keys (`genie.world.folder.default_keys`: arrows, WASD, chords; noop = no key).

Given the data the world was trained on, the LAM first labels a sample of its transitions: a
code it gives to fewer than `USED_SHARE` of them is one the dynamics hardly saw, so whatever it
does in the world means nothing; it is named "unused" and gets no key (a LAM with 8 codes on a
game of 5 actions leaves some unused).

    genie name-actions --world worlds/coinrun-unlabeled        # writes world.json
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from genie.world.folder import UNUSED

HOLD_FRAMES = 12  # frames each code is held per start (a jump rises and comes back down)
MOTION_FRAMES = 4  # where a code heads: its motion over the first frames of the hold, before
# the player reaches a wall (a move into a wall is one the LAM calls "stay", so the world never
# learned it) or the world's own errors add up
MOVE_SHARE = 0.3  # a code moves on an axis at >= this share of the largest motion there
MIN_PX = 1.5  # ... and at least this many pixels
DIAGONAL_SHARE = 0.5  # a code moves diagonally when its weaker axis (as a share of that axis's
# largest motion) is at least this share of its stronger one; less is drift, not a diagonal
GRAVITY_BACK = 0.5  # codes that rise come back down by this share of the rise: a platformer
USED_SHARE = 0.01  # a code the LAM gives to fewer of the data's transitions than this is unused
USAGE_CLIPS = 64  # clips of the data the LAM labels to measure that
EXAMPLE_STARTS = 6  # start frames: the world's examples, or with its data
DATA_STARTS = 12  # ... this many random frames of it


@dataclass
class ActionMotion:
    action: int
    dx: float  # the mean path's horizontal position after MOTION_FRAMES (px, right > 0)
    rise: float  # ... its highest point above the start in those frames (px, >= 0)
    drop: float  # ... its lowest point below the start in those frames (px, >= 0)
    back: float  # share of the mean path's rise lost again by the end of the hold (0: stayed up)
    name: str = ""


def measure_actions(engine, starts: np.ndarray, frames: int = HOLD_FRAMES) -> list[ActionMotion]:
    """Hold each of the engine's actions for `frames` frames from each start frame (uint8
    (S, H, W, 3)), as one batch; -> the player's motion under each action."""
    from genie.utils.motion import player_path

    a, s = engine.num_actions, len(starts)
    prompts = np.broadcast_to(starts[None, :, None], (a, s, 1, *starts.shape[1:]))
    engine.reset(np.ascontiguousarray(prompts.reshape(a * s, 1, *starts.shape[1:])))
    held = np.repeat(np.arange(a), s)[:, None].repeat(frames, 1)  # (A*S, K)
    out = engine.rollout(held)  # (A*S, K, H, W, 3)
    clips = np.concatenate([np.repeat(starts[None], a, 0).reshape(a * s, 1, *starts.shape[1:]),
                            out], 1)  # fmt: skip
    path = player_path(torch.from_numpy(clips)).reshape(a, s, frames + 1, 2)  # (dy, dx)
    mean_path = path.mean(1)  # (A, K+1, 2): the typical path (a jump peaks at about the same frame)
    mean_dy = mean_path[..., 0]
    top = (-mean_dy).amax(-1).clamp_min(1e-6)
    back = ((mean_dy[:, -1] + top) / top).clamp(0, 1)  # (A,) over the whole hold
    early = mean_path[:, : min(frames, MOTION_FRAMES) + 1]  # (A, M+1, 2): where it heads
    return [
        ActionMotion(
            action=i,
            dx=float(early[i, -1, 1]),
            rise=max(0.0, float((-early[i, :, 0]).amax())),
            drop=max(0.0, float(early[i, :, 0].amax())),
            back=float(back[i]),
        )
        for i in range(a)
    ]


def name_motions(motions: list[ActionMotion], used: list[bool] | None = None) -> list[str]:
    """Names for measured actions (see the module doc); also sets each motion's `name`.
    used: per action, whether the LAM gives it to the data (None: all are); the others are
    named "unused" and their motion sets no scale."""
    used = [True] * len(motions) if used is None else list(used)
    live = [m for m, u in zip(motions, used, strict=True) if u]
    h_max = max((abs(m.dx) for m in live), default=0.0)
    v_max = max((max(m.rise, m.drop) for m in live), default=0.0)
    h_min, v_min = max(MIN_PX, MOVE_SHARE * h_max), max(MIN_PX, MOVE_SHARE * v_max)
    ups = [m for m in live if m.rise >= v_min and m.rise >= m.drop]
    downs = [m for m in live if m.drop >= v_min and m.drop > m.rise]
    gravity = bool(ups) and (not downs or float(np.mean([m.back for m in ups])) >= GRAVITY_BACK)

    def base(m: ActionMotion) -> tuple[str, float]:
        h = "right" if m.dx >= h_min else "left" if m.dx <= -h_min else ""
        v = ""
        if max(m.rise, m.drop) >= v_min:
            v = "up" if m.rise >= m.drop else "down"
        h_share, v_share = abs(m.dx) / max(h_max, 1e-6), max(m.rise, m.drop) / max(v_max, 1e-6)
        if h and v and min(h_share, v_share) < DIAGONAL_SHARE * max(h_share, v_share):
            h, v = (h, "") if h_share > v_share else ("", v)  # the side motion is drift
        if not h and not v:
            return "noop", -(h_share + v_share)  # the stillest code is the noop
        # how much it does what its name says: drift off the name's axes counts against it
        on = (h_share if h else 0.0) + (v_share if v else 0.0)
        strength = on - (h_share + v_share - on)
        if gravity and v == "up":
            return ("jump-" + h if h else "jump"), strength
        return v + h, strength

    named = [base(m) if u else (UNUSED, 0.0) for m, u in zip(motions, used, strict=True)]
    order = sorted(range(len(motions)), key=lambda i: -named[i][1])
    seen: dict[str, int] = {}
    names = [""] * len(motions)
    for i in order:
        n = named[i][0]
        seen[n] = seen.get(n, 0) + 1
        names[i] = n if seen[n] == 1 else f"{n} {seen[n]}"
    for m, n in zip(motions, names, strict=True):
        m.name = n
    return names


def start_frames(world, data: str | Path | None = None, seed: int = 0) -> np.ndarray:
    """uint8 (S, H, W, 3): with the world's data, `DATA_STARTS` random frames of its validation
    (or test, or train) episodes, the situations the world learned from (more of them than a
    world's few examples, and not only where its episodes begin); else the world's start frames
    (examples/)."""
    from genie.utils.errors import UserError
    from genie.utils.images import load_image

    size = world.frame_size[0]
    if data is None:
        if not world.examples:
            raise UserError(f"{world.root} has no examples/: give --data to take start frames from")
        return np.stack([load_image(p, size) for p in world.examples[:EXAMPLE_STARTS]])
    from genie.data.format import open_dataset

    m = open_dataset(data)
    split = next((s for s in ("val", "test") if s in m.splits()), "train")
    episodes = [e for e in m.episodes if e.split == split and e.length > 0]
    clips = _random_clips(data, episodes, DATA_STARTS, 1, np.random.default_rng(seed))
    return np.stack([load_image(c[0], size) for c in clips])


def _random_clips(data, episodes: list, count: int, length: int, rng) -> list[np.ndarray]:
    """`count` clips of `length` frames (uint8 (length, H, W, 3)), each from a random episode of
    `episodes` (at least `length` long) at a random start; each shard is read once, mapped."""
    from genie.data.format import shard_path

    shards: dict[str, np.ndarray] = {}
    out = []
    for i in rng.integers(len(episodes), size=count):
        e = episodes[i]
        if e.shard not in shards:
            shards[e.shard] = np.load(shard_path(data, e.shard, "frames"), mmap_mode="r")
        start = e.start + int(rng.integers(e.length - length + 1))
        out.append(np.array(shards[e.shard][start : start + length]))
    return out


def code_usage(world_dir: str | Path, data: str | Path, clips: int = USAGE_CLIPS, seed: int = 0):
    """float (A,): the share of `clips` random clips' transitions of `data` (train split, else
    all) that the world's LAM labels with each code; None when the world has no LAM or the
    data's frames are not the LAM's size."""
    from genie.data.format import open_dataset
    from genie.world.folder import load_part

    if not (Path(world_dir) / "lam").is_dir():
        return None
    lam = load_part(world_dir, "lam").eval()
    m = open_dataset(data)
    size, t = lam.config.frame_size, lam.config.max_frames
    if tuple(m.frame_size) != (size, size):
        return None
    episodes = [e for e in m.episodes if e.split == "train" and e.length >= 2] or [
        e for e in m.episodes if e.length >= 2
    ]
    if not episodes:
        return None
    n = min(t, min(e.length for e in episodes))  # one clip length: the clips go in one batch
    batch = _random_clips(data, episodes, clips, n, np.random.default_rng(seed))
    ids = torch.cat([lam.infer_actions(torch.from_numpy(np.stack(batch[k : k + 16])))
                     for k in range(0, len(batch), 16)])  # fmt: skip
    counts = np.bincount(ids.reshape(-1).numpy(), minlength=lam.num_actions)
    return counts / counts.sum()


def name_world_actions(
    world_dir: str | Path, data: str | Path | None = None, write: bool = True, seed: int = 0
) -> list[ActionMotion]:
    """Measure and name a world's actions; with `write`, world.json gets the names, their keys
    and the measurements ("actions.named_by"). data: the world's training data, for start
    frames when it has no examples/ and to find the codes its LAM never gives."""
    from genie.world.engine import WorldEngine
    from genie.world.folder import World, read_meta, set_action_labels, write_meta

    world = World.from_folder(world_dir)
    engine = WorldEngine(world, seed=seed)
    motions = measure_actions(engine, start_frames(world, data, seed=seed))
    usage = None if data is None else code_usage(world_dir, data, seed=seed)
    names = name_motions(motions, None if usage is None else list(usage >= USED_SHARE))
    if write:
        set_action_labels(world_dir, names)
        meta = read_meta(world_dir)
        meta["actions"]["named_by"] = {
            "method": "motion in the world's own frames (genie name-actions)",
            "frames_held": HOLD_FRAMES,
            "frames_measured": MOTION_FRAMES,
            "motions": [asdict(m) for m in motions],
        }
        if usage is not None:
            meta["actions"]["named_by"]["lam_usage"] = [round(float(u), 4) for u in usage]
        write_meta(world_dir, meta)
    return motions


def motion_table(motions: list[ActionMotion]) -> str:
    rows = ["action  name          dx px   rise px  drop px  back"]
    rows += [
        f"{m.action:>6}  {m.name:<12} {m.dx:7.1f}  {m.rise:7.1f}  {m.drop:7.1f}  {m.back:4.2f}"
        for m in motions
    ]
    return "\n".join(rows)


def add_cli(sub) -> None:
    p = sub.add_parser(
        "name-actions",
        help="name a latent-action world's actions (and give them keys) by what each does in "
        "the world: camera scroll and sprite motion under each held action",
    )
    p.add_argument("--world", required=True, help="world folder (its world.json is updated)")
    p.add_argument(
        "--data",
        help="the world's training data: the start frames are then 12 random frames of it "
        "(else the world's examples), and the codes its LAM never gives are named unused (no key)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the names, do not write them")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the rollouts")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    motions = name_world_actions(args.world, args.data, write=not args.dry_run, seed=args.seed)
    print(motion_table(motions))
    if not args.dry_run:
        print(f"wrote the names and their keys to {Path(args.world) / 'world.json'}")
    return 0
