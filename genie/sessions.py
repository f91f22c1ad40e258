"""Per-player state of the playground, without any UI: one `WorldEngine` per browser session,
what the player holds down, and the stream of frames that plays while a key is held.

    sess = Sessions(world).get(session_hash)
    for frame in sess.press(action, seq):    # a key went down: one frame, more while held
        send(frame)
    sess.release(seq)                        # the key went up (another thread): stream ends

`press` steps the world in a worker thread while its caller sends the previous frame, so model
time overlaps transport; a one-slot queue keeps the worker at most one frame ahead.
"""

import queue
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from genie.errors import UserError

MAX_PLAYERS = 8  # live sessions (one engine each); the oldest idle one is evicted first
IDLE_EVICT_S = 120.0  # a session idle this long may be evicted to make room for a new player
HOLD_DELAY_S = 0.1  # a key down this long counts as held (shorter: a tap, one frame)
MAX_HOLD_S = 600.0  # a stream stops after this long (a lost keyup never runs forever)
_DONE = object()  # end of a stream of frames


class Session:
    """One player's world: an engine, what is held, and the stream that plays it."""

    def __init__(self, engine, start):
        self.engine = engine
        self.start = start  # prompt of the last reset (Reset goes back to it)
        self.lock = threading.Lock()  # the engine is not thread-safe
        self.flags = threading.Lock()  # guards held / taps / streamer / seq / pressed_at
        self.held: int | None = None  # action held down, or None
        self.taps: deque[int] = deque(maxlen=4)  # presses not yet played: each is >= 1 step
        self.streamer: object | None = None  # token of the `press` that is streaming
        self.seq = -1  # newest control event applied (older ones arrive late: ignored)
        self.pressed_at = 0.0  # when the held action was pressed (monotonic seconds)
        self.index = 0  # frames played since the last reset (the frame counter)
        self.resets = 0
        self.fps = 0.0  # steps per second while a key is held (moving average)
        self.step_ms = 0.0
        self.last_step = 0.0
        self.last_used = time.monotonic()
        self.clip: Path | None = None  # last downloaded clip (deleted on the next or on close)
        self.closed = False

    @property
    def busy(self) -> bool:
        return self.streamer is not None

    def step(self, action: int) -> np.ndarray:
        with self.lock:
            t = time.perf_counter()
            frame = self.engine.step(action)
            now = time.perf_counter()
        self.step_ms = 1000 * (now - t)
        gap = now - self.last_step
        if 0 < gap < 1.0:  # consecutive frames of one hold
            self.fps = 1 / gap if self.fps == 0 else 0.8 * self.fps + 0.2 / gap
        else:
            self.fps = 0.0
        self.last_step = now
        self.index += 1
        self.last_used = time.monotonic()
        return frame

    def reset(self, prompt) -> np.ndarray:
        with self.lock:
            frame = self.engine.reset(prompt)
        self.start, self.index, self.fps = prompt, 0, 0.0
        self.resets += 1
        return frame

    def undo(self) -> np.ndarray:
        with self.lock:
            could = self.engine.can_undo
            frame = self.engine.undo()
        self.index -= int(could)
        return frame

    # ------------------------------------------------------------ hold to play

    def press(self, action: int, seq: int, render: Callable = lambda frame: frame) -> Iterator:
        """A key for `action` went down (`seq`: the client's event counter). Plays it once, then
        on while it stays held, yielding `render(frame)` per frame (render runs in the worker,
        so e.g. PNG encoding overlaps too). Yields nothing when this session already streams:
        that stream picks the new action up."""
        me = object()
        with self.flags:
            self.taps.append(action)
            if seq > self.seq:
                self.seq, self.held, self.pressed_at = seq, action, time.monotonic()
            if self.streamer is not None:
                return
            self.streamer = me
        frames: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        threading.Thread(
            target=self._play_while_held, args=(frames, stop, render), daemon=True
        ).start()
        try:
            while (item := frames.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # the consumer went away mid-stream: the worker ends after its step
            with self.flags:
                if self.streamer is me:
                    self.streamer, self.held = None, None

    def release(self, seq: int) -> None:
        """The last key went up. Ignored if a newer press (higher `seq`) was applied already:
        keyup and keydown travel as separate events and may be handled out of order."""
        with self.flags:
            if seq > self.seq:
                self.seq, self.held = seq, None

    def _play_while_held(
        self, frames: queue.Queue, stop: threading.Event, render: Callable
    ) -> None:
        def put(item) -> None:
            while not stop.is_set():
                try:
                    return frames.put(item, timeout=0.1)
                except queue.Full:
                    pass

        started = time.monotonic()
        try:
            while not stop.is_set() and not self.closed and time.monotonic() - started < MAX_HOLD_S:
                action = self._next_action()
                if action is None:
                    break
                put(render(self.step(action)))
        except Exception as e:  # raised again in the consumer, where the UI reports it
            put(e)
        put(_DONE)

    def _next_action(self) -> int | None:
        """The next action to play, or None (the stream ends) when nothing is pressed. Every
        press plays once; holding plays on only once the key has been down HOLD_DELAY_S, so a
        quick tap is exactly one frame however late its keyup arrives."""
        while True:
            with self.flags:
                if self.taps:
                    return self.taps.popleft()
                if self.held is None or self.closed:
                    self.streamer = None
                    return None
                wait = HOLD_DELAY_S - (time.monotonic() - self.pressed_at)
                if wait <= 0:
                    return self.held
            time.sleep(min(wait, 0.01))

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        self.closed = True
        self.held = None
        if self.clip is not None:
            self.clip.unlink(missing_ok=True)


class Sessions:
    """Sessions keyed by Gradio's session_hash, at most `max_players`; a new player evicts the
    least recently used session idle for `idle_evict_s`, or is told the world is full."""

    def __init__(
        self,
        world,
        max_players: int = MAX_PLAYERS,
        idle_evict_s: float = IDLE_EVICT_S,
        seed=None,
        **engine_kw,
    ):
        self.world = world
        self.max_players = max_players
        self.idle_evict_s = idle_evict_s
        self.seed = seed
        self.engine_kw = {"max_undo": 32, "max_frames_kept": 1800, **engine_kw}
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def default_start(self):
        examples = self.world.examples
        if examples:
            return examples[0]
        s = self.world.frame_size[0]
        return np.full((s, s, 3), 128, np.uint8)

    def get(self, sid: str | None) -> Session:
        from genie.engine import WorldEngine

        sid = sid or "anonymous"
        with self._lock:
            sess = self._by_id.get(sid)
            if sess is not None:
                self._by_id.move_to_end(sid)
                sess.last_used = time.monotonic()
                return sess
            if len(self._by_id) >= self.max_players:
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
                self._by_id.pop(idle[0]).close()
            seed = self.seed if self.seed is not None else secrets.randbelow(2**31)
            sess = Session(WorldEngine(self.world, seed=seed, **self.engine_kw), None)
            self._by_id[sid] = sess
        sess.reset(self.default_start())
        return sess

    def peek(self, sid: str | None) -> Session | None:
        """The session if it exists (never creates one)."""
        return self._by_id.get(sid or "anonymous")

    def free(self, sid: str | None) -> None:
        with self._lock:
            sess = self._by_id.pop(sid or "anonymous", None)
        if sess is not None:
            sess.close()

    def close_all(self) -> None:
        with self._lock:
            sessions, self._by_id = list(self._by_id.values()), OrderedDict()
        for s in sessions:
            s.close()
