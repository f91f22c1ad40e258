"""`genie bench play`: how fast a world plays, in the engine and as a player sees it.

    genie bench play --world worlds/coinrun                 # engine; + browser if chromium exists
    genie bench play --world worlds/coinrun --json --frames 300 --no-browser
    genie bench play --world worlds/coinrun --players 1,4,8,16      # many players (play_load.py)
    genie bench play --world worlds/coinrun --players 20 --memory-rounds 3   # server RSS

Engine: `engine.step` at batch 1 on CPU after a warm-up; frames/s and p50/p95 latency.
Browser (headless Chromium via Playwright): the playground is launched in this process and
driven with real key events: the round trip from a key press to a new frame on screen, and
the frames/s the page shows while a key is held (frames stream; see genie/serve/app.py).
"""

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

from genie.serve.browser import CHROMIUM, CHROMIUM_ARGS, FRAME, PRESS_JS, PROBE_JS
from genie.utils.errors import UserError
from genie.utils.precision import PRECISIONS


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--world", required=True, help="world folder")
    p.add_argument("--frames", type=int, default=200, help="engine steps to time (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1, as `genie play`)"
    )
    p.add_argument(
        "--steps",
        type=int,
        help="sampling steps per frame, MaskGIT or diffusion (default: the world's)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (default; GENIE_PRECISION overrides): bf16 autocast where this CPU runs it "
        "faster than fp32; compare with a second run in the other",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    b = p.add_mutually_exclusive_group()
    b.add_argument(
        "--browser",
        dest="browser",
        action="store_true",
        default=None,
        help="also measure in headless Chromium (default: if /usr/bin/chromium exists)",
    )
    b.add_argument("--no-browser", dest="browser", action="store_false", help="engine only")
    p.add_argument(
        "--presses", type=int, default=30, help="key presses timed in the browser (default 30)"
    )
    p.add_argument(
        "--hold", type=float, default=3.0, help="seconds a key is held in the browser (default 3)"
    )
    m = p.add_argument_group("many players (genie/serve/drills.py)")
    m.add_argument(
        "--players",
        help="comma-separated player counts, e.g. 1,4,8,16: frames/s per player and in total, "
        "p95 latency, each player holding a key (instead of the engine and browser numbers); "
        "with --browser: that many headless-Chromium tabs, frames/s each tab shows",
    )
    m.add_argument(
        "--seconds", type=float, default=15.0, help="seconds timed per player count (default 15)"
    )
    m.add_argument(
        "--no-batch",
        dest="batch",
        action="store_false",
        help="each player steps alone (as before batched serving), to compare",
    )
    m.add_argument(
        "--memory-rounds",
        type=int,
        default=0,
        help="instead: run `genie play` and this many rounds of --players API players; report "
        "its RSS idle, at each round's peak and --settle seconds after",
    )
    m.add_argument("--settle", type=float, default=60.0, help="seconds after a round (default 60)")
    m.add_argument(
        "--player-steps", type=int, default=30, help="/step calls per API player (default 30)"
    )
    m.add_argument(
        "--stay",
        type=int,
        default=0,
        help="with --memory-rounds: this many of the first round's players stay connected "
        "to the end",
    )


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
    }


def bench_engine(engine, frames: int, warmup: int, seed: int = 0) -> dict:
    """Time `frames` steps under random actions held for 4 steps, as a player would."""
    rng = np.random.default_rng(seed)
    actions = np.repeat(rng.integers(0, engine.num_actions, size=(frames + warmup) // 4 + 1), 4)
    engine.reset(
        engine.world.examples[0] if engine.world.examples else np.zeros((8, 8, 3), np.uint8)
    )
    for a in actions[:warmup]:
        engine.step(int(a))
    times = []
    start = time.perf_counter()
    for a in actions[warmup : warmup + frames]:
        t = time.perf_counter()
        engine.step(int(a))
        times.append(1000 * (time.perf_counter() - t))
    total = time.perf_counter() - start
    flops = step_flops(engine, int(actions[0]))
    peak = peak_gflops(engine.precision)
    gflops = flops / 1e9 / (float(np.median(times)) / 1000)
    return {
        "fps": round(frames / total, 1),
        **percentiles(times),
        "mean_ms": round(float(np.mean(times)), 1),
        "gflop_per_frame": round(flops / 1e9, 3),
        "gflop_per_s": round(gflops, 1),
        "peak_gflop_per_s": round(peak, 1),
        "fraction_of_peak": round(gflops / peak, 3),
    }


def step_flops(engine, action: int) -> float:
    """Model FLOPs of one played frame (matmuls, convolutions, attention), counted by
    torch.utils.flop_counter on a throw-away copy of the engine's state."""
    from torch.utils.flop_counter import FlopCounterMode

    fork = engine._fork([engine.seed])
    fork.overlap = False  # the counter sees this thread's ops only
    with FlopCounterMode(display=False) as counter:
        fork.step(action)
    return float(counter.get_total_flops())


def peak_gflops(precision: str) -> float:
    """This machine's matmul peak (2048^2 products, torch's threads) in the play precision."""
    import torch

    from genie.utils.precision import matmul_peak_gflops

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return matmul_peak_gflops(n=1024, dtype=dtype)


def bench_browser(
    world, presses: int, hold_s: float, steps: int | None, precision: str | None = None
) -> dict:
    """Launch the playground here and drive it from headless Chromium."""
    from playwright.sync_api import sync_playwright

    from genie.serve import app as playground

    # no game clock: its frames would arrive between key presses and fake the round trips
    from genie.serve.browser import free_port

    demo = playground.build_demo(
        world, max_players=2, seed=0, steps=steps, clock=False, precision=precision
    )
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url, wait_until="load")  # Gradio keeps a connection open: never "networkidle"
            page.wait_for_selector(FRAME, timeout=60_000)
            page.evaluate(PROBE_JS)
            key = _a_key(demo)
            round_trips = []
            for i in range(presses + 3):
                ms = page.evaluate(PRESS_JS, key)
                if ms < 0:
                    raise RuntimeError("no frame arrived within 10 s of a key press")
                if i >= 3:  # the first presses warm up the page and the server
                    round_trips.append(ms)
                time.sleep(0.25)  # let the tap's stream end before the next press
            n0 = len(page.evaluate("() => window.__genie.times"))
            page.evaluate(
                "(k) => document.dispatchEvent(new KeyboardEvent('keydown', {key: k}))", key
            )
            time.sleep(hold_s + 0.5)
            page.evaluate(
                "(k) => document.dispatchEvent(new KeyboardEvent('keyup', {key: k}))", key
            )
            times = page.evaluate("() => window.__genie.times")[n0:]
            browser.close()
    finally:
        demo.close()
    times = np.asarray(times)
    held = times[times >= times[0] + 500] if len(times) > 1 else times  # skip the first 0.5 s
    gaps = np.diff(held)
    span = (held[-1] - held[0]) / 1000 if len(held) > 1 else float("inf")
    out = {f"browser_press_{k}": v for k, v in percentiles(round_trips).items()}
    out["browser_held_fps"] = round((len(held) - 1) / span, 1) if len(held) > 1 else 0.0
    out["browser_held_frames"] = int(len(times))
    out["browser_held_gap_p95_ms"] = round(float(np.percentile(gaps, 95)), 1) if len(gaps) else None
    return out


def _a_key(demo) -> str:
    """A key bound to some action (the first action with a key)."""
    from genie.world.folder import default_keys

    keys = demo.world.action_keys or default_keys(demo.world.action_labels)
    for ks in keys:
        if ks:
            return ks[0] if len(ks[0]) > 1 else ks[0].lower()
    raise UserError("this world's actions have no keyboard keys to press")


def run(args: argparse.Namespace) -> int:
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:  # leave the process as it was (the bench also runs inside test sessions)
        torch.set_num_threads(threads)


def _player_counts(text: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or max(counts) > 64:
        raise UserError(f"--players {text}: give player counts 1..64, e.g. 1,4,8,16")
    return counts


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.frames < 1:
        raise UserError("--frames must be >= 1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.players is not None:
        return _run_players(args, _player_counts(args.players))
    from genie.world.engine import WorldEngine

    engine = WorldEngine.load(args.world, seed=0, steps=args.steps, precision=args.precision)
    result = {
        "world": str(args.world),
        "precision": engine.precision,
        "frame_size": engine.frame_size,
        engine.sampling.steps_key: engine.steps,  # maskgit_steps or diffusion_steps
        "threads": torch.get_num_threads(),
        "frames": args.frames,
        **bench_engine(engine, args.frames, args.warmup),
    }
    browser = args.browser if args.browser is not None else CHROMIUM.exists()
    if browser:
        if not CHROMIUM.exists():
            raise UserError(f"--browser needs {CHROMIUM} (apt-get install chromium)")
        with contextlib.redirect_stdout(sys.stderr):  # Gradio prints while starting/closing
            result.update(
                bench_browser(engine.world, args.presses, args.hold, args.steps, engine.precision)
            )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['world']}: engine.step {result['fps']} frames/s, p50 {result['p50_ms']} ms, "
            f"p95 {result['p95_ms']} ms ({result['threads']} threads, {engine.steps} {engine.sampling.steps_key}, "
            f"{engine.precision}; {result['gflop_per_frame']} GFLOP a frame = {result['fraction_of_peak']:.0%} "
            f"of this machine's {engine.precision} matmul peak {result['peak_gflop_per_s']:.0f} GFLOP/s)"
        )
        if browser:
            print(
                f"browser: key press -> new frame p50 {result['browser_press_p50_ms']} ms, "
                f"p95 {result['browser_press_p95_ms']} ms; key held: {result['browser_held_fps']} frames/s shown"
            )
    sys.stdout.flush()
    return 0


def _run_players(args: argparse.Namespace, counts: list[int]) -> int:
    from genie.serve import drills as play_load
    from genie.world.folder import World

    if args.memory_rounds:
        if len(counts) != 1 or args.memory_rounds < 1 or args.settle < 0:
            raise UserError("--memory-rounds R takes one --players N and --settle >= 0")
        World.from_folder(args.world)  # a bad folder fails here, not inside the server
        out = play_load.memory_drill(
            args.world, counts[0], args.memory_rounds, args.settle, args.player_steps, args.stay
        )
        if args.json:
            print(json.dumps(out))
            return 0
        stay = f", {args.stay} of the first round staying" if args.stay else ""
        print(
            f"{args.world}: {out['players']} API players x {args.player_steps} steps a round{stay}"
        )
        print(f"  idle RSS {out['idle_mb']} MB")
        for i, r in enumerate(out["rounds"]):
            errors = f", {len(r['errors'])} failed: {r['errors'][0]}" if r["errors"] else ""
            print(
                f"  round {i + 1}: {r['seconds']} s, peak {r['peak_mb']} MB, {args.settle:g} s "
                f"after the last player left {r['after_mb']} MB (load {r['load_avg']}){errors}"
            )
        return 0
    world = World.from_folder(args.world)
    if args.browser:
        if not CHROMIUM.exists():
            raise UserError(f"--browser needs {CHROMIUM} (apt-get install chromium)")
        with contextlib.redirect_stdout(sys.stderr):  # Gradio prints while starting/closing
            tabs = [
                play_load.bench_tabs(world, n, args.seconds, args.batch, args.precision)
                for n in counts
            ]
        if args.json:
            print(json.dumps(tabs))
            return 0
        for r in tabs:
            print(
                f"{r['tabs']} tabs holding a key ({'batched' if r['batched'] else 'alone'}): "
                f"{r['fps_per_tab']} frames/s shown per tab (min {r['fps_per_tab_min']}), "
                f"{r['fps_total']} in total, load {r['load_avg']}"
            )
        return 0
    rows = [
        play_load.bench_players(world, n, args.seconds, batch=args.batch, precision=args.precision)
        for n in counts
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    how = "batched" if args.batch else "each player alone"
    from genie.utils.precision import default_precision, resolve_precision

    _, why = resolve_precision(args.precision or default_precision())
    print(f"{args.world} ({how}, {why}, {args.seconds:g} s per row, each player holding a key):")
    print("players  frames/s each (min)  total  step p50 / p95 ms  rows/call  load avg")
    for r in rows:
        print(
            f"{r['players']:7d}  {r['fps_per_player']:8.2f} ({r['fps_per_player_min']:5.2f})  "
            f"{r['fps_total']:6.1f}  {r['step_p50_ms']:7.1f} / {r['step_p95_ms']:7.1f}  "
            f"{r['rows_per_call']:9.2f}  {r['load_avg']:8.2f}"
        )
    sys.stdout.flush()
    return 0
