"""`genie eval`: the numbers a world is judged by (docs/DESIGN.md "Metrics").

For each of K held-out episodes one clip of C context + 16 frames is taken at a seeded
position. Then:

* tokenizer: PSNR / SSIM of encode -> decode, codebook usage over all eval tokens;
* LAM: PSNR of its next-frame reconstruction, accuracy of the best latent -> true mapping
  (fitted on half of the clips, scored on the other half; and fitted on all, as Genie reports);
* dynamics: rollouts played by the world engine (what a player sees: `WorldEngine`, one row
  per clip, clip j seeded seed + j) from C real frames with the latent actions the LAM infers
  from the ground truth; PSNR / SSIM at horizons 1, 4, 8, 16 beside the copy-the-last-frame
  baseline; ΔtPSNR@4 = PSNR(x_t, x̂_t) − PSNR(x_t, x̂'_t) with x̂' rolled out under uniformly
  random latent actions (Genie §3 "controllability"), from the same seeds.

Per-frame PSNR is capped at 50 dB so identical frames don't dominate means.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HORIZONS = (1, 4, 8, 16)


def pick_clips(ds, episodes: int, seed: int) -> list[int]:
    """One clip per episode (shard, in-episode stretch), at a seeded random position."""
    rng = np.random.default_rng(seed)
    by_episode: dict[int, list[int]] = {}
    for i, eid in enumerate(_episode_of_clips(ds, range(len(ds)))[0]):
        by_episode.setdefault(int(eid), []).append(i)
    chosen = []
    for eid in sorted(by_episode)[:episodes]:
        chosen.append(int(rng.choice(by_episode[eid])))
    return chosen


def infer_actions_windowed(lam, frames, window: int):
    """Latent actions for a long clip, in overlapping windows of the LAM's trained length.
    frames (B, T, H, W, 3) uint8 -> (B, T-1)."""
    import torch

    t = frames.shape[1]
    out = []
    start = 0
    while start < t - 1:
        end = min(t, start + window)
        out.append(lam.infer_actions(frames[:, start:end]))
        start = end - 1
    return torch.cat(out, dim=1)


def latent_and_true_actions(lam, data, split: str, window: int, max_transitions: int, batch: int):
    """The LAM's latent action and the recorded one for up to `max_transitions` transitions of
    a split: every episode, in consecutive non-overlapping windows of `window` frames, spread
    evenly over the episodes. -> (latent, true, episode, step) int arrays of the same length:
    the episode's id and the transition's first frame within it; true is -1 where unknown."""
    import torch
    from tqdm import tqdm

    from genie.data import ClipDataset, collate_clips

    ds = ClipDataset(data, split=split, clip_len=window, stride=window - 1)
    per_clip = window - 1
    want = max(1, min(len(ds), -(-max_transitions // per_clip)))
    idx = np.linspace(0, len(ds) - 1, want).round().astype(int)
    episode_of, offset_of = _episode_of_clips(ds, idx)
    latent, true, episode, step = [], [], [], []
    for i in tqdm(range(0, len(idx), batch), desc="latent actions", unit="batch"):
        part = idx[i : i + batch]
        clips = collate_clips([ds[int(j)] for j in part])
        with torch.no_grad():
            latent.append(lam.infer_actions(clips["frames"]).numpy())
        true.append(clips["actions"][:, :-1].numpy())
        episode.append(np.repeat(episode_of[i : i + batch, None], per_clip, 1))
        step.append(offset_of[i : i + batch, None] + np.arange(per_clip))
    return tuple(np.concatenate(x).reshape(-1) for x in (latent, true, episode, step))


def _episode_of_clips(ds, idx) -> tuple[np.ndarray, np.ndarray]:
    """Episode id of each clip index in idx, and the clip's first frame within that episode."""
    bounds = [(e.shard, e.start, e.start + e.length, e.id) for e in ds.episodes]
    ids, offsets = [], []
    for i in idx:
        shard, start = ds.clip_location(int(i))
        a, eid = next((a, eid) for s, a, b, eid in bounds if s == shard and a <= start < b)
        ids.append(eid)
        offsets.append(start - a)
    return np.asarray(ids), np.asarray(offsets)


MIN_LIFT_ABS = 0.1  # a name needs its share of a latent's steps >= the data's share + 10 points
MIN_LIFT_REL = 1.3  # ... and >= 1.3x the data's share


def name_latent_actions(
    latent, true, num_latent: int, true_labels: list[str]
) -> tuple[list[str], np.ndarray]:
    """Name each latent action after the true actions it co-occurs with. CoinRun's labels are
    combined into what the agent visibly does (left / right / jump / idle); a part of a name is
    given only when the latent co-occurs with it clearly more than the data does overall
    (MIN_LIFT_ABS, MIN_LIFT_REL), else the latent is called "action k"."""
    latent = np.asarray(latent).reshape(-1)
    true = np.asarray(true).reshape(-1)
    counts = np.zeros((num_latent, len(true_labels)), dtype=np.int64)
    np.add.at(counts, (latent, true), 1)

    def visible(label: str) -> tuple[str, str]:
        low = label.lower()
        horiz = "right" if "right" in low else "left" if "left" in low else ""
        vert = "jump" if ("jump" in low or low in ("up", "w")) else ""
        return vert, horiz

    # each true action as (vertical, horizontal) part; base rates over all latents
    parts_of = [visible(lab) for lab in true_labels]

    def share(row: np.ndarray, axis: int, value: str) -> float:
        return sum(row[j] for j, p in enumerate(parts_of) if p[axis] == value) / max(row.sum(), 1)

    def clear(row: np.ndarray, axis: int, value: str) -> bool:
        """The latent co-occurs with `value` clearly more often than the data does overall."""
        mine, base = share(row, axis, value), share(counts.sum(0), axis, value)
        return mine - base >= MIN_LIFT_ABS and mine >= MIN_LIFT_REL * base

    names = []
    for k in range(num_latent):
        row = counts[k]
        if row.sum() == 0:
            names.append(f"unused {k}")
            continue
        horiz = [h for h in ("right", "left") if clear(row, 1, h)]
        vert = "jump" if clear(row, 0, "jump") else ""
        h = max(horiz, key=lambda x: share(row, 1, x)) if horiz else ""
        if vert or h:
            names.append(" ".join(p for p in (vert, h) if p))
        elif clear(row, 1, "") and share(row, 0, "jump") <= share(counts.sum(0), 0, "jump"):
            names.append("idle")  # neither sideways nor up, more often than the data overall
        else:
            names.append(f"action {k}")  # no clear meaning: a generic name, not a wrong one
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n} {seen[n]}")
    return unique, counts


@dataclass
class Rollouts:
    """One batch of eval clips played by the engine: uint8 frames (B, K, H, W, 3)."""

    frames: np.ndarray  # under the LAM's actions, as the player sees them
    decoded: np.ndarray  # the same, the decoder's pixels before skip-block carry
    random: np.ndarray  # (B, 4, H, W, 3) under uniformly random actions, the same seeds


def play_clips(engine, frames, actions, context: int, horizon: int, seeds, random_actions):
    """Play each clip from its first `context` frames (and the actions between them) on, under
    its next `horizon` actions, then again under `random_actions` (B, R).
    frames: uint8 (B, T, H, W, 3); actions: (B, T-1); seeds: one per clip."""
    c = context
    engine.reset(frames[:, :c], seed=seeds, actions=actions[:, : c - 1])
    played = engine.play(actions[:, c - 1 : c - 1 + horizon])
    engine.reset(frames[:, :c], seed=seeds, actions=actions[:, : c - 1])
    return Rollouts(played.frames, played.decoded, engine.rollout(random_actions))


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from genie.data import ClipDataset, collate_clips
    from genie.eval.reconstruction import reconstruct
    from genie.utils.errors import UserError
    from genie.utils.images import to_float
    from genie.utils.metrics import action_accuracy, gradient_magnitude, psnr, ssim
    from genie.world.engine import WorldEngine
    from genie.world.folder import World, read_meta, set_action_labels

    t0 = time.time()
    root = Path(args.world)
    if (root / "tokenizer" / "config.json").is_file() and not (root / "dynamics").is_dir():
        from genie.eval.reconstruction import reconstruction_only

        return reconstruction_only(args)  # a world whose dynamics is not trained yet
    # a world trained on true actions has no LAM: its clips play the recorded actions
    true_actions = read_meta(args.world).get("actions", {}).get("source") == "true"
    world = World.from_folder(args.world, with_lam=not true_actions)
    if args.carry_margin is not None and args.carry_margin < 0:
        raise UserError(f"--carry-margin must be >= 0, got {args.carry_margin}")
    engine = WorldEngine(
        world,
        seed=args.seed,
        steps=args.steps,
        carry_unchanged=False if args.no_carry else None,
        carry_margin=args.carry_margin,
        max_undo=0,
    )
    carry, margin = engine.carry_unchanged, engine.sampling.carry_margin
    tok, lam = world.tokenizer, world.lam
    c = args.context
    if c < 1:
        raise UserError("--context must be >= 1")
    ds = ClipDataset(args.data, split=args.split, clip_len=c + max(HORIZONS), stride=4)
    if ds.frame_size != world.frame_size:
        raise UserError(f"dataset frames are {ds.frame_size}, the world's are {world.frame_size}")
    clips = pick_clips(ds, args.episodes, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lam_window = getattr(lam.config, "max_frames", 16) if lam is not None else 0
    distinct = None
    if lam is None:
        if not ds.num_actions:
            raise UserError(f"{args.data} records no actions to play this true-action world with")
        # recorded action -> world action: the distinct one it collapses to, as in training
        of = (ds.distinct_actions or {}).get("of") or list(range(ds.num_actions))
        distinct = torch.as_tensor(of)

    acc: dict[str, list] = {
        k: []
        for k in (
            "tok_psnr",
            "tok_ssim",
            "tok_ids",
            "tok_sharp",
            "lam_psnr",
            "dyn_psnr",
            "dyn_ssim",
            "copy_psnr",
            "copy_ssim",
            "rand_psnr4",
            "plain_psnr",
        )
    }
    examples = []
    batches = range(0, len(clips), args.batch_size)
    k = max(HORIZONS)
    for start in tqdm(batches, desc="evaluating", unit="batch"):
        idx = clips[start : start + args.batch_size]
        batch = collate_clips([ds[i] for i in idx])
        frames = batch["frames"]  # (B, T, H, W, 3) uint8
        truth = to_float(frames)
        with torch.no_grad():  # what the world draws with: its codes, or its continuous latents
            recon, ids = reconstruct(tok, frames, engine.representation)
            if ids is not None:
                acc["tok_ids"].append(ids.flatten())
            acc["tok_psnr"].append(psnr(recon, truth).flatten())
            acc["tok_ssim"].append(ssim(recon, truth).flatten())
            acc["tok_sharp"].append(
                torch.stack(
                    [gradient_magnitude(recon).flatten(), gradient_magnitude(truth).flatten()]
                )
            )
            if lam is None:
                latent = distinct[batch["actions"][:, :-1]]  # (B, T-1) the recorded actions
            else:
                lam_out = lam(frames[:, : min(lam_window, frames.shape[1])])
                acc["lam_psnr"].append(
                    psnr(
                        lam.predicted_frames(lam_out).float(),
                        truth[:, 1 : lam_out.actions.shape[1] + 1],
                    ).flatten()
                )
                latent = infer_actions_windowed(lam, frames, lam_window)  # (B, T-1)
        # clip j of the eval: seed + j and its own random actions, whatever the batch size
        order = range(start, start + len(idx))
        seeds = [args.seed + j for j in order]
        rngs = [np.random.default_rng([abs(args.seed), j]) for j in order]
        rand_actions = np.stack([r.integers(0, world.num_actions, 4) for r in rngs])
        played = play_clips(engine, frames, latent, c, k, seeds, rand_actions)
        gen_frames = to_float(torch.from_numpy(played.frames))
        rand_frames = to_float(torch.from_numpy(played.random))
        future = truth[:, c : c + k]
        last = truth[:, c - 1 : c].expand_as(future)
        acc["plain_psnr"].append(psnr(to_float(torch.from_numpy(played.decoded)), future))
        acc["dyn_psnr"].append(psnr(gen_frames, future))
        acc["dyn_ssim"].append(ssim(gen_frames, future))
        acc["copy_psnr"].append(psnr(last, future))
        acc["copy_ssim"].append(ssim(last, future))
        acc["rand_psnr4"].append(psnr(rand_frames[:, 3], future[:, 3]))
        if start == 0:
            examples = (frames[:4].numpy(), played.frames[:4], played.random[:4], c)

    cat = {
        k: torch.cat(v, dim=-1 if k == "tok_sharp" else 0) if v else None for k, v in acc.items()
    }
    sharp = cat["tok_sharp"].mean(1)  # (2,) mean gradient: reconstruction, real
    dyn_psnr, copy_psnr = cat["dyn_psnr"], cat["copy_psnr"]  # (E, 16)
    metrics = {
        "tokenizer": {  # frames encoded and decoded, no dynamics: what the world can draw
            "kind": type(tok).model_type,
            "representation": engine.representation,
            "psnr": cat["tok_psnr"].mean().item(),
            "ssim": cat["tok_ssim"].mean().item(),
            "sharpness": (sharp[0] / sharp[1].clamp_min(1e-8)).item(),  # reconstruction / real
            **(
                {"codebook_usage": torch.unique(cat["tok_ids"]).numel() / tok.num_codes}
                if cat["tok_ids"] is not None
                else {}
            ),
        },
        "lam": (
            {"psnr": cat["lam_psnr"].mean().item(), "num_actions": lam.num_actions}
            if lam is not None
            else {"absent": "a true-action world: clips play the recorded actions"}
        ),
        "dynamics": {
            "psnr": {str(h): dyn_psnr[:, h - 1].mean().item() for h in HORIZONS},
            "ssim": {str(h): cat["dyn_ssim"][:, h - 1].mean().item() for h in HORIZONS},
            "baseline_copy_last_psnr": {
                str(h): copy_psnr[:, h - 1].mean().item() for h in HORIZONS
            },
            "baseline_copy_last_ssim": {
                str(h): cat["copy_ssim"][:, h - 1].mean().item() for h in HORIZONS
            },
            "carry_unchanged": carry,
            "carry_margin": margin if carry else None,
            "psnr_plain_decode": {
                str(h): cat["plain_psnr"][:, h - 1].mean().item() for h in HORIZONS
            },
            "psnr_random_actions_4": cat["rand_psnr4"].mean().item(),
            "delta_psnr_4": (dyn_psnr[:, 3] - cat["rand_psnr4"]).mean().item(),
            **{engine.sampling.steps_key: engine.steps},  # maskgit_steps or diffusion_steps
        },
        "protocol": {
            "world": str(args.world),
            "data": str(args.data),
            "split": args.split,
            "episodes": len(clips),
            "context_frames": c,
            "seed": args.seed,
            "psnr_cap_db": 50,
            "seconds": round(time.time() - t0, 1),
        },
    }
    if ds.num_actions and lam is not None:
        latent, true, episode, _ = latent_and_true_actions(
            lam, args.data, args.split, lam_window, args.action_transitions, 32
        )
        ok = true >= 0
        latent, true, episode = latent[ok], true[ok], episode[ok]
        scores = action_accuracy(latent, true, episode, lam.num_actions, ds.num_actions, args.seed)
        names, counts = name_latent_actions(
            latent,
            true,
            lam.num_actions,
            ds.action_labels or [str(i) for i in range(ds.num_actions)],
        )
        metrics["lam"].update(
            {
                **scores,
                "latent_names": names,
                "cooccurrence": counts.tolist(),
            }
        )
        if args.write_labels and world.meta.get("actions", {}).get("source", "lam") == "lam":
            set_action_labels(args.world, names)
            print(f"named latent actions in {Path(args.world) / 'world.json'}: {names}")

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    from genie.eval.report import write_protocol_report as write_report

    write_report(out, metrics, examples)
    d = metrics["dynamics"]
    tok_m = metrics["tokenizer"]
    usage = f", codebook usage {tok_m['codebook_usage']:.0%}" if "codebook_usage" in tok_m else ""
    print(
        f"{tok_m['kind']} reconstruction PSNR {tok_m['psnr']:.2f} dB, SSIM {tok_m['ssim']:.3f}, "
        f"sharpness {tok_m['sharpness']:.2f}{usage}"
    )
    print(
        "dynamics PSNR  "
        + "  ".join(
            f"t={h}: {d['psnr'][str(h)]:.2f} (copy {d['baseline_copy_last_psnr'][str(h)]:.2f})"
            for h in HORIZONS
        )
    )
    print(
        f"ΔtPSNR@4 {d['delta_psnr_4']:+.2f} dB; action accuracy {metrics['lam'].get('action_accuracy', float('nan')):.1%}"
    )
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'} in {time.time() - t0:.0f} s")
    return 0
