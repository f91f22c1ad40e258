"""`genie eval` and `genie playtest` on the command line. eval: the arguments of
`genie.eval.protocol.run`. playtest: which levels, which game to replay, which world and its
sampling, then `genie.eval.playtest.run_playtest` and the report (genie/eval/report.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from genie.eval.playtest import SCRIPTS, play_world, resolve_controls, run_playtest
from genie.eval.replay import GamePlayer
from genie.utils.errors import UserError
from genie.utils.precision import PRECISIONS


def add_cli(sub: argparse._SubParsersAction) -> None:
    _add_eval(sub)
    _add_playtest(sub)


def _run_eval(args: argparse.Namespace) -> int:
    from genie.eval.protocol import run as run_protocol

    return run_protocol(args)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a world on held-out episodes: metrics.json + report")
    p.add_argument("--world", required=True, help="world folder")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="test", help="split to evaluate on (default test)")
    p.add_argument(
        "--out", required=True, help="output folder (metrics.json, report.md, plots, GIFs)"
    )
    p.add_argument("--episodes", type=int, default=40, help="episodes, one clip each (default 40)")
    p.add_argument(
        "--context", type=int, default=4, help="real context frames before the rollout (default 4)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-carry",
        action="store_true",
        help="decode every generated patch, even where its token did not change (default: the "
        "world's setting, as the playground plays; both are reported)",
    )
    p.add_argument(
        "--carry-margin",
        type=int,
        help="with carry: also redraw the patches this many tokens around a changed one "
        "(default: the world's sampling.carry_margin, else 0)",
    )
    p.add_argument(
        "--action-transitions",
        type=int,
        default=20000,
        help="frame transitions of the split on which the LAM's latent -> true action accuracy "
        "is measured (all episodes, in LAM-length windows; default 20000)",
    )
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument(
        "--steps",
        type=int,
        help="sampling steps per frame, MaskGIT or diffusion (default: the world's)",
    )
    p.add_argument(
        "--write-labels",
        action="store_true",
        help="name the latent actions from their co-occurrence with true actions in world.json",
    )
    p.set_defaults(func=_run_eval)


def _add_playtest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "playtest",
        help="play the real game and the world side by side under held keys from one start frame",
    )
    p.add_argument("--world", type=Path, required=True, help="world folder")
    p.add_argument("--data", type=Path, required=True,
                   help="dataset recorded from the game: which game and which level seeds")  # fmt: skip
    p.add_argument("--split", default="test", help="split whose levels are played (default test)")
    p.add_argument("--levels", type=_parse_range, metavar="A:B",
                   help="level (env) seeds A..B-1 of the split (default: its first 20)")  # fmt: skip
    p.add_argument("--horizon", type=int, default=64, help="frames played per level (default 64)")
    p.add_argument("--scripts", nargs="+", metavar="NAME",
                   help=f"scripts to play (default all: {', '.join(SCRIPTS)})")  # fmt: skip
    p.add_argument("--track-colour", metavar="R,G,B",
                   help="measure motion by the sprite of this colour instead of the camera's "
                   "scroll (default: world.json playtest.track_colour, else scroll)")  # fmt: skip
    p.add_argument("--start-at", type=int, metavar="N",
                   help="start each level after the game replayed its first N recorded actions "
                   "(for games whose every reset looks the same, e.g. Atari; default: world.json "
                   "playtest.start_at, else 0)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("eval/playtest"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of sticky-random and of sampling")
    p.add_argument("--steps", type=int,
                   help="MaskGIT / denoising steps per frame (default: the world's)")  # fmt: skip
    p.add_argument("--temperature", type=float,
                   help="sampling temperature (default: the world's)")  # fmt: skip
    p.add_argument("--context-noise", type=float,
                   help="diffusion worlds: noise level of generated frames as context (default: the world's)")  # fmt: skip
    p.add_argument("--solver", choices=("euler", "heun"),
                   help="diffusion worlds: sampling solver (default: the world's)")  # fmt: skip
    p.add_argument("--churn", type=float,
                   help="diffusion worlds: EDM S_churn, fresh noise each step (default: the world's)")  # fmt: skip
    p.add_argument("--fused-commit", action=argparse.BooleanOptionalAction,
                   help="diffusion worlds: commit each frame as context in its last denoising "
                   "pass, one network pass fewer (default: the world's)")  # fmt: skip
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): bf16 autocast where this CPU runs it faster")  # fmt: skip
    p.set_defaults(func=run)


def _parse_range(text: str) -> tuple[int, int]:
    from genie.data.record import _parse_range as parse

    return parse(text)


def _recorded_prefix(ds, levels: list[int], n: int) -> np.ndarray | None:
    """(L, n) game actions each level's episode recorded first; None for n = 0."""
    if n < 0:
        raise UserError(f"--start-at must be >= 0 (got {n})")
    if n == 0:
        return None
    from genie.data.format import shard_path

    by_seed = {e.seed: e for e in ds.episodes}
    out = []
    for lv in levels:
        e = by_seed[lv]
        if n >= e.length:
            raise UserError(f"--start-at {n} is past the end of level {lv} ({e.length} frames)")
        acts = np.load(shard_path(ds.root, e.shard, "actions"), mmap_mode="r")
        out.append(np.asarray(acts[e.start : e.start + n], np.int64))
    return np.stack(out)


def _track(text: str | list | None) -> tuple[int, int, int] | None:
    """'214,214,214' (or a list) -> (214, 214, 214); None -> None (track the scroll)."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise UserError(f"--track-colour must be R,G,B with each in 0..255 (got {text})")
    return rgb  # type: ignore[return-value]


def _game(world_meta: dict, ds, size: int) -> tuple[dict, GamePlayer]:
    """The game to replay: world.json actions.game, else the dataset's source."""
    info = world_meta.get("actions", {}).get("game") or ds.game
    if not info:
        raise UserError(
            f"{ds.root} was not recorded from a game (imported video): the play test replays "
            "the game, so give a dataset made by `genie record coinrun|atari`"
        )
    from genie.eval.replay import atari_player, coinrun_player

    if info["kind"] == "coinrun":
        return info, coinrun_player(size, int((ds.manifest.source or {}).get("seed", 0)))
    if info["kind"] == "atari":
        return info, atari_player(info["env"], size)
    raise UserError(f"the play test cannot replay games of kind '{info['kind']}'")


def run(args: argparse.Namespace) -> int:
    from functools import partial

    from genie.data import ClipDataset
    from genie.eval.reconstruction import reconstruct_each
    from genie.eval.report import SHOW_LEVELS
    from genie.eval.report import write_playtest_report as write_report
    from genie.world.engine import WorldEngine
    from genie.world.folder import World

    t0 = time.time()
    if args.horizon < 1:
        raise UserError(f"--horizon must be >= 1 (got {args.horizon})")
    scripts = [s for a in args.scripts or [] for s in a.split(",") if s] or list(SCRIPTS)
    unknown = [s for s in scripts if s not in SCRIPTS]
    if unknown:
        raise UserError(f"unknown script '{unknown[0]}': use {', '.join(SCRIPTS)}")
    ds = ClipDataset(args.data, args.split, clip_len=1)
    distinct = ds.distinct_actions
    if not distinct:
        raise UserError(f"{args.data} records no actions: the play test presses the game's keys")
    seeds = sorted(e.seed for e in ds.episodes if e.seed is not None)
    levels = list(range(*args.levels)) if args.levels else seeds[:20]
    outside = [lv for lv in levels if lv not in set(seeds)]
    if outside or not levels:
        raise UserError(
            f"level {outside[0] if outside else '?'} is not in split '{args.split}' of {args.data} "
            f"(its level seeds: {seeds[0]}..{seeds[-1]} with gaps, {len(seeds)} in all)"
        )
    world = World.from_folder(args.world)
    game_info, game = _game(world.meta, ds, world.frame_size[0])
    actions = world.meta.get("actions", {})
    controls = resolve_controls(
        list(distinct["labels"]),
        [int(a) for a in distinct["game_action"]],
        world.action_labels,
        actions.get("game_actions") if actions.get("source") == "true" else None,
    )
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1 (got {args.steps})")
    if args.temperature is not None and args.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (got {args.temperature})")
    engine = WorldEngine(
        world,
        seed=args.seed,
        steps=args.steps,
        temperature=args.temperature,
        max_undo=0,  # nothing to undo here
        precision=args.precision,
    )
    options = dict(engine.sampling.options)
    for key in ("context_noise", "solver", "churn", "fused_commit"):  # the diffusion sampler's
        value = getattr(args, key)
        if value is None:
            continue
        if key not in options:
            raise UserError(f"--{key.replace('_', '-')} needs a diffusion world")
        if key not in ("solver", "fused_commit") and value < 0:
            raise UserError(f"--{key.replace('_', '-')} must be >= 0 (got {value})")
        options[key] = value
    engine.sampling = engine.sampling.replace(options=options)
    track = _track(args.track_colour or world.meta.get("playtest", {}).get("track_colour"))
    play = partial(play_world, engine, seed=args.seed, progress=True)
    clock = {"seconds": 0.0, "frames": 0}

    def player(starts, actions):  # the world's time per generated frame, levels batched
        t = time.perf_counter()
        out = play(starts, actions)
        clock["seconds"] += time.perf_counter() - t
        clock["frames"] += int(np.prod(actions.shape))
        return out

    print(f"play test: {len(levels)} levels x {len(scripts)} scripts x {args.horizon} frames")
    start_at = args.start_at
    if start_at is None:
        start_at = int(world.meta.get("playtest", {}).get("start_at", 0))
    prefix = _recorded_prefix(ds, levels, start_at)
    metrics, frames = run_playtest(
        game, player, controls, levels, args.horizon, scripts, args.seed, log=print, track=track,
        prefix=prefix,
    )  # fmt: skip
    metrics.update(
        world=str(args.world),
        data=str(args.data),
        split=args.split,
        game=game_info,
        world_action_source=actions.get("source", "lam"),
        sampling={
            engine.sampling.steps_key: engine.steps,
            "temperature": engine.temperature,
            **engine.sampling.options,
        },
        precision=engine.precision,
        ms_per_frame_batched=round(1000 * clock["seconds"] / max(clock["frames"], 1), 2),
        seconds=round(time.time() - t0, 1),
    )
    for f in frames.values():  # the strips' middle row: what the world's decoder draws at best
        f["recon"] = reconstruct_each(
            engine.tokenizer, f["game"][:SHOW_LEVELS], engine.representation, engine.precision
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(args.out, metrics, frames)
    m = metrics["mean"].get(str(args.horizon), {})
    if m:
        print(
            f"t={args.horizon}: world PSNR {m['psnr']:.2f} dB (holding the start frame "
            f"{m['hold_start_psnr']:.2f}), sharpness {m['sharpness']:.2f}, colour drift "
            f"{m['colour_drift_pct']:.1f}%; keys missing: {', '.join(controls.missing) or 'none'}"
        )
    print(f"wrote {args.out / 'report.md'} and {args.out / 'metrics.json'}")
    return 0
