"""Every user mistake of the reliability drill ends in one line (exit 2 on the command line, an
AppError with the real message over HTTP, one line in the server log), never a traceback;
seats of closed clients free promptly; killed playgrounds' temp folders are cleaned up."""

import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from PIL import Image

from genie.serve.browser import free_port
from worlds import make_tiny_world, one_torch_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "tiny")


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_config_that_does_not_match_the_weights_is_one_line(world, tmp_path, genie_cli):
    bad = tmp_path / "bad"
    shutil.copytree(world, bad)
    cfg = bad / "tokenizer" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "width": 96}))
    rc, _, err = genie_cli("generate", "--world", bad, "--out", tmp_path / "x.gif")
    assert rc == 2 and "does not match" in one_line(err) and "size mismatch" in err
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "width": 90}))  # 90 % 4 heads
    rc, _, err = genie_cli("play", "--world", bad, "--port", free_port())
    assert rc == 2 and "describes no buildable tokenizer" in one_line(err)


def test_play_addresses_and_bounds_are_one_line(world, genie_cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _, err = genie_cli("play", "--world", world, "--port", port)
        assert rc == 2 and f"port {port} on 127.0.0.1 is in use" in one_line(err)
    for args, says in [
        (["--port", "99999"], "use a port in 1..65535"),
        (["--host", "10.254.254.1"], "is not an address of this machine"),
        (["--host", "no-such-host.invalid"], "no such host"),
        (["--max-players", "0"], "--max-players must be >= 1"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
    ]:
        rc, _, err = genie_cli("play", "--world", world, "--port", free_port(), *args)
        assert rc == 2 and says in one_line(err), args


def test_generate_bounds_are_one_line(world, tmp_path, genie_cli):
    out = tmp_path / "x.gif"
    for args, says in [
        (["--scale", "1000"], "--scale must be 1..16"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--scale", "16", "--frames", "10000", "--samples", "16"], "GiB"),
    ]:
        rc, _, err = genie_cli("generate", "--world", world, "--out", out, *args)
        assert rc == 2 and says in one_line(err) and not out.exists(), args


def test_a_corrupt_example_fails_the_world_load_in_one_line(world, tmp_path, genie_cli):
    bad = tmp_path / "bad"
    shutil.copytree(world, bad)
    png = bad / "examples" / "start_0.png"
    png.write_bytes(png.read_bytes()[:200])
    rc, _, err = genie_cli("play", "--world", bad, "--port", free_port())
    assert rc == 2 and "start_0.png" in one_line(err) and "replace or delete" in err


@pytest.fixture(scope="module")
def app(world):
    from genie.serve import app as playground

    demo = playground.build_demo(world, max_players=4)
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()


def call(url: str, name: str, data: list) -> str:
    """A raw HTTP call of an endpoint (no gradio_client: it would upload a local file)."""
    body = json.dumps({"data": data}).encode()
    req = urllib.request.Request(
        f"{url}gradio_api/call/{name}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{name}/{event}") as r:
        return r.read().decode()


def test_server_paths_and_bad_actions_show_their_message_and_log_one_line(
    app, tmp_path, caplog, capfd
):
    _, url = app
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    path = {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    caplog.set_level(logging.WARNING, logger="genie.play")
    for name, data, says in [
        ("reset", [path], "not uploaded by a user"),
        ("generate", [path, "start_0", "right", 2, 1, 0, "gif"], "not uploaded by a user"),
        ("reset", ["/etc/hostname"], "not a file"),
        ("step", ["jump"], "unknown action 'jump'"),
    ]:
        answer = call(url, name, data)
        assert "event: error" in answer and says in answer and '"error": null' not in answer
    time.sleep(0.5)  # Gradio prints from its own threads
    logged = [r.getMessage() for r in caplog.records if r.name == "genie.play"]
    assert len(logged) == 4 and all("\n" not in m for m in logged)
    assert "Traceback" not in capfd.readouterr().err


def test_api_frames_are_files_of_their_own(app):
    """Two players shown the same frame get two files: Gradio rewrites a file named after its
    bytes in place, and a second download of it could read it half written."""
    from gradio_client import Client

    _, url = app
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    try:
        fa, _ = a.predict(None, api_name="/reset")
        fb, _ = b.predict(None, api_name="/reset")
    finally:
        a.close()
        b.close()
    assert fa != fb
    assert Image.open(fa).tobytes() == Image.open(fb).tobytes()


def test_seats_of_closed_clients_free_promptly(world):
    """max_players 2 and five clients one after another, each closed when done: none is
    refused (a closed client's seat frees within a heartbeat, and a newcomer waits for it)."""
    from gradio_client import Client

    from genie.serve import app as playground

    demo = playground.build_demo(world, max_players=2)
    url = playground.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        t = time.monotonic()
        for _ in range(5):
            c = Client(url, verbose=False)
            c.predict(None, api_name="/reset")
            c.predict("right", api_name="/step")
            c.close()
        assert time.monotonic() - t < 60
        assert len(demo.sessions) <= 2
    finally:
        demo.close()


def test_stale_temp_folders_of_killed_playgrounds_are_removed(tmp_path):
    from genie.serve.app import clean_stale_tmp

    proc = subprocess.Popen(["true"])  # a pid that has exited
    proc.wait()
    gone = tmp_path / f"genie-play-{proc.pid}-abc"
    mine = tmp_path / f"genie-play-{os.getpid()}-def"
    old = tmp_path / "genie-play-k3x9_q2a"  # before folders named their pid
    for d in (gone, mine, old):
        d.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    removed = clean_stale_tmp(tmp_path)
    assert sorted(removed) == sorted([gone, old]) and mine.is_dir()
