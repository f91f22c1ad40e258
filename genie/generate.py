"""`genie generate`: an image prompt + an action sequence -> a video clip.

    genie generate --world worlds/coinrun --image start.png --actions right*8,jump,left*4 --out clip.mp4
    genie generate --world worlds/coinrun --actions random --frames 64 --samples 4 --out futures.gif

Actions are ids or labels separated by commas; `NAME*N` repeats one N times; `random` draws
uniformly (seeded by --seed). A sequence shorter than --frames repeats from its start (it
cycles); --frames defaults to the sequence's length (32 for `random`). The clip holds the
start frame followed by the generated frames (--frames + 1 in all). With --samples K the K
futures play side by side, each sampled independently under the same actions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from genie.utils.errors import UserError

DEFAULT_RANDOM_FRAMES = 32
MAX_FRAMES = 10_000
MAX_SAMPLES = 16


def parse_actions(spec: str, engine, frames: int | None = None, seed: int = 0) -> list[int]:
    """'0,0,right*3' or 'random' -> action ids, `frames` long (cycled) when given.
    Raises UserError for an unknown action or an empty sequence."""
    spec = (spec or "").strip()
    if spec.lower() == "random":
        n = frames or DEFAULT_RANDOM_FRAMES
        return [int(a) for a in np.random.default_rng(seed).integers(0, engine.num_actions, size=n)]
    seq: list[int] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, count = item.rpartition("*") if "*" in item else (item, "", "1")
        try:
            n = int(count)
        except ValueError:
            raise UserError(f"'{item}': write a repeat as ACTION*N, e.g. right*4") from None
        if not 0 < n <= MAX_FRAMES:
            raise UserError(f"'{item}': the repeat count must be 1..{MAX_FRAMES}")
        seq += [engine.action_id(name.strip())] * n
    if not seq:
        raise UserError(
            "no actions given: e.g. --actions 0,0,3,3 or --actions right*8 or --actions random"
        )
    if frames is not None:
        seq = [seq[i % len(seq)] for i in range(frames)]
    return seq


def generate_clip(
    engine, prompt, actions: list[int], samples: int = 1, progress: bool = False
) -> np.ndarray:
    """Reset `engine` to `prompt` and play `actions`. Returns uint8 (S, K+1, H, W, 3): for each
    of the S samples, the start frame then K generated frames."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise UserError(f"samples must be 1..{MAX_SAMPLES}")
    start = engine.reset(prompt)
    if samples == 1:
        clip = engine.rollout(actions, progress=progress)[None]  # (1, K, H, W, 3)
    else:
        clip = engine.sample_futures(actions, samples, progress=progress).swapaxes(
            0, 1
        )  # (S, K, ...)
    starts = np.broadcast_to(start, (clip.shape[0], 1, *start.shape))
    return np.concatenate([starts, clip], axis=1)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="image prompt + actions -> video clip (mp4, gif or png strip)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--world", required=True, help="world folder (tokenizer/, dynamics/, world.json)"
    )
    p.add_argument(
        "--image", help="start image, any size or format (default: the world's first example)"
    )
    p.add_argument(
        "--actions",
        default="random",
        help="ids/labels, e.g. 0,0,3,3 or right*8,left*4, or 'random' (default)",
    )
    p.add_argument(
        "--frames", type=int, help="frames to generate (default: the length of --actions)"
    )
    p.add_argument(
        "--out",
        default="clip.mp4",
        help="output file: .mp4, .gif or .png (strip) (default clip.mp4)",
    )
    p.add_argument(
        "--samples", type=int, default=1, help="K different futures side by side (default 1)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed for sampling and for --actions random"
    )
    p.add_argument(
        "--steps",
        type=int,
        help="sampling steps per frame, MaskGIT or diffusion (default: the world's)",
    )
    p.add_argument(
        "--temperature", type=float, help="sampling temperature, 0 = greedy (default: the world's)"
    )
    p.add_argument(
        "--fps", type=float, default=15, help="frames per second of the video (default 15)"
    )
    p.add_argument(
        "--scale", type=int, default=4, help="nearest-neighbour upscale factor (default 4)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from genie.utils.video import FORMATS, MAX_SCALE, check_size, tile, write_video
    from genie.world.engine import WorldEngine

    out = Path(args.out)
    if out.suffix.lower() not in FORMATS:  # fail before loading anything
        raise UserError(f"--out {out}: use a file name ending in {', '.join(FORMATS)}")
    if args.frames is not None and not 1 <= args.frames <= MAX_FRAMES:
        raise UserError(f"--frames must be 1..{MAX_FRAMES}")
    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be >= 1")
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise UserError(f"--samples must be 1..{MAX_SAMPLES}")
    if not 1 <= args.scale <= MAX_SCALE:
        raise UserError(f"--scale must be 1..{MAX_SCALE}, got {args.scale}")
    if args.temperature is not None and args.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (0: greedy), got {args.temperature}")
    if args.fps <= 0:
        raise UserError(f"--fps must be > 0, got {args.fps}")
    if args.image is not None and not Path(args.image).is_file():
        raise UserError(f"image {args.image} not found")
    engine = WorldEngine.load(
        args.world, seed=args.seed, steps=args.steps, temperature=args.temperature
    )
    prompt = args.image
    if prompt is None:
        if not engine.world.examples:
            raise UserError(
                f"world {args.world} has no examples/*.png: give a start image with --image"
            )
        prompt = engine.world.examples[0]
    actions = parse_actions(args.actions, engine, args.frames, args.seed)
    s, gap = engine.frame_size, 1  # the clip's frame: samples side by side, 1 pixel apart
    check_size(len(actions) + 1, s, args.samples * (s + gap) - gap, args.scale)  # before playing
    clips = generate_clip(engine, prompt, actions, args.samples, progress=True)  # (S, K+1, H, W, 3)
    video = tile(clips, gap=gap) if args.samples > 1 else clips[0]
    write_video(out, video, fps=args.fps, scale=args.scale)
    print(
        f"wrote {out} ({len(video)} frames: start + {len(actions)} generated, {args.samples} sample(s))"
    )
    return 0
