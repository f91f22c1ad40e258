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


def _torchrun(args: list, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.Popen([str(c) for c in cmd + args], cwd=ROOT, env=env, text=True,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _losses(run: Path) -> np.ndarray:
    rows = (run / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    col = head.index("loss")
    return np.array([float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]])


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(data, tmp_path):
    """The autoencoder, 2 processes x batch 2 against 1 process x batch 4 (same seed, same
    clips per step): the loss curves agree within noise (the posterior samples differ)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["autoencoder", "--data", data, "--preset", "tiny", "--steps", "16", "--log-every", "1",
              "--eval-batches", "1", "--precision", "fp32"]  # fmt: skip
    two = _torchrun(["-m", "training", *common, "--world", tmp_path / "w2", "--run-dir",
                     tmp_path / "r2", "--batch-size", "2"], env)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout
    one = subprocess.run([sys.executable, "-m", "training", *map(str, common), "--world",
                          str(tmp_path / "w1"), "--run-dir", str(tmp_path / "r1"), "--batch-size", "4"],
                         cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    l1, l2 = _losses(tmp_path / "r1"), _losses(tmp_path / "r2")
    assert len(l1) == len(l2) == 16
    assert l1[-1] < 0.7 * l1[0] and l2[-1] < 0.7 * l2[0]  # both learned
    rel = np.abs(l1 - l2) / l1
    assert rel.max() < 0.05, rel  # the same curve, step by step, within 5%


@pytest.mark.slow
def test_train_world_under_two_processes(data, tmp_path):
    """`genie train world` through torchrun: every part trains on 2 processes with the step
    counts rank 0 measured; rank 0 alone writes the plan, the start frames and the evaluation."""
    world = tmp_path / "world"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = _torchrun(["-m", "training", "world", "--data", data, "--world", world, "--runs",
                     tmp_path / "runs", "--hours", "0.002", "--eval-episodes", "2", "--precision", "fp32"], env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("2 process(es)") == 2  # the autoencoder and the dynamics
    plan = WorldPlan.load(world)
    assert all(p.done for p in plan.parts)
    assert (world / "eval" / "report.md").is_file() and list((world / "examples").glob("*.png"))
    engine = WorldEngine.load(world)
    engine.reset(sorted((world / "examples").glob("*.png"))[0])
    assert engine.rollout([0, 1]).shape == (2, 32, 32, 3)
