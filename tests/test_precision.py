"""bf16 where the machine has it: decided on the machine, a bf16 training run learns like an fp32
one, and bf16 play stays within a stated tolerance of fp32 play."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_dataset

from genie.cli import main
from genie.utils import precision
from genie.utils.errors import UserError
from genie.world.engine import WorldEngine
from worlds import make_tiny_autoencoder_world, one_torch_thread  # noqa: F401

BF16_FAST, WHY = precision.bf16_is_fast("cpu")
needs_bf16 = pytest.mark.skipif(not BF16_FAST, reason=f"bf16 is not fast here: {WHY}")


def test_a_cpu_without_bf16_units_falls_back_to_fp32_with_one_line(monkeypatch):
    precision.bf16_is_fast.cache_clear()
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    try:
        chosen, why = precision.resolve_precision("auto", "cpu")
        assert chosen == "fp32" and "no bf16 units" in why and "\n" not in why
        assert precision.resolve_precision("fp32")[0] == "fp32"
        chosen, why = precision.resolve_precision("bf16", "cpu")  # asked for: done, with a warning
        assert chosen == "bf16" and "slower" in why
        with pytest.raises(UserError):
            precision.resolve_precision("fp8")
    finally:
        precision.bf16_is_fast.cache_clear()


def test_auto_picks_bf16_only_where_the_probe_measured_it_faster():
    chosen, why = precision.resolve_precision("auto", "cpu")
    assert chosen == ("bf16" if precision.bf16_is_fast("cpu")[0] else "fp32")
    if set(precision.BF16_FLAGS) & precision.cpu_flags():
        assert "GFLOP/s" in why  # the probe ran and says what it measured


def _losses(run_dir: Path) -> np.ndarray:
    with open(run_dir / "metrics.csv", newline="") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")])


@needs_bf16
@pytest.mark.slow
def test_a_bf16_training_run_follows_the_fp32_loss_curve(tmp_path):
    data = write_dataset(tmp_path / "data", episodes=6, length=12, val_episodes=2)
    curves = {}
    for p in ("fp32", "bf16", "fp32-seed1"):
        prec, _, seed = p.partition("-seed")
        argv = ["train", "tokenizer", "--data", data, "--world", tmp_path / f"w-{p}",
                "--run-dir", tmp_path / f"r-{p}", "--preset", "tiny", "--steps", "300",
                "--log-every", "10", "--eval-batches", "1", "--precision", prec,
                "--seed", seed or "0"]  # fmt: skip
        assert main([str(a) for a in argv]) == 0
        curves[p] = _losses(tmp_path / f"r-{p}")
    fp32, bf16, other_seed = curves["fp32"], curves["bf16"], curves["fp32-seed1"]
    assert fp32[-5:].mean() < 0.5 * fp32[:2].mean()  # the run learned
    # bf16's curve sits within the spread that another seed already gives fp32 (+ a margin)
    noise = np.abs(fp32 - other_seed)[5:].mean()
    gap = np.abs(fp32 - bf16)[5:].mean()
    assert gap <= 2 * noise + 0.02 * fp32[5:].mean(), (gap, noise)


@needs_bf16
def test_bf16_play_stays_within_tolerance_of_fp32(tmp_path):
    """Frames of the same world, start and actions, played in fp32 and in bf16 autocast: within
    4 grey levels on average over 12 frames (bf16 keeps ~3 significant digits)."""
    world = make_tiny_autoencoder_world(tmp_path / "w")
    frames = {}
    for p in ("fp32", "bf16"):
        engine = WorldEngine.load(world, seed=0, precision=p)
        assert engine.precision == p
        engine.reset(np.full((32, 32, 3), 90, np.uint8))
        frames[p] = engine.rollout([i % engine.num_actions for i in range(12)]).astype(np.float32)
    diff = np.abs(frames["fp32"] - frames["bf16"]).mean()
    assert diff <= 4.0, diff


@pytest.mark.parametrize("length", [10, 40])  # a few keys (softmax taken transposed) and more
def test_attention_under_bf16_autocast_matches_fp32(length):
    from genie.models.blocks import SHORT_KEYS, Attention

    assert 10 < SHORT_KEYS <= 40
    torch.manual_seed(0)
    att = Attention(64, 4)
    x = torch.randn(3, length, 64)
    mask = torch.rand(length, length) < 0.7
    mask |= torch.eye(length, dtype=torch.bool)  # every query keeps a key
    with torch.no_grad():
        q, k, v = att.project(x)
        for m, causal in ((None, False), (None, True), (mask, False)):
            want = att.attend(q, k, v, mask=m, is_causal=causal)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = att.attend(q, k, v, mask=m, is_causal=causal).float()
            assert (got - want).abs().max() < 0.05 * want.abs().max(), (m is None, causal)


def test_what_equality_a_batched_diffusion_player_keeps(tmp_path):
    """README, "what a batched player sees": on a diffusion world in fp32, 3 players stepped
    together see what each sees alone within 1 grey level; in either precision the same batch
    replays bit for bit."""
    world = make_tiny_autoencoder_world(tmp_path / "w")
    starts = np.stack([np.full((32, 32, 3), 40 * (i + 1), np.uint8) for i in range(3)])[:, None]
    acts = np.array([[0, 1, 2, 3, 4, 0], [4, 4, 4, 4, 4, 4], [1, 0, 1, 0, 3, 2]])
    batch = WorldEngine.load(world, precision="fp32")
    batch.reset(starts, seed=[5, 6, 7])
    together = batch.rollout(acts).astype(int)
    for i in range(3):
        alone = WorldEngine.load(world, precision="fp32")
        alone.reset(starts[i, 0], seed=5 + i)
        assert np.abs(alone.rollout(acts[i]).astype(int) - together[i]).max() <= 1
    for p in ("fp32", "bf16") if BF16_FAST else ("fp32",):
        runs = []
        for _ in range(2):
            e = WorldEngine.load(world, precision=p)
            e.reset(starts, seed=[5, 6, 7])
            runs.append(e.rollout(acts))
        np.testing.assert_array_equal(runs[0], runs[1])


def test_bf16_play_casts_the_weights_once_and_draws_the_same_frames(tmp_path):
    """An engine playing in bf16 uses copies of the world's parts whose Linear and Conv weights
    are already bf16, made once per world: the frames are those of autocast casting the fp32
    weights on every call, bit for bit."""
    from genie.world.folder import World

    world = World.from_folder(make_tiny_autoencoder_world(tmp_path / "w"))
    start = np.full((32, 32, 3), 90, np.uint8)
    acts = [i % world.num_actions for i in range(8)]
    frames = []
    for parts in ((world.tokenizer, world.dynamics), None):
        engine = WorldEngine(world, seed=0, precision="bf16")
        if parts is not None:  # what bf16 play did before: the fp32 parts under autocast
            engine.tokenizer, engine.dynamics = parts
        engine.reset(start)
        frames.append(engine.rollout(acts))
    np.testing.assert_array_equal(frames[0], frames[1])
    cast = WorldEngine(world, precision="bf16")
    assert cast.dynamics is not world.dynamics and cast.tokenizer is not world.tokenizer
    linears = [m for m in cast.dynamics.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert WorldEngine(world, precision="bf16").dynamics is cast.dynamics  # made once
    assert WorldEngine(world, precision="fp32").dynamics is world.dynamics
    assert next(world.dynamics.parameters()).dtype == torch.float32  # the world's own untouched
