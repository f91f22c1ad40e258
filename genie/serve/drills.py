"""Many players on one server: `genie bench play --players 1,4,8,16` and `--memory-rounds R`.

    genie bench play --world worlds/coinrun --players 1,4,8,16 --seconds 20
    genie bench play --world worlds/coinrun --players 20 --memory-rounds 3 --settle 60

Serving (`bench_players`): N threads, each a player of the playground's own `Sessions`
(per-player engines, one `genie.serve.batcher.Batcher`) holding a key: step, encode the frame as
the browser stream does (PNG), repeat. Frames/s per player and in total, step latency as a
player waits for it (p50, p95), rows per model call; `--no-batch` steps each player alone.

Browser (`bench_tabs`, `--players N --browser`): N headless-Chromium tabs of one playground,
each holding a key: the frames/s each tab shows, as in the issue's drill.

Memory (`memory_drill`): `genie play` in a subprocess, then rounds of N gradio_client players
(each `/reset`, `--player-steps` `/step`s, close): the server's RSS idle, at the peak of each
round, and `--settle` seconds after its last player left. `--stay K`: K players of the first
round stay connected to the end (a public server is rarely empty).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from genie.serve.browser import free_port


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def bench_players(
    world,
    players: int,
    seconds: float,
    batch: bool = True,
    warmup_s: float = 3.0,
    precision: str | None = None,
) -> dict:
    """N players holding a key for `warmup_s` + `seconds`; statistics over the last `seconds`."""
    from genie.serve.html import png_base64
    from genie.serve.sessions import Sessions

    sessions = Sessions(
        world, max_players=players, seed=0, batch=batch, seat_wait_s=0, precision=precision
    )
    mine = [sessions.get(f"player {i}") for i in range(players)]
    steps: list[list[tuple[float, float]]] = [[] for _ in range(players)]  # (end, seconds)
    stop = threading.Event()
    go = threading.Barrier(players + 1)

    def play(i: int) -> None:
        rng = np.random.default_rng(i)
        held = np.repeat(rng.integers(0, world.num_actions, size=4096), 8)  # keys held 8 frames
        go.wait()
        k = 0
        while not stop.is_set():
            t = time.perf_counter()
            png_base64(mine[i].step(int(held[k % len(held)])))
            steps[i].append((time.perf_counter(), time.perf_counter() - t))
            k += 1

    threads = [threading.Thread(target=play, args=(i,), daemon=True) for i in range(players)]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter() + warmup_s
    time.sleep(warmup_s)
    calls0 = (sessions.batcher.batches, sessions.batcher.rows) if batch else (0, 0)
    time.sleep(seconds)
    calls1 = (sessions.batcher.batches, sessions.batcher.rows) if batch else (0, 0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    sessions.close()
    end = start + seconds
    counted = [[d for e, d in s if start <= e < end] for s in steps]
    per = np.array([len(c) / seconds for c in counted])
    lat = 1000 * np.concatenate([np.asarray(c, dtype=np.float64) for c in counted] or [[0.0]])
    calls = calls1[0] - calls0[0]
    return {
        "players": players,
        "batched": batch,
        "fps_per_player": round(float(per.mean()), 2),
        "fps_per_player_min": round(float(per.min()), 2),
        "fps_total": round(float(per.sum()), 1),
        "step_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "step_p95_ms": round(float(np.percentile(lat, 95)), 1),
        "rows_per_call": round((calls1[1] - calls0[1]) / calls, 2) if calls else 1.0,
        "load_avg": load_average(),
    }


def bench_tabs(
    world, tabs: int, hold_s: float, batch: bool = True, precision: str | None = None
) -> dict:
    """`tabs` headless-Chromium tabs of one playground (no game clock), each holding a key
    for `hold_s` seconds: the frames/s each tab shows (after its first 2 s)."""
    from playwright.sync_api import sync_playwright

    from genie.serve import app as playground
    from genie.serve.browser import CHROMIUM, CHROMIUM_ARGS, FRAME, PROBE_JS

    demo = playground.build_demo(
        world, max_players=tabs, seed=0, clock=False, batch=batch, precision=precision
    )
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    press = "(k) => document.dispatchEvent(new KeyboardEvent('%s', {key: k}))"
    key = "ArrowRight" if "right" in [a.lower() for a in world.action_labels] else "1"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            pages = []
            for _ in range(tabs):
                page = browser.new_context().new_page()
                page.goto(url, wait_until="load")  # Gradio keeps a connection open
                page.wait_for_selector(FRAME, timeout=120_000)
                page.evaluate(PROBE_JS)
                pages.append(page)
            for page in pages:
                page.evaluate(press % "keydown", key)
            time.sleep(hold_s)
            shown = [page.evaluate("() => window.__genie.times") for page in pages]
            for page in pages:
                page.evaluate(press % "keyup", key)
            browser.close()
    finally:
        demo.close()
    fps = []
    for times in shown:  # ms timestamps of new frames; the first 2 s fill the pipeline
        t = [x for x in times if times and x >= times[0] + 2000]
        fps.append((len(t) - 1) / ((t[-1] - t[0]) / 1000) if len(t) > 1 else 0.0)
    return {
        "tabs": tabs,
        "batched": batch,
        "fps_per_tab": round(float(np.mean(fps)), 2),
        "fps_per_tab_min": round(float(np.min(fps)), 2),
        "fps_total": round(float(np.sum(fps)), 1),
        "load_avg": load_average(),
    }


# ---------------------------------------------------------------------------- memory drill


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(world: str | Path, max_players: int, *extra: str) -> tuple[subprocess.Popen, str]:
    """`genie play` in a subprocess (one torch thread); returns it and its URL once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "genie", "play", "--world", str(world), "--port", str(port)]
    cmd += ["--max-players", str(max_players), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    log = tempfile.TemporaryFile()  # not a pipe: a server that logs much would block on it
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"genie play exited: {log.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("genie play did not answer within 180 s")


def api_player(url: str, steps: int, errors: list, stay: list | None = None) -> None:
    """One gradio_client player: /reset, `steps` /steps, then leave (close the client), or
    stay connected (its client is put in `stay`)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        client.predict(None, api_name="/reset")
        for k in range(steps):
            client.predict(str(k % 4), api_name="/step")
    except Exception as e:  # a player's failure is a result of the drill, not its end
        errors.append(f"{type(e).__name__}: {e}")
    if stay is None:
        client.close()
    else:
        stay.append(client)


def player_round(url: str, players: int, steps: int, pid: int, stay: int = 0) -> dict:
    """`players` API players at once, the first `stay` of them staying connected (their clients
    are returned under "staying"); the server's peak RSS while they play."""
    errors: list[str] = []
    staying: list = []
    threads = [
        threading.Thread(
            target=api_player, args=(url, steps, errors, staying if i < stay else None), daemon=True
        )
        for i in range(players)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    peak = rss_mb(pid)
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.1)
    seconds = round(time.perf_counter() - t0, 1)
    return {"seconds": seconds, "peak_mb": round(peak), "errors": errors, "staying": staying}


def memory_drill(
    world: str | Path, players: int, rounds: int, settle_s: float, steps: int = 30, stay: int = 0
) -> dict:
    """RSS of a `genie play` server over `rounds` rounds of `players` API players, `stay` of
    the first round's staying connected."""
    proc, url = start_server(world, players + stay)
    staying: list = []
    try:
        time.sleep(2)
        out: dict = {"players": players, "player_steps": steps, "stay": stay}
        out["idle_mb"] = round(rss_mb(proc.pid))
        out["rounds"] = []
        for i in range(rounds):
            r = player_round(url, players, steps, proc.pid, stay if i == 0 else 0)
            staying += r.pop("staying")
            time.sleep(settle_s)
            r["after_mb"] = round(rss_mb(proc.pid))
            r["load_avg"] = load_average()
            out["rounds"].append(r)
        return out
    finally:
        for client in staying:
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
