"""The playground's HTTP API through gradio_client: per-session worlds, generate, clear
errors for bad uploads, and the bound on live sessions."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genie.serve.browser import free_port
from worlds import make_distinct_world, make_tiny_world, one_torch_thread  # noqa: F401 (fixture)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Gradio's own pandas / numpy deprecations are not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
SIZE = 32
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "tiny", frame_size=SIZE)


@pytest.fixture(scope="module")
def app(world):
    from genie.serve import app as playground

    demo = playground.build_demo(world, max_players=4)
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_reset_then_step_changes_the_frame(app):
    _, url = app
    c = client(url)
    start, info = c.predict(None, api_name="/reset")
    assert image(start).shape == (SIZE, SIZE, 3) and info["frame"] == 0
    assert info["actions"] == ["left", "right", "up", "down", "noop"]
    frame, info = c.predict("right", api_name="/step")
    assert info["frame"] == 1 and info["can_undo"]
    assert np.abs(image(frame).astype(int) - image(start)).mean() > 1
    frame2, info = c.predict("3", api_name="/step")
    assert info["frame"] == 2
    back, info = c.predict(api_name="/undo")
    assert info["frame"] == 1
    np.testing.assert_array_equal(image(back), image(frame))


def test_two_clients_have_independent_worlds(app, tmp_path):
    demo, url = app
    a, b = client(url), client(url)
    red = tmp_path / "red.png"
    Image.fromarray(np.full((50, 80, 3), (220, 20, 20), np.uint8)).save(red)
    from gradio_client import handle_file

    a_start, _ = a.predict(None, api_name="/reset")
    b_start, _ = b.predict(handle_file(str(red)), api_name="/reset")
    assert image(b_start)[..., 0].mean() > 200 and image(a_start)[..., 0].mean() < 200
    for _ in range(3):
        _, a_info = a.predict("left", api_name="/step")
    _, b_info = b.predict("up", api_name="/step")
    assert a_info["frame"] == 3 and b_info["frame"] == 1
    back, b_info = b.predict(api_name="/undo")  # B's undo rewinds B only
    np.testing.assert_array_equal(image(back), image(b_start))
    _, a_info = a.predict("left", api_name="/step")
    assert a_info["frame"] == 4
    assert len(demo.sessions) >= 2


def test_generate_returns_a_video(app):
    _, url = app
    from genie.utils.video import read_video

    video, file, message = client(url).predict(
        None, "start_1", "right*3,left", 6, 2, 0, "gif", api_name="/generate"
    )
    frames = read_video(video)
    assert (
        frames.shape[0] == 7 and frames.shape[2] > frames.shape[1]
    )  # start + 6; 2 samples side by side
    assert file.endswith(".gif") and len(read_video(file)) >= 2
    assert "6 frames × 2 sample(s)" in message


def test_bad_upload_is_an_error_message_and_the_server_keeps_serving(app, tmp_path):
    _, url = app
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    c = client(url)
    c.predict(None, api_name="/reset")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(AppError, match="not an image"):
        c.predict(handle_file(str(junk)), api_name="/reset")
    with pytest.raises(AppError, match="unknown action"):
        c.predict("jump", api_name="/step")
    with pytest.raises(AppError, match="unknown action"):
        c.predict(None, "start_0", "fly*2", 4, 1, 0, "mp4", api_name="/generate")
    _, info = c.predict("noop", api_name="/step")  # same session, still playing
    assert info["frame"] == 1


def test_sessions_are_bounded_and_idle_ones_evicted(world):
    from genie.serve.sessions import Sessions
    from genie.utils.errors import UserError
    from genie.world.folder import World

    w = World.from_folder(world)
    full = Sessions(w, max_players=2, idle_evict_s=3600, seat_wait_s=0)
    a = full.get("a")
    full.get("b")
    assert full.get("a") is a
    with pytest.raises(UserError, match="too many players"):
        full.get("c")
    full.free("a")
    assert full.get("c") is not a and len(full) == 2 and a.closed

    evicting = Sessions(w, max_players=2, idle_evict_s=0, seat_wait_s=0)
    first = evicting.get("a")
    evicting.get("b")
    evicting.get("a")  # "a" becomes the most recently used
    evicting.get("c")  # evicts "b", the least recently used
    assert evicting.get("a") is first and len(evicting) == 2 and "b" not in evicting._by_id


def test_a_tap_is_one_frame_and_a_held_key_streams(world):
    import threading

    from genie.serve.sessions import Sessions
    from genie.world.folder import World

    s = Sessions(World.from_folder(world), seed=0).get("player")
    s.release(2)  # a keyup handled before its keydown: the press still plays exactly once
    assert len(list(s.press(1, 1))) == 1 and s.held is None
    threading.Timer(0.02, s.release, args=(4,)).start()  # a quick tap
    assert len(list(s.press(0, 3))) == 1

    threading.Timer(0.6, s.release, args=(6,)).start()  # held for 0.6 s
    held = list(s.press(2, 5))
    assert len(held) >= 5 and set(s.engine.actions_taken[-len(held) :]) == {2}

    frames = []
    stream = threading.Thread(target=lambda: frames.extend(s.press(0, 7)))
    stream.start()
    time.sleep(0.3)
    assert list(s.press(3, 8)) == []  # a second key while streaming: the stream switches to it
    time.sleep(0.3)
    s.release(9)
    stream.join(timeout=5)
    assert not stream.is_alive() and s.streamer is None
    taken = s.engine.actions_taken[-len(frames) :]
    assert taken[0] == 0 and taken[-1] == 3 and s.index == 2 + len(held) + len(frames)


def test_a_frame_stepped_before_a_reset_is_never_yielded_after_it(world):
    """A reset (or undo) while a stream's frame is on its way: the frame is dropped, not drawn
    over the new start (`Session.generation`)."""
    import threading

    from genie.serve.sessions import Sessions
    from genie.world.folder import World

    s = Sessions(World.from_folder(world), seed=0).get("p")
    done = threading.Event()

    def render(frame):  # the frame in flight: the player resets and lets go meanwhile
        threading.Thread(target=lambda: (s.reset(s.start), s.release(2), done.set())).start()
        assert done.wait(5)
        return frame

    assert list(s.press(1, 1, render=render)) == [] and s.index == 0 and s.streamer is None


def test_the_game_clock_plays_noop_until_a_key_overrides_it_or_it_stops(tmp_path, monkeypatch):
    import threading

    from genie.data.record import COINRUN_DISTINCT
    from genie.serve import sessions
    from genie.serve.sessions import Sessions
    from genie.world.folder import World

    noop, right = COINRUN_DISTINCT.index("noop"), COINRUN_DISTINCT.index("right")
    s = Sessions(World.from_folder(make_distinct_world(tmp_path / "w")), seed=0).get("p")
    frames = []
    stream = threading.Thread(target=lambda: frames.extend(s.press(None, 1, clock=True)))
    stream.start()  # the clock alone starts a stream: nothing held plays noop
    time.sleep(0.4)
    assert len(frames) >= 3 and set(s.engine.actions_taken) == {noop}
    assert list(s.press(right, 2, clock=True)) == []  # the running stream picks the key up
    time.sleep(0.4)
    s.release(3, clock=True)  # key up, clock still running: noop again
    time.sleep(0.3)
    s.release(4, clock=False)  # clock paused: the stream ends
    stream.join(timeout=5)
    assert not stream.is_alive() and s.streamer is None
    taken = s.engine.actions_taken
    assert right in taken and taken[-1] == noop and s.index == len(frames)
    assert taken.index(right) > 0 and noop in taken[taken.index(right) :]

    s.clock = True
    s.undo()  # undo (and reset) stop a running clock
    assert not s.clock

    monkeypatch.setattr(sessions, "CLOCK_IDLE_S", 0.3)
    idle = list(s.press(None, 5, clock=True))  # a forgotten clock stops by itself
    assert idle and not s.clock and s.streamer is None


def test_keys_and_clock_follow_the_world_labels(tmp_path):
    from genie.serve.html import bindings, key_label, keys_html
    from genie.serve.sessions import noop_action
    from genie.world.folder import default_keys

    labels = ["noop", "left", "right", "jump", "jump-left", "jump-right"]
    keys = default_keys(labels)
    assert (["ArrowUp", "ArrowRight"], 5) in bindings(keys) and ([" "], 3) in bindings(keys)
    assert key_label("ArrowUp+ArrowRight") == "↑+→" and key_label("w+d") == "W+D"
    page = keys_html(labels, keys, noop_action(labels), clock=True)
    assert "genie-clock" in page and "↑+→" in page and "data-pause-key='p'" in page
    # a latent-action world: number keys, no noop, no clock
    lam = [f"action {i}" for i in range(4)]
    assert noop_action(lam) is None and noop_action(["NOOP", "FIRE"]) == 0
    page = keys_html(lam, default_keys(lam), None, clock=False)
    assert "genie-clock" not in page and "data-noop=''" in page
    assert [ks for ks, _ in bindings(default_keys(lam))] == [["1"], ["2"], ["3"], ["4"]]
    # codes its LAM never gives (genie name-actions): no button, no key
    named = ["left", "unused", "right", "noop", "unused 2"]
    page = keys_html(named, default_keys(named), noop_action(named), clock=True)
    assert 'data-action="1"' not in page and 'data-action="4"' not in page
    assert 'data-action="2"' in page and {a for _, a in bindings(default_keys(named))} == {0, 2, 3}


def test_play_command_fails_cleanly_without_a_world(tmp_path, capsys):
    from genie.cli import main

    assert main(["play", "--world", str(tmp_path / "missing"), "--port", str(free_port())]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_app_script_parses_its_options():
    out = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and "--world" in out.stdout and "--share" in out.stdout


def test_bench_play_prints_engine_numbers_as_json(world, capsys):
    import json

    from genie.cli import main

    assert (
        main(["bench", "play", "--world", str(world), "--frames", "5", "--no-browser", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["fps"] > 0 and 0 < result["p50_ms"] <= result["p95_ms"]
    assert result["frames"] == 5 and "browser_held_fps" not in result
