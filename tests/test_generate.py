"""`genie generate` and genie/utils/video.py: clips that read back with the right frame count, K
futures side by side, and one-line errors (exit 2) for bad input."""

import re

import numpy as np
import pytest
from PIL import Image

from genie.cli import main
from genie.utils.errors import UserError
from genie.utils.video import read_video, tile, write_video
from worlds import make_tiny_world, one_torch_thread  # noqa: F401 (fixture)

SIZE = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("world") / "tiny", frame_size=SIZE)


def generate(world, out, *args):
    return main(["generate", "--world", str(world), "--out", str(out), *args])


@pytest.mark.parametrize("ext", ["mp4", "gif", "png"])
def test_writes_each_format_with_the_right_frame_count(world, tmp_path, ext):
    out = tmp_path / f"clip.{ext}"
    assert (
        generate(
            world, out, "--actions", "0,0,3,3,4", "--frames", "7", "--scale", "2", "--seed", "1"
        )
        == 0
    )
    frames = read_video(out)
    if ext == "png":  # one strip: start frame + 7 generated, side by side
        assert frames.shape == (1, 2 * SIZE, 8 * 2 * SIZE, 3)
    else:
        assert frames.shape == (8, 2 * SIZE, 2 * SIZE, 3)


def test_actions_by_label_repeat_and_cycle(world, tmp_path, capsys):
    out = tmp_path / "clip.gif"
    assert generate(world, out, "--actions", "right*2,left", "--frames", "5", "--scale", "1") == 0
    assert "start + 5 generated" in capsys.readouterr().out
    assert len(read_video(out)) == 6


def test_random_actions_are_seeded(world, tmp_path):
    a, b, c = (tmp_path / f"{n}.png" for n in "abc")
    for out, seed in ((a, "3"), (b, "3"), (c, "4")):
        assert (
            generate(
                world, out, "--actions", "random", "--frames", "4", "--seed", seed, "--scale", "1"
            )
            == 0
        )
    strip = {p: np.asarray(Image.open(p)) for p in (a, b, c)}
    np.testing.assert_array_equal(strip[a], strip[b])
    assert not np.array_equal(strip[a], strip[c])


def test_samples_render_k_futures_side_by_side(world, tmp_path):
    out = tmp_path / "futures.mp4"
    assert generate(world, out, "--actions", "1,1,2", "--samples", "3", "--scale", "2") == 0
    frames = read_video(out)
    w = 2 * SIZE
    assert frames.shape == (4, w, 3 * w + 2 * 2, 3)  # 3 samples, 1-pixel gaps scaled x2
    last = frames[-1].astype(int)
    assert np.abs(last[:, :w] - last[:, w + 2 : 2 * w + 2]).mean() > 1  # different futures
    first = frames[0].astype(int)
    assert np.abs(first[:, :w] - first[:, w + 2 : 2 * w + 2]).mean() < 3  # same start (H.264 noise)


def test_image_prompt_of_any_size(world, tmp_path):
    img = tmp_path / "wide.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 1000, 3), dtype=np.uint8)).save(
        img
    )
    assert (
        generate(world, tmp_path / "c.gif", "--image", str(img), "--actions", "up", "--frames", "2")
        == 0
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--world", "{tmp}/missing"], "does not exist"),
        (["--image", "{tmp}/missing.png"], "not found"),
        (["--image", "{tmp}/junk.png"], "not an image"),
        (["--actions", "0,jump"], "unknown action 'jump'"),
        (["--actions", "9"], "unknown action 9"),
        (["--actions", "right*x"], "ACTION\\*N"),
        (["--actions", ","], "no actions"),
        (["--out", "{tmp}/clip.avi"], "\\.mp4"),
        (["--frames", "0"], "--frames"),
        (["--samples", "0"], "--samples"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(world, tmp_path, capsys, args, message):
    (tmp_path / "junk.png").write_bytes(b"not a png")
    argv = ["generate", "--world", str(world), "--out", str(tmp_path / "c.mp4"), "--frames", "2"]
    argv += [a.format(tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("genie generate: error:")
    assert re.search(message, err), err


def test_write_video_checks_and_upscales(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 5, 7, 3), dtype=np.uint8)
    with pytest.raises(UserError, match="mp4"):
        write_video(tmp_path / "x.webm", frames)
    with pytest.raises(UserError, match="no frames"):
        write_video(tmp_path / "x.gif", frames[:0])
    write_video(tmp_path / "x.png", frames, scale=3)
    strip = np.asarray(Image.open(tmp_path / "x.png"))
    assert strip.shape == (15, 63, 3)
    np.testing.assert_array_equal(
        strip[:3, :3], np.broadcast_to(frames[0, 0, 0], (3, 3, 3))
    )  # nearest
    write_video(tmp_path / "odd.mp4", frames, scale=1)  # odd sides are padded for yuv420p
    assert read_video(tmp_path / "odd.mp4").shape == (3, 6, 8, 3)
    assert tile(np.zeros((2, 4, 5, 6, 3), np.uint8), gap=1).shape == (4, 5, 13, 3)
