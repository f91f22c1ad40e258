"""Record what the playground shows in headless Chromium while a key is held: a GIF per start
frame, made of the frames the page displayed (the <img> the server sent), at the times it
displayed them.

    python scripts/browser_gif.py --world worlds/coinrun --key ArrowRight --seconds 10 \\
        --out docs/results-coinrun/browser --shot docs/results-coinrun/browser/page.png

Writes OUT/example_<i>.gif for each example start frame of the world (or --examples 0,2) and
prints the frames/s each one showed. Needs Debian's chromium and playwright (the test extras).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genie.serve import app as playground  # noqa: E402
from genie.serve.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    FRAME,
    free_port,  # noqa: E402
)
from genie.world.folder import World  # noqa: E402

# every new frame the page shows: (time ms, data URL)
RECORD_JS = """
() => {
  window.__shown = [];
  if (window.__recording) return;  // one observer per page
  window.__recording = true;
  const screen = document.getElementById("genie-screen");
  let last = null;
  new MutationObserver(() => {
    const img = screen.querySelector("img[data-frame]");
    if (img && img.src !== last) { last = img.src; window.__shown.push([performance.now(), img.src]); }
  }).observe(screen, {subtree: true, childList: true, attributes: true});
}
"""


def decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True)
    p.add_argument(
        "--key", default="ArrowRight", help="KeyboardEvent.key held (default ArrowRight)"
    )
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--examples", help="example indices, e.g. 0,2 (default: all)")
    p.add_argument("--out", type=Path, required=True, help="folder for example_<i>.gif")
    p.add_argument("--shot", type=Path, help="also save a screenshot of the page here")
    p.add_argument("--scale", type=int, default=2, help="GIF pixels per world pixel (default 2)")
    p.add_argument("--gif-fps", type=float, default=10.0,
                   help="at most this many frames per second go into the GIF (default 10; the "
                   "frames/s printed count every frame shown)")  # fmt: skip
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    world = World.from_folder(args.world)
    picks = (
        [int(i) for i in args.examples.split(",")] if args.examples else range(len(world.examples))
    )
    demo = playground.build_demo(world, max_players=2, seed=0, clock=False)
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, wait_until="load")
            page.wait_for_selector(FRAME, timeout=60_000)
            for i in picks:
                page.locator("#genie-examples button").nth(i).click()
                time.sleep(1.5)  # the start frame arrives
                page.evaluate(RECORD_JS)
                down = "(k) => document.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true}))"
                up = "(k) => document.dispatchEvent(new KeyboardEvent('keyup', {key: k, bubbles: true}))"
                page.evaluate(down, args.key)
                time.sleep(args.seconds)
                page.evaluate(up, args.key)
                shown = page.evaluate("() => window.__shown")
                if args.shot and i == picks[0]:
                    page.screenshot(path=str(args.shot))
                times = np.array([t for t, _ in shown]) / 1000
                frames = [decode(u) for _, u in shown]
                size = world.frame_size[0] * args.scale
                frames = [
                    np.asarray(Image.fromarray(f).resize((size, size), Image.NEAREST))
                    for f in frames
                ]
                keep = [0]  # thin to --gif-fps, each kept frame shown until the next kept one
                for j in range(1, len(times)):
                    if times[j] - times[keep[-1]] >= 1 / args.gif_fps:
                        keep.append(j)
                gaps = np.diff(times[keep]).tolist() + [1.0]
                out = args.out / f"example_{i}.gif"
                gif = np.stack([frames[j] for j in keep])
                iio.imwrite(out, gif, duration=[max(20, int(1000 * g)) for g in gaps], loop=0)
                fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
                report[f"example_{i}"] = {"frames": len(frames), "fps_shown": round(fps, 1)}
                print(f"{out}: {len(frames)} frames, {fps:.1f} frames/s shown", flush=True)
                time.sleep(1.0)
            browser.close()
    finally:
        demo.close()
    (args.out / "browser.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
