"""`genie train world`: one command trains every part a world needs, in order, under a time
budget, resumes after a kill -9 in the part it was in, and ends with start frames, an
evaluation and a world that plays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_dataset

from genie.cli import main
from genie.world.engine import WorldEngine
from training.world import BUDGET_SHARES, WorldPlan, plan_world

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(
        tmp_path_factory.mktemp("d") / "sprites", episodes=6, length=24, val_episodes=2
    )


def test_the_plan_follows_the_data_and_the_written_budget_rule(data, tmp_path):
    from genie.data.format import open_dataset

    class Args:
        preset = backend = action_source = None
        world, runs, hours = str(tmp_path / "w"), str(tmp_path / "runs"), 2.0

    Args.data = str(data)
    plan = plan_world(Args, open_dataset(data))
    assert [p.name for p in plan.parts] == ["autoencoder", "dynamics"]  # labelled data: no LAM
    assert plan.action_source == "true" and plan.parts[0].preset == "tiny"  # 32 px frames
    share = BUDGET_SHARES["autoencoder"] / (
        BUDGET_SHARES["autoencoder"] + BUDGET_SHARES["dynamics"]
    )
    assert plan.parts[0].seconds == pytest.approx(2 * 3600 * share)
    Args.action_source, Args.backend = "lam", "maskgit"
    names = [p.name for p in plan_world(Args, open_dataset(data)).parts]
    assert names == ["tokenizer", "lam", "dynamics"]


@pytest.mark.slow
def test_one_command_trains_a_world_that_plays(data, tmp_path):
    world = tmp_path / "world"
    argv = ["train", "world", "--data", data, "--world", world, "--runs", tmp_path / "runs",
            "--hours", "0.004", "--eval-episodes", "2", "--precision", "fp32"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    plan = WorldPlan.load(world)
    assert all(p.done and p.steps >= 10 for p in plan.parts)
    assert json.loads((world / "eval" / "metrics.json").read_text())["tokenizer"]["psnr"] > 0
    assert (
        json.loads((world / "tokenizer" / "config.json").read_text())["model_type"]
        == "frame-autoencoder"
    )
    examples = sorted((world / "examples").glob("*.png"))
    assert 2 <= len(examples) <= 6
    assert (world / "eval" / "report.md").is_file()
    engine = WorldEngine.load(world)
    engine.reset(examples[0])
    assert engine.rollout([0, 1, 2]).shape == (3, 32, 32, 3)
    # a second run without --resume refuses in one line
    assert main([str(a) for a in argv]) == 2


@pytest.mark.slow
def test_a_killed_run_resumes_in_the_part_it_was_in(data, tmp_path):
    world, runs = tmp_path / "world", tmp_path / "runs"
    argv = [sys.executable, "-m", "genie", "train", "world", "--data", str(data), "--world", str(world),
            "--runs", str(runs), "--eval-episodes", "2", "--precision", "fp32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = runs / "world-world" / "autoencoder" / "checkpoint"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), "the autoencoder never wrote a checkpoint"
    os.kill(proc.pid, signal.SIGKILL)  # mid-part: the first checkpoint is at step 10 of 20
    proc.wait()
    assert not WorldPlan.load(world).parts[0].done
    rc = subprocess.run([*argv, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert "resuming" in rc.stdout
    plan = WorldPlan.load(world)
    assert all(p.done for p in plan.parts)
    rows = (runs / "world-world" / "autoencoder" / "metrics.csv").read_text().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert steps == sorted(steps) and steps[-1] == 20  # one run, continued, not restarted
    assert np.isfinite(
        json.loads((world / "eval" / "metrics.json").read_text())["tokenizer"]["psnr"]
    )
