"""Driving the playground from headless Chromium: where the browser is, its flags, the frame
element, and the in-page probes that time frames and key presses (`genie bench play
--browser`, the load drills, the browser tests, scripts/browser_gif.py)."""

from __future__ import annotations

import socket
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FRAME = "#genie-screen img[data-frame]"

# In-page probe: timestamps of every new frame shown, and a key press that resolves when the
# next frame appears.
PROBE_JS = """
() => {
  const screen = document.getElementById("genie-screen");
  const key = (img) => img && img.dataset.frame + ":" + img.dataset.reset;
  window.__genie = {times: [], last: key(screen.querySelector("img[data-frame]"))};
  new MutationObserver(() => {
    const k = key(screen.querySelector("img[data-frame]"));
    if (k && k !== window.__genie.last) { window.__genie.last = k; window.__genie.times.push(performance.now()); }
  }).observe(screen, {subtree: true, childList: true, attributes: true});
}
"""
PRESS_JS = """
async (k) => {
  const n = window.__genie.times.length;
  const t0 = performance.now();
  document.dispatchEvent(new KeyboardEvent("keydown", {key: k, bubbles: true}));
  document.dispatchEvent(new KeyboardEvent("keyup", {key: k, bubbles: true}));
  while (window.__genie.times.length === n) {
    await new Promise((r) => setTimeout(r, 1));
    if (performance.now() - t0 > 10000) return -1;
  }
  return window.__genie.times[n] - t0;
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
