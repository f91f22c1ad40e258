"""The dataset format and ClipDataset on small synthetic datasets whose frames encode where they
come from (pixel [0, 0] = episode id, [0, 1] = frame index), so every clip can be checked exactly."""

from __future__ import annotations

import errno
import json
import os
import pickle

import numpy as np
import pytest
import torch

from genie.data import ClipDataset, DatasetWriter, EpisodeData, collate_clips, open_dataset
from genie.data import format as fmt
from genie.utils.errors import UserError

SOURCE = {"kind": "test", "version": 1}
SPACE = {"n": 5, "labels": ["a", "b", "c", "d", "e"]}


def make_episode(eid: int, length: int, split: str, resets=(), size: int = 8) -> EpisodeData:
    frames = np.zeros((length, size, size, 3), np.uint8)
    frames[:, 0, 0, 0] = eid
    frames[:, 0, 1, 0] = np.arange(length)
    frames[:, 2:, 2:] = np.random.default_rng(eid).integers(0, 255, (length, size - 2, size - 2, 3))
    firsts = np.zeros(length, bool)
    firsts[list(resets)] = True
    actions = (np.arange(length) + eid) % 5
    return EpisodeData(f"ep-{eid}", split, frames, actions, np.ones(length), firsts, seed=eid)


def write(root, shards: list[list[EpisodeData]], space=SPACE, size: int = 8):
    with DatasetWriter(
        root, frame_size=(size, size), source=SOURCE, fps=10.0, action_space=space
    ) as w:
        for eps in shards:
            w.write_shard(eps)
    return root


@pytest.fixture
def data(tmp_path):
    """8 episodes in 3 shards: train 0-4 (ep 2 has a game restart at frame 20), val 5-6, test 7."""
    shards = [
        [make_episode(0, 40, "train"), make_episode(1, 33, "train"), make_episode(5, 20, "val")],
        [
            make_episode(2, 50, "train", resets=[20]),
            make_episode(3, 16, "train"),
            make_episode(7, 17, "test"),
        ],
        [make_episode(4, 10, "train"), make_episode(6, 25, "val")],
    ]
    return write(tmp_path / "ds", shards)


def where(clip: torch.Tensor) -> tuple[set[int], list[int]]:
    return set(clip[:, 0, 0, 0].tolist()), clip[:, 0, 1, 0].tolist()


def test_clips_are_exact_and_never_cross_episodes_or_restarts(data):
    ds = ClipDataset(data, split="train", clip_len=8)
    # ep0 40 -> 5, ep1 33 -> 4, ep2 [0,20) -> 2 and [20,50) -> 3, ep3 16 -> 2, ep4 10 -> 1
    assert len(ds) == 5 + 4 + 2 + 3 + 2 + 1
    seen = []
    for i in range(len(ds)):
        item = ds[i]
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (8, 8, 8, 3)
        assert item["actions"].dtype == torch.long and item["actions"].shape == (8,)
        eps, ts = where(item["frames"])
        assert len(eps) == 1, "a clip mixes episodes"
        (ep,) = eps
        assert ts == list(range(ts[0], ts[0] + 8))
        if ep == 2:
            assert ts[-1] < 20 or ts[0] >= 20, "a clip crosses the game restart"
        assert item["actions"].tolist() == [(t + ep) % 5 for t in ts]
        seen.append((ep, ts[0]))
    assert seen[:5] == [(0, 0), (0, 8), (0, 16), (0, 24), (0, 32)]
    assert (2, 20) in seen and (2, 16) not in seen
    assert ds[-1]["frames"].equal(ds[len(ds) - 1]["frames"])
    with pytest.raises(IndexError):
        ds[len(ds)]
    # determinism: a second instance gives the same clips
    again = ClipDataset(data, split="train", clip_len=8)
    assert all(ds[i]["frames"].equal(again[i]["frames"]) for i in range(len(ds)))


def test_stride_frame_skip_and_cross_resets(data):
    over = ClipDataset(data, split="train", clip_len=8, stride=4)
    assert len(over) > len(ClipDataset(data, split="train", clip_len=8))
    skip = ClipDataset(data, split="train", clip_len=4, frame_skip=3)
    eps, ts = where(skip[0]["frames"])
    assert eps == {0} and ts == [0, 3, 6, 9]
    assert skip[1]["frames"][0, 0, 1, 0] == 12  # default stride: clip_len * frame_skip
    assert skip[0]["actions"].tolist() == [0, 3, 1, 4]
    crossing = ClipDataset(data, split="train", clip_len=8, cross_resets=True)
    starts = [where(crossing[i]["frames"]) for i in range(len(crossing))]
    assert ({2}, list(range(16, 24))) in starts


def test_splits_are_disjoint_and_complete(data):
    m = open_dataset(data)
    per_split = {}
    for split in ("train", "val", "test"):
        ds = ClipDataset(data, split=split, clip_len=8)
        per_split[split] = {int(ds[i]["frames"][0, 0, 0, 0]) for i in range(len(ds))}
    assert per_split == {"train": {0, 1, 2, 3, 4}, "val": {5, 6}, "test": {7}}
    names = [e.name for e in m.episodes]
    assert len(names) == len(set(names))
    assert m.splits() == {
        "train": {"episodes": 5, "frames": 149},
        "val": {"episodes": 2, "frames": 45},
        "test": {"episodes": 1, "frames": 17},
    }
    assert len(ClipDataset(data, split=None, clip_len=8)) == sum(
        len(ClipDataset(data, split=s, clip_len=8)) for s in ("train", "val", "test")
    )


def test_dataloader_workers_give_the_same_clips(data):
    ds = ClipDataset(data, split="train", clip_len=8)
    ds[0]  # opens memory maps in this process...
    assert pickle.loads(pickle.dumps(ds))._arrays is None  # ...which never travel to workers

    def batches(workers: int):
        loader = torch.utils.data.DataLoader(
            ds, batch_size=4, num_workers=workers, collate_fn=collate_clips
        )
        return list(loader)

    single, multi = batches(0), batches(2)
    assert len(single) == len(multi) == 5
    for a, b in zip(single, multi, strict=True):
        assert a["frames"].shape == (4, 8, 8, 8, 3) or a["frames"].shape[0] == len(ds) % 4
        assert a["frames"].equal(b["frames"]) and a["actions"].equal(b["actions"])


def test_metadata_and_collate_without_actions(tmp_path):
    root = write(tmp_path / "noact", [[make_episode(0, 12, "train")]], space=None)
    ds = ClipDataset(root, clip_len=4)
    assert ds.frame_size == (8, 8) and ds.num_actions is None and ds.action_labels is None
    batch = collate_clips([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 4, 8, 8, 3) and batch["actions"] is None
    with_actions = ClipDataset(
        write(tmp_path / "act", [[make_episode(0, 12, "train")]]), clip_len=4
    )
    assert with_actions.num_actions == 5 and with_actions.action_labels == SPACE["labels"]
    assert with_actions.manifest.fps == 10.0


def test_bad_inputs_are_one_line_user_errors(data, tmp_path):
    cases = [
        (lambda: ClipDataset(tmp_path / "missing"), "does not exist"),
        (lambda: ClipDataset(tmp_path), "manifest.json is missing"),
        (lambda: ClipDataset(data, split="holdout"), "no episodes in split 'holdout'"),
        (lambda: ClipDataset(data, split="test", clip_len=18), "longer than every"),
        (lambda: ClipDataset(data, clip_len=0), "must be >= 1"),
    ]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    cases.append((lambda: ClipDataset(tmp_path / "bad"), "not valid JSON"))
    for make, text in cases:
        with pytest.raises(UserError, match=text) as e:
            make()
        assert "\n" not in str(e.value)


def test_writer_refuses_other_datasets_without_touching_them(data, tmp_path):
    before = (data / "manifest.json").read_bytes()
    with pytest.raises(UserError, match="different dataset"):
        DatasetWriter(
            data,
            frame_size=(8, 8),
            source={"kind": "test", "version": 2},
            fps=10,
            action_space=None,
        )
    with pytest.raises(UserError, match="8x8 frames, not 16x16"):
        DatasetWriter(data, frame_size=(16, 16), source=SOURCE, fps=10, action_space=None)
    assert (data / "manifest.json").read_bytes() == before
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not empty"):
        DatasetWriter(other, frame_size=(8, 8), source=SOURCE, fps=10, action_space=None)
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]


def test_interrupted_shard_never_reads_back(tmp_path, monkeypatch):
    root = write(tmp_path / "ds", [[make_episode(0, 20, "train")]])
    real = fmt._save_synced
    calls = []

    def crash_midway(path, parts):  # a kill after the frames are written, before the rest
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(path, parts)

    monkeypatch.setattr(fmt, "_save_synced", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        write(root, [[make_episode(1, 20, "train")]])
    monkeypatch.undo()
    assert [p.name for p in (root / "shards").iterdir() if p.name.startswith(".tmp")]  # debris left
    assert [e.name for e in open_dataset(root).episodes] == ["ep-0"]
    assert len(ClipDataset(root, clip_len=4)) == 5
    write(root, [[make_episode(1, 20, "train")]])  # the next run cleans up and continues
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["00000", "00001"]
    assert [e.name for e in open_dataset(root).episodes] == ["ep-0", "ep-1"]


def test_full_disk_is_one_line_and_keeps_earlier_data(tmp_path, monkeypatch):
    root = write(tmp_path / "ds", [[make_episode(0, 20, "train")]])

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fmt.os, "fsync", no_space)
    with pytest.raises(UserError, match="disk full .* 1 episodes saved before are intact"):
        write(root, [[make_episode(1, 20, "train")]])
    monkeypatch.undo()
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["00000"]
    assert len(ClipDataset(root, clip_len=4)) == 5


def test_manifest_schema(data):
    d = json.loads((data / "manifest.json").read_text())
    assert d["format"] == "genie-dataset" and d["version"] == 1
    assert d["frame_size"] == [8, 8] and d["action_space"] == SPACE and d["source"] == SOURCE
    e = d["episodes"][3]
    assert e == {
        "id": 3,
        "name": "ep-2",
        "split": "train",
        "shard": "00001",
        "start": 0,
        "length": 50,
        "seed": 2,
    }
    shard = data / "shards" / "00001"
    arrays = {
        k: np.load(shard / f"{k}.npy", mmap_mode="r")
        for k in ("frames", "actions", "rewards", "firsts")
    }
    assert arrays["frames"].shape == (83, 8, 8, 3) and arrays["frames"].dtype == np.uint8
    assert arrays["actions"].dtype == np.int16 and arrays["rewards"].dtype == np.float32
    assert arrays["firsts"].dtype == bool and np.flatnonzero(arrays["firsts"]).tolist() == [
        0,
        20,
        50,
        66,
    ]


def test_data_info_json_and_preview(data, tmp_path, genie_cli):
    rc, out, _ = genie_cli("data", "info", data, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["episodes"] == 8 and info["frames"] == 211 and info["frame_size"] == [8, 8]
    assert info["splits"]["val"] == {"episodes": 2, "frames": 45}
    assert info["action_space"] == SPACE
    rc, out, _ = genie_cli("data", "info", data)
    assert rc == 0 and "8 episodes" in out
    rc, _, err = genie_cli("data", "info", tmp_path / "nowhere")
    assert rc == 2 and "does not exist" in err and err.count("\n") == 1

    from PIL import Image

    png = tmp_path / "strip.png"
    rc, _, _ = genie_cli(
        "data", "preview", data, "--out", png, "--episodes", "3", "--frames", "5", "--scale", "1"
    )
    assert rc == 0
    grid = np.asarray(Image.open(png))
    assert grid.shape == (3 * 8 + 2 * 2, 5 * 8 + 4 * 2, 3)
    assert grid[0, 0, 0] == 0 and grid[10, 0, 0] == 1  # row r shows episode r
    assert grid[0, 4 * 10 + 1, 0] == 39  # last column: the episode's last frame
