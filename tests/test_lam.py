"""Latent action model: shapes, causality, save/load, the mapping metric, warm-up. That its
latent actions recover the true actions is tested on imported video
(tests/test_unlabeled_video.py)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from synthetic import make_batch

from genie.models.lam import LAMConfig, LatentActionModel
from genie.utils.images import to_float
from genie.utils.metrics import best_mapping_accuracy

# The LAM's patches are 4 px and the sprite moves 4 px per step: an action then looks the same
# wherever the sprite is. (With moves smaller than a patch, "up" seen at two offsets inside a
# patch are two different patterns, and the codes may mean different moves at different offsets.)
WORLD = dict(speed=4)


def tiny_config(**kw) -> LAMConfig:
    base = dict(
        frame_size=32,
        patch_size=4,
        num_actions=8,
        action_dim=8,
        width=64,
        enc_depth=2,
        dec_depth=2,
        heads=4,
        max_frames=6,
    )
    base.update(kw)
    return LAMConfig(**base)


def test_best_mapping_accuracy():
    latent = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    true = np.array([4, 4, 1, 1, 0, 0, 3, 2])
    acc, mapping = best_mapping_accuracy(latent, true, num_latent=5, num_true=5)
    assert acc == pytest.approx(7 / 8)
    assert mapping.tolist() == [4, 1, 0, 2, -1]  # code 4 never seen
    acc, _ = best_mapping_accuracy(
        torch.tensor([2, 2]), torch.tensor([0, 1]), 5, 5, mapping=mapping
    )
    assert acc == pytest.approx(0.5)  # a given mapping is scored, not refitted


@pytest.mark.parametrize(
    "encoder_input,conv_widths",
    [("frames", ()), ("diff", ()), ("frames+diff", ()), ("frames+diff", (16, 32))],
)
def test_shapes_and_causality(encoder_input, conv_widths):
    """a_t depends on frames 1..t+1 only; the prediction of frame t+1 on frames 1..t and a_1..a_t."""
    torch.manual_seed(0)
    config = tiny_config(encoder_input=encoder_input, conv_widths=conv_widths)
    model = LatentActionModel(config).eval()
    frames = make_batch(2, 5, seed=1, **WORLD)["frames"]
    out = model(frames)
    assert out.actions.shape == (2, 4) and out.recon.shape == (2, 4, 32, 32, 3)
    assert torch.equal(model.infer_actions(frames), out.actions)
    assert model.num_actions == 8
    z = model._encode(frames.float() / 255 * 2 - 1, update_stats=False)
    changed = frames.clone()
    changed[:, 3] = 255 - changed[:, 3]
    z2 = model._encode(changed.float() / 255 * 2 - 1, update_stats=False)
    assert torch.equal(z2[:, :2], z[:, :2])  # a_1, a_2 don't see frame 4
    assert not torch.allclose(z2[:, 2], z[:, 2])  # a_3 does


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = LatentActionModel(tiny_config())
    model.compute_loss(
        make_batch(4, 5, seed=2, **WORLD)
    )  # moves the latent normalisation's statistics
    model.eval()
    model.save_pretrained(tmp_path / "lam")
    loaded = LatentActionModel.from_pretrained(tmp_path / "lam")
    assert loaded.config == model.config
    frames = make_batch(3, 5, seed=3, **WORLD)["frames"]
    assert torch.equal(loaded.infer_actions(frames), model.infer_actions(frames))
    torch.testing.assert_close(loaded(frames).recon, model(frames).recon, atol=0, rtol=0)


def test_loss_metrics_evaluate_and_visualize():
    torch.manual_seed(0)
    model = LatentActionModel(tiny_config())
    batch = make_batch(3, 5, seed=4, **WORLD)
    loss, metrics = model.compute_loss(batch)
    loss.backward()
    assert {"psnr", "action_usage", "perplexity", "recon_mse", "vq_loss"} <= set(metrics)
    ev = model.evaluate(batch)
    assert {"psnr", "psnr_copy_last", "action_usage", "perplexity", "true_action_acc"} <= set(ev)
    assert model.training
    strip = model.visualize(batch, max_clips=2, max_frames=4)
    assert strip.dtype == np.uint8 and strip.shape == (2 * 2 * 32, 3 * 32, 3)


# What makes a LAM learn (each measured on the synthetic world, 500 steps at batch 16 x 6 frames;
# without any one of them the latent -> true mapping stays at 20-45%): a conv stem whose
# receptive field spans neighbouring patches (the encoder sees where the sprite went), a
# decoder that sees each patch's neighbourhood (it can move the sprite one patch: with true
# actions its error falls 6x faster), a euclidean VQ (the "stay" latent sits near the origin)
# seeded by k-means after a continuous warm-up. That it learns is tested end to end, on
# imported video, in tests/test_unlabeled_video.py (>= 90% of the true moves, held out).
LEARNS = dict(
    conv_widths=(16, 32),
    dec_conv=True,
    vq_metric="euclidean",
    vq_warmup_steps=250,
    vq_restart_after=0,
)


def test_warmup_passes_latents_then_seeds_the_codebook(tmp_path):
    """During warm-up the decoder gets the continuous latent; at its end the codes become k-means
    centres of the latents seen, and the step count is saved with the weights (resume)."""
    torch.manual_seed(0)
    model = LatentActionModel(tiny_config(**{**LEARNS, "vq_warmup_steps": 3})).train()
    before = model.vq.codebook.detach().clone()
    batch = make_batch(4, 5, seed=0, **WORLD)
    z = model._encode(to_float(batch["frames"]) * 2 - 1, update_stats=False)
    assert not torch.allclose(model._quantize(z).quantized, model.vq(z).quantized)  # raw latents
    for _ in range(2):
        model.compute_loss(batch)
    assert int(model.trained_steps) == 3
    after = model.vq.codebook.detach().clone()
    assert not torch.equal(before, after)
    bank = model.latent_bank[-model.bank_fill :]
    assert (
        torch.cdist(after, bank).min(1).values.max() < torch.cdist(before, bank).min(1).values.min()
    )
    model.compute_loss(batch)  # quantised from now on
    model.eval()
    model.save_pretrained(tmp_path / "lam")
    loaded = LatentActionModel.from_pretrained(tmp_path / "lam")
    assert int(loaded.trained_steps) == 4
    assert torch.equal(loaded.infer_actions(batch["frames"]), model.infer_actions(batch["frames"]))


def test_defaults_are_the_settings_that_work_and_older_configs_keep_theirs(tmp_path):
    """A fresh config gets the settings of `LEARNS` (the conv stem P needs, a decoder conv, a
    euclidean VQ after a warm-up); a config.json from before them (no config_version) keeps
    the defaults of its day for the fields it does not name."""
    c = LAMConfig(frame_size=32, patch_size=4)
    assert (c.conv_widths, c.dec_conv, c.vq_metric, c.vq_warmup_steps) == (
        (16, 32),
        True,
        "euclidean",
        300,
    )
    old = tiny_config(conv_widths=(), dec_conv=False, vq_metric="cosine", vq_warmup_steps=0)
    LatentActionModel(old).save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    for key in ("config_version", "conv_widths", "dec_conv", "vq_metric", "vq_warmup_steps"):
        del saved[key]
    path.write_text(json.dumps(saved))
    loaded = LatentActionModel.from_pretrained(tmp_path / "old").config
    assert loaded == dataclasses.replace(old, config_version=1)


def test_a_decoder_that_sees_the_last_frame_alone():
    """decoder_sees="last": with the actions fixed, the prediction of frame t+1 depends on
    frame t alone, not on earlier frames (past motion can't stand in for the action); with
    "past" (Genie) it does."""
    frames = make_batch(2, 5, seed=1, **WORLD)["frames"]
    changed = frames.clone()
    changed[:, 0] = 255 - changed[:, 0]  # frame 1 changes
    for sees in ("last", "past"):
        torch.manual_seed(0)
        model = LatentActionModel(tiny_config(decoder_sees=sees)).eval()
        torch.nn.init.normal_(model.to_patch.weight, std=0.02)  # not the "copy" start
        fixed = torch.randn(2, 4, model.config.action_dim)
        model._encode = lambda x, update_stats, z=fixed: z  # the same actions for both clips
        a, b = model(frames).recon, model(changed).recon
        assert not torch.allclose(a[:, 0], b[:, 0])  # frame 2 is predicted from frame 1
        later_same = torch.allclose(a[:, 1:], b[:, 1:])
        assert later_same == (sees == "last"), sees
    with pytest.raises(ValueError, match="decoder_sees"):
        tiny_config(decoder_sees="all")
