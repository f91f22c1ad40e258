"""`genie import-videos`: mp4, gif and frame folders written here; bad files skipped, not fatal."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from genie.data import ClipDataset, open_dataset
from genie.data import format as fmt
from genie.data.importer import split_of


def moving_square(n: int, h: int = 48, w: int = 80) -> np.ndarray:
    """(n, h, w, 3): a white square sliding right over a dark-blue background."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 2] = 90
    for t in range(n):
        frames[t, 16:32, 10 + 2 * t : 26 + 2 * t] = 255
    return frames


@pytest.fixture
def inputs(tmp_path):
    root = tmp_path / "videos"
    (root / "run1" / "frames").mkdir(parents=True)
    iio.imwrite(root / "clip.mp4", moving_square(30), plugin="pyav", codec="libx264", fps=30)
    iio.imwrite(root / "run1" / "anim.gif", moving_square(12), duration=100, loop=0)
    # a frame folder: red margins around a green center square -> center crop keeps only green
    for t in range(6):
        img = np.zeros((40, 60, 3), np.uint8)
        img[:, :10, 0] = img[:, 50:, 0] = 255
        img[:, 10:50, 1] = 200
        img[0, 10 + t] = 0  # frames differ
        Image.fromarray(img).save(root / "run1" / "frames" / f"{t:04d}.png")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (root / "empty.webm").write_bytes(b"")
    return root


def test_import_videos_gifs_and_frame_folders(inputs, tmp_path, genie_cli):
    out = tmp_path / "ds"
    rc, stdout, stderr = genie_cli(
        "import-videos", inputs, "--out", out, "--size", "32", "--fps", "10", "--quiet"
    )
    assert rc == 0, stderr
    assert "imported 3 videos" in stdout and "skipped 2 unreadable files" in stdout
    assert "broken.mp4" in stdout and "empty.webm" in stdout
    m = open_dataset(out)
    assert m.frame_size == (32, 32) and m.source["kind"] == "import" and m.action_space is None
    lengths = {e.name: e.length for e in m.episodes}
    # mp4 30 frames at 30 fps -> 10 at 10 fps; gif 12 frames at 10 fps stay; folders are kept whole
    assert lengths == {"videos/clip.mp4": 10, "videos/run1/anim.gif": 12, "videos/run1/frames": 6}
    for e in m.episodes:
        frames = np.load(fmt.shard_path(out, e.shard, "frames"), mmap_mode="r")[
            e.start : e.start + e.length
        ]
        assert frames.shape[1:] == (32, 32, 3) and frames.dtype == np.uint8
        if e.name.endswith("frames"):
            assert (
                frames[:, 4:, :, 1].min() > 150 and frames[:, 4:, :, 0].max() < 40
            )  # cropped to green
        else:
            assert (np.diff(frames.astype(int), axis=0) != 0).any()  # the square moves
        assert e.split == split_of(e.name, 0.05, 0.05)
    assert ClipDataset(out, split=None, clip_len=4)[0]["actions"] is None

    # rerunning adds nothing and still reports the bad files
    rc, stdout, _ = genie_cli(
        "import-videos", inputs, "--out", out, "--size", "32", "--fps", "10", "--quiet"
    )
    assert rc == 0 and "imported 0 videos" in stdout and "3 already there" in stdout
    # other settings in the same folder: refused, untouched
    before = (out / "manifest.json").read_bytes()
    rc, _, stderr = genie_cli(
        "import-videos", inputs, "--out", out, "--size", "64", "--fps", "10", "--quiet"
    )
    assert (
        rc == 2 and "different dataset" in stderr and (out / "manifest.json").read_bytes() == before
    )


def test_action_labels_and_mismatch(inputs, tmp_path, genie_cli):
    labels = tmp_path / "actions.json"
    labels.write_text(json.dumps({"clip.mp4": [t % 4 for t in range(30)], "anim": [1] * 12}))
    out = tmp_path / "ds"
    rc, _, stderr = genie_cli(
        "import-videos", inputs, "--out", out, "--fps", "10", "--actions", labels, "--quiet"
    )
    assert rc == 0, stderr
    ds = ClipDataset(out, split=None, clip_len=5, frame_skip=1)
    m = ds.manifest
    assert m.action_space == {"n": 4, "labels": ["0", "1", "2", "3"]}
    clip = next(e for e in m.episodes if e.name.endswith("clip.mp4"))
    acts = np.load(fmt.shard_path(out, clip.shard, "actions"))[
        clip.start : clip.start + clip.length
    ]
    assert acts.tolist() == [
        t % 4 for t in range(0, 30, 3)
    ]  # every 3rd source frame kept, with its label
    folder = next(e for e in m.episodes if e.name.endswith("frames"))
    acts = np.load(fmt.shard_path(out, folder.shard, "actions"))[
        folder.start : folder.start + folder.length
    ]
    assert (acts == -1).all()  # no labels given: unknown

    labels.write_text(json.dumps({"clip.mp4": [0] * 29}))
    rc, _, stderr = genie_cli(
        "import-videos", inputs, "--out", tmp_path / "ds2", "--actions", labels, "--quiet"
    )
    assert rc == 2 and "clip.mp4" in stderr and "29 actions" in stderr and "30 frames" in stderr
    assert stderr.count("\n") == 1
    labels.write_text(json.dumps({"nosuch.mp4": [0]}))
    rc, _, stderr = genie_cli(
        "import-videos", inputs, "--out", tmp_path / "ds3", "--actions", labels, "--quiet"
    )
    assert rc == 2 and "nosuch.mp4" in stderr


def test_single_video_with_txt_actions(tmp_path, genie_cli):
    video = tmp_path / "one.mp4"
    iio.imwrite(video, moving_square(8), plugin="pyav", codec="libx264", fps=15)
    txt = tmp_path / "one.txt"
    txt.write_text("\n".join(str(t % 3) for t in range(8)) + "\n")
    rc, _, stderr = genie_cli(
        "import-videos", video, "--out", tmp_path / "ds", "--actions", txt, "--quiet"
    )
    assert rc == 0, stderr
    ds = ClipDataset(tmp_path / "ds", split=None, clip_len=8)
    assert ds[0]["actions"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert ds.manifest.episodes[0].fps == 15.0


def test_nothing_to_import_is_a_user_error(tmp_path, genie_cli):
    (tmp_path / "empty").mkdir()
    rc, _, stderr = genie_cli("import-videos", tmp_path / "empty", "--out", tmp_path / "ds")
    assert rc == 2 and "no videos or frame folders" in stderr
    rc, _, stderr = genie_cli("import-videos", tmp_path / "missing.mp4", "--out", tmp_path / "ds")
    assert rc == 2 and "does not exist" in stderr
    assert not (tmp_path / "ds").exists()
