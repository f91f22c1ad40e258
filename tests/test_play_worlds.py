"""Several worlds in one playground (genie/serve/worlds.py): `--world` repeated or a folder of
worlds, names and the default, one-line errors; the API's `/reset` takes a world by name and
the frames come from that world; sessions switch worlds in their seat; the batcher steps only
players of one world together, each bit for bit as alone."""

import importlib.util
import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genie.data.record import COINRUN_DISTINCT
from genie.serve.browser import free_port
from genie.serve.worlds import WorldSet, resolve_worlds
from genie.utils.errors import UserError
from genie.world.engine import WorldEngine
from worlds import make_two_worlds, one_torch_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_two_worlds(tmp_path_factory.mktemp("worlds") / "worlds")


@pytest.fixture(scope="module")
def worlds(folder):
    return WorldSet.load([folder])


def image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------------- names, command line


def test_worlds_are_named_by_folder_and_the_default_is_the_first_given(folder, tmp_path):
    alpha, beta = folder / "alpha", folder / "beta"
    found, default = resolve_worlds([folder])  # a folder of worlds: its worlds by name
    assert [(n, p) for n, p in found] == [("alpha", alpha), ("beta", beta)] and default == "alpha"
    assert resolve_worlds([folder], "beta")[1] == "beta"
    found, default = resolve_worlds([beta, alpha])  # --world repeated: the first is the default
    assert [n for n, _ in found] == ["beta", "alpha"] and default == "beta"
    other = tmp_path / "other" / "alpha"  # another world with alpha's folder name
    other.mkdir(parents=True)
    (other / "world.json").write_text("{}")
    for paths, default, says in [
        ([folder, other], None, "two worlds are named 'alpha'"),
        ([folder, alpha], None, "is given twice"),
        ([folder], "gamma", "--default-world gamma: no such world (serving: alpha, beta)"),
        ([tmp_path / "missing"], None, "does not exist"),
        ([folder / "alpha" / "examples"], None, "nor a folder of worlds"),
    ]:
        with pytest.raises(UserError, match=r"^[^\n]*$") as e:
            resolve_worlds(paths, default)
        assert says in str(e.value)


def test_play_parses_repeated_worlds_and_refuses_bad_ones_in_one_line(folder, genie_cli):
    from genie.cli import build_parser

    a, b = str(folder / "alpha"), str(folder / "beta")
    args = build_parser().parse_args(
        ["play", "--world", a, "--world", b, "--default-world", "beta"]
    )
    assert args.world == [a, b] and args.default_world == "beta"
    assert build_parser().parse_args(["play", "--world", str(folder)]).world == [str(folder)]
    for argv, says in [
        (["--world", folder, "--world", a], f"world {a} is given twice"),
        (["--world", folder, "--default-world", "gamma"], "no such world (serving: alpha, beta)"),
        (["--world", a, "--world", folder / "missing"], "does not exist"),
    ]:
        rc, _, err = genie_cli("play", *argv, "--port", free_port())
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and says in lines[0], (argv, err)


def test_app_script_takes_several_worlds(folder, monkeypatch):
    spec = importlib.util.spec_from_file_location("genie_app", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    seen = []
    monkeypatch.setattr(app.play_cli, "run", lambda args: seen.append(args) or 0)
    assert app.main(["--world", str(folder / "alpha"), "--world", str(folder / "beta")]) == 0
    monkeypatch.setenv("GENIE_WORLD", str(folder))
    assert app.main([]) == 0
    assert seen[0].world == [str(folder / "alpha"), str(folder / "beta")]
    assert seen[1].world == [str(folder)]


# ---------------------------------------------------------------------------- sessions, serving


def test_a_player_switches_worlds_in_its_seat_and_others_stay(worlds):
    from genie.serve.sessions import Sessions

    sessions = Sessions(worlds, max_players=2, seed=0)
    a, b = sessions.get("a"), sessions.get("b")
    assert a.world_name == b.world_name == "alpha" and a.engine.world is worlds["alpha"]
    frames = []
    stream = threading.Thread(target=lambda: frames.extend(b.press(None, 1, clock=True)))
    stream.start()  # b's clock runs (alpha has a noop)
    while not frames:
        threading.Event().wait(0.01)
    moved = sessions.switch("b", "beta")  # a full server: the player keeps its seat
    stream.join(timeout=10)
    assert not stream.is_alive() and b.closed and len(sessions) == 2
    assert moved.world_name == "beta" and moved.engine.world is worlds["beta"]
    np.testing.assert_array_equal(moved.engine.frames[-1], image(worlds["beta"].examples[0]))
    assert moved.labels == COINRUN_DISTINCT and moved.noop == COINRUN_DISTINCT.index("noop")
    assert sessions.switch("b", "beta") is moved  # already there: untouched
    assert sessions.get("a") is a and a.world_name == "alpha" and not a.closed
    assert a.step(0).shape == (32, 32, 3) and moved.step(3).shape == (48, 48, 3)
    assert moved.resets == b.resets + 1  # the page sees a new start frame
    with pytest.raises(UserError, match="unknown world 'gamma': use one of alpha, beta"):
        sessions.switch("a", "gamma")
    got = []  # one pick sent twice at once (Gradio may): one started session for both
    both = [threading.Thread(target=lambda: got.append(sessions.switch("a", "beta"))) for _ in "ab"]
    for t in both:
        t.start()
    for t in both:
        t.join(timeout=10)
    assert got[0] is got[1] is sessions.peek("a") and len(got[0].engine.frames) == 1
    assert a.closed and len(sessions) == 2
    assert sessions.worlds["alpha"] is worlds.worlds["alpha"]  # loaded once, shared
    sessions.close()


def test_a_key_event_meant_for_the_world_a_player_left_is_ignored(worlds, tmp_path):
    from types import SimpleNamespace as Event

    from genie.serve.handlers import Handlers
    from genie.serve.sessions import Sessions

    h = Handlers(Sessions(worlds, seed=0), 64, tmp_path)
    player = Event(session_hash="p")
    sess = h.sessions.switch("p", "beta")
    late = Event(_data={"action": None, "seq": 1, "clock": True, "world": "alpha"})
    assert len(list(h.press(late, player))) == 1  # gr.skip(): alpha's clock starts nothing
    h.release(Event(_data={"seq": 2, "world": "alpha"}), player)
    assert sess.index == 0 and not sess.clock and sess.seq == -1
    up = Event(_data={"seq": 4, "world": "beta"})
    threading.Timer(0.02, h.release, args=(up, player)).start()  # a tap of beta's "right"
    tap = Event(_data={"action": 2, "seq": 3, "clock": False, "world": "beta"})
    frame, end = h.press(tap, player)  # a stream ends on a no-op: Gradio repeats its last value
    assert "data-frame=" in frame and end == {"__type__": "update"}
    assert sess.engine.actions_taken == [2]

    # a switch ends a running clock's stream on the new world's start screen: the page may draw
    # the stream's last frames after the switch's answer, and this puts the new screen back
    clock = Event(_data={"action": None, "seq": 5, "clock": True, "world": "beta"})
    retire = h.sessions._retire

    def retire_then_pause(old):  # the stream ends while the switch is still at work
        retire(old)
        time.sleep(0.3)

    h.sessions._retire = retire_then_pause
    threading.Timer(0.3, h.sessions.switch, args=("p", "alpha")).start()
    *frames, end = h.press(clock, player)
    moved = h.sessions.peek("p")
    assert frames and all('data-reset="1"' in f for f in frames) and moved.world_name == "alpha"
    assert end == h.show(moved, moved.engine.frames[-1]) and 'data-reset="2"' in end
    h.sessions.close()


def test_the_batcher_steps_players_of_one_world_together_each_as_alone(worlds):
    from genie.serve.batcher import Batcher, batch_key, step_together

    steps = 12
    rng = np.random.default_rng(0)
    players = [(w, 10 + i, rng.integers(0, worlds[w].num_actions, steps)) for i, w in
               enumerate(["alpha", "beta", "alpha", "beta"])]  # fmt: skip

    def started(name, seed):
        e = WorldEngine(worlds[name], seed=seed)
        e.reset(worlds[name].examples[0])
        return e

    want = []
    for name, seed, acts in players:
        e = started(name, seed)
        want.append([e.step(int(a)) for a in acts])
    engines = [started(name, seed) for name, seed, _ in players]
    assert batch_key(engines[0]) != batch_key(engines[1])  # two worlds never share a call
    with pytest.raises(ValueError, match="cannot share a batch"):
        step_together(engines[:2], [0, 0])
    batcher = Batcher(window_s=0.05)
    got = [[] for _ in players]

    def play(i):
        for a in players[i][2]:
            got[i].append(batcher.step(engines[i], int(a)))

    threads = [threading.Thread(target=play, args=(i,)) for i in range(len(players))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    batcher.close()
    for i in range(len(players)):
        np.testing.assert_array_equal(np.stack(got[i]), np.stack(want[i]))
    assert batcher.rows == len(players) * steps and batcher.batches < batcher.rows


# ---------------------------------------------------------------------------- the HTTP API


@pytest.fixture(scope="module")
def app(worlds):
    from genie.serve import app as playground

    demo = playground.build_demo(worlds, max_players=8, seed=0)
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def alone(world, action) -> np.ndarray:
    """What a player of `world` with seed 0 sees after one step from its first example."""
    e = WorldEngine(world, seed=0)
    e.reset(world.examples[0])
    return e.step(e.action_id(action))


def test_reset_takes_a_world_by_name_and_frames_come_from_it(app, worlds):
    from gradio_client.exceptions import AppError

    _, url = app
    alpha, beta = worlds["alpha"], worlds["beta"]
    c = client(url)
    start, info = c.predict(None, api_name="/reset")  # no world: the default one
    assert info["world"] == "alpha" and info["actions"] == alpha.action_labels
    np.testing.assert_array_equal(image(start), image(alpha.examples[0]))
    start, info = c.predict(None, "beta", api_name="/reset")
    assert info["world"] == "beta" and info["actions"] == COINRUN_DISTINCT and info["frame"] == 0
    np.testing.assert_array_equal(image(start), image(beta.examples[0]))
    frame, info = c.predict("jump-right", api_name="/step")  # beta's action, beta's model
    np.testing.assert_array_equal(image(frame), alone(beta, "jump-right"))
    with pytest.raises(AppError, match="unknown world 'gamma': use one of alpha, beta"):
        c.predict(None, "gamma", api_name="/reset")
    _, info = c.predict(api_name="/undo")  # the failed reset left beta as it was
    assert info["world"] == "beta" and info["frame"] == 0
    start, info = c.predict(None, "alpha", api_name="/reset")
    frame, info = c.predict("up", api_name="/step")
    assert info["world"] == "alpha" and info["frame"] == 1
    np.testing.assert_array_equal(image(frame), alone(alpha, "up"))
    with pytest.raises(AppError, match="unknown action 'jump-right'"):
        c.predict("jump-right", api_name="/step")  # alpha has no such action


def test_two_clients_on_two_worlds_stay_independent_and_old_calls_still_work(app, worlds):
    _, url = app
    a, b = client(url), client(url)
    a.predict(None, "alpha", api_name="/reset")
    b.predict(None, "beta", api_name="/reset")
    for _ in range(2):
        frame_a, info_a = a.predict("left", api_name="/step")
    frame_b, info_b = b.predict("jump", api_name="/step")
    assert (info_a["world"], info_a["frame"], image(frame_a).shape) == ("alpha", 2, (32, 32, 3))
    assert (info_b["world"], info_b["frame"], image(frame_b).shape) == ("beta", 1, (48, 48, 3))
    # a raw HTTP call of /reset from before the world argument: one input, the default world
    body = json.dumps({"data": [None]}).encode()
    req = urllib.request.Request(
        f"{url}gradio_api/call/reset", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/reset/{event}") as r:
        answer = r.read().decode()
    assert "event: complete" in answer and '"world": "alpha"' in answer
    # Generate follows the client's world
    video, _, message = b.predict(None, "start_0", "jump*2", 2, 1, 0, "gif", api_name="/generate")
    from genie.utils.video import read_video

    assert read_video(video).shape[1:3] == (4 * 48, 4 * 48) and "jump, jump" in message  # x4


def test_the_picker_shows_only_when_several_worlds_are_served(app, folder):
    from genie.serve import app as playground

    def picker(demo) -> dict:
        (c,) = [c for c in demo.config["components"] if c["props"].get("elem_id") == "genie-world"]
        return c["props"]

    demo, _ = app
    assert picker(demo)["visible"] is True
    assert [ch[0] for ch in picker(demo)["choices"]] == ["alpha", "beta"]
    assert picker(demo)["value"] == "alpha"
    one = playground.build_demo(folder / "beta", max_players=1)
    assert picker(one)["visible"] is False and one.world.root == folder / "beta"
