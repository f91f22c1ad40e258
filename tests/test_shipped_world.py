"""The shipped worlds load offline, key every action they have and play frames that respond;
the one learned from video alone names its keys by what they do."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genie.world.engine import WorldEngine

WORLDS = Path(__file__).resolve().parents[1] / "worlds"
SHIPPED = ["coinrun", "boxing", "coinrun-unlabeled"]
# where each world's actions came from: the game's recorded actions, or its own LAM
ACTION_SOURCE = {"coinrun": "true", "boxing": "true", "coinrun-unlabeled": "lam"}


@pytest.fixture(scope="module", params=SHIPPED)
def engine(request):
    world = WORLDS / request.param
    if not (world / "dynamics" / "model.safetensors").is_file():
        pytest.skip(f"worlds/{request.param} is not trained in this checkout")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield WorldEngine.load(world, seed=0)
    torch.set_num_threads(threads)


def test_shipped_world_plays_from_its_examples(engine):
    examples = engine.world.examples
    assert len(examples) >= 3
    labels = [a.label for a in engine.actions]
    # every action has a key, except noop (no key held: the game clock)
    assert all(a.keys or a.label.lower() == "noop" for a in engine.actions), labels
    actions = engine.world.meta["actions"]
    assert actions["source"] == ACTION_SOURCE[engine.world.root.name]
    if actions["source"] == "lam":  # no labels were used: the names come from the world's motion
        assert "named_by" in actions and "game_actions" not in actions
        assert engine.world.meta["training"]["dynamics"]["action_source"] == "lam"
    first = engine.reset(examples[0])
    frames = [engine.step(a % engine.num_actions) for a in range(6)]
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    # generated frames stay close to the scene they continue (a trained world, not noise) ...
    mse = np.mean((frames[0].astype(float) - first.astype(float)) ** 2) / 255**2
    assert 10 * np.log10(1 / max(mse, 1e-10)) > 18
    # ... and different actions lead to different futures (same seed: only the action differs)
    engine.reset(examples[1], seed=3)
    outs = engine.what_if()
    assert len({o.tobytes() for o in outs}) == engine.num_actions


def test_shipped_world_plays_as_it_always_did(engine):
    """Frames played from two start images with fixed seeds equal those recorded when the
    world was shipped (tests/data/shipped_<name>_play.png: one row per prompt, start frame
    then 10 steps). Regenerate with UPDATE_SHIPPED=1 after shipping new weights."""
    import os

    name = engine.world.root.name
    path = Path(__file__).parent / "data" / f"shipped_{name}_play.png"
    rows = []
    n = engine.num_actions
    for example, seed, actions in ((0, 0, [a % n for a in range(10)]), (2, 7, [2 % n] * 10)):
        start = engine.reset(engine.world.examples[example], seed=seed)
        rows.append(np.concatenate([start, *engine.rollout(actions)], axis=1))
    got = np.concatenate(rows, axis=0)
    if os.environ.get("UPDATE_SHIPPED"):
        Image.fromarray(got).save(path)
    want = np.asarray(Image.open(path))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("game, floor_db", [("coinrun", 30), ("boxing", 36)])
def test_shipped_autoencoders_draw_the_game(game, floor_db):
    """The frame autoencoders the next worlds draw with (worlds/parts: parts, not playable
    worlds) keep the game's detail: real frames of held-out levels, encoded and decoded, come
    back above the floor (CoinRun 30 dB, Boxing 36 dB) with 0.85-1.15 of their sharpness (the
    VQ tokenizer of the shipped CoinRun world: about 27.6 dB and 0.42)."""
    from genie.utils.images import load_image
    from genie.utils.metrics import gradient_magnitude, psnr
    from genie.world.folder import load_part

    part = WORLDS / "parts" / f"{game}-autoencoder"
    ae = load_part(part, "tokenizer")
    assert ae.model_type == "frame-autoencoder"
    files = sorted((WORLDS / game / "examples").glob("*.png"))
    frames = torch.from_numpy(np.stack([load_image(f, 64) for f in files]))
    frames = frames[None]  # (1, T, 64, 64, 3)
    with torch.no_grad():
        recon = ae.decode_latents(ae.encode_latents(frames))[0]
    real = frames[0].float() / 255
    assert psnr(recon, real).mean() > floor_db
    sharp = gradient_magnitude(recon).mean() / gradient_magnitude(real).mean()
    assert 0.85 < sharp < 1.15, float(sharp)
    # not a playable world: a folder of worlds passed to `genie play` skips it
    from genie.serve.worlds import resolve_worlds

    names = [n for n, _ in resolve_worlds([WORLDS])[0]]
    assert "parts" not in names and f"{game}-autoencoder" not in names


def test_the_unlabeled_worlds_keys_move_it_the_way_their_names_say():
    """worlds/coinrun-unlabeled learned its actions from video alone and was named by its own
    motion (`genie name-actions`); measured again from its start frames, every action named
    right moves right, every one named up rises, and the noop moves least."""
    from genie.utils.images import load_image
    from genie.world.naming import measure_actions

    world = WORLDS / "coinrun-unlabeled"
    if not (world / "dynamics" / "model.safetensors").is_file():
        pytest.skip("worlds/coinrun-unlabeled is not trained in this checkout")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = WorldEngine.load(world, seed=0)
        starts = np.stack([load_image(p, 64) for p in engine.world.examples[:6]])
        motions = measure_actions(engine, starts)
    finally:
        torch.set_num_threads(threads)
    names = engine.world.action_labels
    for name, m in zip(names, motions, strict=True):
        verb = name.split()[0]
        if "right" in verb:
            assert m.dx > 1.5, (name, m)
        if "left" in verb:
            assert m.dx < -1.5, (name, m)
        if verb.startswith(("up", "jump")):
            assert m.rise > 1.5, (name, m)
    moved = [abs(m.dx) + m.rise + m.drop for m in motions]
    assert names[int(np.argmin(moved))] == "noop", (names, moved)
