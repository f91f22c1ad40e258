"""The on-disk dataset: a manifest plus shards of memory-mappable .npy arrays (docs/DATA.md).

    DIR/manifest.json                 what is in the folder (schema: `Manifest`)
    DIR/shards/00000/frames.npy       (N, H, W, 3) uint8, RGB
    DIR/shards/00000/actions.npy      (N,) int16: actions[t] is taken at frame t and leads to t+1; -1 unknown
    DIR/shards/00000/rewards.npy      (N,) float32: reward received for actions[t]; 0 where unknown
    DIR/shards/00000/firsts.npy       (N,) bool: frame t starts a game episode (the dataset episode's
                                      first frame, and every restart of the game inside it)

A shard holds whole episodes, back to back. `DatasetWriter` appends shards crash-safely: a shard
is written under a temporary name, fsynced and renamed, and only then listed in the manifest,
which is itself replaced atomically. Whatever is not listed in the manifest does not exist for
readers, so an interrupted run never leaves data that reads back as valid.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from genie.utils.errors import UserError

FORMAT_NAME = "genie-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
ARRAYS = ("frames", "actions", "rewards", "firsts")
_TMP_PREFIX = ".tmp-"
_LOCK = ".lock"


@dataclass
class Episode:
    """One manifest entry: a contiguous run of frames in one shard."""

    id: int  # unique in the dataset, in recording order
    name: str  # unique key: "level-42" (CoinRun), "seed-3" (Atari), a file path (imports)
    split: str  # "train", "val", "test" or a user-chosen name
    shard: str  # folder name under DIR/shards
    start: int  # first frame's row in the shard's arrays
    length: int  # number of frames
    seed: int | None = None  # level seed (CoinRun) or environment seed (Atari); None for imports
    fps: float | None = None  # frame rate of this episode when it differs per episode (imports)


@dataclass
class Manifest:
    """DIR/manifest.json. `source` identifies how the data was made: a writer refuses to add to a
    folder whose source or frame size differ."""

    frame_size: tuple[int, int]  # (H, W)
    source: dict[str, Any]  # {"kind": "coinrun"|"atari"|"import", ...settings}
    fps: float | None = None  # frames per second of the data; None when it varies (imports)
    action_space: dict[str, Any] | None = None  # {"n": int, "labels": [str, ...]}; None: no actions
    episodes: list[Episode] = field(default_factory=list)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        # optional episode fields are left out when unset
        d["episodes"] = [{k: v for k, v in e.items() if v is not None} for e in d["episodes"]]
        return {
            k: d[k]
            for k in (
                "format",
                "version",
                "frame_size",
                "fps",
                "source",
                "action_space",
                "episodes",
            )
        }

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def summary(self) -> dict[str, Any]:
        """What the data is, without where it is (`genie data info`; recorded in world.json)."""
        return {
            "episodes": len(self.episodes),
            "frames": self.num_frames,
            "frame_size": list(self.frame_size),
            "fps": self.fps,
            "source": self.source,
            "action_space": self.action_space,
            "splits": self.splits(),
        }

    def splits(self) -> dict[str, dict[str, int]]:
        """{split: {"episodes": n, "frames": n}} in first-seen order."""
        out: dict[str, dict[str, int]] = {}
        for e in self.episodes:
            s = out.setdefault(e.split, {"episodes": 0, "frames": 0})
            s["episodes"] += 1
            s["frames"] += e.length
        return out


@dataclass
class EpisodeData:
    """Arrays of one episode on their way to a shard (L frames)."""

    name: str
    split: str
    frames: np.ndarray  # (L, H, W, 3) uint8
    actions: np.ndarray | None = None  # (L,) ints, -1 unknown; None: all unknown
    rewards: np.ndarray | None = None  # (L,) float; None: zeros
    firsts: np.ndarray | None = None  # (L,) bool; None: only frame 0
    seed: int | None = None
    fps: float | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self.frames)
        firsts = np.zeros(n, bool) if self.firsts is None else np.asarray(self.firsts, bool).copy()
        firsts[:1] = True
        out = {
            "frames": np.asarray(self.frames, np.uint8),
            "actions": np.full(n, -1, np.int16)
            if self.actions is None
            else np.asarray(self.actions, np.int16),
            "rewards": np.zeros(n, np.float32)
            if self.rewards is None
            else np.asarray(self.rewards, np.float32),
            "firsts": firsts,
        }
        for k, a in out.items():
            if len(a) != n:
                raise ValueError(f"episode {self.name}: {k} has {len(a)} entries for {n} frames")
        return out


# ---------------------------------------------------------------------------- reading


def open_dataset(root: str | Path) -> Manifest:
    """Read and validate DIR/manifest.json. Raises UserError with one line saying what is wrong."""
    root = Path(root)
    hint = "record one with `genie record coinrun --out DIR` or `genie import-videos`"
    if not root.exists():
        raise UserError(f"no dataset at {root}: the folder does not exist ({hint})")
    if not root.is_dir():
        raise UserError(f"{root} is a file, not a dataset folder ({hint})")
    path = root / MANIFEST
    if not path.exists():
        raise UserError(f"{root} holds no dataset: {MANIFEST} is missing ({hint})")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"{path} is unreadable or not valid JSON ({e}); re-record the dataset"
        ) from None
    m = _parse_manifest(d, path)
    for shard in sorted({e.shard for e in m.episodes}):
        if not (root / SHARDS / shard).is_dir():
            raise UserError(
                f"{root} is incomplete: shard {SHARDS}/{shard} listed in {MANIFEST} is missing"
            )
    return m


def _parse_manifest(d: Any, path: Path) -> Manifest:
    if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
        raise UserError(
            f"{path} is not a genie dataset manifest (format should be '{FORMAT_NAME}')"
        )
    if not isinstance(d.get("version"), int) or d["version"] > FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {d.get('version')}; this genie reads version {FORMAT_VERSION}: upgrade genie"
        )
    try:
        h, w = (int(x) for x in d["frame_size"])
        episodes = [Episode(**e) for e in d["episodes"]]
        return Manifest(
            frame_size=(h, w),
            source=dict(d["source"]),
            fps=None if d.get("fps") is None else float(d["fps"]),
            action_space=d.get("action_space"),
            episodes=episodes,
            version=d["version"],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"{path} is malformed ({type(e).__name__}: {e}); re-record the dataset"
        ) from None


def shard_path(root: str | Path, shard: str, array: str) -> Path:
    return Path(root) / SHARDS / shard / f"{array}.npy"


# ---------------------------------------------------------------------------- writing


class DatasetWriter:
    """Appends whole episodes to DIR, one shard per `write_shard` call, crash-safe and resumable.

    Opening checks that DIR is empty, new, or holds a dataset with the same `source` and frame
    size (otherwise UserError, nothing touched); then it takes DIR/.lock and removes leftovers of
    an interrupted run (temporary folders and shards the manifest does not list).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        frame_size: tuple[int, int],
        source: dict[str, Any],
        fps: float | None,
        action_space: dict[str, Any] | None,
    ) -> None:
        self.root = Path(root)
        self.manifest = self._open_or_new(frame_size, source, fps, action_space)
        self._by_name = {e.name: e for e in self.manifest.episodes}
        self._lock: FileLock | None = None
        self._take_lock()
        self._clean_leftovers()

    # -- opening
    def _open_or_new(self, frame_size, source, fps, action_space) -> Manifest:
        root = self.root
        if root.exists() and not root.is_dir():
            raise UserError(f"--out {root} is a file; give a folder")
        if (root / MANIFEST).exists():
            m = open_dataset(root)
            if m.source.get("kind") != source.get("kind"):
                raise UserError(
                    f"{root} already holds a different dataset ({m.source.get('kind')}, not {source.get('kind')}): choose another --out"
                )
            for key in sorted(set(m.source) | set(source)):
                if m.source.get(key) != source.get(key):
                    raise UserError(
                        f"{root} already holds a different dataset ({key} {m.source.get(key)!r} there, "
                        f"{source.get(key)!r} now): choose another --out or rerun with the same settings"
                    )
            if tuple(m.frame_size) != tuple(frame_size):
                raise UserError(
                    f"{root} already holds a dataset of {m.frame_size[0]}x{m.frame_size[1]} frames, not "
                    f"{frame_size[0]}x{frame_size[1]}: choose another --out"
                )
            return m
        if root.exists():
            others = [
                p.name for p in root.iterdir() if p.name not in (SHARDS, _LOCK, MANIFEST + ".tmp")
            ]
            if others:
                raise UserError(
                    f"--out {root} is not empty and holds no genie dataset ({others[0]} ...): choose an empty or new folder"
                )
        return Manifest(
            frame_size=tuple(frame_size), source=dict(source), fps=fps, action_space=action_space
        )

    def _take_lock(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / _LOCK)  # an OS lock: released if the process dies
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(
                f"another genie process is writing {self.root}; wait for it or stop it"
            ) from None
        self._lock = lock

    def _clean_leftovers(self) -> None:
        shards = self.root / SHARDS
        listed = {e.shard for e in self.manifest.episodes}
        if shards.is_dir():
            for p in shards.iterdir():
                if p.name.startswith(_TMP_PREFIX) or (p.name.isdigit() and p.name not in listed):
                    shutil.rmtree(p, ignore_errors=True)
        tmp = self.root / (MANIFEST + ".tmp")
        if tmp.exists():
            tmp.unlink()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- queries
    def episode(self, name: str) -> Episode | None:
        """The recorded episode called `name`, or None."""
        return self._by_name.get(name)

    def set_action_space(self, action_space: dict[str, Any] | None) -> None:
        """Replace the action space (saved with the next shard)."""
        self.manifest.action_space = action_space

    # -- writing
    def write_shard(self, episodes: list[EpisodeData]) -> list[Episode]:
        """Write episodes as one new shard, then list them in the manifest. Disk full -> UserError,
        with everything written before intact."""
        if not episodes:
            return []
        for ep in episodes:
            if ep.name in self._by_name:
                raise ValueError(f"episode {ep.name} is already in {self.root}")
            if tuple(ep.frames.shape[1:]) != (*self.manifest.frame_size, 3):
                raise ValueError(
                    f"episode {ep.name}: frames {ep.frames.shape}, dataset {self.manifest.frame_size}"
                )
        parts = [ep.arrays() for ep in episodes]
        shards = self.root / SHARDS
        used = (
            [int(p.name) for p in shards.iterdir() if p.name.isdigit()] if shards.is_dir() else []
        )
        used += [int(e.shard) for e in self.manifest.episodes]
        name = f"{max(used, default=-1) + 1:05d}"
        tmp = shards / f"{_TMP_PREFIX}{name}"
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            for key in ARRAYS:
                _save_synced(tmp / f"{key}.npy", [p[key] for p in parts])
            os.rename(tmp, shards / name)
            _fsync_dir(shards)
            start, new = 0, []
            next_id = max((e.id for e in self.manifest.episodes), default=-1) + 1
            for ep, p in zip(episodes, parts, strict=True):
                n = len(p["frames"])
                new.append(Episode(next_id, ep.name, ep.split, name, start, n, ep.seed, ep.fps))
                next_id, start = next_id + 1, start + n
            self._write_manifest(self.manifest.episodes + new)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(
                    f"disk full while writing {self.root}: the {len(self.manifest.episodes)} episodes saved before are "
                    "intact; free some space and rerun the same command to continue"
                ) from None
            raise
        self.manifest.episodes.extend(new)
        self._by_name.update({e.name: e for e in new})
        return new

    def _write_manifest(self, episodes: list[Episode]) -> None:
        m = Manifest(
            frame_size=self.manifest.frame_size,
            source=self.manifest.source,
            fps=self.manifest.fps,
            action_space=self.manifest.action_space,
            episodes=episodes,
        )
        tmp = self.root / (MANIFEST + ".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(m.to_json(), f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / MANIFEST)
            _fsync_dir(self.root)
        finally:
            if tmp.exists():
                tmp.unlink()


def _save_synced(path: Path, parts: list[np.ndarray]) -> None:
    """np.save of the parts concatenated along axis 0, without building the concatenation."""
    shape = (sum(len(a) for a in parts), *parts[0].shape[1:])
    header = {
        "descr": np.lib.format.dtype_to_descr(parts[0].dtype),
        "fortran_order": False,
        "shape": shape,
    }
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for a in parts:
            f.write(np.ascontiguousarray(a).data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
