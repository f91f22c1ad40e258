"""HTML of the playground: the screen, the key legend (with its key bindings for
assets/playground.js) and the what-if strip. Frames travel inline as base64 PNG <img>,
upscaled by CSS: the fastest transport measured (docs/DESIGN.md, Gradio 6 notes)."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np

from genie.serve.sessions import CLOCK_IDLE_S, Session, noop_action
from genie.world.folder import is_unused

KEY_NAMES = {"ArrowLeft": "←", "ArrowRight": "→", "ArrowUp": "↑", "ArrowDown": "↓", " ": "Space"}
PAUSE_KEY = "p"  # toggles the game clock, unless the world binds it to an action


def png_base64(frame: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode()


def chord(entry: str) -> list[str]:
    """A key entry of world.json -> the keys held together, as the browser's KeyboardEvent.key
    names them after playground.js lowercases single characters: "ArrowUp+d" -> ["ArrowUp", "d"]."""
    parts = [entry] if entry == "+" else entry.split("+")
    return [k if len(k) > 1 else k.lower() for k in parts if k]


def bindings(keys: list[list[str]]) -> list[tuple[list[str], int]]:
    """Every key entry of every action, as (keys held together, action id)."""
    return [(chord(e), a) for a, entries in enumerate(keys) for e in entries if chord(e)]


def key_label(entry: str) -> str:
    """How a key entry reads in the legend: "ArrowUp+ArrowRight" -> "↑+→"."""
    return "+".join(KEY_NAMES.get(k, k.upper() if len(k) == 1 else k) for k in chord(entry))


def screen_html(sess: Session, frame: np.ndarray, size: int, labels: list[str]) -> str:
    """The frame on screen; `data-action` carries the label of the action that made it."""
    if sess.fps > 0:
        speed = f" · {sess.fps:4.1f} frames/s"
    elif sess.step_ms > 0:
        speed = f" · step {sess.step_ms:.0f} ms"
    else:
        speed = ""
    a = sess.last_action
    label = html.escape(labels[a]) if a is not None else ""
    played = f" · {label}" if label else ""
    return (
        f'<div class="genie-screen"><img alt="frame {sess.index}" data-frame="{sess.index}" '
        f'data-reset="{sess.resets}" data-action="{label}" width="{size}" height="{size}" '
        f'src="data:image/png;base64,{png_base64(frame)}"></div>'
        f'<div class="genie-caption">frame {sess.index}{played}{speed}</div>'
    )


def keys_html(
    labels: list[str], keys: list[list[str]], noop: int | None, clock: bool, world: str = ""
) -> str:
    """The key legend with one button per action, and the game clock's toggle when `clock`
    (worlds with a noop action). Its data attributes configure assets/playground.js; `world`
    (the world's name) goes with every key event, so one meant for a world the player has
    left is ignored."""
    binds = bindings(keys)
    bound = {k for ks, _ in binds for k in ks}
    pause_key = PAUSE_KEY if clock and PAUSE_KEY not in bound else ""

    def legend(a: int) -> str:
        if a == noop and not keys[a]:
            return '<span class="genie-nokey">no key</span>'
        return " ".join(f"<kbd>{html.escape(key_label(e))}</kbd>" for e in keys[a] if chord(e))

    rows = "".join(
        f'<tr><td><button data-action="{a}" title="hold to keep moving">{html.escape(lab)}</button></td>'
        f"<td>{legend(a)}</td></tr>"
        for a, lab in enumerate(labels)
        if not is_unused(lab)
    )
    if clock:
        pause = f" (<kbd>{pause_key.upper()}</kbd>)" if pause_key else ""
        clock_html = (
            '<div class="genie-clock" data-clock="ready">'
            f'<button data-clock-toggle title="start or pause the game clock">'
            f'<span class="genie-clock-verb">▶ Run</span>{pause}</button> '
            '<span class="genie-clock-state"></span></div>'
        )
        hint = f"Your first key starts the world; with no key held it plays {html.escape(labels[noop])}."
    else:
        clock_html, hint = "", "Hold a key (or a button) to keep the world moving."
    if any(len(ks) > 1 for ks, _ in binds):
        hint += " Keys held together combine."
    config = {
        "data-bindings": json.dumps(binds),
        "data-noop": "" if noop is None or not clock else str(noop),
        "data-pause-key": pause_key,
        "data-idle-s": str(int(CLOCK_IDLE_S)),
        "data-world": world,
    }
    attrs = " ".join(f"{k}='{html.escape(v, quote=True)}'" for k, v in config.items())
    return (
        f'<div class="genie-keys" {attrs}>{clock_html}<table>{rows}</table>'
        f'<div class="genie-fps"></div><small>{hint}</small></div>'
    )


def world_keys_html(world, clock: bool, name: str = "") -> str:
    """The key legend of a loaded World known as `name`: its labels and keys; the clock when
    `clock` is offered and the world has a noop."""
    labels = world.action_labels
    noop = noop_action(labels)
    return keys_html(labels, world.action_keys, noop, clock and noop is not None, name)


def header_md(world) -> str:
    """The page's heading (Markdown) for a loaded World."""
    return (
        f"## genie · {html.escape(world.name)}\nA world imagined by a model, frame by frame: "
        "no game engine runs behind it."
    )


def actions_help(labels: list[str]) -> str:
    """What the Generate tab's actions box accepts, for a world with these labels."""
    return f"ids or labels ({', '.join(labels)}), NAME*N repeats, or 'random'; a short sequence repeats"


def whatif_html(frames: np.ndarray, labels: list[str], size: int = 128) -> str:
    items = "".join(
        f'<figure><img width="{size}" height="{size}" alt="{html.escape(lab)}" '
        f'src="data:image/png;base64,{png_base64(f)}"><figcaption>{html.escape(lab)}</figcaption></figure>'
        for f, lab in zip(frames, labels, strict=True)
    )
    return f'<div class="genie-whatif">{items}</div>'
