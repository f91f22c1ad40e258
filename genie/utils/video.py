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

from genie.utils.errors import UserError
from genie.utils.images import grid, upscale  # noqa: F401 (upscale: part of this module's API)

FORMATS = (".mp4", ".gif", ".png")
MAX_SCALE = 16  # upscale factor: 64x64 frames -> 1024x1024
MAX_BYTES = 2 << 30  # upscaled frames held in memory while writing (2 GiB)


def check_size(frames: int, height: int, width: int, scale: int) -> None:
    """Refuse, before anything is computed or written, a video too big to hold: K frames of
    (H, W) upscaled by `scale` (`genie generate --scale 1000` tried to allocate 23 GiB)."""
    if not 1 <= int(scale) <= MAX_SCALE:
        raise UserError(f"scale must be 1..{MAX_SCALE}, got {scale}")
    need = frames * height * width * 3 * int(scale) ** 2
    if need > MAX_BYTES:
        raise UserError(
            f"{frames} frames of {height * scale}x{width * scale} pixels need {need / 2**30:.1f} GiB "
            f"(at most {MAX_BYTES // 2**30} GiB): use a smaller scale or fewer frames"
        )


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
    if fps <= 0:
        raise UserError(f"fps must be > 0, got {fps}")
    check_size(*frames.shape[:3], scale)
    frames = upscale(frames.astype(np.uint8, copy=False), int(scale))
    path.parent.mkdir(parents=True, exist_ok=True)
    # written under a temporary name, then renamed: an interrupted write leaves no half video
    part = path.with_name(f".{path.stem}.partial{ext}")
    try:
        if ext == ".mp4":
            _write_mp4(part, frames, fps)
        elif ext == ".gif":
            _write_gif(part, frames, fps)
        else:
            from PIL import Image

            Image.fromarray(grid(frames[None])).save(part)  # one row of K frames
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
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
