"""`genie train` / `genie plot`: a run writes its log, samples, checkpoint and world part; a
resumed run ends where an uninterrupted one does; two processes read disjoint data and end
with the same weights; bad input ends in one line and exit code 2."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from synthetic import write_dataset

from genie.cli import main
from genie.utils.errors import UserError
from genie.world.folder import export_part, load_part
from training import presets

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--preset", "tiny", "--log-every", "1", "--eval-batches", "1"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, and don't stall when other processes load the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny synthetic dataset: 32x32 frames, 5 actions, train and val splits."""
    return write_dataset(
        tmp_path_factory.mktemp("data") / "sprites", episodes=6, length=12, val_episodes=2
    )


def genie(*argv) -> int:
    return main([str(a) for a in argv])


def train(part: str, data: Path, world: Path, run_dir: Path, *extra) -> int:
    """`genie train PART` with the tiny preset, one metrics row per step, one val batch."""
    return genie(
        "train", part, "--data", data, "--world", world, "--run-dir", run_dir, *TRAIN, *extra
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tokenizer_world(path: Path, num_codes: int = 64, frame_size: int = 32) -> Path:
    """A world holding a random-init tokenizer of the tiny preset's shape."""
    from genie.models.pretrained import config_from_dict
    from genie.models.tokenizer import TokenizerConfig, VideoTokenizer

    model = presets.load("tiny", "tokenizer").model | {
        "num_codes": num_codes,
        "frame_size": frame_size,
    }
    torch.manual_seed(0)
    export_part(path, "tokenizer", VideoTokenizer(config_from_dict(TokenizerConfig, model)), {})
    return path


# ---------------------------------------------------------------------- presets


def test_presets_load_validate_and_override(tmp_path, monkeypatch):
    p = presets.load("tiny", "tokenizer", {"steps": 3, "lr": None})
    assert p.train.steps == 3 and p.train.lr > 0
    for name in ("tiny", "coinrun-cpu", "coinrun-gpu"):
        for part in presets.PARTS:
            presets.load(name, part)
    with pytest.raises(UserError, match="available: .*tiny"):
        presets.load("nope", "tokenizer")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text(
        json.dumps({"model": {"widht": 8}, "train": {}})
    )
    (tmp_path / "bad" / "lam.json").write_text(json.dumps({"model": {}, "train": {"stpes": 8}}))
    monkeypatch.setattr(presets, "PRESETS_DIR", tmp_path)
    with pytest.raises(UserError, match="unknown model key.*widht"):
        presets.load("bad", "tokenizer")
    with pytest.raises(UserError, match="unknown train key.*stpes"):
        presets.load("bad", "lam")


# ---------------------------------------------------------------------- one run, then plot


def test_train_tokenizer_writes_run_and_world(data, tmp_path):
    world, run = tmp_path / "world", tmp_path / "run"
    assert train("tokenizer", data, world, run, "--steps", 3) == 0

    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert rows[0]["val_psnr"] and rows[-1]["val_psnr"] and rows[-1]["loss"] and rows[-1]["lr"]
    assert float(rows[-1]["frames_per_s"]) > 0
    assert {p.name for p in (run / "samples").iterdir()} == {"step_0000000.png", "step_0000003.png"}
    state = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert state["step"] == 3 and state["preset"] == "tiny" and state["part"] == "tokenizer"
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_0.pt",
    ):
        assert (run / "checkpoint" / name).is_file()
    assert not (run / "checkpoint.tmp").exists() and not (run / "checkpoint.old").exists()
    assert load_part(world, "tokenizer").config.frame_size == 32
    meta = json.loads((world / "world.json").read_text())
    info = meta["training"]["tokenizer"]
    assert info["steps"] == 3 and info["preset"] == "tiny" and info["processes"] == 1
    # the data as given and what it holds: no machine's path is made up
    assert info["data"] == str(data) and info["dataset"]["splits"]["train"]["episodes"] == 6

    assert genie("plot", run, "--out", tmp_path / "curves.png") == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flags_space_out_validation_samples_and_checkpoints(data, tmp_path):
    """--eval-every / --sample-every / --ckpt-every replace the preset's (a GPU's fast steps
    want them further apart); the run's last step still validates, samples and checkpoints."""
    world, run = tmp_path / "world", tmp_path / "run"
    spacing = ("--eval-every", 3, "--sample-every", 4, "--ckpt-every", 5)
    assert train("tokenizer", data, world, run, "--steps", 7, *spacing) == 0
    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["val_psnr"]] == [0, 3, 6, 7]
    samples = {p.name for p in (run / "samples").iterdir()}
    assert samples == {f"step_{s:07d}.png" for s in (0, 4, 7)}
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["train"]["ckpt_every"] == 5
    assert genie("train", "tokenizer", "--data", data, "--world", world, "--ckpt-every", 0) == 2


def test_the_tiny_preset_fits_64px_frames(tmp_path, capsys):
    """The tiny preset is sized for 32x32 frames; on 64x64 data (CoinRun's size) its patches
    double, so the token grid, and so the training cost per frame, stay the preset's."""
    big = write_dataset(tmp_path / "big", episodes=4, length=8, val_episodes=1, size=64)
    world = tmp_path / "world"
    for part in ("tokenizer", "lam"):
        assert train(part, big, world, tmp_path / part, "--steps", 2) == 0
        config = load_part(world, part).config
        assert config.frame_size == 64 and config.patch_size == 8 and config.grid == (8, 8)
    assert "patch_size 4 -> 8" in capsys.readouterr().out


def test_lam_then_dynamics_on_latent_actions(data, tmp_path):
    world = tokenizer_world(tmp_path / "world")
    assert train("lam", data, world, tmp_path / "lam", "--steps", 2) == 0
    lam = load_part(world, "lam")
    assert (
        train("dynamics", data, world, tmp_path / "dyn", "--steps", 2) == 0
    )  # default: LAM actions
    meta = json.loads((world / "world.json").read_text())
    assert meta["actions"]["source"] == meta["training"]["dynamics"]["action_source"] == "lam"
    assert load_part(world, "dynamics").config.num_actions == lam.num_actions
    assert (tmp_path / "dyn" / "samples" / "step_0000002.png").is_file()


def test_a_lam_run_shorter_than_its_warmup_still_seeds_its_codebook(data, tmp_path, capsys):
    """A preset's VQ warm-up longer than the run (a short --steps or budget) becomes the first
    half of it: the codebook is seeded from the warm-up latents before the run ends."""
    world = tmp_path / "world"
    argv = ("--steps", 8, "--set", "vq_warmup_steps=100")
    assert train("lam", data, world, tmp_path / "lam", *argv) == 0
    assert "vq_warmup_steps 100 -> 4" in capsys.readouterr().out
    lam = load_part(world, "lam")
    assert lam.config.vq_warmup_steps == 4 and int(lam.trained_steps) == 8  # seeded at step 4


# ---------------------------------------------------------------------- resume


@pytest.mark.parametrize("part", ["tokenizer", "dynamics"])
def test_resumed_run_equals_uninterrupted_run(part, data, tmp_path):
    """Tokenizer (with EMA): VQ restart counters, EMA state; dynamics: random masks (RNG
    state) and the data order across epoch boundaries."""
    if part == "tokenizer":  # the tiny preset with EMA on
        preset = json.loads((presets.PRESETS_DIR / "tiny" / "tokenizer.json").read_text())
        preset["train"]["ema_decay"] = 0.9
        (tmp_path / "ema").mkdir()
        (tmp_path / "ema" / "tokenizer.json").write_text(json.dumps(preset))
        extra, steps, stop = ["--preset", str(tmp_path / "ema")], 5, 2
    else:
        extra, steps, stop = ["--action-source", "true"], 6, 3  # 2 batches per epoch
    weights, logs = {}, {}
    for name in ("straight", "resumed"):
        world, run_dir = tmp_path / f"world-{name}", tmp_path / f"run-{name}"
        if part == "dynamics":
            tokenizer_world(world)
        if name == "straight":
            assert train(part, data, world, run_dir, *extra, "--steps", steps) == 0
        else:
            assert (
                train(part, data, world, run_dir, *extra, "--steps", steps, "--stop-at", stop) == 0
            )
            assert json.loads((run_dir / "checkpoint" / "trainer.json").read_text())["step"] == stop
            assert train(part, data, world, run_dir, *extra, "--resume") == 0
        weights[name] = load_file(str(world / part / "model.safetensors"))
        logs[name] = read_csv(run_dir / "metrics.csv")
    for key, value in weights["straight"].items():
        torch.testing.assert_close(weights["resumed"][key], value, atol=1e-6, rtol=1e-5, msg=key)
    assert [r["step"] for r in logs["resumed"]] == [r["step"] for r in logs["straight"]]
    losses = {n: [float(r["loss"] or 0) for r in rows] for n, rows in logs.items()}
    assert losses["resumed"] == pytest.approx(losses["straight"], rel=1e-5)


def test_first_row_after_a_crash_averages_every_step_since_the_last_row(
    data, tmp_path, monkeypatch
):
    """A run killed after a checkpoint between two log rows: once resumed, the next row averages
    the steps before the crash too, as the uninterrupted run's row does."""
    import training.checkpoint

    preset = json.loads((presets.PRESETS_DIR / "tiny" / "tokenizer.json").read_text())
    preset["train"]["ckpt_every"] = 1
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "tokenizer.json").write_text(json.dumps(preset))
    argv = ["--preset", tmp_path / "p", "--log-every", 3, "--eval-batches", 1, "--steps", 6]
    release = training.checkpoint.release

    def crash_at_4(world, part, model, ema, info):
        release(world, part, model, ema, info)
        if info["steps"] == 4:
            raise KeyboardInterrupt  # the process dies after step 4's checkpoint

    rows = {}
    for name in ("straight", "crashed"):
        run = tmp_path / name
        cmd = [
            "train",
            "tokenizer",
            "--data",
            data,
            "--world",
            tmp_path / f"w-{name}",
            "--run-dir",
            run,
        ]
        if name == "crashed":
            monkeypatch.setattr(training.checkpoint, "release", crash_at_4)
            assert genie(*cmd, *argv) == 130
            monkeypatch.setattr(training.checkpoint, "release", release)
            assert genie(*cmd, "--resume", "--log-every", 3, "--eval-batches", 1) == 0
        else:
            assert genie(*cmd, *argv) == 0
        rows[name] = {r["step"]: r for r in read_csv(run / "metrics.csv") if r["loss"]}
    assert list(rows["crashed"]) == list(rows["straight"]) == ["3", "6"]
    assert float(rows["crashed"]["6"]["loss"]) == pytest.approx(
        float(rows["straight"]["6"]["loss"]), rel=1e-5
    )


# ---------------------------------------------------------------------- two processes


def test_two_processes_read_disjoint_data_and_end_equal(data, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "training", "tokenizer", "--data", data, "--world", tmp_path / "world"]
    cmd += ["--run-dir", run, "--steps", 3, "--batch-size", 2, "--debug-shards", *TRAIN]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=ROOT,
        env=env,
        text=True,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        raise
    out = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 process(es)" in out.stdout
    seen = []
    for rank in (0, 1):
        lines = (run / "debug" / f"clips_rank{rank}.txt").read_text().split("\n")
        seen.append([[int(i) for i in line.split()[1:]] for line in lines if line])
    assert len(seen[0]) == len(seen[1]) == 3
    for step in range(3):  # each step, the two processes trained on different clips
        assert not set(seen[0][step]) & set(seen[1][step])
    assert not set(sum(seen[0], [])) & set(sum(seen[1], []))  # within one epoch: no clip twice
    w0, w1 = (load_file(str(run / "debug" / f"weights_rank{r}.safetensors")) for r in (0, 1))
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], atol=0, rtol=0, msg=key)
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["num_processes"] == 2


# ---------------------------------------------------------------------- bad input


def bad_cases(data: Path, tmp: Path) -> dict[str, list]:
    (tmp / "empty").mkdir()
    short = write_dataset(tmp / "short", episodes=2, length=3, val_episodes=0)
    small = tokenizer_world(tmp / "small-vocab", num_codes=32)
    big = tokenizer_world(tmp / "64px", frame_size=64)
    return {
        "missing data": ["tokenizer", "--data", tmp / "nope", "--world", tmp / "w", *TRAIN],
        "no episodes": ["tokenizer", "--data", tmp / "empty", "--world", tmp / "w", *TRAIN],
        "clip_len > episodes": ["tokenizer", "--data", short, "--world", tmp / "w", *TRAIN],
        "unknown preset": ["tokenizer", "--data", data, "--world", tmp / "w", "--preset", "huge"],
        "frozen encoder of a lam": [
            "lam",
            "--data",
            data,
            "--world",
            tmp / "w",
            "--freeze-encoder",
            *TRAIN,
        ],
        "world without tokenizer": ["dynamics", "--data", data, "--world", tmp / "w", *TRAIN],
        "world without lam": ["dynamics", "--data", data, "--world", small, *TRAIN],
        "tokenizer of other frames": [
            "dynamics",
            "--data",
            data,
            "--world",
            big,
            "--action-source",
            "true",
            *TRAIN,
        ],
        "resume without checkpoint": [
            "lam",
            "--data",
            data,
            "--world",
            tmp / "w",
            "--resume",
            "--run-dir",
            tmp,
        ],
    }


def test_bad_input_gives_one_line_and_exit_code_2(data, tmp_path, capsys):
    for name, argv in bad_cases(data, tmp_path).items():
        capsys.readouterr()
        assert genie("train", *argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err, (name, err)


def test_dynamics_resumed_on_another_tokenizer_is_refused(data, tmp_path, capsys):
    world, run = tokenizer_world(tmp_path / "w", num_codes=64), tmp_path / "run"
    assert (
        train("dynamics", data, world, run, "--action-source", "true", "--steps", 4, "--stop-at", 1)
        == 0
    )
    tokenizer_world(world, num_codes=32)  # the world's tokenizer now has another vocabulary
    capsys.readouterr()
    assert train("dynamics", data, world, run, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vocabulary" in err, err


def test_decoder_only_training_keeps_the_tokens_and_the_dynamics(data, tmp_path, capsys):
    """--freeze-encoder: every frame keeps its code ids while the decoder learns, so the world's
    dynamics (and a dynamics run being resumed) stay valid; training the whole tokenizer does not."""
    from genie.data.dataset import ClipDataset
    from genie.world.folder import World

    world, dyn_run = tokenizer_world(tmp_path / "w"), tmp_path / "dyn"
    dyn = ("--action-source", "true")
    assert train("dynamics", data, world, dyn_run, *dyn, "--steps", 2, "--stop-at", 1) == 0
    frames = torch.stack([ClipDataset(data, split="val", clip_len=4)[i]["frames"] for i in (0, 1)])
    before = load_part(world, "tokenizer")
    ids, recon = before.encode(frames), before.decode(before.encode(frames))
    mse_before = ((recon - frames.float() / 255) ** 2).mean()

    meta = json.loads((world / "world.json").read_text())  # as a world from before the
    trained_on = meta.pop("dynamics_trained_on")  # encoder fingerprint recorded it: by file
    assert set(trained_on) == {"tokenizer_encoder"}
    meta["dynamics_trained_on"] = {"tokenizer": meta["fingerprints"]["tokenizer"]}
    (world / "world.json").write_text(json.dumps(meta))

    init = ("--init-from", world / "tokenizer", "--lr", "3e-3", "--steps", 30)
    assert train("tokenizer", data, world, tmp_path / "dec", *init, "--freeze-encoder") == 0
    after = load_part(world, "tokenizer")
    assert torch.equal(after.encode(frames), ids)  # the same tokens ...
    mse_after = ((after.decode(ids) - frames.float() / 255) ** 2).mean()
    assert mse_after < 0.8 * mse_before, (mse_before, mse_after)  # ... drawn better
    meta = json.loads((world / "world.json").read_text())
    assert meta["training"]["tokenizer"]["decoder_only"] is True
    assert meta["dynamics_trained_on"] == trained_on  # re-expressed by the encoder's fingerprint
    World.from_folder(world)  # the dynamics still fits: no error
    assert train("dynamics", data, world, dyn_run, "--resume") == 0

    assert train("tokenizer", data, world, tmp_path / "full", *init) == 0  # encoder trained too
    with pytest.raises(UserError, match="different tokenizer encoder"):
        World.from_folder(world)
    assert (
        train("dynamics", data, world, tmp_path / "dyn2", *dyn, "--steps", 2, "--stop-at", 1) == 0
    )
    tokenizer_world(world)  # swap the tokenizer under a dynamics run being resumed
    capsys.readouterr()
    assert train("dynamics", data, world, tmp_path / "dyn2", "--resume") == 2
    assert "tokenizer changed" in capsys.readouterr().err


def test_cli_exit_code_from_a_real_process(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "genie", "train", "tokenizer", "--data", str(tmp_path / "nope")]
        + ["--world", str(tmp_path / "w"), "--preset", "tiny"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_bench_train_reports_throughput_and_flops(capsys):
    argv = ["bench", "train", "--preset", "tiny", "--steps", 1, "--warmup", 0, "--json",
            "--parts", "tokenizer", "lam", "dynamics", "--precision", "fp32"]  # fmt: skip
    assert genie(*argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fp32_peak_gflop_per_s"] > 0
    assert [r["part"] for r in result["parts"]] == ["tokenizer", "lam", "dynamics"]
    for r in result["parts"]:
        assert r["frames_per_s"] > 0 and r["gflop_per_step"] > 0 and 0 < r["fraction_of_peak"] < 2
    assert result["parts"][2]["tokens_per_s"] > result["parts"][2]["frames_per_s"]


def test_bench_train_puts_bf16_beside_fp32_where_it_is_fast(capsys):
    from genie.utils.precision import bf16_is_fast

    if not bf16_is_fast("cpu")[0]:
        pytest.skip("bf16 is not fast on this CPU: the bench measures fp32 only (and says so)")
    argv = ["bench", "train", "--preset", "tiny", "--steps", 1, "--warmup", 0, "--json",
            "--parts", "autoencoder", "diffusion"]  # fmt: skip
    assert genie(*argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows = [(r["part"], r["precision"]) for r in result["parts"]]
    assert rows == [(p, q) for p in ("autoencoder", "diffusion") for q in ("fp32", "bf16")]
    assert result["bf16_peak_gflop_per_s"] > 0 and set(result["bf16_speedup"]) == {
        "autoencoder",
        "diffusion",
    }
