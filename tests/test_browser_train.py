"""The Train tab in headless Chromium: upload a small generated video, train with the tiny
preset, see progress, then pick the new world in the Play tab and play a key."""

from __future__ import annotations

import socket

import pytest

from genie.serve.browser import CHROMIUM, CHROMIUM_ARGS, FRAME
from worlds import make_tiny_world, one_torch_thread  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
    ),
]
TINY = ("--preset", "tiny", "--eval-episodes", "2", "--precision", "fp32")


def _video(path, frames: int = 80):
    import imageio.v3 as iio
    from synthetic import make_episode

    clip, _ = make_episode(0, frames, size=64)
    iio.imwrite(path, clip, fps=15, codec="libx264", plugin="pyav")
    return path


def wait_text(page, words: tuple[str, ...], timeout_s: float) -> str:
    """Poll the Train tab's progress line until it holds one of `words`; returns it."""
    import time

    end = time.time() + timeout_s
    text = ""
    while time.time() < end:
        text = page.inner_text("#genie-train-progress")
        if any(w in text for w in words):
            return text
        time.sleep(0.5)
    raise AssertionError(f"progress never said {words}: {text!r}")


def test_upload_train_then_play_the_new_world(tmp_path):
    from playwright.sync_api import sync_playwright

    from genie.serve import app as playground

    world = make_tiny_world(tmp_path / "tiny")  # 32x32; the trained world is 64x64
    demo = playground.build_demo(world, max_players=4, clock=False, train_dir=tmp_path / "train",
                                 data_dir=tmp_path, train_args=TINY)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = playground.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    video = _video(tmp_path / "gameplay.mp4")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url, wait_until="load")
            page.wait_for_selector(FRAME, timeout=30_000)
            page.get_by_role("tab", name="Train").click()
            page.set_input_files("#genie-train-videos input[type=file]", str(video))
            page.wait_for_function(
                "() => document.querySelector('#genie-train-videos').innerText.includes('gameplay')",
                timeout=30_000,
            )
            page.fill("#genie-train-name textarea, #genie-train-name input", "from-video")
            page.fill("#genie-train-hours input", "0.004")
            page.click("#genie-train-start")
            seen = wait_text(page, ("step",), 240)  # progress of a part: "step N of M"
            assert "Queued" not in seen or "step" in seen
            final = wait_text(page, ("ready", "failed"), 400)
            assert "ready" in final, final
            page.get_by_role("tab", name="Play").click()
            page.click("#genie-world input")
            page.click("#genie-world li[aria-label='from-video']")
            page.wait_for_function(f"() => document.querySelector('{FRAME}').naturalWidth === 64")
            before = page.eval_on_selector(FRAME, "e => Number(e.dataset.frame)")
            page.keyboard.press("1")  # a world learned from video: its latent actions on 1..8
            page.wait_for_function(
                f"(n) => Number(document.querySelector('{FRAME}').dataset.frame) > n", arg=before
            )
            browser.close()
    finally:
        demo.jobs.close()
        demo.close()
