"""Image helpers shared by the recorder, the importer, the engine and every picture we write.

    frame = load_image("start.png", 64)          # any image -> uint8 (64, 64, 3), UserError if bad
    frame = fit_square(pil_image, 64)            # centre crop + resize (what the importer does)
    frame = fit_square(atari_screen, 64, crop=False)   # the whole screen squashed (the recorder)
    x = to_float(frames_uint8)                   # [0, 255] -> [0, 1]
    frames = to_uint8(x)                         # [0, 1] -> uint8, clamped and rounded
    picture = grid(frames_rcHW3, gap=2, scale=2) # rows x columns of frames -> one image

One resampling everywhere (PIL bilinear, which antialiases when it shrinks), so a prompt
uploaded to the playground is prepared exactly like the frames the world was trained on.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageSequence, UnidentifiedImageError

from genie.utils.errors import UserError

MAX_PIXELS = 40_000_000  # refuse to decode bigger images (decompression bombs)
RESAMPLE = Image.Resampling.BILINEAR


def fit_square(image: Image.Image | np.ndarray, size: int, crop: bool = True) -> np.ndarray:
    """An image -> uint8 (size, size, 3). crop=True: the centred square, resized (imports,
    prompts); crop=False: the whole image squashed to a square (Atari screens, as DIAMOND does).
    An image already size x size is returned as it is."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    img = img.convert("RGB")
    w, h = img.size
    if crop:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        box = (left, top, left + s, top + s)
    else:
        box = (0, 0, w, h)
    return np.asarray(img.resize((size, size), RESAMPLE, box=box), dtype=np.uint8)


def load_image(source, size: int) -> np.ndarray:
    """Path, bytes, PIL image or array (H, W[, 3|4], uint8 or float in [0, 1]) -> uint8
    (size, size, 3): the first frame of an animation, RGB, `fit_square`d. Raises UserError on
    unreadable, empty, huge or corrupt input."""
    if isinstance(source, torch.Tensor):
        source = source.numpy()
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise UserError(f"an image array must be (H, W, 3), got {tuple(arr.shape)}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255 if arr.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr[..., :3])
    elif isinstance(source, Image.Image):
        img = source
    else:
        img = _open(source)
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise UserError(
            f"the image is too large ({w}x{h}); use one under {MAX_PIXELS // 1_000_000} megapixels"
        )
    if w < 1 or h < 1:
        raise UserError("the image is empty")
    try:
        if getattr(img, "is_animated", False):
            img = next(iter(ImageSequence.Iterator(img)))
        return fit_square(img, size).copy()
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data surfaces here
        raise UserError(f"the image is truncated or corrupt ({e})") from None


def _open(source) -> Image.Image:
    """Bytes or a path -> a lazily decoded PIL image."""
    try:
        if isinstance(source, (bytes, bytearray)):
            return Image.open(io.BytesIO(source))
        path = Path(source)
        if not path.is_file():
            raise UserError(f"image {path} not found")
        return Image.open(path)
    except UnidentifiedImageError:
        raise UserError(
            "the file is not an image PIL can read (use PNG, JPEG, GIF, WebP, BMP)"
        ) from None
    except (OSError, Image.DecompressionBombError) as e:
        raise UserError(f"the image could not be read ({e})") from None


# ---------------------------------------------------------------------------- uint8 <-> float


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] (or float [0, 1]) frames -> float [0, 1], same shape."""
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float frames ~[0, 1] -> uint8 [0, 255] (clamped, rounded), same shape."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


# ---------------------------------------------------------------------------- pictures


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of (..., H, W, C) by an integer factor (pixel art stays sharp)."""
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def grid(frames, gap: int = 0, scale: int = 1) -> np.ndarray:
    """Frames (..., R, C, H, W, 3) -> uint8 (..., R*h - gap, C*w - gap, 3) with h = H*scale + gap:
    R rows of C frames, upscaled by `scale`, `gap` black pixels apart. Float frames are taken
    as [0, 1]; torch tensors are accepted."""
    if isinstance(frames, torch.Tensor):
        frames = (frames if frames.dtype == torch.uint8 else to_uint8(frames)).cpu().numpy()
    x = upscale(np.asarray(frames, dtype=np.uint8), scale)
    if gap:
        x = np.pad(x, [(0, 0)] * (x.ndim - 3) + [(0, gap), (0, gap), (0, 0)])
    x = rearrange(x, "... r c h w ch -> ... (r h) (c w) ch")
    return x[..., : x.shape[-3] - gap, : x.shape[-2] - gap, :]


def frame_rows(rows: list[torch.Tensor]) -> np.ndarray:
    """R aligned clips (B, T, H, W, 3) each (uint8 or float [0, 1]) -> uint8 (B*R*H, T*W, 3):
    each clip's R versions one above the other, frames left to right (training samples)."""
    rows = [r if r.dtype == torch.uint8 else to_uint8(r) for r in rows]
    return grid(rearrange(torch.stack(rows, 1), "b r t h w c -> (b r) t h w c"))
