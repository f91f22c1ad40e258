"""genie.utils.images: the one crop-and-resize gives the recorder and the importer exactly the frames
they made before; uint8 <-> float round trips; one grid builder for every picture."""

import numpy as np
import torch
from PIL import Image

from genie.utils.images import fit_square, frame_rows, grid, load_image, to_float, to_uint8
from genie.utils.video import tile


def screen(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_recorder_frames_are_what_they_were():
    """The Atari recorder squashed the whole 210x160 screen with PIL bilinear."""
    obs = screen(210, 160)
    before = np.asarray(Image.fromarray(obs).resize((64, 64), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(fit_square(obs, 64, crop=False), before)
    np.testing.assert_array_equal(fit_square(obs[:64, :64], 64, crop=False), obs[:64, :64])


def test_importer_frames_are_what_they_were():
    """The importer centre-cropped with PIL bilinear over the crop box."""
    for h, w in ((48, 80), (90, 30), (64, 64)):
        img = Image.fromarray(screen(h, w, seed=h))
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        before = np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR, box=box))
        np.testing.assert_array_equal(fit_square(img, 32), before)


def test_a_prompt_is_prepared_like_imported_frames():
    img = screen(120, 200)
    np.testing.assert_array_equal(load_image(img, 64), fit_square(img, 64))
    np.testing.assert_array_equal(load_image(screen(64, 64), 64), screen(64, 64))


def test_uint8_float_round_trip():
    x = torch.from_numpy(screen(8, 8))
    assert torch.equal(to_uint8(to_float(x)), x)
    assert to_float(x).max() <= 1 and to_uint8(torch.tensor([-0.5, 0.5, 2.0])).tolist() == [
        0,
        128,
        255,
    ]


def test_grid_lays_out_rows_and_columns():
    frames = np.stack([np.full((2, 3, 3), v, np.uint8) for v in range(6)]).reshape(2, 3, 2, 3, 3)
    g = grid(frames, gap=1, scale=2)  # 2 rows x 3 columns of 4x6 frames, 1 px apart
    assert g.shape == (2 * 4 + 1, 3 * 6 + 2, 3)
    assert g[0, 0, 0] == 0 and g[0, 7, 0] == 1 and g[5, 0, 0] == 3 and g[4, 0, 0] == 0
    assert tile(np.zeros((2, 4, 5, 6, 3), np.uint8), gap=1).shape == (4, 5, 13, 3)
    truth, recon = torch.zeros(2, 3, 4, 4, 3, dtype=torch.uint8), torch.ones(2, 3, 4, 4, 3)
    strip = frame_rows([truth, recon])  # clip b's rows together, frames left to right
    assert strip.shape == (2 * 2 * 4, 3 * 4, 3) and strip[4:8].min() == 255 and strip[:4].max() == 0
