"""`genie playtest`: the play test scores fake worlds as it should, replays real games
deterministically, and writes its report from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genie.data.record import COINRUN_DISTINCT
from genie.eval.playtest import Controls, resolve_controls, run_playtest, script_actions
from tests.worlds import make_tiny_world, one_torch_thread  # noqa: F401 (fixture)

SIZE, WIDE, CAM0, SPEED = 32, 512, 200, 3  # synthetic level: a 32 x 512 strip, camera 3 px/frame
# CoinRun's distinct actions -> camera movement in x (right moves the camera right)
CAMERA = {"left": -SPEED, "right": SPEED, "jump-left": -SPEED, "jump-right": SPEED}


def level_strip(level: int) -> np.ndarray:
    """uint8 (SIZE, WIDE, 3): textured 4-px tiles under coloured blocks, different per level."""
    rng = np.random.default_rng(level)
    tiles = rng.integers(60, 180, (SIZE // 4, WIDE // 4, 1)).repeat(4, 0).repeat(4, 1)
    img = np.repeat(tiles, 3, -1).astype(np.uint8)
    for _ in range(40):
        y, x = rng.integers(0, SIZE - 8), rng.integers(0, WIDE - 12)
        img[y : y + rng.integers(4, 12), x : x + rng.integers(6, 16)] = rng.integers(0, 255, 3)
    return img


def scroll_game(levels, actions, mirror: bool = False):
    """A game whose camera scrolls along each level's strip: (L, K+1, SIZE, SIZE, 3), restarts."""
    out = []
    for lv, acts in zip(levels, actions, strict=True):
        strip, cam, frames = level_strip(lv), CAM0, []
        for t in range(len(acts) + 1):
            frames.append(strip[:, cam : cam + SIZE])
            if t < len(acts):
                cam += (-1 if mirror else 1) * CAMERA.get(COINRUN_DISTINCT[int(acts[t])], 0)
        out.append(np.stack(frames))
    return np.stack(out), np.zeros((len(levels), actions.shape[1] + 1), bool)


def identity_controls() -> Controls:
    n = len(COINRUN_DISTINCT)
    ids = list(range(n))
    return Controls(COINRUN_DISTINCT, ids, ids, [True] * n, 0, COINRUN_DISTINCT)


def world_from_game(mirror=False, blur=False):
    """A fake world that plays the synthetic game from the start frame it is given."""
    lookup = {level_strip(lv)[:, CAM0 : CAM0 + SIZE].tobytes(): lv for lv in range(10)}

    def play(starts, actions):
        frames, _ = scroll_game([lookup[s.tobytes()] for s in starts], actions, mirror)
        frames = frames[:, 1:]
        if blur:
            x = torch.from_numpy(frames).float().flatten(0, 1).permute(0, 3, 1, 2)
            x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            frames = x.permute(0, 2, 3, 1).reshape(frames.shape).round().byte().numpy()
        return frames

    return play


def copy_world(starts, actions):
    return np.repeat(starts[:, None], actions.shape[1], 1)


def play(world, scripts=None, horizon=16):
    metrics, _ = run_playtest(
        scroll_game, world, identity_controls(), [1, 2, 3], horizon, scripts, seed=0
    )
    return metrics


def test_a_world_that_copies_its_input_scores_exactly_holding_the_start_frame():
    m = play(copy_world)
    for script in m["scripts"].values():
        for h in ("1", "4", "16", "all"):
            assert script[h]["psnr"] == script[h]["hold_start_psnr"]
            assert script[h]["ssim"] == script[h]["hold_start_ssim"]
    assert m["scripts"]["hold-right"]["16"]["hold_start_psnr"] < 30  # the game did move


def test_the_game_against_itself_agrees_and_a_mirrored_world_does_not():
    m = play(world_from_game())
    right = m["scripts"]["hold-right"]
    assert right["all"]["motion_agreement"] == 1.0 and right["all"]["motion_error_px"] == 0
    assert right["16"]["psnr"] == 50.0 and right["16"]["sharpness"] == pytest.approx(1.0)
    assert right["all"]["motion_moving"] >= 3 * 14  # 3 levels, t = 2..16 moved >= 2 px
    assert m["mean"]["all"]["motion_agreement"] == 1.0
    mirrored = play(world_from_game(mirror=True))
    assert mirrored["scripts"]["hold-right"]["all"]["motion_agreement"] < 0.1
    assert mirrored["mean"]["all"]["motion_agreement"] < 0.3


def test_window_metrics_count_how_far_not_only_which_way():
    """Against the game itself: every window agrees and the distance ratio is 1. A world that
    moves half as far agrees on direction from the start (the old metric), yet its distance
    ratio is 0.5; a world that moves for the first 4 frames and then stops loses the later
    windows."""
    from genie.eval.playtest import score

    game = np.stack([np.roll(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3)),
                             2 * t, axis=1) for t in range(17)])[None]  # fmt: skip
    half = np.stack([np.roll(game[0, 0], t, axis=1) for t in range(17)])[None]
    stops = np.concatenate([game[:, :5], np.repeat(game[:, 4:5], 12, 1)], 1)
    same = score(game, game, [16])["all"]
    assert same["window_agreement"] == 1.0 and same["scroll_distance_ratio"] == pytest.approx(1.0)
    slow = score(game, half, [16])["all"]
    assert slow["motion_agreement"] == 1.0  # direction from the start: looks perfect
    assert slow["scroll_distance_ratio"] == pytest.approx(0.5, abs=0.1)
    stopped = score(game, stops, [16])["all"]
    assert stopped["window_agreement"] <= 0.3 and stopped["scroll_distance_ratio"] < 0.35
    assert score(game, game, [1])["1"]["window_agreement"] is None  # no whole window yet


def test_a_window_where_the_game_restarts_its_level_is_left_out():
    """The game scrolls right 2 px a frame, restarts its level at frame 9 (the camera jumps
    back to the start) and scrolls on; a world that scrolls the same way throughout agrees with
    every window but the one holding the restart, and moves as far (within the tracker's
    sub-pixel error). Scored without the
    restart flags, the jump back reads as motion the wrong way."""
    from genie.eval.playtest import score

    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))
    world = np.stack([np.roll(ramp, 2 * t, axis=1) for t in range(17)])[None]
    game = np.stack([np.roll(ramp, 2 * (t if t < 9 else t - 9), axis=1) for t in range(17)])[None]
    restarts = np.zeros((1, 17), bool)
    restarts[0, [0, 9]] = True  # frame 0 is flagged too, as the game's replay flags it
    fair = score(game, world, [16], restarts=restarts)["all"]
    assert restarts.sum() == 2 and restarts[0, 0]  # the caller's flags are left as they were
    assert fair["window_restarts"] == 1  # frames 9..12: the window (8, 12]
    assert fair["window_agreement"] == 1.0
    assert fair["scroll_distance_ratio"] == pytest.approx(1.0, abs=0.1)
    assert fair["motion_agreement"] == 1.0  # frames 1..8: before the restart
    blind = score(game, world, [16])["all"]
    assert blind["window_restarts"] == 0 and blind["window_agreement"] < 1.0


def test_a_blurred_world_scores_sharpness_below_one():
    m = play(world_from_game(blur=True), ["hold-right", "stand-still"])
    for h in ("1", "16", "all"):
        assert m["mean"][h]["sharpness"] < 0.9
    assert m["scripts"]["stand-still"]["all"]["colour_drift_pct"] < 1.0  # blur keeps colours


def test_scripts_are_seeded_and_skipped_when_the_game_lacks_an_action():
    c = identity_controls()
    a = script_actions("sticky-random", 400, c, seed=0, level=5)
    assert np.array_equal(a, script_actions("sticky-random", 400, c, seed=0, level=5))
    assert not np.array_equal(a, script_actions("sticky-random", 400, c, seed=0, level=6))
    assert 4 < 400 / (1 + np.count_nonzero(np.diff(a))) < 14  # held ~8 frames (same draws merge)
    run = script_actions("run-and-jump", 20, c, 0, 0)
    assert [COINRUN_DISTINCT[i] for i in run[[0, 7, 8, 15, 16]]] == [
        "right", "right", "jump-right", "jump-right", "right",
    ]  # fmt: skip
    lrj = [COINRUN_DISTINCT[i] for i in script_actions("left-right-jump", 9, c, 0, 0)]
    assert lrj == ["left"] * 3 + ["right"] * 3 + ["jump"] * 3
    breakout = resolve_controls(["NOOP", "FIRE", "RIGHT", "LEFT"], [0, 1, 2, 3], ["noop"])
    assert script_actions("run-and-jump", 8, breakout, 0, 0) is None  # no jump-right
    assert breakout.labels[script_actions("left-right-jump", 3, breakout, 0, 0)[2]] == "FIRE"
    m, _ = run_playtest(
        scroll_game, copy_world, breakout, [1], 4, ["hold-right", "run-and-jump"], seed=0
    )
    assert list(m["scripts"]) == ["hold-right"]
    assert "jump-right" in m["skipped_scripts"]["run-and-jump"]


def test_controls_match_by_label_then_by_game_action():
    lam = ["action 0", "action 1", "jump", "action 3", "right"]  # like the shipped LAM world
    c = resolve_controls(COINRUN_DISTINCT, [4, 1, 7, 5, 2, 8], lam)
    assert c.missing == ["noop", "left", "jump-left", "jump-right"]
    assert c.fallback == 0 and c.world[COINRUN_DISTINCT.index("right")] == 4
    c = resolve_controls(COINRUN_DISTINCT, [4, 1, 7, 5, 2, 8], ["Jump Right", "NOOP", "x"])
    assert c.world[5] == 0 and c.fallback == 1 and c.world[1] == 1  # left plays noop
    true = resolve_controls(COINRUN_DISTINCT, [4, 1, 7, 5, 2, 8], ["a", "b", "c"], [7, 4, 8])
    assert true.missing == ["left", "jump", "jump-left"] and true.world[2] == 0
    # names from the world's own motion (a top-down compass): jump is played with "up", the
    # key both are pressed with; exact names still come first (Atari's UP is not FIRE)
    named = ["right", "up", "upright", "down", "noop", "right 2"]
    c = resolve_controls(COINRUN_DISTINCT, [4, 1, 7, 5, 2, 8], named)
    assert c.world == [4, 4, 0, 1, 4, 2] and c.missing == ["left", "jump-left"]
    atari = resolve_controls(["NOOP", "FIRE", "UP"], [0, 1, 2], ["noop", "fire", "up"])
    assert atari.world == [0, 1, 2]


def test_coinrun_replay_is_deterministic():
    pytest.importorskip("procgen")
    from genie.eval.replay import coinrun_player

    game = coinrun_player(64)
    actions = np.array([[7] * 6, [8] * 6])  # hold right; hold jump-right
    a, restarts = game([10500, 10501], actions)
    b, _ = game([10500, 10501], actions)
    assert a.shape == (2, 7, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and restarts[:, 0].all()
    assert (a[:, 1:] != a[:, :1]).any()  # the frames change


def test_atari_replay_is_deterministic():
    pytest.importorskip("ale_py")
    from genie.eval.replay import atari_player

    game = atari_player("ALE/Pong-v5", 32)
    actions = np.array([[2, 2, 3, 3, 0, 1]])
    a, _ = game([3], actions)
    b, _ = game([3], actions)
    assert a.shape == (1, 7, 32, 32, 3) and np.array_equal(a, b)


def test_a_recorded_prefix_moves_the_start_frame_and_the_world_starts_there():
    starts = []

    def world(s, actions):
        starts.append(s.copy())
        return copy_world(s, actions)

    prefix = np.full((3, 5), COINRUN_DISTINCT.index("right"))  # 5 frames of right, 2 px each
    m, frames = run_playtest(
        scroll_game, world, identity_controls(), [1, 2, 3], 8, ["stand-still"], prefix=prefix
    )
    game = frames["stand-still"]["game"]
    assert m["start_at"] == 5 and game.shape[1] == 9
    full, _ = scroll_game([1, 2, 3], np.concatenate([prefix, np.zeros((3, 8), int)], 1))
    assert np.array_equal(game, full[:, 5:])  # the game from the frame after the prefix
    assert np.array_equal(starts[0], full[:, 5])  # and the world from the same frame


def test_boxing_sprite_motion_agrees_with_itself_and_not_with_the_mirror_key():
    pytest.importorskip("ale_py")
    from genie.eval.playtest import score
    from genie.eval.replay import atari_player

    game = atari_player("ALE/Boxing-v5", 64)
    right, _ = game([0], np.full((1, 24), 3))  # RIGHT: the white boxer walks right
    down, _ = game([0], np.full((1, 24), 5))  # DOWN
    white = (214, 214, 214)
    assert score(right, right, [24], white)["24"]["motion_agreement"] == 1.0
    assert score(right, down, [24], white)["all"]["motion_agreement"] < 0.2


@pytest.fixture(scope="module")
def coinrun_test_data(tmp_path_factory):
    pytest.importorskip("procgen")
    from genie.data.record import record_coinrun

    out = tmp_path_factory.mktemp("data") / "coinrun"
    record_coinrun(out, [("test", 10500)], steps=6, progress=False)
    return out


def test_cli_writes_metrics_report_strips_and_gifs(tmp_path, genie_cli, coinrun_test_data):
    world = make_tiny_world(tmp_path / "world")
    out = tmp_path / "pt"
    rc, stdout, err = genie_cli(
        "playtest", "--world", world, "--data", coinrun_test_data, "--horizon", "4",
        "--out", out, "--scripts", "hold-right,stand-still", "sticky-random",
    )  # fmt: skip
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["levels"] == [10500] and m["horizons"] == [1, 4]
    assert list(m["scripts"]) == ["hold-right", "stand-still", "sticky-random"]
    for key in ("psnr", "ssim", "hold_start_psnr", "hold_start_ssim", "sharpness",
                "colour_drift_pct", "motion_agreement", "motion_error_px"):  # fmt: skip
        assert key in m["mean"]["4"] and key in m["scripts"]["hold-right"]["1"]
    # the tiny top-down world: jump is played with its "up" (the same key), no diagonal to jump
    assert m["controls"]["missing"] == ["jump-left", "jump-right"]
    for name in m["scripts"]:
        assert (out / f"strip_{name}.png").is_file() and (out / f"play_{name}.gif").is_file()
    # one level: game, the world's decoding of the game, world = three rows of frames
    from PIL import Image

    from genie.eval.report import GAP, HEADER_H, LABEL_W

    width, height = Image.open(out / "strip_hold-right.png").size
    frame = (width - LABEL_W + GAP) // 3 - GAP  # columns: start, t = 1, t = 4
    assert height == HEADER_H + 3 * frame + 2 * GAP
    report = (out / "report.md").read_text()
    assert "strip_hold-right.png" in report and "Without a key: jump-left, jump-right" in report
    rc, _, err = genie_cli("playtest", "--world", world, "--data", coinrun_test_data,
                           "--levels", "0:2", "--out", out)  # fmt: skip
    assert rc == 2 and "not in split 'test'" in err
