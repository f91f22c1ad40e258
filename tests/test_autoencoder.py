"""The continuous frame autoencoder: shapes and save/load, it learns to draw a tiny synthetic
world, a frozen encoder keeps the latents, the PatchGAN trains each side on its own loss, and
`genie train autoencoder` -> `genie train dynamics --backend diffusion` makes a world that plays."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from synthetic import make_batch, write_dataset

from genie.cli import main
from genie.models.autoencoder import AutoencoderConfig, FrameAutoencoder
from genie.models.diffusion import DiffusionDynamics
from genie.models.lam import LatentActionModel
from genie.models.tokenizer import TokenizerConfig, VideoTokenizer
from genie.utils.errors import UserError
from genie.utils.images import to_float
from genie.utils.metrics import psnr
from genie.world.engine import WorldEngine
from worlds import one_torch_thread  # noqa: F401

TINY = dict(frame_size=32, widths=(16, 32), latent_channels=4, norm_groups=8, mid_attention=False)


def test_shapes_and_a_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(**TINY)).eval()
    frames = make_batch(2, 3, seed=0)["frames"]  # (2, 3, 32, 32, 3) uint8
    z = ae.encode_latents(frames)
    assert ae.grid == (8, 8) and z.shape == (2, 3, 64, 16)  # 16x16x4 cells -> 8x8 tokens of 16
    assert ae.config.patch_size == 4  # pixels per token side
    x = ae.decode_latents(z)
    assert x.shape == (2, 3, 32, 32, 3) and 0 <= x.min() and x.max() <= 1
    step = ae.decode_latents_step(z[:, 1], ae.new_decode_cache())
    assert torch.allclose(step, x[:, 1], atol=1e-6)
    ae.save_pretrained(tmp_path / "ae")
    again = FrameAutoencoder.from_pretrained(tmp_path / "ae")
    assert torch.equal(again.encode_latents(frames), z)
    assert torch.equal(again.decode_latents(z), x)


@pytest.mark.slow
def test_it_learns_to_draw_the_synthetic_world():
    """150 steps on sprite frames (batch 8 x 2): held-out reconstructions gain >= 5 dB over the
    untrained model and keep the layout (SSIM > 0.4). Measured: 12.4 -> 18.9 dB, SSIM 0.48."""
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(**TINY))
    opt = torch.optim.AdamW(ae.parameters(), lr=3e-3)
    held_out = {"frames": make_batch(8, 2, seed=999)["frames"]}
    before = ae.eval().evaluate(held_out)["psnr"]
    ae.train()
    for i in range(150):
        loss, metrics = ae.compute_loss({"frames": make_batch(8, 2, seed=i)["frames"]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = ae.eval().evaluate(held_out)
    assert after["psnr"] > before + 5 and after["psnr"] > 17, (before, after)
    assert after["ssim"] > 0.4 and after["sharpness"] > 0.3, after
    assert abs(float(ae.latent_std) - 1) < 10  # a running scale was measured, not left at init
    z = ae.encode_latents(held_out["frames"])
    assert 0.5 < z.std().item() < 2.0  # encode_latents hands the dynamics unit-scale latents


def test_a_frozen_encoder_keeps_every_frames_latents():
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(**TINY)).freeze_encoder().train()
    frames = make_batch(4, 2, seed=1)["frames"]
    before = ae.encode_latents(frames)
    opt = torch.optim.AdamW([p for p in ae.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss, _ = ae.compute_loss({"frames": frames})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(ae.encode_latents(frames), before)
    assert not torch.equal(
        ae.decode_latents(before), FrameAutoencoder(ae.config).decode_latents(before)
    )


def test_the_patchgan_trains_each_side_on_its_own_loss():
    """One backward of the summed losses: the discriminator's gradient is that of its own hinge
    loss alone (the decoder's adversarial term does not reach it), the decoder's includes the
    adversarial term."""
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(**TINY, adv_weight=0.5, adv_start=0)).train()
    frames = make_batch(4, 2, seed=2)["frames"]
    torch.manual_seed(1)
    out = ae(frames)
    assert {"adv", "disc"} <= set(out.losses)
    sum(out.losses.values()).backward()
    disc_grad = [p.grad.clone() for p in ae.disc.parameters()]
    ae.zero_grad()
    torch.manual_seed(1)
    ae(frames).losses["disc"].backward()
    for got, want in zip(disc_grad, [p.grad for p in ae.disc.parameters()], strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    ae.zero_grad()
    torch.manual_seed(1)
    ae(frames).losses["adv"].backward()
    assert ae.vae.decoder.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in ae.disc.parameters())


@pytest.mark.slow
def test_train_autoencoder_then_diffusion_makes_a_world_that_plays(tmp_path):
    data = write_dataset(tmp_path / "data", episodes=6, length=12, val_episodes=2)
    world = tmp_path / "world"
    common = ["--data", data, "--world", world, "--preset", "tiny", "--eval-batches", "1"]
    args = ["train", "autoencoder", *common, "--run-dir", tmp_path / "r-ae", "--steps", "30"]
    assert main([str(a) for a in args]) == 0
    config = json.loads((world / "tokenizer" / "config.json").read_text())
    assert config["model_type"] == "frame-autoencoder"
    args = ["train", "dynamics", "--backend", "diffusion", "--action-source", "true", *common,
            "--run-dir", tmp_path / "r-dyn", "--steps", "10"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    dyn = json.loads((world / "dynamics" / "config.json").read_text())
    assert dyn["latent_dim"] == config["latent_channels"] * config["token_patch"] ** 2
    assert dyn["latent_scale"] == pytest.approx(0.5)  # unit-std latents -> sigma_data
    engine = WorldEngine.load(world, seed=0)
    start = make_batch(1, 1, seed=3)["frames"][0, 0].numpy()
    engine.reset(start)
    frames = engine.rollout([0, 1, 1, 2])
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    # resumed with the other spelling of the part is refused in one line
    again = ["train", "tokenizer", *common, "--run-dir", tmp_path / "r-ae", "--resume"]
    assert main([str(a) for a in again]) == 2


def test_reconstruction_psnr_is_measured_on_the_frames(tmp_path):
    """evaluate()'s PSNR is the PSNR of decode(encode(frames)) against the frames."""
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(**TINY)).eval()
    frames = make_batch(2, 2, seed=4)["frames"]
    want = psnr(ae.reconstruct(frames), to_float(frames)).mean().item()
    assert ae.evaluate({"frames": frames})["psnr"] == pytest.approx(want)


def test_a_patchgan_fine_tune_of_a_trained_decoder(tmp_path):
    """`--init-from A --freeze-encoder --set adv_weight=...`: a trained autoencoder saved
    without a discriminator gets a fresh one, the decoder trains against it, the encoder (every
    frame's latents) stays as it was; fields that don't exist or don't fit the weights fail in
    one line."""
    data = write_dataset(tmp_path / "data", episodes=4, length=8, val_episodes=1)
    torch.manual_seed(0)
    FrameAutoencoder(AutoencoderConfig(**TINY)).save_pretrained(tmp_path / "a")
    common = ["--data", data, "--world", tmp_path / "w", "--preset", "tiny", "--eval-batches", "1",
              "--init-from", tmp_path / "a", "--freeze-encoder"]  # fmt: skip
    run = ["train", "autoencoder", *common, "--steps", "3", "--run-dir", tmp_path / "r"]
    assert main([str(a) for a in [*run, "--set", "adv_weight=0.5", "--set", "adv_start=0"]]) == 0
    tuned = FrameAutoencoder.from_pretrained(tmp_path / "w" / "tokenizer")
    assert tuned.config.adv_weight == 0.5 and tuned.disc is not None  # built fresh on load
    shipped = load_file(str(tmp_path / "w" / "tokenizer" / "model.safetensors"))
    assert not any(k.startswith("disc.") for k in shipped)  # a world ships no discriminator
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"adv", "disc"} <= set(header)
    before = FrameAutoencoder.from_pretrained(tmp_path / "a")
    frames = make_batch(2, 2, seed=5)["frames"]
    assert torch.equal(tuned.encode_latents(frames), before.encode_latents(frames))
    assert not torch.equal(tuned.decode_latents(before.encode_latents(frames)),
                           before.decode_latents(before.encode_latents(frames)))  # fmt: skip
    meta = json.loads((tmp_path / "w" / "world.json").read_text())
    assert meta["training"]["tokenizer"]["set"] == {"adv_weight": 0.5, "adv_start": 0}
    assert "init_from_training" not in meta["training"]["tokenizer"]  # "a" has no world.json
    # a part fine-tuned from a world's part keeps how that one was trained (its lineage)
    again = ["train", "autoencoder", *common[:-3], "--init-from", tmp_path / "w" / "tokenizer",
             "--freeze-encoder", "--world", tmp_path / "w2", "--steps", "2", "--run-dir", tmp_path / "r2"]  # fmt: skip
    assert main([str(a) for a in again]) == 0
    record = json.loads((tmp_path / "w2" / "world.json").read_text())["training"]["tokenizer"]
    assert record["steps"] == 2 and record["init_from_training"]["steps"] == 3
    bad = {"no_such_field=1": "r-bad1", "latent_channels=8": "r-bad2", "adv_weight": "r-bad3",
           "adv_weight=strong": "r-bad4", "token_patch=3": "r-bad5"}  # fmt: skip
    for item, run_dir in bad.items():
        args = ["train", "autoencoder", *common, "--steps", "1", "--run-dir", tmp_path / run_dir]
        assert main([str(a) for a in [*args, "--set", item]]) == 2, item


def test_a_lighter_decoder_starts_from_the_first_block_of_each_level(tmp_path):
    """`--set decoder_layers=0` on a trained autoencoder: the decoder keeps one ResNet block per
    level (the first, from the saved weights) and drops the rest, the encoder and every frame's
    latents stay as they were, the lighter decoder draws frames of the same shape with fewer
    weights and is saved and loaded as such; asking for more blocks than were saved fails in
    one line."""
    torch.manual_seed(0)
    FrameAutoencoder(AutoencoderConfig(**TINY)).save_pretrained(tmp_path / "a")
    full = FrameAutoencoder.from_pretrained(tmp_path / "a")
    light = FrameAutoencoder.from_pretrained(tmp_path / "a", overrides={"decoder_layers": 0})
    assert light.config.decoder_blocks == 1 and full.config.decoder_blocks == 2
    count = lambda m: sum(p.numel() for p in m.vae.decoder.parameters())  # noqa: E731
    assert count(light) < 0.85 * count(full)
    kept = light.state_dict()
    for k, v in full.state_dict().items():  # every weight the lighter model has is the saved one
        if k in kept:
            assert torch.equal(kept[k], v), k
        else:
            assert ".resnets.1." in k, k
    frames = make_batch(2, 2, seed=6)["frames"]
    z = full.encode_latents(frames)
    assert torch.equal(light.encode_latents(frames), z)
    assert light.decode_latents(z).shape == full.decode_latents(z).shape
    light.save_pretrained(tmp_path / "light")
    again = FrameAutoencoder.from_pretrained(tmp_path / "light")
    assert torch.equal(again.decode_latents(z), light.decode_latents(z))
    with pytest.raises(UserError, match="--set decoder_layers asks for weights"):
        FrameAutoencoder.from_pretrained(tmp_path / "light", overrides={"decoder_layers": 1})


def test_a_lam_reading_latents_trains_with_its_world_and_labels_the_dynamics(tmp_path):
    """`inputs: "latents"`: the LAM reads the world's frame autoencoder (LAPO's setting). It
    trains from the CLI, is saved without the autoencoder's weights, comes back attached to its
    world's autoencoder, labels the diffusion dynamics' clips from the latents the dynamics
    already has (the same codes as from the frames), and a VQ tokenizer is refused in one line."""
    data = write_dataset(tmp_path / "data", episodes=3, length=24, val_episodes=1)
    world = tmp_path / "world"
    common = ["--data", data, "--world", world, "--preset", "tiny", "--eval-batches", "1"]
    ae_run = ["train", "autoencoder", *common, "--run-dir", tmp_path / "r-ae", "--steps", "2"]
    assert main([str(a) for a in ae_run]) == 0
    lam_run = ["train", "lam", *common, "--run-dir", tmp_path / "r-lam", "--steps", "3",
               "--set", 'inputs="latents"']  # fmt: skip
    assert main([str(a) for a in lam_run]) == 0
    from genie.world.folder import load_part

    ae, lam = load_part(world, "tokenizer"), load_part(world, "lam")
    assert lam.reads_latents and lam.config.grid == ae.grid
    assert lam.config.latent_dim == ae.config.code_dim
    saved = load_file(world / "lam" / "model.safetensors")
    assert saved and not any("vae" in k or "latent_std" in k for k in saved)  # no AE inside
    frames = make_batch(2, 5, seed=7)["frames"]
    codes = lam.infer_actions(frames)
    assert codes.shape == (2, 4)
    batch = DiffusionDynamics.make_batch({"frames": frames}, ae, lam)
    assert torch.equal(batch["actions"], codes)
    dyn_run = ["train", "dynamics", "--backend", "diffusion", *common,
               "--run-dir", tmp_path / "r-dyn", "--steps", "2"]  # fmt: skip
    assert main([str(a) for a in dyn_run]) == 0
    assert json.loads((world / "world.json").read_text())["actions"]["source"] == "lam"
    # the evaluation scores the LAM's predictions as pixels, decoded by the autoencoder
    evaluation = ["eval", "--world", world, "--data", data, "--split", "val", "--episodes", "1",
                  "--out", tmp_path / "eval"]  # fmt: skip
    assert main([str(a) for a in evaluation]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 5 < metrics["lam"]["psnr"] < 60 and metrics["lam"]["num_actions"] == lam.num_actions
    # a copy (the checkpoint's) shares the frozen autoencoder and labels alike
    twin = copy.deepcopy(lam)
    assert twin.frame_encoder is lam.frame_encoder
    assert torch.equal(twin.infer_actions(frames), codes)
    # an autoencoder trained further (new encoder) no longer fits the LAM: one line
    again = ["train", "autoencoder", *common, "--run-dir", tmp_path / "r-ae2", "--steps", "1"]
    assert main([str(a) for a in again]) == 0
    with pytest.raises(UserError, match="different autoencoder encoder"):
        load_part(world, "lam")
    # a LAM for latents can't read a VQ tokenizer's codes
    vq = TokenizerConfig(
        frame_size=32, patch_size=4, num_codes=16, code_dim=8, conv_widths=(16, 32)
    )
    with pytest.raises(ValueError, match="continuous frame autoencoder"):
        LatentActionModel(lam.config).read_through(VideoTokenizer(vq))
    with pytest.raises(ValueError, match="read_through"):
        LatentActionModel(lam.config).infer_actions(frames)
