"""A world whose dynamics is the diffusion backend, trained by `genie train dynamics --backend
diffusion --preset tiny`, plays through the same engine, `genie generate`, `genie eval` and
`genie bench play` as a MaskGIT world: nothing downstream of the registry knows the backend."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import write_dataset

from genie.cli import main
from genie.models.lam import LatentActionModel
from genie.models.pretrained import config_from_dict
from genie.models.tokenizer import VideoTokenizer
from genie.utils.video import read_video
from genie.world.engine import WorldEngine
from genie.world.folder import export_part
from training import presets
from worlds import one_torch_thread  # noqa: F401 (fixture)


def genie(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(world, data): a random tokenizer and LAM of the tiny preset's shapes, then a diffusion
    dynamics trained on the LAM's actions for a few steps."""
    root = tmp_path_factory.mktemp("diffusion")
    data = write_dataset(root / "data", episodes=4, length=24, val_episodes=2)
    world = root / "world"
    torch.manual_seed(0)
    for part, cls in (("tokenizer", VideoTokenizer), ("lam", LatentActionModel)):
        config = config_from_dict(cls.config_class, presets.load("tiny", part).model)
        export_part(world, part, cls(config).eval(), {"note": "random init"})
    argv = ["train", "dynamics", "--backend", "diffusion", "--preset", "tiny", "--data", data]
    argv += ["--world", world, "--run-dir", root / "run", "--steps", 3, "--log-every", 1]
    assert genie(*argv, "--eval-batches", 1) == 0
    frames = np.load(next((data / "shards").rglob("*frames*.npy")), mmap_mode="r")
    (world / "examples").mkdir()
    Image.fromarray(np.asarray(frames[0])).save(world / "examples" / "start.png")
    return world, data


def test_the_world_is_a_diffusion_world(trained):
    world, _ = trained
    meta = json.loads((world / "world.json").read_text())
    assert meta["backend"] == "diffusion-dynamics"
    assert set(meta["sampling"]) == {
        "diffusion_steps",
        "context_noise",
        "solver",
        "churn",
        "fused_commit",
    }
    engine = WorldEngine.load(world)
    assert engine.representation == "latents" and engine.steps == 2 and not engine.carry_unchanged


def test_a_fine_tuned_dynamics_keeps_the_worlds_sampler(trained, tmp_path):
    """The sampler a world was given (world.json "sampling": churn, context noise) survives
    training its dynamics again; only keys the dynamics does not know are dropped."""
    import shutil

    world, data = trained
    copy = tmp_path / "world"
    shutil.copytree(world, copy)
    meta = json.loads((copy / "world.json").read_text())
    meta["sampling"].update({"churn": 1.0, "context_noise": 0.2, "stale": 3})
    (copy / "world.json").write_text(json.dumps(meta))
    argv = ["train", "dynamics", "--backend", "diffusion", "--preset", "tiny", "--data", data]
    argv += ["--world", copy, "--run-dir", tmp_path / "run", "--steps", 2, "--eval-batches", 1]
    assert genie(*argv, "--init-from", copy / "dynamics") == 0
    sampling = json.loads((copy / "world.json").read_text())["sampling"]
    assert sampling["churn"] == 1.0 and sampling["context_noise"] == 0.2
    assert "stale" not in sampling and sampling["diffusion_steps"] == 2


def test_it_plays_through_the_engine(trained):
    world, _ = trained
    engine = WorldEngine.load(world, seed=1)
    start = engine.reset(engine.world.examples[0])
    clip = engine.rollout([0, 1, 2, 3])
    assert start.shape == (32, 32, 3) and clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    engine.reset(engine.world.examples[0])
    np.testing.assert_array_equal(engine.rollout([0, 1, 2, 3]), clip)  # seeded
    np.testing.assert_array_equal(engine.undo(), clip[2])
    assert engine.what_if().shape == (engine.num_actions, 32, 32, 3)
    # two players stepped together see what each sees alone: the same random draws; the
    # matrix kernels of a batch of 2 and of 1 may round differently (a continuous sample
    # carries that into a pixel here and there, one level at most)
    prompts = np.stack([np.stack([start, clip[0]]), np.stack([clip[1], clip[2]])])
    engine.reset(prompts, seed=[5, 6], actions=[[1], [2]])
    together = engine.rollout([[0, 1, 2], [3, 3, 3]])
    for i, (seed, acts) in enumerate(((5, [0, 1, 2]), (6, [3, 3, 3]))):
        engine.reset(prompts[i], seed=seed, actions=[[1], [2]][i])
        alone = engine.rollout(acts).astype(int)
        assert np.abs(alone - together[i]).max() <= 1 and (alone != together[i]).mean() < 0.01


def test_generate_and_eval_play_it(trained, tmp_path):
    world, data = trained
    out = tmp_path / "futures.gif"
    argv = ["generate", "--world", world, "--actions", "0,1,2", "--samples", 2, "--out", out]
    assert genie(*argv) == 0
    assert read_video(out).shape[0] == 4  # the start frame + 3 generated
    argv = ["eval", "--world", world, "--data", data, "--split", "val", "--out", tmp_path / "eval"]
    assert genie(*argv, "--episodes", 2, "--context", 2, "--batch-size", 2) == 0
    d = json.loads((tmp_path / "eval" / "metrics.json").read_text())["dynamics"]
    assert all(math.isfinite(d["psnr"][h]) for h in ("1", "4", "8", "16"))
    assert d["diffusion_steps"] == 2 and d["carry_unchanged"] is False


def test_eval_plays_a_true_action_world_with_the_recorded_actions(trained, tmp_path):
    """A world trained on true actions has no LAM: eval plays each clip's recorded actions."""
    import shutil

    world, data = trained
    true_world = tmp_path / "true-world"
    shutil.copytree(world, true_world)
    shutil.rmtree(true_world / "lam")
    meta = json.loads((true_world / "world.json").read_text())
    meta.setdefault("actions", {})["source"] = "true"
    (true_world / "world.json").write_text(json.dumps(meta))
    argv = ["eval", "--world", true_world, "--data", data, "--split", "val"]
    argv += ["--out", tmp_path / "eval", "--episodes", 2, "--context", 2, "--batch-size", 2]
    assert genie(*argv) == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "absent" in m["lam"] and math.isfinite(m["dynamics"]["psnr"]["4"])
    assert "LAM | none" in (tmp_path / "eval" / "report.md").read_text()


def test_bench_play_times_it(trained, capsys):
    world, _ = trained
    argv = ["bench", "play", "--world", world, "--frames", 3, "--warmup", 1, "--no-browser"]
    assert genie(*argv, "--json") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["fps"] > 0 and result["diffusion_steps"] == 2


def test_bench_train_measures_the_diffusion_kind(capsys):
    argv = ["bench", "train", "--preset", "tiny", "--steps", 1, "--warmup", 0, "--json"]
    assert genie(*argv, "--parts", "diffusion", "--precision", "fp32") == 0
    (row,) = json.loads(capsys.readouterr().out)["parts"]
    assert row["part"] == "diffusion" and row["tokens_per_s"] > row["frames_per_s"] > 0
