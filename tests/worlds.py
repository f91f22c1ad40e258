"""Tiny playable worlds for tests and benchmarks: random-init parts saved as a real world folder.

    world = make_tiny_world(tmp_path / "w")          # 32x32 frames, 5 actions, 2 example PNGs
    engine = WorldEngine.load(world)

Random weights already give frames that change from step to step and differ between actions,
which is all the engine, CLI and UI tests need. Building one takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genie.models.dynamics import DynamicsConfig, DynamicsModel
from genie.models.tokenizer import TokenizerConfig, VideoTokenizer
from genie.world.folder import export_part, set_action_labels


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models step faster on one thread, and two threads on a busy 2-core machine stall in
    OpenMP barriers (seconds per step). Import into a test module to use it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LABELS = ["left", "right", "up", "down", "noop"]


def make_tiny_world(
    path: str | Path,
    num_actions: int = 5,
    frame_size: int = 32,
    seed: int = 0,
    context_frames: int = 4,
    width: int = 64,
) -> Path:
    """Write a random-init world (tokenizer + dynamics, no LAM) to `path`; returns the folder.

    Tokens per frame: (frame_size / 8)^2; dynamics keeps `context_frames` frames of context."""
    path = Path(path)
    torch.manual_seed(seed)
    tok_cfg = TokenizerConfig(
        frame_size=frame_size,
        patch_size=8,
        num_codes=64,
        code_dim=16,
        arch="vit",
        width=width,
        enc_depth=1,
        dec_depth=1,
        heads=4,
        max_frames=context_frames + 1,
    )
    tokenizer = VideoTokenizer(tok_cfg).eval()
    # the trained-model init (std 0.02) decodes every code to near-uniform grey; PyTorch's
    # default init on the output layer makes different tokens give visibly different frames
    tokenizer.unembed.reset_parameters()
    dyn_cfg = DynamicsConfig(
        vocab_size=tok_cfg.num_codes,
        grid=tok_cfg.grid,
        num_actions=num_actions,
        width=width,
        depth=2,
        heads=4,
        max_frames=context_frames + 1,
        maskgit_steps=2,
    )
    dynamics = DynamicsModel(dyn_cfg).eval()
    export_part(path, "tokenizer", tokenizer, {"note": "random init (tests/worlds.py)"})
    labels = LABELS[:num_actions] + [f"action {i}" for i in range(len(LABELS), num_actions)]
    export_part(
        path,
        "dynamics",
        dynamics,
        {"note": "random init (tests/worlds.py)", "action_source": "true", "action_labels": labels},
    )
    set_action_labels(path, labels)
    examples = path / "examples"
    examples.mkdir(exist_ok=True)
    for i, img in enumerate(example_images(frame_size, seed)):
        Image.fromarray(img).save(examples / f"start_{i}.png")
    return path


COINRUN_LABELS = ["left", "right", "jump", "jump right", "jump left", "down", "noop", "action 7"]


def make_coinrun_size_world(path: str | Path, seed: int = 0) -> Path:
    """A random-init world with the shipped CoinRun world's sizes: the models of the
    `coinrun-cpu` training presets (64x64 frames, 8x8 tokens, 8 latent actions), for timing
    play before a trained world exists. Its frames are noise."""
    import json

    from genie.models.pretrained import config_from_dict

    path = Path(path)
    presets = Path(__file__).resolve().parents[1] / "training" / "presets" / "coinrun-cpu"
    model = {
        p: json.loads((presets / f"{p}.json").read_text())["model"]
        for p in ("tokenizer", "dynamics")
    }
    torch.manual_seed(seed)
    tokenizer = VideoTokenizer(config_from_dict(TokenizerConfig, model["tokenizer"])).eval()
    dynamics = DynamicsModel(config_from_dict(DynamicsConfig, model["dynamics"])).eval()
    export_part(
        path, "tokenizer", tokenizer, {"note": "random init, coinrun-cpu sizes (tests/worlds.py)"}
    )
    export_part(
        path,
        "dynamics",
        dynamics,
        {"note": "random init, coinrun-cpu sizes", "action_source": "lam"},
    )
    set_action_labels(path, COINRUN_LABELS[: dynamics.config.num_actions])
    (path / "examples").mkdir(exist_ok=True)
    for i, img in enumerate(example_images(tokenizer.config.frame_size, seed)):
        Image.fromarray(img).save(path / "examples" / f"start_{i}.png")
    return path


def example_images(size: int, seed: int = 0, n: int = 2) -> list[np.ndarray]:
    """`n` distinct uint8 (size, size, 3) start frames: a gradient with a bright square."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    for _ in range(n):
        base = rng.uniform(30, 150, size=3)
        img = (
            base
            + 80 * yy[..., None] * rng.uniform(-1, 1, 3)
            + 80 * xx[..., None] * rng.uniform(-1, 1, 3)
        )
        y, x = rng.integers(0, size - size // 4, size=2)
        img[y : y + size // 4, x : x + size // 4] = (255, 230, 40)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def make_distinct_world(path: str | Path, seed: int = 0) -> Path:
    """A random-init world labelled with CoinRun's six distinct true actions (noop, left,
    right, jump, jump-left, jump-right), as `--action-source true` labels it: its keys are
    chords (↑ + → = jump-right) and noop has no key (`genie.world.folder.default_keys`)."""
    from genie.data.record import COINRUN_DISTINCT

    path = make_tiny_world(path, num_actions=len(COINRUN_DISTINCT), seed=seed)
    set_action_labels(path, COINRUN_DISTINCT)
    return path


def make_two_worlds(folder: str | Path) -> Path:
    """A folder of two worlds that look different, for the world picker: "alpha" (32x32,
    left/right/up/down/noop) and "beta" (48x48 frames, other colours, CoinRun's distinct
    actions: chords, noop without a key). Returns the folder."""
    from genie.data.record import COINRUN_DISTINCT

    folder = Path(folder)
    make_tiny_world(folder / "alpha", frame_size=32, seed=0)
    beta = make_tiny_world(
        folder / "beta", num_actions=len(COINRUN_DISTINCT), frame_size=48, seed=1
    )
    set_action_labels(beta, COINRUN_DISTINCT)
    return folder


def make_tiny_autoencoder_world(
    path: str | Path, num_actions: int = 5, seed: int = 0, context_frames: int = 4
) -> Path:
    """A random-init diffusion world drawn by a frame autoencoder (32x32 frames, a 16x16x4
    latent grid played as 8x8 tokens of 16 values); returns the folder."""
    from genie.models.autoencoder import AutoencoderConfig, FrameAutoencoder
    from genie.models.diffusion import DiffusionConfig, DiffusionDynamics

    path = Path(path)
    torch.manual_seed(seed)
    ae_cfg = AutoencoderConfig(
        frame_size=32, widths=(16, 32), latent_channels=4, norm_groups=8, mid_attention=False
    )
    ae = FrameAutoencoder(ae_cfg).eval()
    fixed = DiffusionDynamics.fixed_config(ae, num_actions)
    dyn_cfg = DiffusionConfig(
        **{**fixed, "grid": tuple(fixed["grid"])},
        width=64,
        depth=2,
        heads=4,
        max_frames=context_frames + 1,
    )
    dynamics = DiffusionDynamics(dyn_cfg).eval()
    export_part(path, "tokenizer", ae, {"note": "random init (tests/worlds.py)"})
    labels = LABELS[:num_actions]
    info = {
        "note": "random init (tests/worlds.py)",
        "action_source": "true",
        "action_labels": labels,
    }
    export_part(path, "dynamics", dynamics, info)
    set_action_labels(path, labels)
    examples = path / "examples"
    examples.mkdir(exist_ok=True)
    for i, img in enumerate(example_images(32, seed)):
        Image.fromarray(img).save(examples / f"start_{i}.png")
    return path
