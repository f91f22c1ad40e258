"""Video tokenizer: cached decoding == full decoding, per-frame encoding, save/load, and it
learns to reconstruct the synthetic sprite world."""

import numpy as np
import pytest
import torch
from synthetic import make_batch

from genie.models.tokenizer import TokenizerConfig, VideoTokenizer


def tiny_config(**kw) -> TokenizerConfig:
    base = dict(
        frame_size=32,
        patch_size=4,
        num_codes=64,
        code_dim=16,
        conv_widths=(16, 32),
        width=48,
        enc_depth=1,
        dec_depth=2,
        heads=4,
        max_frames=4,
    )
    base.update(kw)
    return TokenizerConfig(**base)


@pytest.mark.parametrize("arch", ["conv", "vit"])
def test_decode_step_equals_decode_beyond_the_window(arch):
    """Frame-by-frame decoding against the cache equals decoding the whole clip, also once the
    clip is longer than the temporal window (the cache slides, the full pass masks)."""
    torch.manual_seed(0)
    model = VideoTokenizer(tiny_config(arch=arch)).eval()
    frames = make_batch(2, 7, seed=1)["frames"]
    ids = model.encode(frames)
    assert ids.shape == (2, 7, 8, 8) and ids.dtype == torch.long
    assert model.grid == (8, 8) and model.num_codes == 64
    full = model.decode(ids)
    assert full.shape == (2, 7, 32, 32, 3) and full.min() >= 0 and full.max() <= 1
    cache = model.new_decode_cache()
    steps = torch.stack([model.decode_step(ids[:, t], cache) for t in range(7)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_decoder_uses_previous_frames_but_not_future_ones():
    torch.manual_seed(0)
    model = VideoTokenizer(tiny_config()).eval()
    ids = model.encode(make_batch(1, 4, seed=2)["frames"])
    base = model.decode(ids)
    changed = ids.clone()
    changed[:, 1] = (changed[:, 1] + 1) % model.num_codes
    out = model.decode(changed)
    assert torch.equal(out[:, 0], base[:, 0])  # causal: the past is untouched
    assert not torch.allclose(out[:, 2:], base[:, 2:])  # later frames see frame 1


def test_encode_is_per_frame():
    torch.manual_seed(0)
    model = VideoTokenizer(tiny_config()).eval()
    frames = make_batch(2, 5, seed=3)["frames"]
    ids = model.encode(frames)
    alone = model.encode(frames[:, 3:4])
    assert torch.equal(alone[:, 0], ids[:, 3])


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VideoTokenizer(tiny_config(arch="vit", l1_weight=0.1)).eval()
    model.save_pretrained(tmp_path / "tok")
    loaded = VideoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.config == model.config
    frames = make_batch(2, 4, seed=4)["frames"]
    ids = model.encode(frames)
    assert torch.equal(loaded.encode(frames), ids)
    assert torch.equal(loaded.decode(ids), model.decode(ids))


def test_loss_metrics_evaluate_and_visualize():
    torch.manual_seed(0)
    model = VideoTokenizer(tiny_config())
    batch = make_batch(3, 4, seed=5)
    loss, metrics = model.compute_loss(batch)
    loss.backward()
    assert {"psnr", "codebook_usage", "perplexity", "recon_mse", "vq_loss"} <= set(metrics)
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "vq.codebook")
    ev = model.evaluate(batch)
    assert {"psnr", "ssim", "codebook_usage", "perplexity"} <= set(ev)
    assert model.training  # evaluate() restores the mode
    strip = model.visualize(batch, max_clips=2, max_frames=3)
    assert strip.dtype == np.uint8 and strip.shape == (2 * 2 * 32, 3 * 32, 3)


def test_edge_loss_and_latent_noise_train_the_decoder_on_what_a_diffusion_hands_it():
    torch.manual_seed(0)
    model = VideoTokenizer(tiny_config(continuous=True, grad_weight=1.0, latent_noise=0.05))
    batch = make_batch(2, 3, seed=1)
    out = model(batch["frames"])
    assert set(out.losses) == {"recon", "vq", "grad"} and out.losses["grad"] > 0
    again = model(batch["frames"]).recon
    assert not torch.equal(out.recon, again)  # training: noisy latents each call
    model.eval()
    with torch.no_grad():
        a, b = model(batch["frames"]).recon, model(batch["frames"]).recon
    assert torch.equal(a, b)  # evaluation: the clean latents


def test_wrong_frame_size_is_a_clear_error():
    model = VideoTokenizer(tiny_config())
    with pytest.raises(ValueError, match="expected frames"):
        model.encode(torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8))


@pytest.mark.slow
def test_learns_to_reconstruct_held_out_clips():
    """A 0.16M-parameter tokenizer trained for 300 steps (~30-50 s on 2 cores) reconstructs
    held-out episodes (new backgrounds, new sprite paths) at >= 18.5 dB mean per-frame PSNR with
    most of its 64 codes in use. Reference points on these clips: mid-grey frames 13.9 dB; each
    4x4 patch filled with its own mean colour 23.5 dB; measured after 300 steps ~19.5 dB
    (still rising). The threshold proves learning (> 4.5 dB above grey), not final quality."""
    torch.manual_seed(0)
    model = VideoTokenizer(tiny_config())
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    for step in range(300):
        loss, _ = model.compute_loss(make_batch(8, 4, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    metrics = model.evaluate(make_batch(16, 4, seed=10_000))  # held-out episodes
    assert metrics["psnr"] >= 18.5, metrics
    assert metrics["codebook_usage"] >= 0.3, metrics
