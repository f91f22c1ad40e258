"""The playground in headless Chromium: keys move the world, a held key streams frames, each
browser session plays its own world, chords play combined actions, the game clock runs
the world with no key held until paused, and the world picker switches one tab's world."""

import os
import socket
import time

import pytest

from genie.serve.browser import CHROMIUM, FRAME  # noqa: E402
from genie.serve.browser import CHROMIUM_ARGS as ARGS  # noqa: E402
from worlds import (  # noqa: F401 (fixture)
    make_distinct_world,
    make_tiny_world,
    make_two_worlds,
    one_torch_thread,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
    ),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning"),
]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def serve(world, **kw):
    from genie.serve import app as playground

    demo = playground.build_demo(world, max_players=4, **kw)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return demo, playground.launch(demo, port=port, prevent_thread_lock=True, quiet=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # no game clock: these tests count the frames that keys make
    demo, url = serve(make_tiny_world(tmp_path_factory.mktemp("world") / "tiny"), clock=False)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def distinct_app(tmp_path_factory):
    """CoinRun's distinct actions: chord keys, and a noop, so the game clock runs."""
    demo, url = serve(make_distinct_world(tmp_path_factory.mktemp("world") / "distinct"))
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def worlds_app(tmp_path_factory):
    """Two worlds that look different (`make_two_worlds`): alpha, 32x32 frames, labels
    left/right/up/down/noop; beta, 48x48, CoinRun's distinct actions. No game clock: these
    tests count the frames that keys make."""
    from genie.serve.worlds import WorldSet

    worlds = WorldSet.load([make_two_worlds(tmp_path_factory.mktemp("worlds") / "worlds")])
    demo, url = serve(worlds, clock=False)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def open_world(browser, url):
    context = browser.new_context()
    page = context.new_page()
    page.goto(url, wait_until="load")  # Gradio keeps a connection open: never "networkidle"
    page.wait_for_selector(FRAME, timeout=30_000)  # the real frame, not the placeholder
    return context, page


def frame_index(page) -> int:
    return int(page.eval_on_selector(FRAME, "e => e.dataset.frame"))


def frame_src(page) -> str:
    return page.eval_on_selector(FRAME, "e => e.src")


def last_action(page) -> str:
    return page.eval_on_selector(FRAME, "e => e.dataset.action")


def wait_action(page, label: str, timeout=10_000):
    """Wait until the frame on screen was made by the action `label`."""
    page.wait_for_function(
        f"() => document.querySelector('{FRAME}').dataset.action === '{label}'", timeout=timeout
    )


def pick_world(page, name: str):
    """Choose `name` in the world picker and wait until the key legend is the new world's."""
    legend = page.inner_text("#genie-keys")
    page.click("#genie-world input")
    page.click(f"#genie-world li[aria-label='{name}']")
    page.wait_for_function(
        "(old) => document.querySelector('#genie-keys').innerText !== old", arg=legend
    )


def wait_width(page, width: int, timeout=10_000):
    """Wait until the frame on screen is `width` pixels wide as sent (before the upscale): the
    frame size tells the two test worlds apart."""
    page.wait_for_function(
        f"() => document.querySelector('{FRAME}').naturalWidth === {width}", timeout=timeout
    )


def clock_state(page) -> str:
    return page.eval_on_selector(".genie-clock", "e => e.dataset.clock")


def wait_frame(page, at_least: int, timeout=10_000):
    page.wait_for_function(
        f"() => Number(document.querySelector('{FRAME}').dataset.frame) >= {at_least}",
        timeout=timeout,
    )


def settle(page, quiet_s=0.4, timeout_s=5.0):
    """Wait until no new frame arrives for `quiet_s` (the stream after a keyup has ended)."""
    end, last, since = time.time() + timeout_s, frame_index(page), time.time()
    while time.time() < end:
        time.sleep(0.05)
        now = frame_index(page)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet_s:
            return now
    raise AssertionError("frames kept arriving after the key was released")


def test_keys_move_the_world_and_holding_streams_frames(app, browser):
    _, url = app
    context, page = open_world(browser, url)
    try:
        assert frame_index(page) == 0
        assert "←" in page.inner_text("#genie-keys")  # the key map is on screen
        start = frame_src(page)
        page.keyboard.press("ArrowRight")
        wait_frame(page, 1)
        assert frame_src(page) != start
        page.keyboard.press("w")
        wait_frame(page, 2)
        n = settle(page)

        page.keyboard.down("ArrowLeft")
        time.sleep(1.0)
        page.keyboard.up("ArrowLeft")
        held = settle(page) - n
        assert held >= 5, f"only {held} frames while the key was held for 1 s"

        n = frame_index(page)
        page.click("text=↶ Undo")
        page.wait_for_function(
            f"() => Number(document.querySelector('{FRAME}').dataset.frame) == {n - 1}"
        )
    finally:
        context.close()


def test_buttons_and_a_bad_upload(app, browser, tmp_path):
    _, url = app
    context, page = open_world(browser, url)
    try:
        page.click("#genie-keys button[data-action='1']")
        wait_frame(page, 1)
        before = frame_src(page)
        junk = tmp_path / "junk.png"
        junk.write_bytes(b"this is not an image")
        page.set_input_files("input[type=file]:has(+ #genie-upload)", str(junk))
        page.wait_for_function(
            "() => document.querySelector('#genie-status').innerText.includes('not an image')"
        )
        assert frame_src(page) == before  # the world is untouched and still plays
        page.keyboard.press("s")
        wait_frame(page, 2)
    finally:
        context.close()


def test_each_browser_session_plays_its_own_world(app, browser):
    demo, url = app
    ctx_a, a = open_world(browser, url)
    ctx_b, b = open_world(browser, url)
    try:
        b_src = frame_src(b)
        a.keyboard.down("d")
        time.sleep(0.6)
        a.keyboard.up("d")
        settle(a)
        assert frame_index(a) >= 2
        assert frame_index(b) == 0 and frame_src(b) == b_src  # B saw none of A's frames
        b.keyboard.press("s")
        wait_frame(b, 1)
        settle(b)
        assert frame_index(b) == 1
        live = len(demo.sessions)
        ctx_b.close()  # closing the tab frees its world (demo.unload)
        deadline = time.time() + 10
        while len(demo.sessions) >= live and time.time() < deadline:
            time.sleep(0.1)
        assert len(demo.sessions) == live - 1
    finally:
        ctx_a.close()


def test_bench_play_measures_the_browser(app):
    import json
    import subprocess
    import sys

    demo, _ = app  # its own process: Playwright's sync API can't nest in this one's browser
    argv = ["bench", "play", "--world", str(demo.world.root), "--frames", "5", "--json"]
    argv += ["--browser", "--presses", "3", "--hold", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "genie", *argv], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["browser_press_p50_ms"] > 0 and result["browser_held_fps"] > 2


def test_keys_held_together_play_the_combined_action(distinct_app, browser):
    _, url = distinct_app
    context, page = open_world(browser, url)
    try:
        legend = page.inner_text("#genie-keys")
        assert "↑+→" in legend and "jump-right" in legend and "no key" in legend
        page.keyboard.down("ArrowUp")
        page.keyboard.down("ArrowRight")
        wait_action(page, "jump-right")
        page.keyboard.up("ArrowRight")  # ↑ is still held: back to jump
        wait_action(page, "jump")
        page.keyboard.up("ArrowUp")
        wait_action(page, "noop")  # the clock started with the first key: no key = noop
        button = page.locator("#genie-keys button[data-action='1']")  # left, held by the mouse
        button.hover()
        page.mouse.down()
        wait_action(page, "left")
        page.mouse.up()
        wait_action(page, "noop")
    finally:
        context.close()


def test_the_game_clock_runs_with_no_key_held_and_stops_when_paused(distinct_app, browser):
    _, url = distinct_app
    context, page = open_world(browser, url)
    try:
        assert clock_state(page) == "ready"
        time.sleep(0.5)
        assert frame_index(page) == 0  # the world waits for the player's first key
        page.keyboard.press("p")
        wait_frame(page, 3)  # frames advance with no key held
        assert clock_state(page) == "running" and last_action(page) == "noop"

        page.keyboard.press("p")
        n = settle(page, quiet_s=0.8)  # longer than any gap between frames of a loaded machine
        assert clock_state(page) == "paused"
        page.keyboard.press("ArrowRight")  # paused: a tap steps exactly one frame
        wait_frame(page, n + 1)
        assert settle(page) == n + 1 and last_action(page) == "right"

        page.click("[data-clock-toggle]")  # the button resumes it
        wait_frame(page, n + 4)
        assert clock_state(page) == "running"
        page.click("text=↶ Undo")  # undo stops a running clock until the next key
        n = settle(page, quiet_s=0.8)
        assert clock_state(page) == "ready"
        time.sleep(0.3)
        assert frame_index(page) == n
    finally:
        context.close()


def test_the_world_picker_switches_the_world_its_keys_and_start_frames(worlds_app, browser):
    demo, url = worlds_app
    context, page = open_world(browser, url)
    try:
        assert page.is_visible("#genie-world")  # several worlds: the picker shows
        wait_width(page, 32)  # alpha's first example
        assert "jump-right" not in page.inner_text("#genie-keys")
        page.keyboard.press("ArrowUp")
        wait_action(page, "up")
        settle(page)

        pick_world(page, "beta")
        wait_width(page, 48)  # beta's first example, a fresh start
        assert frame_index(page) == 0 and last_action(page) == ""
        legend = page.inner_text("#genie-keys")
        assert (
            "jump-right" in legend and "↑+→" in legend and "genie · beta" in page.inner_text("h2")
        )
        assert page.locator("#genie-examples img").count() == len(demo.worlds["beta"].examples)
        page.keyboard.press("ArrowUp")  # beta's key map: ↑ is jump
        wait_action(page, "jump")
        page.keyboard.press("e")  # a key only beta has: jump-right
        wait_action(page, "jump-right")
        assert frame_index(page) == 2 and settle(page) == 2
        wait_width(page, 48)
        page.click("#genie-keys button[data-action='1']")  # the new legend's buttons play
        wait_action(page, "left")
        wait_frame(page, 3)
    finally:
        context.close()


def test_two_tabs_on_different_worlds_stay_independent(worlds_app, browser):
    demo, url = worlds_app
    ctx_a, a = open_world(browser, url)
    ctx_b, b = open_world(browser, url)
    try:
        pick_world(b, "beta")
        wait_width(b, 48)
        a.keyboard.press("ArrowUp")  # A still plays alpha: ↑ is up, 32x32 frames
        wait_action(a, "up")
        wait_width(a, 32)
        assert settle(a) == 1 and frame_index(b) == 0  # B saw none of A's frames
        b.keyboard.press("ArrowUp")
        wait_action(b, "jump")
        wait_width(b, 48)
        assert settle(b) == 1 and frame_index(a) == 1
        assert "jump-right" not in a.inner_text("#genie-keys")
        assert "jump-right" in b.inner_text("#genie-keys")
        worlds = sorted(s.world_name for s in demo.sessions._by_id.values())
        assert "alpha" in worlds and "beta" in worlds
    finally:
        ctx_a.close()
        ctx_b.close()


def test_picking_a_world_stops_the_running_clock_of_the_old_one(worlds_app, browser):
    """The switch race (docs/PLAY.md, Several worlds): no frame of alpha's stream reaches the
    page after beta's start frame, and beta's clock starts on the first key."""
    demo, _ = worlds_app
    clocked, url = serve(demo.worlds)  # the same loaded worlds, with the game clock
    context, page = open_world(browser, url)
    try:
        page.keyboard.press("ArrowUp")  # the first key starts alpha's clock
        wait_frame(page, 3)
        assert clock_state(page) == "running"
        pick_world(page, "beta")
        time.sleep(0.5)
        assert clock_state(page) == "ready"  # alpha's clock stopped; beta waits for a key
        wait_width(page, 48, timeout=2_000)  # beta's start frame stays, not alpha's last one
        assert frame_index(page) == 0
        page.keyboard.press("ArrowRight")
        wait_width(page, 48)  # beta's frames
        wait_frame(page, 3)  # beta's clock: noop plays with no key held
        assert clock_state(page) == "running" and last_action(page) == "noop"
        assert page.eval_on_selector(FRAME, "e => e.naturalWidth") == 48
    finally:
        context.close()
        clocked.close()
