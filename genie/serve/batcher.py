"""Batched serving: the steps of many one-player engines as one model call.

    batcher = Batcher()                        # one per server; steps in a thread of its own
    frame = batcher.step(engine, action)       # from any player's thread: waits for its frame
    frames = step_together(engines, actions)   # the same, synchronously

On a CPU a 2M-parameter world stepped at batch 1 is mostly per-call overhead, so every
player stepping alone pays for every other. Here the step requests that arrive while the
model is busy, or within `window_s` of each other, run as one batch (continuous batching, as
LLM servers do): their engines' play states are stacked into one B-row engine, stepped once,
and split back. Each player keeps its own engine: state, generator, history and undo. Row i
draws from its own generator and rotates by its own frame index (`KVCache.next_index` per
row), so a player sees the frames it would see alone, bit for bit on a token world
(tests/test_serving.py). Rows can share a call when their context windows hold as many
frames (after `context_frames` steps every player's does); others run in a call of their own.

This module is the engine's batching front: like `WorldEngine._fork` it builds an engine
from other engines' play state (`_dyn`, `_dec`, `_shown`, generators).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np
import torch

from genie.models.blocks import KVCache
from genie.world.engine import Played, WorldEngine, cores

WINDOW_S = 0.005  # how long a batch waits for the other players who are playing right now
ACTIVE_S = 0.5  # a player who stepped this recently is expected in the next batch
MAX_BATCH = 32  # rows per model call
LANE_ROWS = 2  # a batch splits into lanes (one per core) of at least this many rows each


# ---------------------------------------------------------------------------- stack / split


def _stack(parts: list):
    """Play states of one-player engines -> one state of len(parts) rows."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, KVCache):
        keys = [
            None if k is None else torch.cat([p.keys[i] for p in parts])
            for i, k in enumerate(first.keys)
        ]
        vals = [
            None if v is None else torch.cat([p.values[i] for p in parts])
            for i, v in enumerate(first.values)
        ]
        index = [p.next_index for p in parts]
        same = len(set(index)) == 1
        return KVCache(first.max_frames, keys, vals, index[0] if same else tuple(index))
    if isinstance(first, tuple):  # (frame shown, its ids)
        return tuple(_stack(list(xs)) for xs in zip(*parts, strict=True))
    if dataclasses.is_dataclass(first):  # a dynamics backend's play state
        fields = dataclasses.fields(first)
        return type(first)(**{f.name: _stack([getattr(p, f.name) for p in parts]) for f in fields})
    raise TypeError(f"cannot stack {type(first).__name__}")


def _row(x, i: int, rows: int):
    """Row i of a stacked state of `rows` rows, as a one-player state. A copy: a player's state
    (and its undo snapshots) never keeps the other players' rows alive."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        n = x.shape[0] // rows  # a cache holds N token rows per player
        return x[i * n : (i + 1) * n].clone()
    if isinstance(x, KVCache):
        index = x.next_index if isinstance(x.next_index, int) else x.next_index[i]
        keys = [_row(k, i, rows) for k in x.keys]
        return KVCache(x.max_frames, keys, [_row(v, i, rows) for v in x.values], index)
    if isinstance(x, tuple):
        return tuple(_row(v, i, rows) for v in x)
    if dataclasses.is_dataclass(x):
        fields = dataclasses.fields(x)
        return type(x)(**{f.name: _row(getattr(x, f.name), i, rows) for f in fields})
    raise TypeError(f"cannot split {type(x).__name__}")


def batch_key(engine: WorldEngine) -> tuple:
    """Engines with equal keys can be stepped in one call: one world, one way of sampling, and
    context windows of equal length (attention over windows of different lengths would need
    padding, which changes the numbers)."""
    dyn, dec = engine._dyn, engine._dec
    return (id(engine.world), repr(engine.sampling), engine.precision, len(dyn.cache), len(dec))


def lanes(rows: int) -> int:
    """How many threads step a batch of `rows` players, each its share of the rows: one per
    core where play runs one torch thread (`genie play`'s default), each lane at least
    `LANE_ROWS` rows; else 1. On 2 cores two lanes of 4 rows step 8 players in 121 ms where one
    batch of 8 took 170 (torch's own second thread helps little at these sizes, and not at all
    in a thread other than the main one); `genie bench play --players 4,8`: 10.7 -> 12.2 and
    5.4 -> 8.0 frames/s each."""
    if torch.get_num_threads() != 1:
        return 1
    return max(1, min(cores(), rows // LANE_ROWS))


def step_together(
    engines: list[WorldEngine], actions: list, overlap: bool | None = None
) -> list[np.ndarray]:
    """Step one-player engines, each under its own action (id or label), as one model call.
    They must share a `batch_key`. Returns each engine's new frame, uint8 (H, W, 3); each
    engine records the step in its history and undo as `engine.step` would. overlap: whether
    the frame's commit runs beside its decoding (`WorldEngine.overlap`; None: where faster)."""
    for e in engines:
        e._require_started()
        if e.batch_size != 1:
            raise ValueError("step_together steps one-player engines")
    if len({batch_key(e) for e in engines}) != 1:
        raise ValueError("these engines cannot share a batch (see batch_key)")
    ids = np.array([e.action_id(a) for e, a in zip(engines, actions, strict=True)], np.int64)
    first = engines[0]
    merged = WorldEngine(first.world, max_undo=0, max_frames_kept=1, precision=first.precision)
    merged.sampling, merged.overlap = first.sampling, overlap
    # generators are copied: an engine's own one moves only once it takes its row (below),
    # after its undo snapshot has recorded where it was
    gens = []
    for e in engines:
        g = torch.Generator()
        g.set_state(e._gens[0].get_state())
        gens.append(g)
    merged._gens = gens
    merged._dyn = _stack([e._dyn for e in engines])
    merged._dec = _stack([e._dec for e in engines])
    merged._shown = _stack([e._shown for e in engines])
    out = merged._advance(torch.from_numpy(ids))  # (B, H, W, 3)
    b = len(engines)
    for i, e in enumerate(engines):

        def take(_actions, i=i, e=e) -> Played:
            e._dyn, e._dec = _row(merged._dyn, i, b), _row(merged._dec, i, b)
            e._shown = _row(merged._shown, i, b)
            e._gens[0].set_state(gens[i].get_state())
            return Played(out.frames[i : i + 1], out.decoded[i : i + 1])

        e._played_step(ids[i : i + 1], advance=take)
    return [f for f in out.frames]


# ---------------------------------------------------------------------------- the batcher


@dataclasses.dataclass
class _Request:
    engine: WorldEngine
    action: object
    done: Future


class Batcher:
    """Steps one-player engines for many threads, batching requests that arrive together.

    `step(engine, action)` steps a player alone at once, in the caller's thread; otherwise it
    queues a request and waits for its frame. One worker thread takes the first request
    waiting, then waits up to `window_s` for the other players who stepped within the last
    `ACTIVE_S`, and steps them all: one call per `batch_key` group. A request that fails (an
    unknown action, a world not reset) fails alone. The caller must not touch the engine
    until `step` returns (the playground's `Session` holds its lock)."""

    def __init__(self, window_s: float = WINDOW_S, max_batch: int = MAX_BATCH):
        self.window_s = window_s
        self.max_batch = max_batch
        self.batches = 0  # model calls made (for tests and benchmarks)
        self.rows = 0  # steps made in them
        self.split = 0  # batches stepped as lanes (`lanes`)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._recent: dict[int, float] = {}  # id(engine) -> when it last asked for a step
        self._lock = threading.Lock()  # guards _recent and the counters (callers and worker)
        self._lanes = ThreadPoolExecutor(max(1, cores() - 1), "genie-lane")
        self._thread = threading.Thread(target=self._serve, name="genie-batcher", daemon=True)
        self._thread.start()

    def step(self, engine: WorldEngine, action) -> np.ndarray:
        now = time.monotonic()
        with self._lock:
            others = any(k != id(engine) and now - t < ACTIVE_S for k, t in self._recent.items())
            self._recent[id(engine)] = now
            alone = not others and self._queue.empty()
            if alone:
                self.batches, self.rows = self.batches + 1, self.rows + 1
        if alone:  # step here: no hand-off to the worker thread, no wait
            return engine.step(action)
        req = _Request(engine, action, Future())
        self._queue.put(req)
        return req.done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._lanes.shutdown(wait=False)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            self._serve_batch(self._gather(first))
            # no reference to a served request may outlive it: while the queue waits, it would
            # keep the engine of a player who has left (measured: 400 MB of the shipped world)
            del first

    def _serve_batch(self, batch: list[_Request]) -> None:
        try:
            self._run(batch)
        except BaseException as e:  # never leave a caller waiting
            for r in batch:
                if not r.done.done():
                    r.done.set_exception(e)

    def _step_lanes(self, group: list[_Request]) -> list[np.ndarray]:
        """One group's frames, its rows split into `lanes` stepped at once (the first in this
        thread), each lane one torch thread on a core of its own (no commit thread beside)."""
        n = lanes(len(group))
        if n == 1:
            return step_together([r.engine for r in group], [r.action for r in group])
        with self._lock:
            self.split += 1
        chunks = [list(c) for c in np.array_split(np.arange(len(group)), n)]
        run = [([group[i].engine for i in c], [group[i].action for i in c], False) for c in chunks]
        others = [self._lanes.submit(step_together, *args) for args in run[1:]]
        try:
            frames = step_together(*run[0])
        finally:  # every lane is done before the callers hear of a failure
            wait(others)
        for f in others:
            frames += f.result()
        return frames

    def _gather(self, first: _Request) -> list[_Request]:
        now = time.monotonic()
        with self._lock:
            self._recent = {k: t for k, t in self._recent.items() if now - t < ACTIVE_S}
        batch, seen = [first], {id(first.engine)}
        deadline = now + self.window_s
        while len(batch) < self.max_batch:
            with self._lock:
                playing = len(self._recent.keys() - seen)  # expected soon, not yet here
            try:
                if playing and time.monotonic() < deadline:
                    req = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:  # nobody else expected: take only what is already waiting
                    req = self._queue.get_nowait()
            except queue.Empty:
                break
            if req is None:  # close: finish this batch first
                self._queue.put(None)
                break
            if id(req.engine) in seen:  # one engine twice: its second step waits its turn
                self._queue.put(req)
                break
            batch.append(req)
            seen.add(id(req.engine))
        return batch

    def _run(self, batch: list[_Request]) -> None:
        groups: dict[tuple, list[_Request]] = {}
        for r in batch:
            try:
                r.engine._require_started()
                r.action = r.engine.action_id(r.action)
                groups.setdefault(batch_key(r.engine), []).append(r)
            except Exception as e:  # this request's own mistake
                r.done.set_exception(e)
        for group in groups.values():
            try:
                if len(group) == 1:  # a player alone plays as without serving: no stacking
                    frames = [group[0].engine.step(group[0].action)]
                else:
                    frames = self._step_lanes(group)
            except Exception as e:
                for r in group:
                    r.done.set_exception(e)
                continue
            with self._lock:
                self.batches, self.rows = self.batches + 1, self.rows + len(group)
            for r, f in zip(group, frames, strict=True):
                r.done.set_result(f)
