"""The world engine: the one way a world is played, by the playground, the CLI, `genie eval`,
`genie generate` and the play test alike (IRIS's and DIAMOND's `WorldModelEnv`).

    engine = WorldEngine.load("worlds/coinrun")
    frame = engine.reset("start.png")          # one player: any image, at the world's size
    frame = engine.step(engine.action_id("right"))          # uint8 (H, W, 3)
    frames = engine.rollout([0, 0, 3, 3])                   # uint8 (K, H, W, 3)
    frame = engine.undo()

    engine.reset(frames, seed=[0, 1, 2])       # B players: uint8 (B, T, H, W, 3) context frames
    engine.step([0, 3, 3])                     # actions (B,) -> uint8 (B, H, W, 3)
    engine.rollout(actions)                    # actions (B, K) -> uint8 (B, K, H, W, 3)

Row i of a batch draws its randomness from its own generator (seed i), so B players stepped
together draw what each would draw alone, and see the same frames up to float rounding
(matrix kernels may round a batch of B differently from a batch of 1): bit for bit on a token
world here (tests/test_engine.py), within a grey level on a diffusion one. Each generated frame costs the
dynamics' sampling passes over one frame against its context cache, one pass to commit it, and
one cached decoder step: the context is never recomputed, and the window slides past the
trained length so play never has to stop. The dynamics backend is reached only through its
play contract (`genie.models.registry`): frames become code ids or continuous latents as its
`representation` says.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genie.models.blocks import KVCache
from genie.utils.errors import UserError
from genie.utils.images import load_image, to_float, to_uint8
from genie.utils.precision import autocast, default_precision, resolve_precision
from genie.world.folder import World

# representation -> (tokenizer method: frames -> x, tokenizer method: x, cache -> pixels)
CODECS = {"ids": ("encode", "decode_step"), "latents": ("encode_latents", "decode_latents_step")}
# commits of generated frames to the dynamics' context, run beside decoding (WorldEngine._advance)
_COMMITS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="genie-commit")


@dataclass
class Action:
    id: int
    label: str
    keys: list[str]


@dataclass
class Played:
    frames: np.ndarray  # uint8 (B, [K,] H, W, 3): what the players see
    decoded: np.ndarray  # uint8, same shape: the decoder's pixels before skip-block carry


@dataclass
class _Snapshot:
    dyn: object  # the dynamics' play state
    dec: KVCache
    rng: list[torch.Tensor]  # each row's generator state
    shown: tuple[torch.Tensor, ...] | None  # last frames shown (float), their ids, as decoded


CARRY_REDRAWN = 0.05  # a patch whose decoded pixels moved by more than this (mean |diff|, 0-1)
# since the decoder last drew it is shown anew, even where its own token did not change


def cores() -> int:
    """The CPU cores this process may run on (its affinity; all of them off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def carry_unchanged(
    new: torch.Tensor,
    prev: torch.Tensor,
    new_ids: torch.Tensor,
    prev_ids: torch.Tensor,
    patch_size: int,
    margin: int = 0,
    prev_decoded: torch.Tensor | None = None,
) -> torch.Tensor:
    """Skip-block decoding, as video codecs do: where a frame's tokens equal the previous frame's
    (and so do the tokens within `margin` patches), keep the previous frame's pixels instead of
    the decoder's re-rendering. A start image then stays exact wherever the world leaves it
    alone, instead of drifting to the tokenizer's reconstruction quality. margin 0 (decode only
    the changed patches) measured best on CoinRun: t=1 PSNR 27.33 vs 25.27 dB with margin 1
    (docs/RESULTS.md); world.json "sampling": {"carry_margin": 1} widens it.

    A convolutional decoder draws a patch from its neighbours' tokens too: a sprite that moved
    can land in a patch whose own token stayed the same (the token only says "something beside
    me changed"). Given the decoder's previous frame (`prev_decoded`), a patch it now draws
    differently (by more than `CARRY_REDRAWN`) is shown anew, so a moving sprite is never
    hidden under the previous frame's pixels.

    new, prev, prev_decoded: frames (B, H, W, C); new_ids, prev_ids: (B, h, w) -> (B, H, W, C)."""
    changed = (new_ids != prev_ids).float()[:, None]  # (B, 1, h, w)
    if margin:
        changed = F.max_pool2d(changed, 2 * margin + 1, stride=1, padding=margin)
    if prev_decoded is not None:
        moved = (new.float() - prev_decoded.float()).abs().mean(-1)[:, None]  # (B, 1, H, W)
        redrawn = F.avg_pool2d(moved, patch_size) > CARRY_REDRAWN  # (B, 1, h, w)
        changed = torch.maximum(changed, redrawn.float())
    keep = (changed[:, 0] == 0).repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
    return torch.where(keep[..., None], prev.to(new.dtype), new)  # (B, H, W, C)


class WorldEngine:
    """Stateful player of one world for B players (B = 1: the playground's single player)."""

    def __init__(
        self,
        world: World,
        seed: int = 0,
        steps: int | None = None,
        temperature: float | None = None,
        max_undo: int = 64,
        max_frames_kept: int = 3000,
        carry_unchanged: bool | None = None,
        carry_margin: int | None = None,
        precision: str | None = None,
    ):
        self.world = world
        # auto: bf16 autocast where this machine runs it faster (genie.utils.precision)
        self.precision, self.precision_note = resolve_precision(precision or default_precision())
        self.tokenizer, self.dynamics = world.play_parts(self.precision)
        # world.json "sampling" over the dynamics' defaults, then these overrides
        self.sampling = world.sampling.replace(
            steps=steps,
            temperature=temperature,
            carry_unchanged=carry_unchanged,
            carry_margin=carry_margin,
        )
        s = self.sampling
        if s.carry_margin < 0 or s.steps < 1 or (s.temperature is not None and s.temperature < 0):
            raise UserError(
                f"sampling needs steps >= 1, temperature >= 0 and carry_margin >= 0; got steps "
                f"{s.steps}, temperature {s.temperature}, carry_margin {s.carry_margin}"
            )
        self.representation = self.dynamics.representation
        self._encode_name, self._decode_name = CODECS[self.representation]
        self.seed = seed
        self.max_undo = max_undo
        self.max_frames_kept = max_frames_kept  # frames kept for download (oldest dropped)
        self._gens = [torch.Generator().manual_seed(seed)]  # one per row
        self._dyn_state = None  # the dynamics' play state (B rows); read it as self._dyn
        self._pending: Future | None = None  # a frame's commit still running (see _advance)
        self.overlap: bool | None = None  # commit beside decoding: None = where it is faster
        self._dec: KVCache | None = None  # the decoder's cache
        # last shown: frames (B, H, W, 3), their ids or latents, the decoder's own frames
        self._shown: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._history: list[np.ndarray] = []  # played frames, uint8 (B, H, W, 3) each
        self._actions: list[np.ndarray] = []  # actions taken, (B,) each
        self._undo: list[_Snapshot] = []

    @property
    def _dyn(self):
        """The dynamics' play state, once the last frame's commit (if still running) is in."""
        self._settle()
        return self._dyn_state

    @_dyn.setter
    def _dyn(self, state) -> None:
        self._settle()
        self._dyn_state = state

    def _settle(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises what the commit raised

    def _overlap_commit(self) -> bool:
        """Commit each frame in a second thread while this one decodes it: where play runs one
        torch thread and a second core is there (two threads would fight over the cores)."""
        if self.sampling.options.get("fused_commit"):
            return False  # the frame was committed inside the sampler
        if self.overlap is not None:
            return self.overlap
        return torch.get_num_threads() == 1 and cores() >= 2

    @classmethod
    def load(cls, world_dir: str | Path, **kw) -> WorldEngine:
        return cls(World.from_folder(world_dir), **kw)

    # ------------------------------------------------------------------ the world

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
    def patch_size(self) -> int:
        return self.tokenizer.config.patch_size

    @property
    def steps(self) -> int:
        return self.sampling.steps

    @property
    def temperature(self) -> float | None:
        return self.sampling.temperature

    @property
    def carry_unchanged(self) -> bool:
        return self.sampling.carry_unchanged and self.representation == "ids"

    # ------------------------------------------------------------------ what was played

    @property
    def batch_size(self) -> int:
        return len(self._gens)

    @property
    def frames(self) -> list[np.ndarray]:
        """Played frames, oldest first: uint8 (H, W, 3) each for one player, (B, H, W, 3) for B."""
        return [f[0] for f in self._history] if self.batch_size == 1 else list(self._history)

    @property
    def actions_taken(self) -> list:
        """Actions played: ints for one player, (B,) arrays for B."""
        if self.batch_size == 1:
            return [int(a[0]) for a in self._actions]
        return list(self._actions)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    # ------------------------------------------------------------------ play

    @torch.no_grad()
    def reset(self, prompt, seed=None, actions=None) -> np.ndarray:
        """Start from a prompt. One player: an image (path, bytes, PIL, array (H, W, 3)) or a
        few frames (array (T, H, W, 3) or a list of images) -> the frame shown, uint8 (H, W, 3).
        B players: uint8 frames (B, T, H, W, 3) -> (B, H, W, 3). seed: an int (row i gets
        seed + i) or one per row; None: the engine's. actions: (B, T-1) actions between the
        prompt frames (default: none known, as for an uploaded image)."""
        frames, single = self._prompt(prompt)  # uint8 (B, T, H, W, 3)
        b, t = frames.shape[:2]
        acts = None
        if actions is not None:
            acts = self._action_table(actions, b)  # (B, T-1)
            if acts.shape[1] != t - 1:
                raise UserError(f"give {t - 1} actions between {t} prompt frames")
        t = min(t, self.world.context_frames)  # the newest frames that fit the context
        frames = frames[:, -t:]
        acts = None if acts is None else acts[:, acts.shape[1] - (t - 1) :]
        if seed is None or np.ndim(seed) == 0:
            first = self.seed if seed is None else int(seed)
            seeds = [first + i for i in range(b)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != b:
                raise UserError(f"{len(seeds)} seeds for {b} players")
        with autocast(self.precision):
            x = getattr(self.tokenizer, self._encode_name)(torch.from_numpy(frames))  # (B, T, ...)
            dyn = self.dynamics.new_state(self.world.context_frames)
            dec = self.tokenizer.new_decode_cache()
            for i in range(t):
                a = None if i == 0 or acts is None else torch.from_numpy(acts[:, i - 1])
                self.dynamics.append_frame(dyn, x[:, i], a)
                decoded = getattr(self.tokenizer, self._decode_name)(x[:, i], dec).float()
        self.seed = seeds[0]  # a failed reset (above) changes nothing
        self._gens = [torch.Generator().manual_seed(s) for s in seeds]
        self._dyn, self._dec = dyn, dec
        self._shown = (to_float(torch.from_numpy(frames[:, -1])), x[:, -1], decoded)
        self._history = [frames[:, i] for i in range(t)]
        self._actions, self._undo = [], []
        return self._history[-1][0] if single else self._history[-1]

    def _prompt(self, prompt) -> tuple[np.ndarray, bool]:
        """-> uint8 frames (B, T, H, W, 3) at the world's size, and whether it is one player."""
        size = self.frame_size
        if isinstance(prompt, (np.ndarray, torch.Tensor)) and prompt.ndim == 5:
            flat = [load_image(f, size) for clip in prompt for f in clip]
            return np.stack(flat).reshape(*prompt.shape[:2], size, size, 3), False
        if isinstance(prompt, (list, tuple)) or (
            isinstance(prompt, (np.ndarray, torch.Tensor)) and prompt.ndim == 4
        ):
            return np.stack([load_image(p, size) for p in prompt])[None], True
        return load_image(prompt, size)[None, None], True

    def _require_started(self) -> None:
        if self._dyn is None:
            raise UserError("reset the world with a start image first")

    def _action_table(self, actions, rows: int) -> np.ndarray:
        """Actions (K,) for every row or (rows, K), ids or labels -> validated ids (rows, K)."""
        if isinstance(actions, torch.Tensor):
            actions = actions.numpy()
        arr = np.asarray(actions, dtype=object)
        if arr.ndim == 1:
            arr = np.broadcast_to(arr, (rows, arr.shape[0]))
        if arr.ndim != 2 or arr.shape[0] != rows:
            raise UserError(f"give actions (K,) or ({rows}, K), got shape {arr.shape}")
        ids = [[self.action_id(a) for a in row] for row in arr]
        return np.asarray(ids, dtype=np.int64).reshape(rows, -1)

    @torch.no_grad()
    def step(self, action) -> np.ndarray:
        """Advance one frame. One action (id or label) for every player -> uint8 (H, W, 3) for
        one player, (B, H, W, 3) for B; actions (B,) -> (B, H, W, 3)."""
        self._require_started()
        b = self.batch_size
        single = np.ndim(action) == 0
        if single:
            acts = np.full(b, self.action_id(action), dtype=np.int64)
        else:
            acts = self._action_table(np.asarray(action, dtype=object).reshape(-1, 1), b)[:, 0]
        frames = self._played_step(acts).frames
        return frames[0] if single and b == 1 else frames

    def rollout(self, actions, progress: bool = False) -> np.ndarray:
        """Play actions (K,) on every player, or (B, K): uint8 (K, H, W, 3) for one player given
        (K,) actions, else (B, K, H, W, 3)."""
        return self.play(actions, progress).frames

    def play(self, actions, progress: bool = False) -> Played:
        """`rollout`, also returning the decoder's pixels before skip-block carry."""
        self._require_started()
        b = self.batch_size
        table = self._action_table(actions, b)  # validate all before playing any
        frames, decoded = [], []
        steps = range(table.shape[1])
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="generating" + (f" x{b}" if b > 1 else ""), unit="frame")
        for k in steps:
            out = self._played_step(table[:, k])
            frames.append(out.frames)
            decoded.append(out.decoded)
        empty = np.zeros((b, 0, self.frame_size, self.frame_size, 3), np.uint8)
        out = Played(*(np.stack(xs, 1) if xs else empty for xs in (frames, decoded)))  # (B, K, ...)
        if b == 1 and np.ndim(actions) == 1:
            return Played(out.frames[0], out.decoded[0])
        return out

    def _played_step(self, actions: np.ndarray, advance=None) -> Played:
        """One step of play under validated actions (B,), kept in the history and undoable.
        advance: what plays it instead of `_advance` (genie.serve.batcher: this engine's row of a batch)."""
        if self.max_undo > 0:
            self._undo.append(self._snapshot())
            del self._undo[: max(0, len(self._undo) - self.max_undo)]
        out = (advance or self._advance)(torch.from_numpy(actions.copy()))
        self._history.append(out.frames)
        self._actions.append(actions.copy())
        del self._history[: max(0, len(self._history) - self.max_frames_kept)]
        del self._actions[: max(0, len(self._actions) - self.max_frames_kept)]
        return out

    def _advance(self, actions: torch.Tensor, commit: bool = True) -> Played:
        """Sample, decode and show the next frame of every row under actions (B,)."""
        s = self.sampling
        gens = self._gens[0] if len(self._gens) == 1 else self._gens
        overlap = commit and self._overlap_commit()
        with autocast(self.precision):
            x = self.dynamics.sample_next(
                self._dyn, actions, s.steps, s.temperature, gens, commit=commit and not overlap,
                **s.options,
            )  # fmt: skip
            if overlap:  # the frame joins the context in a second thread while this one decodes
                self._pending = _COMMITS.submit(
                    self._commit, self._dyn_state, x, actions, gens, s.options
                )
            decoded = getattr(self.tokenizer, self._decode_name)(x, self._dec).float()
        shown = decoded
        if self.carry_unchanged and self._shown is not None:
            prev, prev_ids, prev_decoded = self._shown
            shown = carry_unchanged(
                decoded, prev, x, prev_ids, self.patch_size, s.carry_margin, prev_decoded
            )
        self._shown = (shown, x, decoded)
        return Played(to_uint8(shown).numpy(), to_uint8(decoded).numpy())

    def _commit(self, state, x: torch.Tensor, actions: torch.Tensor, gens, options: dict) -> None:
        with torch.no_grad(), autocast(self.precision):  # both are per thread
            self.dynamics.commit_frame(state, x, actions, generator=gens, **options)

    def _snapshot(self) -> _Snapshot:
        self._settle()  # the generators' states include the last commit's draws
        states = [g.get_state() for g in self._gens]
        return _Snapshot(self._dyn.clone(), self._dec.clone(), states, self._shown)

    def undo(self) -> np.ndarray:
        """Rewind one step (no-op at the start frame). Returns the frame(s) now shown."""
        self._require_started()
        if self._undo:
            snap = self._undo.pop()
            self._dyn, self._dec, self._shown = snap.dyn, snap.dec, snap.shown
            for g, state in zip(self._gens, snap.rng, strict=True):
                g.set_state(state)
            # each step added exactly one frame; counting from the end stays right after the
            # oldest frames were dropped (max_frames_kept), when the history no longer grows
            if len(self._history) > 1:
                self._history.pop()
            if self._actions:
                self._actions.pop()
        return self.frames[-1]

    # ------------------------------------------------------------------ one player's futures

    def _fork(self, seeds: list[int]) -> WorldEngine:
        """An engine of len(seeds) players, each at this (one-player) engine's state."""
        self._require_started()
        if self.batch_size != 1:
            raise ValueError("only a one-player engine can be forked")
        n = len(seeds)
        fork = WorldEngine(self.world, max_undo=0, max_frames_kept=1, precision=self.precision)
        fork.sampling, fork.seed = self.sampling, seeds[0]
        fork._gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        fork._dyn, fork._dec = self._dyn.repeat(n), self._dec.repeat(n)
        if self._shown is not None:
            fork._shown = tuple(v.repeat(n, *([1] * (v.ndim - 1))) for v in self._shown)
        fork._history = [np.repeat(self._history[-1], n, 0)]
        return fork

    @torch.no_grad()
    def what_if(self) -> np.ndarray:
        """The next frame under every action from the current state, without playing it:
        uint8 (A, H, W, 3). All actions run as one batch, seeded by the frame count (the same
        state shows the same options); the world state is unchanged."""
        n = self.num_actions
        base = self.seed + len(self._history)
        fork = self._fork([base + i for i in range(n)])
        return fork._advance(torch.arange(n), commit=False).frames

    @torch.no_grad()
    def sample_futures(self, actions, samples: int, progress: bool = False) -> np.ndarray:
        """`samples` different futures under the same actions, from the current state, as one
        batch: uint8 (K, S, H, W, 3). Sample i draws from seed + i: at the start frame, sample 0
        is what `rollout` plays. The world state is unchanged."""
        seq = [self.action_id(a) for a in actions]
        fork = self._fork([self.seed + i for i in range(samples)])
        frames = fork.rollout(np.broadcast_to(seq, (samples, len(seq))), progress)
        return frames.swapaxes(0, 1)  # (K, S, H, W, 3)
