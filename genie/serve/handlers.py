"""The playground's event handlers: one small class over the per-player `Sessions`. Each
method is a Gradio event function (genie/serve/app.py wires them); none holds model code.

Keys stream frames: `press` (a `play` event from assets/playground.js: what is held and
whether the game clock runs) is a generator yielding every frame of `Session.press` until
nothing plays; `release` (a `pause` event) ends it. A held key thus costs two events, and a
running clock one, instead of one request per frame.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from pathlib import Path

import gradio as gr  # imported by build_demo only: `genie` commands stay fast to start
import numpy as np

from genie.serve.html import (
    actions_help,
    header_md,
    screen_html,
    whatif_html,
    world_keys_html,
)
from genie.serve.sessions import Session, Sessions
from genie.utils.errors import UserError

GENERATE_MAX_FRAMES = 256
log = logging.getLogger("genie.play")


def log_user_error(e: Exception, request: gr.Request | None = None) -> None:
    """A player's mistake is one line in the server log (tracebacks are for bugs)."""
    who = (getattr(request, "session_hash", None) or "-")[:8]
    log.warning("player %s: %s", who, e)


def user_error(e: Exception, request: gr.Request | None = None) -> gr.Error:
    """A player's mistake (UserError, a refused upload): logged as one line, its message on
    the player's screen or in the client's AppError, no traceback."""
    log_user_error(e, request)
    return gr.Error(str(e), print_exception=False)


def _event_data(evt) -> dict:
    """The payload a `trigger(name, data)` in playground.js sent with its event (Gradio keeps
    it on EventData as `_data`)."""
    return getattr(evt, "_data", None) or {}


class Handlers:
    """Event functions of one playground: per-player worlds from `sessions`, frames drawn at
    `display_size` pixels, clips written under `tmp`. Labels, keys and start frames are those
    of the world each player plays (`sessions.worlds`: one or several, by name)."""

    def __init__(self, sessions: Sessions, display_size: int, tmp: Path, clock: bool = True):
        self.sessions = sessions
        self.worlds = sessions.worlds
        self.offer_clock = clock  # the game clock is offered (worlds with a noop only)
        self.display_size = display_size
        self.tmp = tmp
        self._served = itertools.count()  # numbers every frame the API returns (see api_frame)

    # ------------------------------------------------------------ helpers

    def session(self, request: gr.Request | None) -> Session:
        try:
            return self.sessions.get(request.session_hash if request else None)
        except UserError as e:
            raise user_error(e, request) from None

    def show(self, sess: Session, frame: np.ndarray) -> str:
        return screen_html(sess, frame, self.display_size, sess.labels)

    def clock(self, sess: Session) -> bool:
        """The game clock is offered to this player (its world has a noop)."""
        return self.offer_clock and sess.noop is not None

    def keys_html(self, world: str | None = None) -> str:
        """The key legend of world `world` (default: the default world)."""
        name = self.worlds.name_of(world)
        return world_keys_html(self.worlds[name], self.offer_clock, name)

    @staticmethod
    def _elsewhere(sess: Session, data: dict) -> bool:
        """A key event sent for another world than the player's (it switched since)."""
        return data.get("world", sess.world_name) not in (sess.world_name, "", None)

    def api_frame(self, frame: np.ndarray):
        """A frame for the HTTP API, as a PIL image with a text chunk naming this response.
        Gradio names a returned image after its bytes' hash and rewrites the file in place, so
        two players shown the same frame (everyone starts on the first example) could download
        it half rewritten ("peer closed connection": measured with 8 players); unique bytes give
        every response its own file."""
        from PIL import Image

        img = Image.fromarray(frame)
        img.info["genie"] = f"frame {next(self._served)}"
        return img

    def info(self, sess: Session) -> dict:
        return {
            "frame": sess.index,
            "world": sess.world_name,
            "actions": sess.labels,
            "can_undo": sess.engine.can_undo,
            "step_ms": round(sess.step_ms, 1),
        }

    @staticmethod
    def _action(sess: Session, value) -> int | None:
        """An action id sent by the page, or None (nothing held, or not an action of the
        player's world: a key of the world it just left)."""
        try:
            a = int(value)
        except (TypeError, ValueError):
            return None
        return a if 0 <= a < len(sess.labels) else None

    # ------------------------------------------------------------ keys, buttons, clock

    def press(self, evt: gr.EventData, request: gr.Request):
        sess = self.session(request)
        data = _event_data(evt)
        if self._elsewhere(sess, data):
            yield gr.skip()
            return
        clock = self.clock(sess) and bool(data.get("clock"))
        generation = sess.generation
        yield from sess.press(
            self._action(sess, data.get("action")),
            int(data.get("seq", 0)),
            render=lambda f: self.show(sess, f),
            clock=clock,
        )
        yield self._stream_end(sess, generation, request)

    def _stream_end(self, sess: Session, generation: int, request: gr.Request | None):
        """The last value of a stream of `sess` that began at `generation`: the seat's screen
        as it is now if a switch, reset or undo changed it meanwhile, else a no-op. The page
        applies each event's messages in a loop of its own, so the stream's last frames can be
        drawn after a later event's answer (the switch race, docs/PLAY.md); the stream's own
        last word puts the new screen back. Never the last frame again: Gradio's message that a
        stream ended repeats its last value, and an empty stream's would blank the screen."""
        now = self.sessions.peek(request.session_hash if request else None)
        if now is None or (now is sess and sess.generation == generation):
            return gr.skip()
        with now.lock:
            frame = now.engine.frames[-1]
        return self.show(now, frame)

    def release(self, evt: gr.EventData, request: gr.Request) -> None:
        sess = self.sessions.peek(request.session_hash if request else None)
        data = _event_data(evt)
        if sess is not None and not self._elsewhere(sess, data):
            sess.release(
                int(data.get("seq", 0)), clock=self.clock(sess) and bool(data.get("clock"))
            )

    # ------------------------------------------------------------ buttons and uploads

    def on_load(self, request: gr.Request):
        sess = self.session(request)
        with sess.lock:
            frame = sess.engine.frames[-1]
        return self.show(sess, frame), self.greeting(sess)

    def greeting(self, sess: Session) -> str:
        if self.clock(sess):
            return "Press a key to start: the world runs on its own while you hold nothing."
        return "Hold a key (or a button) to play."

    def start_from(self, prompt, what: str, request: gr.Request):
        sess = self.session(request)
        try:
            frame = sess.reset(prompt)
        except UserError as e:
            log_user_error(e, request)
            gr.Warning(str(e))
            return gr.skip(), f"⚠️ {what}: {e}"
        return self.show(sess, frame), f"Started from {what}."

    def on_upload(self, path, request: gr.Request):
        if not path:
            return gr.skip(), gr.skip()
        return self.start_from(path, "your image", request)

    def on_example(self, evt: gr.SelectData, request: gr.Request):
        # the gallery shows the start frames of the world this player plays
        examples = self.session(request).engine.world.examples
        i = evt.index if isinstance(evt.index, int) and evt.index < len(examples) else 0
        return self.start_from(examples[i], f"example {examples[i].stem}", request)

    def on_reset(self, request: gr.Request):
        sess = self.session(request)
        start = sess.start  # the last start frame (every session starts on one)
        if start is None:
            start = self.sessions.default_start(sess.world_name)
        return self.start_from(start, "the start frame", request)

    def on_world(self, name: str, request: gr.Request):
        """The world picker: this tab plays world `name` from its first example frame. Returns
        the header, screen, status, key legend, start frames, and the Generate tab's example
        choices and actions help, all of the new world."""
        try:
            sess = self.sessions.switch(request.session_hash if request else None, name)
        except UserError as e:
            raise user_error(e, request) from None
        with sess.lock:
            frame = sess.engine.frames[-1]
        world = sess.engine.world
        stems = [p.stem for p in world.examples]
        return (
            header_md(world),
            self.show(sess, frame),
            f"Now playing {name}. {self.greeting(sess)}",
            self.keys_html(name),
            gr.update(value=[(str(p), p.stem) for p in world.examples]),
            gr.update(choices=stems, value=stems[0] if stems else None),
            gr.update(info=actions_help(world.action_labels)),
        )

    def on_undo(self, request: gr.Request):
        sess = self.session(request)
        could = sess.engine.can_undo
        frame = sess.undo()
        return self.show(sess, frame), ("Rewound one frame." if could else "Nothing to undo.")

    def on_whatif(self, request: gr.Request):
        sess = self.session(request)
        with sess.lock:
            frames = sess.engine.what_if()
        return whatif_html(frames, sess.labels)

    def on_download(self, fmt: str, request: gr.Request):
        from genie.utils.video import write_video

        sess = self.session(request)
        with sess.lock:
            frames = np.stack(sess.engine.frames)
        if sess.clip is not None:
            sess.clip.unlink(missing_ok=True)
        sess.clip = self.tmp / f"genie-{secrets.token_hex(4)}.{fmt}"
        write_video(sess.clip, frames, fps=15, scale=4)
        return str(sess.clip), f"Saved {len(frames)} frames as {fmt}."

    def on_unload(self, request: gr.Request):
        self.sessions.free(request.session_hash if request else None)

    # ------------------------------------------------------------ generate a clip

    def generate(
        self, image, example, actions_text: str, frames, samples, seed, fmt, request: gr.Request
    ):
        """Image + actions -> (mp4, file in `fmt`, message) in the world the player plays (the
        default world for a client that never played), on its own engine: the player's world
        is untouched."""
        from genie.generate import generate_clip, parse_actions
        from genie.utils.video import tile, write_video
        from genie.world.engine import WorldEngine

        sess = self.sessions.peek(request.session_hash if request else None)
        name = sess.world_name if sess is not None else self.worlds.default
        world = self.worlds[name]
        try:
            if not (1 <= int(frames) <= GENERATE_MAX_FRAMES and 1 <= int(samples) <= 4):
                raise UserError(f"frames must be 1..{GENERATE_MAX_FRAMES} and samples 1..4")
            stems = [e.stem for e in world.examples]
            if example and example not in stems:
                raise UserError(
                    f"unknown example '{example}' of {name}: use one of {', '.join(stems)}"
                )
            prompt = image or (world.examples[stems.index(example)] if example else None)
            prompt = prompt if prompt is not None else self.sessions.default_start(name)
            engine = WorldEngine(world, seed=int(seed or 0))
            seq = parse_actions(actions_text, engine, int(frames), int(seed or 0))
            clips = generate_clip(engine, prompt, seq, int(samples))
        except (UserError, ValueError) as e:
            raise user_error(e) from None
        video = tile(clips, gap=1) if len(clips) > 1 else clips[0]
        for old in sorted(self.tmp.glob("clip-*"), key=lambda p: p.stat().st_mtime)[:-16]:
            old.unlink(missing_ok=True)  # Gradio serves its own copies; keep a few recent ones
        out = self.tmp / f"clip-{secrets.token_hex(4)}"
        mp4 = write_video(out.with_suffix(".mp4"), video, fps=15, scale=4)
        file = mp4 if fmt == "mp4" else write_video(out.with_suffix(f".{fmt}"), video, 15, 4)
        labels = world.action_labels
        names = ", ".join(labels[a] for a in seq[:12]) + (" …" if len(seq) > 12 else "")
        return str(mp4), str(file), f"{len(seq)} frames × {len(clips)} sample(s): {names}"

    # ------------------------------------------------------------ HTTP API

    def api_reset(self, image, world: str | None = None, request: gr.Request = None):
        """Reset onto `image` (None: the world's first example) in world `world` (by name; empty
        or None: the default world)."""
        name = (world or "").strip() or self.worlds.default
        try:
            sess = self.sessions.switch(request.session_hash if request else None, name)
            frame = sess.reset(image if image else self.sessions.default_start(name))
        except UserError as e:
            raise user_error(e, request) from None
        return self.api_frame(frame), self.info(sess)

    def api_step(self, action: str, request: gr.Request):
        sess = self.session(request)
        try:
            a = sess.engine.action_id(str(action).strip())
        except UserError as e:
            raise user_error(e, request) from None
        return self.api_frame(sess.step(a)), self.info(sess)

    def api_undo(self, request: gr.Request):
        sess = self.session(request)
        return self.api_frame(sess.undo()), self.info(sess)
