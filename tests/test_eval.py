"""`genie eval`: metrics.json with every promised key, a report with plots and GIFs, latent
action naming from co-occurrence with the true actions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from synthetic import ACTIONS, make_episode

from genie.cli import main
from genie.eval.protocol import name_latent_actions
from genie.models.lam import LAMConfig, LatentActionModel
from genie.world.folder import export_part
from worlds import make_tiny_world


def write_test_split(root: Path, episodes: int = 4, length: int = 40) -> Path:
    from genie.data import DatasetWriter, EpisodeData

    space = {"n": len(ACTIONS), "labels": list(ACTIONS)}
    with DatasetWriter(
        root, frame_size=(32, 32), source={"kind": "synthetic"}, fps=15.0, action_space=space
    ) as w:
        w.write_shard(
            [
                EpisodeData(name=f"ep-{i}", split="test", frames=f, actions=a)
                for i in range(episodes)
                for f, a in [make_episode(seed=100 + i, length=length)]
            ]
        )
    return root


def lam_world(path: Path) -> Path:
    """A tiny random world with a random LAM whose latent actions the dynamics plays."""
    world = make_tiny_world(path, num_actions=5, frame_size=32)
    torch.manual_seed(0)
    lam = LatentActionModel(
        LAMConfig(
            frame_size=32,
            patch_size=8,
            num_actions=5,
            width=32,
            enc_depth=1,
            dec_depth=1,
            heads=2,
            max_frames=8,
        )
    )
    export_part(world, "lam", lam.eval(), {"note": "random init"})
    meta = json.loads((world / "world.json").read_text())
    meta["actions"]["source"] = "lam"  # the dynamics plays latent actions: eval may name them
    (world / "world.json").write_text(json.dumps(meta))
    return world


def test_eval_writes_every_metric_and_a_report(tmp_path):
    world = lam_world(tmp_path / "world")
    data = write_test_split(tmp_path / "data")
    out = tmp_path / "eval"
    rc = main(
        [
            "eval",
            "--world",
            str(world),
            "--data",
            str(data),
            "--out",
            str(out),
            "--episodes",
            "3",
            "--context",
            "2",
            "--batch-size",
            "2",
            "--write-labels",
        ]
    )
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "codebook_usage", "sharpness"):
        assert math.isfinite(m["tokenizer"][key])
    assert 0 < m["tokenizer"]["codebook_usage"] <= 1 and m["tokenizer"]["sharpness"] > 0
    assert m["tokenizer"]["kind"] == "tokenizer" and m["tokenizer"]["representation"] == "ids"
    assert 0 <= m["lam"]["action_accuracy"] <= 1 and math.isfinite(m["lam"]["psnr"])
    # latent actions are scored on every episode's transitions, not only the 3 rollout clips
    assert m["lam"]["action_transitions"] > 3 * 17
    assert 0 <= m["lam"]["action_accuracy_held_out_shuffled"] <= 1
    d = m["dynamics"]
    for h in ("1", "4", "8", "16"):
        assert math.isfinite(d["psnr"][h]) and math.isfinite(d["ssim"][h])
        assert math.isfinite(d["baseline_copy_last_psnr"][h])
    assert math.isfinite(d["delta_psnr_4"])
    assert m["protocol"]["episodes"] == 3
    # the copy-last baseline is a real measurement: the sprite moves away over time
    assert d["baseline_copy_last_psnr"]["1"] > d["baseline_copy_last_psnr"]["16"]
    report = (out / "report.md").read_text()
    assert "ΔtPSNR@4" in report and (out / "psnr_by_horizon.png").stat().st_size > 1000
    assert list(out.glob("example_*.gif"))
    labels = json.loads((world / "world.json").read_text())["actions"]["labels"]
    assert labels == m["lam"]["latent_names"] and len(labels) == 5


def test_latent_actions_are_named_after_what_they_do():
    true_labels = [
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
    rng = np.random.default_rng(0)
    true = rng.integers(0, len(true_labels), size=5000)
    latent = np.select(
        [
            np.isin(true, [0, 1]),
            np.isin(true, [6, 7]),
            true == 5,
            np.isin(true, [2]),
            np.isin(true, [8]),
        ],
        [0, 1, 2, 3, 4],
        default=5,
    )
    names, counts = name_latent_actions(latent, true, 6, true_labels)
    assert names == ["left", "right", "jump", "jump left", "jump right", "idle"]
    assert counts.sum() == 5000


def test_latents_without_a_clear_meaning_get_generic_names():
    """A latent that co-occurs with every true action at its base rate is not named after the
    one that happens to lead by a few counts."""
    labels = ["left", "right", "jump", "noop"]
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, size=4000)
    latent = np.where(true == 1, 0, rng.integers(1, 3, size=4000))  # 0: right; 1, 2: noise
    names, _ = name_latent_actions(latent, true, 4, labels)
    assert names == ["right", "action 1", "action 2", "unused 3"]


def test_eval_measures_the_frames_the_engine_plays(tmp_path, monkeypatch):
    """The rollouts `genie eval` scores are the frames a one-player engine shows for the same
    seed, prompt and actions, bit for bit (so a number in a report is what a player sees)."""
    import genie.eval.protocol
    from genie.world.engine import WorldEngine

    world, data = lam_world(tmp_path / "world"), write_test_split(tmp_path / "data")
    played = []
    real = genie.eval.protocol.play_clips

    def spy(engine, frames, actions, context, horizon, seeds, random_actions):
        out = real(engine, frames, actions, context, horizon, seeds, random_actions)
        played.append((frames, actions, seeds, random_actions, out))
        return out

    monkeypatch.setattr(genie.eval.protocol, "play_clips", spy)
    argv = ["eval", "--world", world, "--data", data, "--out", tmp_path / "eval", "--seed", 3]
    assert main([str(a) for a in argv + ["--episodes", 3, "--context", 2, "--batch-size", 2]]) == 0
    assert [len(p[2]) for p in played] == [2, 1] and [p[2] for p in played] == [[3, 4], [5]]
    one = WorldEngine.load(world)
    for frames, actions, seeds, random_actions, out in played:
        for i, seed in enumerate(seeds):
            one.reset(frames[i, :2], seed=seed, actions=actions[i, :1])
            np.testing.assert_array_equal(one.rollout(actions[i, 1:17]), out.frames[i])
            one.reset(frames[i, :2], seed=seed, actions=actions[i, :1])
            np.testing.assert_array_equal(one.rollout(random_actions[i]), out.random[i])


def test_eval_reports_the_reconstruction_of_a_frame_autoencoder_world(tmp_path):
    """Any world is checked the same way: a diffusion world drawn by a frame autoencoder gets its
    reconstruction PSNR / SSIM / sharpness under "tokenizer" (no codebook: continuous latents)."""
    from worlds import make_tiny_autoencoder_world

    world = make_tiny_autoencoder_world(tmp_path / "world")
    data = write_test_split(tmp_path / "data", episodes=2)
    out = tmp_path / "eval"
    argv = ["eval", "--world", world, "--data", data, "--out", out, "--episodes", "2",
            "--context", "2", "--batch-size", "2"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    tok = json.loads((out / "metrics.json").read_text())["tokenizer"]
    assert tok["kind"] == "frame-autoencoder" and tok["representation"] == "latents"
    assert "codebook_usage" not in tok
    assert all(math.isfinite(tok[k]) for k in ("psnr", "ssim", "sharpness"))
    assert "frame-autoencoder | reconstruction PSNR" in (out / "report.md").read_text()


def test_eval_of_a_world_without_dynamics_reports_reconstruction_and_a_strip(tmp_path):
    """A world whose autoencoder is trained and whose dynamics is not yet: `genie eval` reports
    what it can draw (metrics.json "tokenizer") and writes reconstruction.png."""
    import shutil

    from worlds import make_tiny_autoencoder_world

    world = make_tiny_autoencoder_world(tmp_path / "world")
    shutil.rmtree(world / "dynamics")
    data = write_test_split(tmp_path / "data", episodes=2)
    out = tmp_path / "eval"
    assert main(["eval", "--world", str(world), "--data", str(data), "--out", str(out)]) == 0
    tok = json.loads((out / "metrics.json").read_text())["tokenizer"]
    assert tok["kind"] == "frame-autoencoder" and tok["frames"] > 10
    assert all(math.isfinite(tok[k]) for k in ("psnr", "ssim", "sharpness"))
    from PIL import Image

    assert Image.open(out / "reconstruction.png").size[0] > 8 * 32
