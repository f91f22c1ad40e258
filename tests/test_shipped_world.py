"""The shipped CoinRun world loads offline, names its actions and plays frames that respond."""

from pathlib import Path

import numpy as np
import pytest
import torch

from genie.engine import WorldEngine

WORLD = Path(__file__).resolve().parents[1] / "worlds" / "coinrun"


@pytest.fixture(scope="module")
def engine():
    if not (WORLD / "dynamics" / "model.safetensors").is_file():
        pytest.skip("worlds/coinrun is not trained in this checkout")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield WorldEngine.load(WORLD, seed=0)
    torch.set_num_threads(threads)


def test_shipped_world_plays_from_its_examples(engine):
    examples = engine.world.examples
    assert len(examples) >= 3
    assert len(engine.actions) == engine.num_actions and all(a.keys for a in engine.actions)
    first = engine.reset(examples[0])
    frames = [engine.step(a % engine.num_actions) for a in range(6)]
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    # generated frames stay close to the scene they continue (a trained world, not noise) ...
    mse = np.mean((frames[0].astype(float) - first.astype(float)) ** 2) / 255**2
    assert 10 * np.log10(1 / max(mse, 1e-10)) > 15
    # ... and different actions lead to different futures (greedy sampling: only the action differs)
    greedy = WorldEngine(engine.world, seed=0, temperature=0.0)
    greedy.reset(examples[1])
    outs = greedy.what_if()
    assert len({o.tobytes() for o in outs}) > 1
