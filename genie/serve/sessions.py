"""Per-player state of the playground, without any UI: one `WorldEngine` per browser session,
what the player holds down, the game clock, and the stream of frames that plays them.

    sess = Sessions(world).get(session_hash)
    for frame in sess.press(action, seq):    # a key went down: one frame, more while held
        send(frame)
    sess.release(seq)                        # the key went up (another thread): stream ends

With the game clock running (`press(None, seq, clock=True)`, worlds with a "noop" action) the
stream goes on while nothing is held, playing noop, as a game keeps running; a held key
overrides it; `release(seq, clock=False)` stops it.

`press` steps the world in a worker thread while its caller sends the previous frame, so model
time overlaps transport; a one-slot queue keeps the worker at most one frame ahead. A frame
stepped before a reset or undo (`generation`) or in a closed session is never yielded.
"""

import ctypes
import gc
import queue
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from genie.utils.errors import UserError

MAX_PLAYERS = 8  # live sessions (one engine each); the oldest idle one is evicted first
IDLE_EVICT_S = 120.0  # a session idle this long may be evicted to make room for a new player
IDLE_FREE_S = 1800.0  # a session idle this long is freed when the next player arrives (its
# tab or client never said goodbye)
SEAT_WAIT_S = 5.0  # a new player waits this long for a seat before "too many players": a
# client that just left frees its seat within a heartbeat (playground.HEARTBEAT_S)
TRIM_DELAY_S = 2.0  # memory goes back to the OS this long after the last session was freed
HOLD_DELAY_S = 0.1  # a key down this long counts as held (shorter: a tap, one frame)
MAX_IDLE_S = 600.0  # a stream stops this long after the last key event (a lost keyup)
CLOCK_IDLE_S = 120.0  # a running clock stops this long after it (a forgotten tab stops
# costing a core); the page stops its own clock just before
STREAM_END_S = 2.0  # a player switching worlds waits this long at most for its old stream
_DONE = object()  # end of a stream of frames


class Session:
    """One player's world: an engine, what is held, and the stream that plays it."""

    def __init__(self, engine, start, noop: int | None = None, stepper: Callable | None = None):
        self.engine = engine
        self.world_name = ""  # the name of the world it plays (`Sessions.worlds`)
        # stepper(engine, action) -> frame: a `genie.serve.batcher.Batcher` steps many players at once
        self.stepper = stepper or (lambda engine, action: engine.step(action))
        self.start = start  # prompt of the last reset (Reset goes back to it)
        self.noop = noop  # the world's noop action: what the clock plays (None: no clock)
        self.lock = threading.Lock()  # the engine is not thread-safe
        self.flags = threading.Lock()  # guards held / clock / taps / streamer / seq / times
        self.held: int | None = None  # action held down, or None
        self.clock = False  # the game clock runs: noop plays while nothing is held
        self.taps: deque[int] = deque(maxlen=4)  # presses not yet played: each is >= 1 step
        self.streamer: object | None = None  # token of the `press` that is streaming
        self.seq = -1  # newest control event applied (older ones arrive late: ignored)
        self.pressed_at = 0.0  # when the held action was pressed (monotonic seconds)
        self.touched = 0.0  # last key event (monotonic seconds): a stream idles out after it
        self.index = 0  # frames played since the last reset (the frame counter)
        self.resets = 0
        self.generation = 0  # bumped by every reset and undo: older frames are stale
        self.fps = 0.0  # steps per second while a key is held (moving average)
        self.step_ms = 0.0
        self.last_step = 0.0
        self.last_used = time.monotonic()
        self.clip: Path | None = None  # last downloaded clip (deleted on the next or on close)
        self.worker: threading.Thread | None = None  # the thread of the last stream
        self.quiet = threading.Event()  # set while no stream is sending frames
        self.quiet.set()
        self.closed = False

    @property
    def busy(self) -> bool:
        return self.streamer is not None

    @property
    def labels(self) -> list[str]:
        return self.engine.world.action_labels

    @property
    def last_action(self) -> int | None:
        """The action that made the frame on screen (None at a start frame)."""
        taken = self.engine.actions_taken
        return taken[-1] if taken and self.index > 0 else None

    def step(self, action: int) -> np.ndarray:
        return self._step(action)[0]

    def _step(self, action: int) -> tuple[np.ndarray, int]:
        """A frame and the generation it belongs to."""
        with self.lock:  # counters change under the engine's lock: a frame's always agree
            t = time.perf_counter()
            frame = self.stepper(self.engine, action)
            now = time.perf_counter()
            self.index += 1
            generation = self.generation
        self.step_ms = 1000 * (now - t)
        gap = now - self.last_step
        if 0 < gap < 1.0:  # consecutive frames of one hold
            self.fps = 1 / gap if self.fps == 0 else 0.8 * self.fps + 0.2 / gap
        else:
            self.fps = 0.0
        self.last_step = now
        self.last_used = time.monotonic()
        return frame, generation

    def reset(self, prompt) -> np.ndarray:
        self.clock = False  # a new start waits for the player's first key
        with self.lock:
            frame = self.engine.reset(prompt)
            self.start, self.index, self.fps = prompt, 0, 0.0
            self.resets += 1
            self.generation += 1
        return frame

    def undo(self) -> np.ndarray:
        self.clock = False  # a running clock would at once play over the frame undone
        with self.lock:
            could = self.engine.can_undo
            frame = self.engine.undo()
            self.index -= int(could)
            self.generation += 1
        return frame

    # ------------------------------------------------------------ hold to play

    def press(
        self,
        action: int | None,
        seq: int,
        render: Callable = lambda frame: frame,
        clock: bool = False,
    ) -> Iterator:
        """A key for `action` went down (`seq`: the client's event counter; `clock`: whether
        the game clock runs now; `action` None: only the clock started). Plays the action once,
        then on while it stays held (or noop while the clock runs), yielding `render(frame)` per
        frame (render runs in the worker, so e.g. PNG encoding overlaps too). Yields nothing
        when this session already streams: that stream picks the new state up."""
        me = object()
        with self.flags:
            now = time.monotonic()
            if action is not None:
                self.taps.append(action)
            if seq > self.seq:
                self.seq, self.held, self.pressed_at = seq, action, now
                self.clock = clock and self.noop is not None
            self.touched = now
            if self.streamer is not None or (action is None and not self.clock):
                return
            self.streamer = me
            self.quiet.clear()
        frames: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        self.worker = threading.Thread(
            target=self._play_while_held, args=(frames, stop, render), daemon=True
        )
        self.worker.start()
        try:
            while (item := frames.get()) is not _DONE and not self.closed:
                if isinstance(item, BaseException):
                    raise item
                if item[0] == self.generation:  # else stepped before a reset or undo
                    yield item[1]
        finally:
            stop.set()  # the consumer went away mid-stream: the worker ends after its step
            with self.flags:
                if self.streamer is me:
                    self.streamer, self.held = None, None
            self.quiet.set()

    def release(self, seq: int, clock: bool = False) -> None:
        """The last key went up (and the clock runs if `clock`). Ignored if a newer press
        (higher `seq`) was applied already: keyup and keydown travel as separate events and
        may be handled out of order."""
        with self.flags:
            self.touched = time.monotonic()
            if seq > self.seq:
                self.seq, self.held = seq, None
                self.clock = clock and self.noop is not None

    def _play_while_held(
        self, frames: queue.Queue, stop: threading.Event, render: Callable
    ) -> None:
        def put(item) -> None:
            while not stop.is_set():
                try:
                    return frames.put(item, timeout=0.1)
                except queue.Full:
                    pass

        try:
            while not stop.is_set() and not self.closed:
                action = self._next_action()
                if action is None:
                    break
                frame, generation = self._step(action)
                if generation == self.generation:  # else stale: not worth rendering
                    put((generation, render(frame)))
        except Exception as e:  # raised again in the consumer, where the UI reports it
            put(e)
        put(_DONE)

    def _next_action(self) -> int | None:
        """The next action to play, or None (the stream ends) when nothing is pressed and the
        clock is stopped. Every press plays once; holding plays on only once the key has been
        down HOLD_DELAY_S, so a quick tap is exactly one frame however late its keyup arrives;
        with nothing held the running clock plays noop."""
        while True:
            with self.flags:
                now = time.monotonic()
                if self.taps:
                    return self.taps.popleft()
                idle = now - self.touched
                clock = self.clock and idle <= CLOCK_IDLE_S
                if self.closed or idle > MAX_IDLE_S or (self.held is None and not clock):
                    self.streamer, self.held, self.clock = None, None, clock
                    return None
                if self.held is None:
                    return self.noop
                wait = HOLD_DELAY_S - (now - self.pressed_at)
                if wait <= 0:
                    return self.held
            time.sleep(min(wait, 0.01))

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        self.closed = True
        self.held, self.clock = None, False
        if self.clip is not None:
            self.clip.unlink(missing_ok=True)


class Sessions:
    """Sessions keyed by Gradio's session_hash, at most `max_players`. A new player waits up to
    `seat_wait_s` for a seat, then evicts the least recently used session idle for
    `idle_evict_s`, or is told the world is full. `worlds`: a World or a `WorldSet` (a new
    player starts in its default world; `switch` moves one). Steps of all players go through
    one `genie.serve.batcher.Batcher` (`batch=False`: each steps alone). Freed sessions give their
    memory back to the OS (`release_memory`)."""

    def __init__(
        self,
        worlds,
        max_players: int = MAX_PLAYERS,
        idle_evict_s: float = IDLE_EVICT_S,
        seed=None,
        batch: bool = True,
        seat_wait_s: float = SEAT_WAIT_S,
        **engine_kw,
    ):
        from genie.serve.batcher import Batcher
        from genie.serve.worlds import WorldSet
        from genie.world.engine import WorldEngine

        if max_players < 1:
            raise UserError(f"max players must be >= 1, got {max_players}")
        self.worlds = WorldSet.of(worlds)
        self.world = self.worlds.default_world  # where new players start
        self.max_players = max_players
        self.idle_evict_s = idle_evict_s
        self.seat_wait_s = seat_wait_s
        self.seed = seed
        self.engine_kw = {"max_undo": 32, "max_frames_kept": 1800, **engine_kw}
        for world in self.worlds.worlds.values():  # bad settings fail now, not at a player
            WorldEngine(world, **self.engine_kw)
        self.noops = {n: noop_action(w.action_labels) for n, w in self.worlds.worlds.items()}
        self.noop = self.noops[self.worlds.default]
        self.batcher = Batcher(max_batch=max_players) if batch else None
        self._lock = threading.Lock()
        self._seat_freed = threading.Condition(self._lock)
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._trim: threading.Timer | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def default_start(self, world: str | None = None):  # a world's first example frame
        return self.worlds.default_start(world)

    def get(self, sid: str | None) -> Session:
        sid = sid or "anonymous"
        with self._lock:
            sess = self._by_id.get(sid)
            if sess is not None:
                self._by_id.move_to_end(sid)
                sess.last_used = time.monotonic()
                return sess
            self._make_room()
            sess = self._by_id[sid] = self._new_session(self.worlds.default)
        sess.reset(self.default_start())
        return sess

    def switch(self, sid: str | None, world: str) -> Session:
        """Move a player to `world` (unknown: a UserError listing the names) in its seat: a new
        session on its first example; the old one closes, its stream ends. Already there: as is."""
        self.worlds[world]
        sid = sid or "anonymous"
        while True:
            old = self._by_id.get(sid)
            new = old if old is not None and old.world_name == world else self._new_session(world)
            if new is not old:
                new.reset(self.default_start(world))  # started before another event sees it
            with self._lock:
                if self._by_id.get(sid) is not old:  # it changed meanwhile: look again
                    continue
                if old is None:
                    self._make_room()
                elif new is not old:
                    new.resets = old.resets + 1  # the page sees a new start (data-reset)
                self._by_id[sid] = new
                self._by_id.move_to_end(sid)
                new.last_used = time.monotonic()
                if old not in (None, new):  # once the seat is new's: its stream ends showing new
                    self._retire(old)
            if old not in (None, new):  # its stream's last frame reaches the page first
                old.quiet.wait(timeout=STREAM_END_S)
            return new

    def _new_session(self, world: str) -> Session:
        from genie.world.engine import WorldEngine

        seed = self.seed if self.seed is not None else secrets.randbelow(2**31)
        engine = WorldEngine(self.worlds[world], seed=seed, **self.engine_kw)
        stepper = self.batcher.step if self.batcher else None
        if world not in self.noops:  # a world added while serving (the Train tab)
            self.noops[world] = noop_action(self.worlds[world].action_labels)
        sess = Session(engine, None, self.noops[world], stepper)
        sess.world_name = world
        return sess

    def _make_room(self) -> None:
        """Free sessions idle for IDLE_FREE_S; when still full, wait for a seat, then evict the
        least recently used idle one or refuse. Holds `_lock`."""
        now = time.monotonic()
        stale = [
            k for k, s in self._by_id.items() if not s.busy and now - s.last_used > IDLE_FREE_S
        ]
        for k in stale:
            self._release(k)
        deadline = now + self.seat_wait_s
        while len(self._by_id) >= self.max_players and time.monotonic() < deadline:
            self._seat_freed.wait(timeout=deadline - time.monotonic())
        if len(self._by_id) < self.max_players:
            return
        now = time.monotonic()
        idle = [
            k
            for k, s in self._by_id.items()
            if not s.busy and now - s.last_used >= self.idle_evict_s
        ]
        if not idle:
            raise UserError(
                f"too many players: {self.max_players} people are playing this world right now; "
                "try again in a minute"
            )
        self._release(idle[0])

    def peek(self, sid: str | None) -> Session | None:
        """The session if it exists (never creates one)."""
        return self._by_id.get(sid or "anonymous")

    def free(self, sid: str | None) -> None:
        with self._lock:
            self._release(sid or "anonymous")

    def _release(self, sid: str) -> None:
        """Drop a session (holding `_lock`) and give its memory back soon."""
        sess = self._by_id.pop(sid, None)
        if sess is not None:
            self._retire(sess)

    def _retire(self, sess: Session) -> None:
        sess.close()
        self._seat_freed.notify_all()
        if self._trim is not None:  # a burst of players leaving: trim once, after the last
            self._trim.cancel()
        self._trim = threading.Timer(TRIM_DELAY_S, release_memory)
        self._trim.daemon = True
        self._trim.start()

    def close(self) -> None:
        """Free every session and stop the batcher (the server is closing): streams end after
        the step they are in, before the interpreter may go (a thread inside torch then
        aborts the process)."""
        with self._lock:
            closing = list(self._by_id.values())
            for sid in list(self._by_id):
                self._release(sid)
        for sess in closing:
            if sess.worker is not None:
                sess.worker.join(timeout=10)
        if self.batcher is not None:
            self.batcher.close()


def release_memory() -> None:
    """Give freed memory back to the OS. A thread's freed blocks stay in its glibc arena for
    reuse, so without this a server's RSS stays near its peak after every player has left
    (measured on the shipped world: 1.35 GB -> 0.45 GB, docs/PLAY.md "Reliability")."""
    gc.collect()  # tracebacks and generator frames can keep a session's tensors in cycles
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def noop_action(labels: list[str]) -> int | None:
    """The id of the action labelled "noop" (any case): what the game clock plays."""
    low = [lab.strip().lower() for lab in labels]
    return low.index("noop") if "noop" in low else None
