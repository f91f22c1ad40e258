"""The world engine: what the CLI, the playground and the HTTP API call to play a world.

    engine = WorldEngine.load("worlds/coinrun")
    frame = engine.reset("start.png")          # any image: converted to the world's frame size
    frame = engine.step(engine.action_id("right"))
    frames = engine.rollout([0, 0, 3, 3])
    frame = engine.undo()

Each generated frame costs `steps` look-ahead passes of the dynamics over one frame's tokens,
one pass to commit it to the context cache, and one cached decoder step: the context is never
recomputed, and the window slides past the trained length so play never has to stop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from genie.blocks import KVCache
from genie.dynamics import DynamicsState
from genie.errors import UserError
from genie.tokenizer import carry_unchanged
from genie.world import World

MAX_PROMPT_PIXELS = 40_000_000  # refuse to decode bigger images (decompression bombs)


@dataclass
class Action:
    id: int
    label: str
    keys: list[str]


def load_image(source, size: int) -> np.ndarray:
    """Path, bytes, PIL image or array -> uint8 (size, size, 3): first frame of animations,
    RGB, center-cropped to a square, resized. Raises UserError on unreadable input."""
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
        try:
            if isinstance(source, (bytes, bytearray)):
                img = Image.open(io.BytesIO(source))
            else:
                path = Path(source)
                if not path.is_file():
                    raise UserError(f"image {path} not found")
                img = Image.open(path)
        except UnidentifiedImageError:
            raise UserError(
                "the file is not an image PIL can read (use PNG, JPEG, GIF, WebP, BMP)"
            ) from None
        except (OSError, Image.DecompressionBombError) as e:
            raise UserError(f"the image could not be read ({e})") from None
    w, h = img.size
    if w * h > MAX_PROMPT_PIXELS:
        raise UserError(
            f"the image is too large ({w}x{h}); use one under {MAX_PROMPT_PIXELS // 1_000_000} megapixels"
        )
    if w < 1 or h < 1:
        raise UserError("the image is empty")
    try:
        if getattr(img, "is_animated", False):
            img = next(iter(ImageSequence.Iterator(img)))
        img = img.convert("RGB")
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        img = img.resize(
            (size, size), Image.Resampling.BOX if side >= size else Image.Resampling.BICUBIC
        )
        return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data surfaces here
        raise UserError(f"the image is truncated or corrupt ({e})") from None


@dataclass
class _Snapshot:
    dyn: DynamicsState
    dec: KVCache
    rng: torch.Tensor
    shown: tuple[torch.Tensor, torch.Tensor] | None  # last frame shown (float) and its ids


_SHOWN = object()  # `_carry`'s default: the frame on screen


class WorldEngine:
    """Stateful player of one world for one user (batch 1)."""

    def __init__(
        self,
        world: World,
        seed: int = 0,
        steps: int | None = None,
        temperature: float | None = None,
        max_undo: int = 64,
        max_frames_kept: int = 3000,
        carry_unchanged: bool | None = None,
    ):
        self.world = world
        self.tokenizer, self.dynamics = world.tokenizer, world.dynamics
        sampling = world.meta.get("sampling", {})
        self.steps = steps or sampling.get("maskgit_steps") or self.dynamics.config.maskgit_steps
        self.temperature = (
            temperature if temperature is not None else sampling.get("temperature", 1.0)
        )
        # skip-block decoding (tokenizer.carry_unchanged): patches whose tokens did not change
        # keep their pixels; world.json "sampling": {"carry_unchanged": false} turns it off
        self.carry_unchanged = (
            carry_unchanged
            if carry_unchanged is not None
            else bool(sampling.get("carry_unchanged", True))
        )
        self.carry_margin = int(sampling.get("carry_margin", 0))  # patches around a change redrawn
        self._shown: tuple[torch.Tensor, torch.Tensor] | None = None  # (1, H, W, 3), (1, h, w)
        self.seed = seed
        self.max_undo = max_undo
        self.max_frames_kept = max_frames_kept  # frames kept for download (oldest dropped)
        self.generator = torch.Generator().manual_seed(seed)
        self.frames: list[np.ndarray] = []  # played frames, uint8 (H, W, 3)
        self.actions_taken: list[int] = []
        self._dyn: DynamicsState | None = None
        self._dec: KVCache | None = None
        self._undo: list[_Snapshot] = []

    @classmethod
    def load(cls, world_dir: str | Path, **kw) -> WorldEngine:
        return cls(World.from_folder(world_dir), **kw)

    # ------------------------------------------------------------------ actions

    @property
    def actions(self) -> list[Action]:
        return [
            Action(i, lab, keys)
            for i, (lab, keys) in enumerate(
                zip(self.world.action_labels, self.world.action_keys, strict=True)
            )
        ]

    @property
    def num_actions(self) -> int:
        return self.world.num_actions

    def action_id(self, name_or_id) -> int:
        """An action by id or by label (case-insensitive). Raises UserError if unknown."""
        if isinstance(name_or_id, (int, np.integer)) or (
            isinstance(name_or_id, str) and name_or_id.strip().lstrip("-").isdigit()
        ):
            a = int(name_or_id)
            if not 0 <= a < self.num_actions:
                raise UserError(
                    f"unknown action {a}: this world has actions 0..{self.num_actions - 1}"
                )
            return a
        labels = [lab.lower() for lab in self.world.action_labels]
        if str(name_or_id).lower() in labels:
            return labels.index(str(name_or_id).lower())
        raise UserError(
            f"unknown action '{name_or_id}': use 0..{self.num_actions - 1} or one of {', '.join(self.world.action_labels)}"
        )

    @property
    def frame_size(self) -> int:
        return self.world.frame_size[0]

    @property
    def started(self) -> bool:
        return self._dyn is not None

    # ------------------------------------------------------------------ play

    @torch.no_grad()
    def reset(self, prompt, seed: int | None = None) -> np.ndarray:
        """Start from an image (path, bytes, PIL, array (H,W,3)) or a few frames (T,H,W,3 array
        or list of images). Returns the first frame shown (the prompt at the world's size)."""
        if isinstance(prompt, (list, tuple)):
            frames = np.stack([load_image(p, self.frame_size) for p in prompt])
        elif isinstance(prompt, np.ndarray) and prompt.ndim == 4:
            frames = np.stack([load_image(p, self.frame_size) for p in prompt])
        else:
            frames = load_image(prompt, self.frame_size)[None]
        frames = frames[-self.world.context_frames :]
        if seed is not None:
            self.seed = seed
        self.generator = torch.Generator().manual_seed(self.seed)
        ids = self.tokenizer.encode(torch.from_numpy(frames)[None])  # (1, t, h, w)
        self._dyn = self.dynamics.new_state(self.world.context_frames)
        self._dec = self.tokenizer.new_decode_cache()
        for i in range(ids.shape[1]):
            self.dynamics.append_frame(self._dyn, ids[:, i], None)
            self.tokenizer.decode_step(ids[:, i], self._dec)
        self._shown = (torch.from_numpy(frames[-1:]).float() / 255, ids[:, -1])
        self.frames = [f for f in frames]
        self.actions_taken = []
        self._undo = []
        return self.frames[-1]

    def _require_started(self) -> None:
        if self._dyn is None:
            raise UserError("reset the world with a start image first")

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            self._dyn_clone(self._dyn), self._dec.clone(), self.generator.get_state(), self._shown
        )

    def _carry(self, frames: torch.Tensor, ids: torch.Tensor, shown=_SHOWN) -> torch.Tensor:
        """Decoded frames (B, H, W, 3) of ids (B, h, w) following `shown` ((1 or B, H, W, 3),
        (1 or B, h, w); default: the frame on screen) -> what to show."""
        shown = self._shown if shown is _SHOWN else shown
        if not self.carry_unchanged or shown is None:
            return frames
        prev, prev_ids = shown
        n = frames.shape[0]
        return carry_unchanged(
            frames,
            prev.expand(n, -1, -1, -1),
            ids,
            prev_ids.expand(n, -1, -1),
            self.patch_size,
            self.carry_margin,
        )

    @property
    def patch_size(self) -> int:
        return self.tokenizer.config.patch_size

    @staticmethod
    def _dyn_clone(s: DynamicsState) -> DynamicsState:
        return DynamicsState(cache=s.cache.clone(), last_tokens=s.last_tokens)

    @torch.no_grad()
    def step(self, action) -> np.ndarray:
        """Advance one frame under `action` (id or label). Returns uint8 (H, W, 3)."""
        self._require_started()
        a = self.action_id(action)
        self._undo.append(self._snapshot())
        del self._undo[: -self.max_undo]
        ids = self.dynamics.sample_next(
            self._dyn, torch.tensor([a]), self.steps, self.temperature, self.generator
        )
        frame = self._carry(self.tokenizer.decode_step(ids, self._dec), ids)
        self._shown = (frame, ids)
        out = (frame[0].clamp(0, 1) * 255).round().byte().numpy()
        self.frames.append(out)
        self.actions_taken.append(a)
        del self.frames[: -self.max_frames_kept]
        del self.actions_taken[: -self.max_frames_kept]
        return out

    def rollout(self, actions, progress: bool = False) -> np.ndarray:
        """Play a sequence of actions; returns uint8 (K, H, W, 3)."""
        seq = [self.action_id(a) for a in actions]  # validate all before playing any
        it = seq
        if progress:
            from tqdm import tqdm

            it = tqdm(seq, desc="generating", unit="frame")
        return (
            np.stack([self.step(a) for a in it])
            if seq
            else np.zeros((0, self.frame_size, self.frame_size, 3), np.uint8)
        )

    def undo(self) -> np.ndarray:
        """Rewind one step (no-op at the start frame). Returns the frame now shown."""
        self._require_started()
        if self._undo:
            snap = self._undo.pop()
            self._dyn, self._dec, self._shown = snap.dyn, snap.dec, snap.shown
            self.generator.set_state(snap.rng)
            # each step added exactly one frame; counting from the end stays right after the
            # oldest frames were dropped (max_frames_kept), when len(frames) no longer grows
            if len(self.frames) > 1:
                self.frames.pop()
            if self.actions_taken:
                self.actions_taken.pop()
        return self.frames[-1]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @torch.no_grad()
    def what_if(self) -> np.ndarray:
        """The next frame under every action from the current state, without playing it:
        uint8 (A, H, W, 3). Runs all actions as one batch; the world state is unchanged."""
        self._require_started()
        n = self.num_actions
        dyn = DynamicsState(
            cache=_expand_cache(self._dyn.cache, n), last_tokens=self._dyn.last_tokens.expand(n, -1)
        )
        dec = _expand_cache(self._dec, n)
        g = torch.Generator().manual_seed(self.seed + len(self.frames))
        ids = self.dynamics.sample_next(
            dyn, torch.arange(n), self.steps, self.temperature, g, commit=False
        )
        frames = self._carry(self.tokenizer.decode_step(ids, dec), ids)
        return (frames.clamp(0, 1) * 255).round().byte().numpy()

    @torch.no_grad()
    def sample_futures(self, actions, samples: int, progress: bool = False) -> np.ndarray:
        """`samples` different futures under the same actions, from the current state, as one
        batch: uint8 (K, S, H, W, 3). The world state is unchanged."""
        self._require_started()
        seq = [self.action_id(a) for a in actions]
        # a copy of the engine's generator: seeded like play, but play's own RNG does not advance
        g = torch.Generator()
        g.set_state(self.generator.get_state())
        dyn = DynamicsState(
            cache=_expand_cache(self._dyn.cache, samples),
            last_tokens=self._dyn.last_tokens.expand(samples, -1),
        )
        dec = _expand_cache(self._dec, samples)
        out = []
        it = seq
        if progress:
            from tqdm import tqdm

            it = tqdm(seq, desc=f"generating x{samples}", unit="frame")
        shown = self._shown
        for a in it:
            ids = self.dynamics.sample_next(
                dyn, torch.full((samples,), a), self.steps, self.temperature, g
            )
            frames = self.tokenizer.decode_step(ids, dec)
            frames = self._carry(frames, ids, shown)
            shown = (frames, ids)
            out.append((frames.clamp(0, 1) * 255).round().byte().numpy())
        return np.stack(out)


def _expand_cache(cache: KVCache, n: int) -> KVCache:
    """Repeat a batch-1 cache n times. Cached tensors are (1*N, H, K, Dh) in (b n) order."""
    c = cache.clone()
    c.keys = [None if k is None else k.repeat(n, 1, 1, 1) for k in c.keys]
    c.values = [None if v is None else v.repeat(n, 1, 1, 1) for v in c.values]
    return c
