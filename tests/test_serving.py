"""Batched serving (genie/serve/batcher.py): players stepped together see exactly the frames each
would see alone, whatever their start, seed or frame count; a bad request fails alone; and a
`genie play` server gives its memory back after players leave, round after round."""

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from genie.serve import batcher as batcher_module
from genie.serve.batcher import Batcher, batch_key, step_together
from genie.utils.errors import UserError
from genie.world.engine import WorldEngine
from genie.world.folder import World
from worlds import make_tiny_world, one_torch_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
STEPS = 24


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World.from_folder(make_tiny_world(tmp_path_factory.mktemp("w") / "tiny"))


def plans(world, n=4, seed=0):
    """n players: seed, start frame and STEPS actions each."""
    rng = np.random.default_rng(seed)
    examples = world.examples
    acts = rng.integers(0, world.num_actions, (n, STEPS))
    return [(10 + i, examples[i % len(examples)], acts[i]) for i in range(n)]


def alone(world, plan) -> list[np.ndarray]:
    seed, start, acts = plan
    e = WorldEngine(world, seed=seed)
    e.reset(start)
    return [e.step(int(a)) for a in acts]


def test_players_stepped_together_see_what_each_sees_alone(world):
    players = plans(world)
    want = [alone(world, p) for p in players]
    engines = [WorldEngine(world, seed=s) for s, _, _ in players]
    for e, (_, start, _) in zip(engines, players, strict=True):
        e.reset(start)
    # players join at different times: different frame indices and context lengths, so some
    # steps run as separate groups and rows of one call rotate by different frame indices
    joins = [0, 0, 2, 7]
    got = [[] for _ in players]
    for t in range(STEPS + max(joins)):
        live = [i for i, j in enumerate(joins) if j <= t < j + STEPS]
        groups: dict = {}
        for i in live:
            groups.setdefault(batch_key(engines[i]), []).append(i)
        for rows in groups.values():
            acts = [int(players[i][2][t - joins[i]]) for i in rows]
            for i, frame in zip(rows, step_together([engines[i] for i in rows], acts), strict=True):
                got[i].append(frame)
    for i in range(len(players)):
        np.testing.assert_array_equal(np.stack(got[i]), np.stack(want[i]))
    # each keeps its own history and undo
    assert engines[0].actions_taken == [int(a) for a in players[0][2]]
    np.testing.assert_array_equal(engines[1].undo(), want[1][-2])


def test_the_batcher_serves_threads_in_shared_calls_and_fails_a_bad_request_alone(
    world, monkeypatch
):
    """Also the lanes: on two cores a batch of 4 steps as two lanes of 2, one per core, and
    each player still sees exactly its frames alone."""
    monkeypatch.setattr(batcher_module, "cores", lambda: 2)
    players = plans(world, n=4, seed=1)
    want = [alone(world, p) for p in players]
    batcher = Batcher(window_s=0.05)
    engines = [WorldEngine(world, seed=s) for s, _, _ in players]
    for e, (_, start, _) in zip(engines, players, strict=True):
        e.reset(start)
    got = [[] for _ in players]
    errors = []

    def play(i):
        for a in players[i][2]:
            got[i].append(batcher.step(engines[i], int(a)))

    def mistake():
        try:
            batcher.step(WorldEngine(world), 0)  # never reset
        except UserError as e:
            errors.append(str(e))
        try:
            batcher.step(engines[0], "fly")
        except UserError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=play, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=mistake))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    batcher.close()
    for i in range(4):
        np.testing.assert_array_equal(np.stack(got[i]), np.stack(want[i]))
    assert any("reset the world" in e for e in errors) and any(
        "unknown action" in e for e in errors
    )
    assert batcher.rows == 4 * STEPS and batcher.batches < batcher.rows  # calls were shared
    assert batcher.split > 0  # some batches ran as lanes


def test_a_lone_player_does_not_wait_for_a_batch(world):
    batcher = Batcher(window_s=1.0)  # a window only players seen recently are waited for
    e = WorldEngine(world, seed=0)
    e.reset(world.examples[0])
    t = time.perf_counter()
    for a in range(5):
        batcher.step(e, a % world.num_actions)
    assert time.perf_counter() - t < 1.0
    batcher.close()


def test_server_memory_comes_back_after_each_round_of_players(tmp_path):
    """Two rounds of 6 API players on a `genie play` server (after one warm-up player: Gradio
    and torch load lazily). A few seconds after each round's last player left (heartbeat 2 s,
    memory trimmed 2 s later) its RSS is back within 30 MB of idle (players hold ~80 MB at the
    peak: 32 undo snapshots of a 64x64 world's caches each) and does not grow round to round.
    Without `release_memory`, or with the batcher keeping its last batch's engines, it stays
    near the peak (docs/PLAY.md, "Reliability")."""
    from genie.serve import drills as play_load

    path = make_tiny_world(tmp_path / "w", frame_size=64, width=128)
    proc, url = play_load.start_server(path, 6)
    try:
        assert not play_load.player_round(url, 1, 3, proc.pid)["errors"]
        time.sleep(6)
        idle = play_load.rss_mb(proc.pid)
        after, peaks = [], []
        for _ in range(2):
            r = play_load.player_round(url, 6, 12, proc.pid)
            assert not r["errors"], r["errors"]
            time.sleep(8)
            after.append(play_load.rss_mb(proc.pid))
            peaks.append(r["peak_mb"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"idle {idle:.0f} MB, peaks {peaks}, after {after}")
    assert min(peaks) > idle + 40  # the players did hold memory
    assert max(after) < idle + 30
    assert after[1] < after[0] + 10


def raw_call(url: str, name: str, data: list) -> str:
    """An HTTP call of an endpoint as curl makes it: no session hash, so Gradio makes the call
    a session of its own (named after its event id). Returns the answer's event stream."""
    body = json.dumps({"data": data}).encode()
    req = urllib.request.Request(
        f"{url}gradio_api/call/{name}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{name}/{event}") as r:
        return r.read().decode()


def test_raw_calls_without_a_session_free_their_seat_when_they_end(world):
    """The drill: 200 raw calls in a loop on a server of 2 seats while an API client plays in
    one. Each call is answered and frees its seat as it ends: afterwards only the client's seat
    is taken and the client plays on. (Before, each call kept its seat until evicted 2 minutes
    later: the second call waited 5 s for a seat, then was told "too many players".)"""
    from gradio_client import Client

    from genie.serve import app as playground
    from genie.serve.browser import free_port

    demo = playground.build_demo(world, max_players=2)
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    player = Client(url, verbose=False)
    try:
        player.predict(None, api_name="/reset")
        calls = [("step", ["right"]), ("reset", [None]), ("undo", [])]
        t = time.monotonic()
        for i in range(200):
            answer = raw_call(url, *calls[i % len(calls)])
            assert "event: complete" in answer, answer[-500:]
        print(f"200 raw calls in {time.monotonic() - t:.1f} s")
        assert list(demo.sessions._by_id) == [player.session_hash]
        _, info = player.predict("left", api_name="/step")
        assert info["frame"] == 1  # the client's world is its own still
    finally:
        player.close()
        demo.close()


def test_bench_play_players_reports_each_count(world, genie_cli):
    import json

    rc, out, _ = genie_cli(
        "bench", "play", "--world", world.root, "--players", "1,3", "--seconds", "1", "--json"
    )
    rows = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and [r["players"] for r in rows] == [1, 3]
    assert all(r["fps_per_player"] > 0 and r["step_p50_ms"] <= r["step_p95_ms"] for r in rows)
    assert rows[1]["fps_total"] > 0 and rows[1]["rows_per_call"] > 1  # three players shared calls
