"""`genie import-videos PATH... --out DIR`: turn your own videos into a dataset (docs/DATA.md).

Inputs: video files (.mp4 .webm .mkv .mov .avi .gif), folders of image frames (sorted by file
name), and folders holding either, searched recursively. Each video or frame folder becomes one
episode: center-cropped to a square, resized to --size, optionally subsampled to --fps. Its
split comes from a hash of its name (so a re-import assigns the same split), never per clip.

Per-frame action labels (optional, --actions FILE): JSON {"name": [a0, a1, ...]} where name is
the video's file name, its stem or the path shown in the progress output; or, for a single
video, a .txt/.csv file of integers (one per line). There must be one label per source frame
(before --fps subsampling); a kept frame keeps its own label.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genie.data.format import DatasetWriter, EpisodeData
from genie.utils.errors import UserError

VIDEO_EXTS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
SHARD_FRAMES = 16_384  # frames buffered before a shard is written


@dataclass
class VideoSource:
    name: str  # episode name: path relative to the parent of the PATH argument it came from
    path: Path  # the video file, or the frame folder
    frames: list[Path] | None = None  # image files of a frame folder, sorted; None for a video


@dataclass
class Decoded:
    frames: np.ndarray  # (L, size, size, 3) uint8
    kept: np.ndarray  # (L,) index of each kept frame among the source's frames
    source_frames: int  # frames in the source before subsampling
    fps: float | None  # frame rate after subsampling; None when unknown (frame folders)


@dataclass
class ImportResult:
    imported: int = 0
    frames: int = 0
    present: int = 0  # already in the dataset (skipped quietly)
    skipped: list[str] = field(default_factory=list)  # "name: reason" of unreadable inputs


# ---------------------------------------------------------------------------- finding inputs


def discover(paths: list[str | Path]) -> list[VideoSource]:
    """Videos and frame folders under `paths`, in a stable order."""
    found: list[VideoSource] = []
    for arg in map(Path, paths):
        if not arg.exists():
            raise UserError(f"{arg} does not exist")
        base = arg.resolve().parent
        if arg.is_file():
            found.append(
                VideoSource(arg.name, arg)
            )  # any extension: a bad file is reported, not ignored
            continue
        for folder in sorted([arg, *(p for p in arg.rglob("*") if p.is_dir())]):
            files = sorted(p for p in folder.iterdir() if p.is_file())
            images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
            if images:
                found.append(
                    VideoSource(folder.resolve().relative_to(base).as_posix(), folder, images)
                )
            for p in files:
                if p.suffix.lower() in VIDEO_EXTS:
                    found.append(VideoSource(p.resolve().relative_to(base).as_posix(), p))
    if not found:
        kinds = " ".join(sorted(VIDEO_EXTS | IMAGE_EXTS))
        raise UserError(
            f"no videos or frame folders found in {' '.join(map(str, paths))} (looked for {kinds})"
        )
    seen: dict[str, int] = {}
    for s in found:  # the same name from two arguments: keep both, apart
        seen[s.name] = seen.get(s.name, 0) + 1
        if seen[s.name] > 1:
            s.name = f"{s.name}#{seen[s.name]}"
    return found


def load_actions(path: Path, sources: list[VideoSource]) -> dict[str, np.ndarray]:
    """{source name: (L,) int labels} from a JSON or txt/csv file (module docstring)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the actions file {path}: {e}") from None
    if Path(path).suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e})") from None
        if not isinstance(table, dict):
            raise UserError(f'{path} must hold an object {{"video name": [action, ...]}}')
    else:
        if len(sources) != 1:
            raise UserError(
                f'{path} labels one video but {len(sources)} were found: use a JSON file {{"name": [actions]}}'
            )
        table = {sources[0].name: [t for t in re.split(r"[\s,;]+", text) if t]}
    out = {}
    for key, labels in table.items():
        match = [s for s in sources if key in (s.name, s.path.name, s.path.stem)]
        if len(match) != 1:
            what = "matches no input video" if not match else f"matches {len(match)} inputs"
            raise UserError(
                f"{path}: '{key}' {what} (use the file name, its stem or the path shown)"
            )
        try:
            arr = np.asarray([int(x) for x in labels], np.int64)
        except (TypeError, ValueError):
            raise UserError(f"{path}: the actions of '{key}' must be integers") from None
        if (arr < -1).any() or (arr > 32767).any():
            raise UserError(f"{path}: actions of '{key}' must be in 0..32767 (-1 for unknown)")
        out[match[0].name] = arr
    return out


# ---------------------------------------------------------------------------- decoding


def decode_video(path: Path, size: int, fps: float | None) -> Decoded:
    """Decode, square and (with `fps`) subsample one video. Raises av.FFmpegError, OSError or
    ValueError for files that cannot be decoded."""
    import av

    from genie.utils.images import fit_square

    frames, kept, n_source = [], [], 0
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        src_fps = float(rate) if rate else None
        next_t = 0.0
        for i, frame in enumerate(container.decode(stream)):
            n_source = i + 1
            if fps is not None:
                t = frame.time if frame.time is not None else i / (src_fps or fps)
                if t < next_t - 1e-6:
                    continue
                while next_t <= t + 1e-6:
                    next_t += 1.0 / fps
            frames.append(fit_square(frame.to_image(), size))
            kept.append(i)
    out_fps = src_fps if fps is None else (min(fps, src_fps) if src_fps else fps)
    stacked = np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8)
    return Decoded(stacked, np.asarray(kept, np.int64), n_source, out_fps)


def decode_frames(files: list[Path], size: int) -> np.ndarray:
    """A folder's images, in name order: (L, size, size, 3) uint8."""
    from PIL import Image

    from genie.utils.images import fit_square

    out = []
    for p in files:
        with Image.open(p) as img:
            out.append(fit_square(img, size))
    return np.stack(out)


# ---------------------------------------------------------------------------- import


def split_of(name: str, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split of an episode from a hash of its name."""
    u = int(hashlib.sha1(name.encode()).hexdigest()[:12], 16) / 16**12
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def import_videos(
    paths: list[str | Path],
    out: str | Path,
    size: int = 64,
    fps: float | None = None,
    actions: str | Path | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    progress: bool = True,
) -> ImportResult:
    """Import videos and frame folders into `out`; unreadable inputs are skipped and reported."""
    from tqdm import tqdm

    sources = discover(paths)
    labels = load_actions(Path(actions), sources) if actions is not None else {}
    source = {"kind": "import", "size": size, "fps": fps}
    res = ImportResult()
    with DatasetWriter(
        out, frame_size=(size, size), source=source, fps=fps, action_space=None
    ) as w:
        if labels:
            old = w.manifest.action_space["n"] if w.manifest.action_space else 0
            n = max(old, max(int(a.max(initial=-1)) + 1 for a in labels.values()))
            w.set_action_space({"n": n, "labels": [str(i) for i in range(n)]})
        pending: list[EpisodeData] = []
        bar = tqdm(sources, unit="video", disable=not progress, desc="import")
        for src in bar:
            if w.episode(src.name) is not None:
                res.present += 1
                continue
            try:
                if src.frames is None:
                    dec = decode_video(src.path, size, fps)
                else:
                    frames = decode_frames(src.frames, size)
                    dec = Decoded(frames, np.arange(len(frames)), len(frames), None)
            except (ImportError, MemoryError):
                raise
            except (
                Exception
            ) as e:  # av.FFmpegError, OSError, PIL's UnidentifiedImageError, ValueError...
                reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
                reason = reason.splitlines()[0][:120]
                res.skipped.append(f"{src.name} ({reason})")
                tqdm.write(f"skipped {src.name}: unreadable ({reason})")
                continue
            if len(dec.frames) == 0:
                res.skipped.append(f"{src.name} (no frames)")
                tqdm.write(f"skipped {src.name}: no frames")
                continue
            ep_actions = None
            if src.name in labels:
                if len(labels[src.name]) != dec.source_frames:
                    raise UserError(
                        f"{src.name}: the actions file gives {len(labels[src.name])} actions but the video has "
                        f"{dec.source_frames} frames (one action per source frame is needed)"
                    )
                ep_actions = labels[src.name][dec.kept]
            split = split_of(src.name, val_fraction, test_fraction)
            pending.append(EpisodeData(src.name, split, dec.frames, ep_actions, fps=dec.fps))
            res.imported += 1
            res.frames += len(dec.frames)
            if sum(len(e.frames) for e in pending) >= SHARD_FRAMES:
                w.write_shard(pending)
                pending = []
        w.write_shard(pending)
    return res


# ---------------------------------------------------------------------------- CLI


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-videos", help="import your own videos or frame folders as a dataset")
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="video files, frame folders, or folders of them"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="dataset folder (rerun to add more videos)"
    )
    p.add_argument("--size", type=int, default=64, help="square frame side in pixels (default 64)")
    p.add_argument(
        "--fps", type=float, help="subsample videos to this frame rate (default: keep all)"
    )
    p.add_argument(
        "--actions",
        type=Path,
        help="per-frame action labels: JSON {name: [ints]} or txt (one video)",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.05, help="share of videos for val (default 0.05)"
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.05, help="share of videos for test (default 0.05)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 8 <= args.size <= 512:
        raise UserError(f"--size must be in 8..512 (got {args.size})")
    if args.fps is not None and args.fps <= 0:
        raise UserError("--fps must be > 0")
    if not (
        0 <= args.val_fraction
        and 0 <= args.test_fraction
        and args.val_fraction + args.test_fraction <= 1
    ):
        raise UserError("--val-fraction and --test-fraction must be >= 0 and add up to at most 1")
    res = import_videos(
        args.paths,
        args.out,
        args.size,
        args.fps,
        args.actions,
        args.val_fraction,
        args.test_fraction,
        not args.quiet,
    )
    parts = [f"imported {res.imported} videos ({res.frames:,} frames) into {args.out}"]
    if res.present:
        parts.append(f"{res.present} already there")
    if res.skipped:
        n = len(res.skipped)
        parts.append(f"skipped {n} unreadable file{'s' * (n != 1)}: {', '.join(res.skipped)}")
    print("; ".join(parts))
    return 0
