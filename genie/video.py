"""Write played or generated frames as a video a person can watch.

    write_video("clip.mp4", frames)              # frames uint8 (K, H, W, 3); H.264 via PyAV
    write_video("clip.gif", frames, fps=10)      # looping GIF (Pillow)
    write_video("strip.png", frames, scale=2)    # all frames side by side in one PNG

Frames are upscaled with nearest neighbour (`scale`), so 64x64 pixel art stays sharp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from einops import rearrange

from genie.errors import UserError
from genie.images import grid, upscale  # noqa: F401 (upscale: part of this module's API)

FORMATS = (".mp4", ".gif", ".png")


def tile(frames: np.ndarray, gap: int = 0) -> np.ndarray:
    """(S, K, H, W, 3) -> (K, H, S*W + (S-1)*gap, 3): S videos side by side, `gap` black pixels apart."""
    return grid(rearrange(np.asarray(frames), "s k h w c -> k 1 s h w c"), gap=gap)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 15, scale: int = 4) -> Path:
    """Write uint8 frames (K, H, W, 3) to .mp4 (H.264, yuv420p), .gif or .png (a horizontal
    strip). Returns the path. Raises UserError for an unknown extension or no frames."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise UserError(
            f"cannot write '{path.name}': use a file name ending in {', '.join(FORMATS)}"
        )
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise UserError(f"no frames to write (got an array of shape {tuple(frames.shape)})")
    if int(scale) < 1 or fps <= 0:
        raise UserError("scale must be >= 1 and fps > 0")
    frames = upscale(frames.astype(np.uint8, copy=False), int(scale))
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".mp4":
        _write_mp4(path, frames, fps)
    elif ext == ".gif":
        _write_gif(path, frames, fps)
    else:
        from PIL import Image

        Image.fromarray(grid(frames[None])).save(path)  # one row of K frames
    return path


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    import imageio.v3 as iio

    # yuv420p (what every player decodes) needs even sides: pad with one edge pixel if odd
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=fps, out_pixel_format="yuv420p")


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    duration = max(20, round(1000 / fps))  # ms per frame; browsers clamp below 20 ms
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False
    )


def read_video(path: str | Path) -> np.ndarray:
    """Frames of a video written by `write_video` (for tests and previews): uint8 (K, H, W, 3)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        import imageio.v3 as iio

        return np.asarray(iio.imread(path, plugin="pyav"))
    from PIL import Image, ImageSequence

    with Image.open(path) as img:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(img)])
