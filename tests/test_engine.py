"""WorldEngine on a tiny random-init world: prompts of any kind, stepping, determinism, undo,
the sliding context, what-if, and clear errors for bad input."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from genie.utils.errors import UserError
from genie.world.engine import WorldEngine, carry_unchanged
from worlds import example_images, make_tiny_world, one_torch_thread  # noqa: F401 (fixture)

SIZE = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "tiny", frame_size=SIZE)


@pytest.fixture
def engine(world):
    e = WorldEngine.load(world, seed=0)
    e.reset(e.world.examples[0])
    return e


def png_bytes(img: np.ndarray | Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims width x height (a decompression-bomb header)."""
    data = png_bytes(np.zeros((1, 1, 3), np.uint8))
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


def diff(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ---------------------------------------------------------------------------- prompts


def prompt_variants(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (300, 1000, 3), dtype=np.uint8)
    base = example_images(64)[0]
    jpeg = tmp_path / "start.jpg"
    Image.fromarray(base).save(jpeg, quality=90)
    return {
        "png path": tmp_path / "ex.png",
        "jpeg path": jpeg,
        "jpeg bytes": png_bytes(base, "JPEG"),
        "1000x300": png_bytes(wide),
        "grayscale": png_bytes(Image.fromarray(base).convert("L")),
        "rgba": png_bytes(Image.fromarray(base).convert("RGBA")),
        "palette": png_bytes(Image.fromarray(base).convert("P")),
        "webp": png_bytes(base, "WEBP"),
        "pil": Image.fromarray(base),
        "array": base,
        "float array": base.astype(np.float32) / 255,
        "gray array": base[..., 0],
    }


def test_reset_accepts_any_image(engine, tmp_path):
    Image.fromarray(example_images(40)[0]).save(tmp_path / "ex.png")
    for name, prompt in prompt_variants(tmp_path).items():
        frame = engine.reset(prompt)
        assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8, name
        assert len(engine.frames) == 1
        assert engine.step(0).shape == (SIZE, SIZE, 3), name


def test_reset_from_animated_gif_uses_its_first_frame(engine):
    red, blue = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    frames = [Image.fromarray(red), Image.fromarray(blue)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = engine.reset(buf.getvalue())
    assert first[..., 0].mean() > 200 and first[..., 2].mean() < 50


def test_reset_from_several_frames_keeps_the_context(engine):
    frames = np.stack(example_images(SIZE, n=3))
    first = engine.reset(frames)
    np.testing.assert_array_equal(first, frames[-1])
    assert len(engine.frames) == 3
    assert engine.step(1).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"this is not an image at all", "not an image"),
        (b"", "not an image"),
        ("truncated", "truncated"),
        (forged_png(20000, 20000), "could not be read|too large"),
        (forged_png(7000, 7000), "too large"),
        (np.zeros((4, 4, 2), np.uint8), "must be"),
    ],
    ids=["garbage", "empty", "truncated", "bomb-20000", "too-large-7000", "2-channel"],
)
def test_bad_images_raise_user_errors(engine, bad, message):
    if isinstance(bad, str) and bad == "truncated":
        data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        bad = data[: len(data) // 2]
    before = engine.frames[-1].copy()
    with pytest.raises(UserError, match=message):
        engine.reset(bad)
    np.testing.assert_array_equal(engine.frames[-1], before)  # a failed reset changes nothing
    engine.step(0)


def test_missing_file_and_step_before_reset(world, tmp_path):
    e = WorldEngine.load(world)
    with pytest.raises(UserError, match="reset"):
        e.step(0)
    with pytest.raises(UserError, match="not found"):
        e.reset(tmp_path / "nope.png")


# ---------------------------------------------------------------------------- play


def test_step_changes_the_frame_and_rollout_has_one_frame_per_action(engine):
    start = engine.frames[-1]
    frame = engine.step(engine.action_id("right"))
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
    assert diff(frame, start) > 1.0
    clip = engine.rollout([0, 1, "up", 3, 4, 0, 0])
    assert clip.shape == (7, SIZE, SIZE, 3)
    assert len(engine.frames) == 1 + 1 + 7 and engine.actions_taken[-7:] == [0, 1, 2, 3, 4, 0, 0]
    assert all(diff(clip[i], clip[i - 1]) > 0 for i in range(1, 7))
    assert engine.rollout([]).shape == (0, SIZE, SIZE, 3)


def test_same_seed_same_frames_different_seed_different_frames(world):
    def play(seed):
        e = WorldEngine.load(world, seed=seed)
        e.reset(e.world.examples[1])
        return e.rollout([0, 1, 2, 3, 4, 1])

    a, b, c = play(0), play(0), play(1)
    np.testing.assert_array_equal(a, b)
    assert diff(a, c) > 1.0


def test_reset_restarts_the_random_stream(engine):
    first = engine.rollout([0, 1, 2])
    engine.reset(engine.world.examples[0])
    np.testing.assert_array_equal(engine.rollout([0, 1, 2]), first)


def test_undo_restores_the_exact_previous_state(engine):
    engine.rollout([0, 1])
    shown = engine.frames[-1]
    taken = [engine.step(a) for a in (2, 3, 4)]
    assert diff(engine.undo(), taken[1]) == 0
    assert diff(engine.undo(), taken[0]) == 0
    assert diff(engine.undo(), shown) == 0
    assert len(engine.frames) == 3 and engine.actions_taken == [0, 1]
    # the same actions from the restored state (caches and RNG) give the same frames
    for a, frame in zip((2, 3, 4), taken, strict=True):
        np.testing.assert_array_equal(engine.step(a), frame)


def test_undo_at_the_start_is_a_no_op(engine):
    start = engine.frames[-1].copy()
    assert not engine.can_undo
    np.testing.assert_array_equal(engine.undo(), start)
    engine.step(0)
    np.testing.assert_array_equal(engine.undo(), start)
    np.testing.assert_array_equal(engine.undo(), start)


def test_undo_after_old_frames_were_dropped(world):
    e = WorldEngine.load(world, max_frames_kept=4, max_undo=3)
    e.reset(e.world.examples[0])
    frames = [e.step(a % 5) for a in range(6)]
    assert len(e.frames) == 4
    np.testing.assert_array_equal(e.undo(), frames[-2])
    np.testing.assert_array_equal(e.frames[-1], frames[-2])
    assert len(e.frames) == 3
    e.undo(), e.undo()
    np.testing.assert_array_equal(e.undo(), frames[-4])  # only max_undo=3 steps can be undone
    assert not e.can_undo


def test_context_window_slides_past_the_trained_length(engine):
    context = engine.world.context_frames
    clip = engine.rollout([i % engine.num_actions for i in range(3 * context + 2)])
    assert clip.shape[0] == 3 * context + 2
    assert len(engine._dyn.cache) <= context  # dynamics keeps only the trained context
    assert len(engine._dec) <= engine.tokenizer.config.max_frames - 1
    assert clip[-4:].std() > 1.0  # still drawing pictures, not a constant
    last = torch.from_numpy(clip[-1]).float()
    assert torch.isfinite(last).all()


@pytest.mark.parametrize("bad", [5, -1, "jump", "99", 2.5])
def test_unknown_actions_raise_user_errors(engine, bad):
    n = len(engine.frames)
    with pytest.raises(UserError, match="unknown action"):
        engine.step(bad)
    with pytest.raises(UserError, match="unknown action"):
        engine.rollout([0, 1, bad])  # validated before anything is played
    assert len(engine.frames) == n


def test_actions_by_label_and_id(engine):
    assert [a.label for a in engine.actions] == ["left", "right", "up", "down", "noop"]
    assert (
        engine.action_id("RIGHT") == 1
        and engine.action_id("3") == 3
        and engine.action_id(np.int64(4)) == 4
    )
    assert "ArrowLeft" in engine.actions[0].keys


def test_what_if_shows_every_action_and_leaves_the_state_untouched(world):
    def engine_at_frame_3():
        e = WorldEngine.load(world, seed=3)
        e.reset(e.world.examples[0])
        e.rollout([1, 1, 2])
        return e

    plain, curious = engine_at_frame_3(), engine_at_frame_3()
    options = curious.what_if()
    assert options.shape == (curious.num_actions, SIZE, SIZE, 3) and options.dtype == np.uint8
    assert diff(options[0], options[1]) > 1.0  # different actions, different futures
    np.testing.assert_array_equal(curious.what_if(), options)  # deterministic at a given state
    assert len(curious.frames) == len(plain.frames)
    np.testing.assert_array_equal(curious.rollout([0, 3]), plain.rollout([0, 3]))


def test_sample_futures_differ_and_leave_the_state_untouched(world):
    def engine_at_start():
        e = WorldEngine.load(world, seed=5)
        e.reset(e.world.examples[0])
        return e

    plain, sampler = engine_at_start(), engine_at_start()
    futures = sampler.sample_futures([0, 1, 1], samples=3)
    assert futures.shape == (3, 3, SIZE, SIZE, 3)
    assert diff(futures[:, 0], futures[:, 1]) > 1.0  # independent samples
    np.testing.assert_array_equal(sampler.rollout([2, 2]), plain.rollout([2, 2]))


def test_carry_unchanged_keeps_the_start_image_where_tokens_repeat(world, monkeypatch):
    """With skip-block decoding, patches whose tokens the world leaves alone show the start
    image's own pixels (not the tokenizer's reconstruction); changed ones are decoded."""
    plain = WorldEngine.load(world, seed=0, carry_unchanged=False)
    carry = WorldEngine.load(world, seed=0, carry_unchanged=True)
    start = carry.reset(carry.world.examples[0])
    plain.reset(plain.world.examples[0])
    ids0 = carry._shown[1].clone()
    moved = ids0.clone()
    moved[0, 0, 0] = (moved[0, 0, 0] + 1) % carry.tokenizer.num_codes  # one token changes

    for engine in (plain, carry):  # the same predicted tokens for both engines
        real = engine.dynamics.sample_next

        def sample_next(*args, _real=real, **kw):
            _real(*args, **kw)
            return moved.clone()

        monkeypatch.setattr(engine.dynamics, "sample_next", sample_next)
    a, b = plain.step(0), carry.step(0)
    p = carry.patch_size
    mask = np.ones(b.shape[:2], dtype=bool)
    mask[:p, :p] = False  # the changed patch (carry_margin 0: its neighbours keep their pixels)
    assert np.array_equal(b[mask], start[mask])  # the start image's pixels, exactly
    assert np.array_equal(b[~mask], a[~mask])  # changed patches: decoded as without carry
    assert not np.array_equal(a[mask], start[mask])  # plain decoding re-renders everything
    carry.undo()
    assert torch.equal(carry._shown[1], ids0)  # undo restores what is shown
    assert np.array_equal(carry.step(0), b)


def test_a_patch_the_decoder_draws_anew_is_shown_even_where_its_token_stayed():
    """A convolutional decoder draws a patch from its neighbours' tokens too: a sprite can move
    into a patch whose own token did not change. That patch is shown as decoded, not hidden
    under the previous frame's pixels; patches the decoder drew (nearly) the same keep them."""
    prev = torch.full((1, 32, 32, 3), 0.4)
    prev_decoded = prev + 0.01  # the decoder's previous frame: close to what was shown
    new = prev_decoded.clone()
    new[0, 12:16, 8:12] = torch.tensor([0.95, 0.9, 0.2])  # a sprite drawn into patch (3, 2)
    new[0, 0:4, 0:4] += 0.02  # a patch the decoder drew a little differently: noise
    ids = torch.zeros(1, 8, 8, dtype=torch.long)  # no token changed at all
    out = carry_unchanged(new, prev, ids, ids.clone(), patch_size=4, prev_decoded=prev_decoded)
    drawn = torch.zeros(32, 32, dtype=torch.bool)
    drawn[12:16, 8:12] = True
    assert torch.equal(out[0][drawn], new[0][drawn])  # the sprite is shown
    assert torch.equal(out[0][~drawn], prev[0][~drawn])  # elsewhere the previous pixels
    without = carry_unchanged(new, prev, ids, ids.clone(), patch_size=4)  # ids alone: hidden
    assert torch.equal(without, prev)


def test_carry_unchanged_keeps_pixels_where_tokens_and_their_neighbours_did_not_change():
    prev = torch.rand(1, 32, 32, 3)
    new = torch.rand(1, 32, 32, 3)
    prev_ids = torch.zeros(1, 8, 8, dtype=torch.long)
    new_ids = prev_ids.clone()
    new_ids[0, 2, 5] = 7  # one token changed
    out = carry_unchanged(new, prev, new_ids, prev_ids, patch_size=4, margin=1)
    changed = torch.zeros(32, 32, dtype=torch.bool)
    changed[4:16, 16:28] = True  # the changed patch and its 3x3 neighbourhood: decoded
    assert torch.equal(out[0][changed], new[0][changed])
    assert torch.equal(out[0][~changed], prev[0][~changed])  # elsewhere: the previous pixels
    assert torch.equal(carry_unchanged(new, prev, new_ids, new_ids + 1, 4), new)  # all changed
    # along a sequence, pixels carry from the start frame through unchanged steps
    frames = torch.rand(1, 3, 32, 32, 3)
    ids = torch.stack([prev_ids, prev_ids, new_ids], dim=1)
    shown, shown_ids, seq = prev, prev_ids, []
    for k in range(3):  # as the engine shows them, step by step
        shown = carry_unchanged(frames[:, k], shown, ids[:, k], shown_ids, 4, margin=1)
        shown_ids = ids[:, k]
        seq.append(shown)
    seq = torch.stack(seq, dim=1)
    assert torch.equal(seq[:, 0], prev) and torch.equal(seq[:, 1], prev)
    assert torch.equal(seq[0, 2][~changed], prev[0][~changed])
    # margin 0 (the default): only the changed patch itself is redrawn
    out = carry_unchanged(new, prev, new_ids, prev_ids, patch_size=4)
    assert torch.equal(out[0, 8:12, 20:24], new[0, 8:12, 20:24])
    rest = torch.ones(32, 32, dtype=torch.bool)
    rest[8:12, 20:24] = False
    assert torch.equal(out[0][rest], prev[0][rest])


# ---------------------------------------------------------------------------- batches


def test_a_batch_plays_what_each_player_plays_alone(world):
    """B = 3 players stepped together (5-D frames, one seed each, prompt actions) see exactly
    the frames three one-player engines with the same seeds see, bit for bit."""
    prompts = np.stack([np.stack(example_images(SIZE, seed=s, n=2)) for s in range(3)])
    prompt_actions = np.array([[0], [1], [2]])
    actions = np.array([[0, 1, 2, 3, 4], [4, 4, 4, 4, 4], [1, 0, 1, 0, 3]])
    batch = WorldEngine.load(world)
    shown = batch.reset(prompts, seed=[7, 8, 9], actions=prompt_actions)
    assert shown.shape == (3, SIZE, SIZE, 3) and batch.batch_size == 3
    first = batch.step(actions[:, 0])
    rest = batch.rollout(actions[:, 1:])
    assert first.shape == (3, SIZE, SIZE, 3) and rest.shape == (3, 4, SIZE, SIZE, 3)
    together = np.concatenate([first[:, None], rest], axis=1)
    for i, seed in enumerate((7, 8, 9)):
        alone = WorldEngine.load(world)
        alone.reset(prompts[i], seed=seed, actions=prompt_actions[i])
        np.testing.assert_array_equal(alone.rollout(actions[i]), together[i])
    assert diff(together[0], together[1]) > 1.0  # the rows are different players
    # one action for every player, undo of the whole batch, and an int seed (row i: seed + i)
    np.testing.assert_array_equal(batch.undo(), together[:, -2])
    assert batch.step("left").shape == (3, SIZE, SIZE, 3)
    batch.reset(prompts, seed=7, actions=prompt_actions)
    np.testing.assert_array_equal(batch.rollout(actions), together)


def test_sample_futures_start_with_what_play_plays(world):
    e = WorldEngine.load(world, seed=4)
    e.reset(e.world.examples[1])
    futures = e.sample_futures([0, 3, 3], samples=2)  # (K, S, H, W, 3)
    np.testing.assert_array_equal(futures[:, 0], e.rollout([0, 3, 3]))


def test_batch_input_errors(engine):
    prompts = np.zeros((2, 1, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(UserError, match="seeds for 2 players"):
        engine.reset(prompts, seed=[1, 2, 3])
    with pytest.raises(UserError, match="actions between"):
        engine.reset(prompts, actions=[[0, 1], [1, 2]])
    engine.reset(prompts)
    with pytest.raises(UserError, match=r"\(2, K\)"):
        engine.rollout([[0, 1], [1, 2], [2, 3]])
    with pytest.raises(UserError, match="unknown action"):
        engine.step([0, 9])


def test_sampling_settings_world_json_over_the_dynamics_and_arguments_over_both(world, tmp_path):
    import json
    import shutil

    copy = shutil.copytree(world, tmp_path / "w")
    meta = json.loads((copy / "world.json").read_text())
    meta["sampling"] = {"maskgit_steps": 3, "temperature": 0.5, "carry_margin": 1, "other": 2}
    (copy / "world.json").write_text(json.dumps(meta))
    s = WorldEngine.load(copy).sampling
    assert (s.steps, s.temperature, s.carry_unchanged, s.carry_margin) == (3, 0.5, True, 1)
    assert s.steps_key == "maskgit_steps" and s.options == {}  # unknown keys are not passed on
    e = WorldEngine.load(copy, steps=1, temperature=0.0, carry_unchanged=False, carry_margin=0)
    assert (e.steps, e.temperature, e.carry_unchanged, e.sampling.carry_margin) == (
        1,
        0.0,
        False,
        0,
    )
    meta.pop("sampling")
    (copy / "world.json").write_text(json.dumps(meta))
    s = WorldEngine.load(copy).sampling  # the dynamics' own defaults (tests/worlds.py: 2 steps)
    assert (s.steps, s.temperature, s.carry_unchanged, s.carry_margin) == (2, 1.0, True, 0)


@pytest.mark.parametrize("kind", ["maskgit", "diffusion"])
def test_committing_beside_decoding_plays_the_same_frames(tmp_path, kind):
    """With one torch thread the engine commits frame t to the dynamics' context in a second
    thread while it decodes frame t: the frames are bit-identical to committing first, through
    seeded context noise, undo and the what-if view."""
    from worlds import make_tiny_autoencoder_world

    if kind == "maskgit":
        path = make_tiny_world(tmp_path / "w", frame_size=SIZE)
    else:
        path = make_tiny_autoencoder_world(tmp_path / "w")
    runs = []
    for overlap in (False, True):
        e = WorldEngine.load(path, seed=3)
        e.overlap = overlap
        if kind == "diffusion":  # commits draw their context noise from the player's generator
            e.sampling = e.sampling.replace(options={**e.sampling.options, "context_noise": 0.2})
        e.reset(e.world.examples[0])
        frames = [e.step(a) for a in [1, 2, 2, 0, 3]]
        assert (e._pending is not None) == overlap  # still committing as the frame is shown
        e.undo()
        e.undo()
        frames += [e.step(a) for a in [4, 1]]
        frames += [e.what_if(), *e.rollout([2, 2, 1])]
        runs.append(frames)
    for plain, overlapped in zip(*runs, strict=True):
        assert np.array_equal(plain, overlapped)
