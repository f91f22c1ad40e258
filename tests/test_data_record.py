"""Recording real CoinRun and Atari gameplay: content, manifest, splits, resume after a crash."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from genie.data import ClipDataset, open_dataset, record
from genie.data import format as fmt
from genie.utils.errors import UserError

coinrun = pytest.mark.skipif(
    importlib.util.find_spec("procgen") is None, reason="procgen not installed"
)
atari = pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None, reason="ale-py not installed"
)


def arrays(root, episode) -> dict[str, np.ndarray]:
    return {
        k: np.asarray(
            np.load(fmt.shard_path(root, episode.shard, k), mmap_mode="r")[
                episode.start : episode.start + episode.length
            ]
        )
        for k in fmt.ARRAYS
    }


def test_plan_follows_genie_splits():
    full = record.plan_episodes(11_000, None, None)
    by_split = {s: [seed for split, seed in full if split == s] for s in ("train", "val", "test")}
    assert by_split == {
        "train": list(range(10_000)),
        "val": list(range(10_000, 10_500)),
        "test": list(range(10_500, 11_000)),
    }
    assert record.plan_episodes(3, None, None) == [("train", 0), ("val", 10_000), ("test", 10_500)]
    assert record.plan_episodes(2, None, "val") == [("val", 10_000), ("val", 10_001)]
    assert record.plan_episodes(None, (7, 9), "holdout") == [("holdout", 7), ("holdout", 8)]
    with pytest.raises(UserError, match="--episodes"):
        record.plan_episodes(None, None, None)


@coinrun
def test_record_coinrun(tmp_path, genie_cli):
    root = tmp_path / "coinrun"
    rc, out, _ = genie_cli(
        "record",
        "coinrun",
        "--out",
        root,
        "--episodes",
        "3",
        "--steps-per-episode",
        "120",
        "--num-envs",
        "2",
        "--quiet",
    )
    assert rc == 0 and "recorded 3 episodes (360 frames)" in out
    m = open_dataset(root)
    assert m.frame_size == (64, 64) and m.fps == 15.0
    assert m.source["kind"] == "coinrun" and m.source["distribution_mode"] == "hard"
    assert m.action_space["n"] == 15 and len(m.action_space["labels"]) == 15
    assert m.action_space["labels"][:9] == [
        "down-left",
        "left",
        "jump-left",
        "down",
        "noop",
        "jump",
        "down-right",
        "right",
        "jump-right",
    ]
    assert [(e.split, e.seed, e.length) for e in m.episodes] == [
        ("train", 0, 120),
        ("val", 10_000, 120),
        ("test", 10_500, 120),
    ]
    frames = []
    for e in m.episodes:
        a = arrays(root, e)
        assert a["frames"].shape == (120, 64, 64, 3) and a["frames"].dtype == np.uint8
        assert a["frames"].std() > 10 and (np.diff(a["frames"].astype(int), axis=0) != 0).any()
        assert (
            a["actions"].min() >= 0
            and a["actions"].max() <= 14
            and len(set(a["actions"].tolist())) > 5
        )
        assert a["firsts"][0]
        frames.append(a["frames"][0])
    assert not (frames[0] == frames[1]).all()  # different levels look different
    seeds = {s: {e.seed for e in m.episodes if e.split == s} for s in ("train", "val", "test")}
    assert (
        not (seeds["train"] & seeds["val"])
        and not (seeds["train"] & seeds["test"])
        and not (seeds["val"] & seeds["test"])
    )
    assert ClipDataset(root, split="val", clip_len=16, cross_resets=True)[0]["frames"].shape == (
        16,
        64,
        64,
        3,
    )

    # same folder, different settings -> one line, nothing touched
    before = (root / "manifest.json").read_bytes()
    rc, _, err = genie_cli(
        "record",
        "coinrun",
        "--out",
        root,
        "--episodes",
        "3",
        "--steps-per-episode",
        "60",
        "--quiet",
    )
    assert (
        rc == 2 and "different dataset" in err and (root / "manifest.json").read_bytes() == before
    )
    # a seed may live in one split only
    rc, _, err = genie_cli(
        "record",
        "coinrun",
        "--out",
        root,
        "--levels",
        "0:2",
        "--split",
        "val",
        "--steps-per-episode",
        "120",
        "--quiet",
    )
    assert rc == 2 and "already recorded" in err and (root / "manifest.json").read_bytes() == before


@coinrun
def test_vectorised_recording_equals_separate_envs():
    """Moving each level's state into one n-env procgen replays the same game as a 1-env procgen
    per level, including the restarts after deaths."""
    procgen_env = record._import_procgen()
    levels, steps = [3, 7, 11], 300  # levels 3 and 7 die and restart (steps 104; 75 and 281)
    actions = np.stack([record.episode_actions(0, lv, steps, 15, 1) for lv in levels])
    played = record.record_coinrun_batch(levels, steps, actions, seed=0)
    for lv, acts, p in zip(levels, actions, played, strict=True):
        env = procgen_env(
            num=1,
            env_name="coinrun",
            distribution_mode="hard",
            start_level=lv,
            num_levels=1,
            rand_seed=lv,
        )
        for t in range(steps):
            _, obs, first = env.observe()
            assert (obs["rgb"][0] == p["frames"][t]).all(), f"level {lv} differs at step {t}"
            env.act(acts[t : t + 1])
    assert [np.flatnonzero(p["firsts"]).tolist() for p in played] == [[0, 104], [0, 75, 281], [0]]


def test_sticky_policy_holds_distinct_actions_biased_forward():
    a = record.coinrun_episode_actions(0, 5, 4000, 1, "sticky", 8.0)
    assert set(a.tolist()) <= set(record.COINRUN_DISTINCT_BUTTON)
    runs = np.diff(np.flatnonzero(np.diff(a) != 0))
    assert 5 < runs.mean() < 12  # held ~8 frames (a repeat draw of the same action lengthens it)
    right, left = (a == 7).mean() + (a == 8).mean(), (a == 1).mean() + (a == 2).mean()
    assert right > 2 * left  # forward more often than back
    assert np.array_equal(a, record.coinrun_episode_actions(0, 5, 4000, 1, "sticky", 8.0))


@coinrun
def test_sticky_recording_moves_the_character_more_than_uniform():
    """What docs/DATA.md claims: under `uniform` CoinRun barely moves (its random buttons
    cancel), under `sticky` the character runs and the camera scrolls."""
    from genie.utils.metrics import track_scroll

    levels, steps = [3, 4, 5, 6, 7, 8], 400
    travel = {}
    for policy in ("uniform", "sticky"):
        acts = [record.coinrun_episode_actions(0, lv, steps, 1, policy, 8.0) for lv in levels]
        played = record.record_coinrun_batch(levels, steps, np.stack(acts))
        frames = torch.from_numpy(np.stack([p["frames"] for p in played])).float() / 255
        # the camera follows the character: content moving left = the character ran right
        dx = -track_scroll(frames)[:, :, 1]  # (levels, steps) px right of the start
        travel[policy] = dx.amax(1).mean().item()
    # measured: 68 vs 31 px furthest right on average over these levels
    assert travel["sticky"] > 1.7 * travel["uniform"], travel


def test_action_repeat_holds_actions():
    a = record.episode_actions(0, 5, 20, 15, 4)
    assert len(a) == 20 and all(len(set(a[i : i + 4])) == 1 for i in range(0, 20, 4))
    assert len(set(a.tolist())) > 1


@coinrun
def test_resume_after_interrupt_equals_uninterrupted(tmp_path, monkeypatch):
    plan = record.plan_episodes(None, (0, 6), "train")
    whole = tmp_path / "whole"
    record.record_coinrun(whole, plan, steps=50, num_envs=2, progress=False)

    resumed = tmp_path / "resumed"
    real, shards = fmt.DatasetWriter.write_shard, []

    def dies_in_third_shard(self, episodes):
        if len(shards) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C or a kill hit while writing
        shards.append(real(self, episodes))
        return shards[-1]

    monkeypatch.setattr(fmt.DatasetWriter, "write_shard", dies_in_third_shard)
    with pytest.raises(KeyboardInterrupt):
        record.record_coinrun(resumed, plan, steps=50, num_envs=2, progress=False)
    monkeypatch.undo()
    assert len(open_dataset(resumed).episodes) == 4
    res = record.record_coinrun(resumed, plan, steps=50, num_envs=2, progress=False)
    assert (res.recorded, res.skipped) == (2, 4)
    a, b = open_dataset(whole), open_dataset(resumed)
    assert [(e.name, e.split, e.length) for e in a.episodes] == [
        (e.name, e.split, e.length) for e in b.episodes
    ]
    for ea, eb in zip(a.episodes, b.episodes, strict=True):
        xa, xb = arrays(whole, ea), arrays(resumed, eb)
        assert all(np.array_equal(xa[k], xb[k]) for k in fmt.ARRAYS), ea.name
    again = record.record_coinrun(resumed, plan, steps=50, num_envs=2, progress=False)
    assert (again.recorded, again.skipped) == (0, 6)


@atari
def test_record_atari_pong(tmp_path, genie_cli):
    root = tmp_path / "pong"
    rc, out, _ = genie_cli(
        "record",
        "atari",
        "--game",
        "Pong",
        "--out",
        root,
        "--episodes",
        "1",
        "--split",
        "train",
        "--steps-per-episode",
        "200",
        "--size",
        "48",
        "--quiet",
    )
    assert rc == 0 and "200 frames" in out
    m = json.loads((root / "manifest.json").read_text())
    assert (
        m["frame_size"] == [48, 48]
        and m["source"]["game"] == "Pong"
        and m["source"]["env"] == "ALE/Pong-v5"
    )
    labels = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert m["action_space"] == {
        "n": 6,
        "labels": labels,
        "distinct": {"labels": labels, "of": list(range(6)), "game_action": list(range(6))},
    }
    assert m["source"]["repeat_action_probability"] == 0.0  # replayable: no emulator stickiness
    e = open_dataset(root).episodes[0]
    a = arrays(root, e)
    assert a["frames"].shape == (200, 48, 48, 3) and a["frames"].std() > 10
    assert (
        np.abs(np.diff(a["frames"].astype(int), axis=0)).sum(axis=(1, 2, 3)) > 0
    ).mean() > 0.5  # things move
    assert 0 <= a["actions"].min() and a["actions"].max() <= 5


@atari
def test_unknown_atari_game_says_how_to_list(tmp_path, genie_cli):
    rc, _, err = genie_cli(
        "record", "atari", "--game", "Pongg", "--out", tmp_path / "x", "--episodes", "1"
    )
    assert rc == 2 and "did you mean Pong" in err and "--list-games" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    rc, out, _ = genie_cli("record", "atari", "--list-games")
    assert rc == 0 and "Pong" in out.split()


@coinrun
def test_killed_recording_resumes(tmp_path):
    """SIGKILL a real `genie record` mid-run: what is listed reads back, the rerun completes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "killed"
    cmd = [sys.executable, "-m", "genie", "record", "coinrun", "--out", str(root), "--levels", "0:60",
           "--steps-per-episode", "100", "--num-envs", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if (root / "manifest.json").exists() and len(open_dataset(root).episodes) >= 4:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = open_dataset(root)
    assert 4 <= len(partial.episodes) < 60, "the run was not cut short"
    assert len(ClipDataset(root, clip_len=16, cross_resets=True)) == len(partial.episodes) * 6
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(partial.episodes)} were already there" in done.stdout
    final = open_dataset(root)
    assert [e.seed for e in final.episodes] == list(range(60))
    assert not [p for p in (root / "shards").iterdir() if not p.name.isdigit()]
    fresh = tmp_path / "fresh"
    record.record_coinrun(
        fresh, [("train", 0), ("train", 59)], steps=100, num_envs=2, progress=False
    )
    for got, want in zip(
        [final.episodes[0], final.episodes[-1]], open_dataset(fresh).episodes, strict=True
    ):
        a, b = arrays(root, got), arrays(fresh, want)
        assert all(np.array_equal(a[k], b[k]) for k in fmt.ARRAYS)


def test_atari_action_subset_becomes_the_distinct_actions():
    from genie.data.atari import atari_action_space
    from genie.utils.errors import UserError

    labels = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPFIRE", "UPRIGHTFIRE"]
    space = atari_action_space("Boxing", labels, ["noop", "fire", "up", "right", "upright"])
    d = space["distinct"]
    assert d["labels"] == ["NOOP", "FIRE", "UP", "RIGHT", "UPRIGHT"]
    assert d["game_action"] == [0, 1, 2, 3, 6]
    # unplayed game actions collapse onto the played one they contain (LEFT, DOWN: none -> NOOP)
    assert d["of"] == [0, 1, 2, 3, 0, 0, 4, 1, 4]
    with pytest.raises(UserError, match="unknown JUMP"):
        atari_action_space("Boxing", labels, ["NOOP", "JUMP"])
    assert atari_action_space("Boxing", labels, None)["distinct"]["of"] == list(range(9))


@coinrun
def test_action_ceiling_replays_the_recording_and_groups_actions_by_their_frames():
    """scripts/action_ceiling.py: the replay follows the recorded frames, the pressed action is
    always in its own group, and CoinRun's actions often draw the same frame (mid-air, walls)."""
    spec = importlib.util.spec_from_file_location("action_ceiling", "scripts/action_ceiling.py")
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    level, steps = 10500, 120
    acts = record.coinrun_episode_actions(0, level, steps + 2, 1, "sticky", 8.0)
    played = record.record_coinrun_batch([level], steps + 2, acts[None], seed=0)[0]
    groups = ceiling.replay_groups(level, acts, 0, 2, played["frames"])  # raises if it strays
    assert groups.shape == (steps, 2, 6)
    true = np.array([record.COINRUN_BUTTON_TO_DISTINCT[a] for a in acts[:steps]])
    same = groups[:, 0] == groups[np.arange(steps), 0, true][:, None]
    assert same[np.arange(steps), true].all()
    assert 0.05 < (same.sum(1) == 1).mean() < 0.95  # some steps tell the action, many do not
    t = int(np.flatnonzero(same.sum(1) == 1)[0])  # a step only the pressed action explains
    wrong = acts.copy()
    wrong[t] = record.COINRUN_DISTINCT_BUTTON[int(np.flatnonzero(~same[t])[0])]
    with pytest.raises(SystemExit, match="left the recording"):
        ceiling.replay_groups(level, wrong, 0, 1, played["frames"])


def test_action_scroll_reads_which_way_each_action_moves_the_camera(tmp_path):
    """scripts/action_scroll.py: on a recording whose camera moves 2 px right under "right",
    2 px left under "left" and stands under "noop", it reads each step's camera motion with
    the right sign and labels it with the distinct action taken."""
    spec = importlib.util.spec_from_file_location("action_scroll", "scripts/action_scroll.py")
    scroll = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scroll)
    rng = np.random.default_rng(0)
    strip = rng.integers(0, 255, (32, 400, 3)).astype(np.uint8)
    labels = ["noop", "left", "right"]
    space = {"n": 3, "labels": labels, "distinct": {"labels": labels, "of": [0, 1, 2]}}
    eps = []
    for i in range(4):
        acts, cam, frames = rng.integers(0, 3, 40).astype(np.int16), 180, []
        for a in acts:
            frames.append(strip[:, cam : cam + 32])
            cam += {0: 0, 1: -2, 2: 2}[int(a)]
        frames.append(strip[:, cam : cam + 32])
        eps.append(
            fmt.EpisodeData(
                name=f"ep-{i}",
                split="test",
                frames=np.stack(frames),
                actions=np.append(acts, -1).astype(np.int16),
                seed=i,
            )  # fmt: skip
        )
    kw = dict(frame_size=(32, 32), source={"kind": "synthetic"}, fps=15.0, action_space=space)
    with fmt.DatasetWriter(tmp_path, **kw) as w:
        w.write_shard(eps)
    cam, act, names = scroll.camera_steps(str(tmp_path), "test", 100)
    assert names == labels
    assert len(act) == 100 and set(act) == {0, 1, 2}
    expected = np.array([0.0, -2.0, 2.0])[act]
    assert np.abs(cam[:, 1].numpy() - expected).max() < 0.5 and cam[:, 0].abs().max() < 0.5
