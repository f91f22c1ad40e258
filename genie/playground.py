"""`genie play`: play a world in the browser (Gradio 6). UI events only: per-player state is
genie/sessions.py, and everything the model does goes through `WorldEngine`.

Holding a key streams frames: the key going down (a `play` event sent by
assets/playground.js) is a generator that yields each frame of `Session.press` until the key
goes up (a `pause` event, `Session.release`), so a held key costs two events instead of one
request per frame. Frames travel inline as base64 <img> in a gr.HTML value, upscaled by CSS
(DESIGN.md: fastest measured round trip).

HTTP API (gradio_client): `/reset` (start image -> frame), `/step` (action -> frame),
`/undo`, `/generate` (image + actions -> video). See docs/PLAY.md.
"""

import argparse
import atexit
import base64
import html
import io
import json
import os
import secrets
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from genie.errors import UserError
from genie.sessions import MAX_PLAYERS, Session, Sessions

MAX_UPLOAD = "20mb"  # launch(max_file_size=...)
QUEUE_SIZE = 64  # events waiting beyond this get Gradio's "queue is full" answer
GENERATE_MAX_FRAMES = 256
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"]
KEY_NAMES = {"ArrowLeft": "←", "ArrowRight": "→", "ArrowUp": "↑", "ArrowDown": "↓", " ": "Space"}


def _asset(name: str) -> str:
    return resources.files("genie").joinpath("assets", name).read_text()


def png_base64(frame: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------------------- HTML pieces


def screen_html(sess: Session, frame: np.ndarray, size: int) -> str:
    if sess.fps > 0:
        speed = f" · {sess.fps:4.1f} frames/s"
    elif sess.step_ms > 0:
        speed = f" · step {sess.step_ms:.0f} ms"
    else:
        speed = ""
    return (
        f'<div class="genie-screen"><img alt="frame {sess.index}" data-frame="{sess.index}" '
        f'data-reset="{sess.resets}" width="{size}" height="{size}" '
        f'src="data:image/png;base64,{png_base64(frame)}"></div>'
        f'<div class="genie-caption">frame {sess.index}{speed}</div>'
    )


def keys_html(actions) -> str:
    keymap = {k if len(k) > 1 else k.lower(): a.id for a in actions for k in a.keys}
    rows = "".join(
        f'<tr><td><button data-action="{a.id}" title="hold to keep moving">{html.escape(a.label)}</button></td>'
        f"<td>{''.join(f'<kbd>{html.escape(KEY_NAMES.get(k, k))}</kbd>' for k in a.keys)}</td></tr>"
        for a in actions
    )
    return (
        f"<div class=\"genie-keys\" data-keymap='{html.escape(json.dumps(keymap), quote=True)}'>"
        f"<table>{rows}</table>"
        '<div class="genie-fps"></div>'
        "<small>Hold a key (or a button) to keep the world moving.</small></div>"
    )


def whatif_html(frames: np.ndarray, labels: list[str], size: int = 128) -> str:
    items = "".join(
        f'<figure><img width="{size}" height="{size}" alt="{html.escape(lab)}" '
        f'src="data:image/png;base64,{png_base64(f)}"><figcaption>{html.escape(lab)}</figcaption></figure>'
        for f, lab in zip(frames, labels, strict=True)
    )
    return f'<div class="genie-whatif">{items}</div>'


# ---------------------------------------------------------------------------- the app


def build_demo(
    world,
    max_players: int = MAX_PLAYERS,
    seed: int | None = None,
    display_size: int = 384,
    **engine_kw,
):
    """The playground for a loaded `World` (or a world folder). Returns a gr.Blocks with
    `.sessions` attached; launch it with `launch(demo, ...)`."""
    import gradio as gr

    from genie.engine import WorldEngine
    from genie.generate import generate_clip, parse_actions
    from genie.video import tile, write_video
    from genie.world import World

    if not isinstance(world, World):
        world = World.from_folder(world)
    sessions = Sessions(world, max_players=max_players, seed=seed, **engine_kw)
    probe = WorldEngine(world)  # labels and keys only; never played
    actions = probe.actions
    labels = [a.label for a in actions]
    examples = world.examples
    tmp = Path(tempfile.mkdtemp(prefix="genie-play-"))  # clips before Gradio copies them
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)

    def session(request: gr.Request) -> Session:
        try:
            return sessions.get(request.session_hash if request else None)
        except UserError as e:
            raise gr.Error(str(e)) from None

    def show(sess: Session, frame: np.ndarray) -> str:
        return screen_html(sess, frame, display_size)

    # ---------------- keyboard / buttons: hold to stream

    def press(evt: gr.EventData, request: gr.Request):
        sess = session(request)
        data = getattr(evt, "_data", None) or {}
        try:
            action = probe.action_id(data.get("action"))
        except UserError:
            action = None
        shown = False
        if action is not None:
            for html_frame in sess.press(
                action, int(data.get("seq", 0)), render=lambda f: show(sess, f)
            ):
                shown = True
                yield html_frame
        if not shown:
            yield gr.skip()  # a generator that yields nothing would blank the screen

    def release(evt: gr.EventData, request: gr.Request) -> None:
        sess = sessions.peek(request.session_hash if request else None)
        if sess is not None:
            sess.release(int((getattr(evt, "_data", None) or {}).get("seq", 0)))

    # ---------------- buttons and uploads

    def on_load(request: gr.Request):
        sess = session(request)
        with sess.lock:
            frame = sess.engine.frames[-1]
        return show(sess, frame), "Hold a key (or a button) to play."

    def start_from(prompt, what: str, request: gr.Request):
        sess = session(request)
        try:
            frame = sess.reset(prompt)
        except UserError as e:
            gr.Warning(str(e))
            return gr.skip(), f"⚠️ {what}: {e}"
        return show(sess, frame), f"Started from {what}."

    def on_upload(path, request: gr.Request):
        if not path:
            return gr.skip(), gr.skip()
        return start_from(path, "your image", request)

    def on_example(evt: gr.SelectData, request: gr.Request):
        i = evt.index if isinstance(evt.index, int) else 0
        return start_from(examples[i], f"example {examples[i].stem}", request)

    def on_reset(request: gr.Request):
        sess = session(request)
        return start_from(
            sess.start if sess.start is not None else sessions.default_start(),
            "the start frame",
            request,
        )

    def on_undo(request: gr.Request):
        sess = session(request)
        could = sess.engine.can_undo
        frame = sess.undo()
        return show(sess, frame), ("Rewound one frame." if could else "Nothing to undo.")

    def on_whatif(request: gr.Request):
        sess = session(request)
        with sess.lock:
            frames = sess.engine.what_if()
        return whatif_html(frames, labels)

    def on_download(fmt: str, request: gr.Request):
        sess = session(request)
        with sess.lock:
            frames = np.stack(sess.engine.frames)
        if sess.clip is not None:
            sess.clip.unlink(missing_ok=True)
        sess.clip = tmp / f"genie-{secrets.token_hex(4)}.{fmt}"
        write_video(sess.clip, frames, fps=15, scale=4)
        return str(sess.clip), f"Saved {len(frames)} frames as {fmt}."

    def on_unload(request: gr.Request):
        sessions.free(request.session_hash if request else None)

    # ---------------- generate a clip (its own engine: the player's world is untouched)

    def generate(image, example: str | None, actions_text: str, frames, samples, seed, fmt):
        try:
            if not (1 <= int(frames) <= GENERATE_MAX_FRAMES and 1 <= int(samples) <= 4):
                raise UserError(f"frames must be 1..{GENERATE_MAX_FRAMES} and samples 1..4")
            prompt = image or (
                examples[[e.stem for e in examples].index(example)] if example else None
            )
            prompt = prompt if prompt is not None else sessions.default_start()
            engine = WorldEngine(world, seed=int(seed or 0))
            seq = parse_actions(actions_text, engine, int(frames), int(seed or 0))
            clips = generate_clip(engine, prompt, seq, int(samples))
        except (UserError, ValueError) as e:
            raise gr.Error(str(e)) from None
        video = tile(clips, gap=1) if len(clips) > 1 else clips[0]
        for old in sorted(tmp.glob("clip-*"), key=lambda p: p.stat().st_mtime)[:-16]:
            old.unlink(missing_ok=True)  # Gradio serves its own copies; keep a few recent ones
        out = tmp / f"clip-{secrets.token_hex(4)}"
        mp4 = write_video(out.with_suffix(".mp4"), video, fps=15, scale=4)
        file = (
            mp4 if fmt == "mp4" else write_video(out.with_suffix(f".{fmt}"), video, fps=15, scale=4)
        )
        names = ", ".join(labels[a] for a in seq[:12]) + (" …" if len(seq) > 12 else "")
        return str(mp4), str(file), f"{len(seq)} frames × {len(clips)} sample(s): {names}"

    # ---------------- HTTP API (named endpoints for gradio_client)

    def api_reset(image, request: gr.Request):
        sess = session(request)
        try:
            frame = sess.reset(image if image else sessions.default_start())
        except UserError as e:
            raise gr.Error(str(e)) from None
        return frame, info(sess)

    def api_step(action: str, request: gr.Request):
        sess = session(request)
        try:
            a = probe.action_id(str(action).strip())
        except UserError as e:
            raise gr.Error(str(e)) from None
        return sess.step(a), info(sess)

    def api_undo(request: gr.Request):
        sess = session(request)
        return sess.undo(), info(sess)

    def info(sess: Session) -> dict:
        return {
            "frame": sess.index,
            "actions": labels,
            "can_undo": sess.engine.can_undo,
            "step_ms": round(sess.step_ms, 1),
        }

    # ---------------- layout

    hidden = {"show_progress": "hidden", "api_visibility": "private"}
    # Gradio caches every frame the API returns and every clip: drop files older than 30 min
    with gr.Blocks(title=f"genie · {world.name}", delete_cache=(600, 1800)) as demo:
        gr.Markdown(
            f"## genie · {html.escape(world.name)}\nA world imagined by a model, frame by frame: no game engine runs behind it."
        )
        with gr.Tab("Play"):
            with gr.Row():
                with gr.Column(scale=3, min_width=400):
                    screen = gr.HTML(
                        "<div class='genie-caption'>loading…</div>",
                        elem_id="genie-screen",
                        js_on_load=None,
                        min_height=display_size + 30,
                    )
                    status = gr.Markdown(elem_id="genie-status")
                with gr.Column(scale=2, min_width=260):
                    keys = gr.HTML(
                        keys_html(actions), elem_id="genie-keys", js_on_load=_asset("playground.js")
                    )
                    with gr.Row():
                        undo_btn = gr.Button("↶ Undo", size="sm")
                        reset_btn = gr.Button("⟲ Reset", size="sm")
                    upload = gr.UploadButton(
                        "Upload a start image",
                        file_types=IMAGE_TYPES,
                        type="filepath",
                        size="sm",
                        elem_id="genie-upload",
                    )
                    gallery = gr.Gallery(
                        [(str(p), p.stem) for p in examples],
                        label="Start frames (click one)",
                        columns=4,
                        height=140,
                        allow_preview=False,
                        object_fit="contain",
                        elem_id="genie-examples",
                        interactive=False,
                    )
                    with gr.Accordion("Download the played clip", open=False):
                        fmt = gr.Radio(["mp4", "gif"], value="mp4", show_label=False)
                        save_btn = gr.Button("Save clip", size="sm")
                        clip_file = gr.File(label="clip", interactive=False)
            with gr.Row():
                whatif_btn = gr.Button(
                    "What if…? (next frame under every action)", size="sm", scale=0
                )
            whatif = gr.HTML("", elem_classes=["genie-whatif-box"], js_on_load=None)

        with gr.Tab("Generate a clip"):
            with gr.Row():
                with gr.Column():
                    gen_image = gr.File(
                        label="Start image (optional)", file_types=IMAGE_TYPES, type="filepath"
                    )
                    gen_example = gr.Radio(
                        [p.stem for p in examples],
                        value=examples[0].stem if examples else None,
                        label="…or an example",
                    )
                    gen_actions = gr.Textbox(
                        value="random",
                        label="Actions",
                        info=f"ids or labels ({', '.join(labels)}), NAME*N repeats, or 'random'; a short sequence repeats",
                    )
                    with gr.Row():
                        gen_frames = gr.Slider(
                            1, GENERATE_MAX_FRAMES, value=32, step=1, label="Frames"
                        )
                        gen_samples = gr.Slider(1, 4, value=1, step=1, label="Samples side by side")
                    with gr.Row():
                        gen_seed = gr.Number(0, precision=0, label="Seed")
                        gen_fmt = gr.Radio(["mp4", "gif"], value="mp4", label="Format")
                    gen_btn = gr.Button("Generate", variant="primary")
                with gr.Column():
                    gen_video = gr.Video(label="Clip", autoplay=True, loop=True, interactive=False)
                    gen_file = gr.File(label="Download", interactive=False)
                    gen_status = gr.Markdown()

        with gr.Row(visible=False):  # components behind the HTTP API only
            api_image = gr.File(label="image", type="filepath", file_types=IMAGE_TYPES)
            api_action = gr.Textbox(label="action")
            api_frame = gr.Image(label="frame", type="numpy", format="png")
            api_info = gr.JSON(label="info")
            api_reset_btn, api_step_btn, api_undo_btn = gr.Button(), gr.Button(), gr.Button()

        per_frame = {"concurrency_limit": max_players, "concurrency_id": "play", **hidden}
        keys.play(press, None, screen, trigger_mode="multiple", **per_frame)
        keys.pause(release, None, None, trigger_mode="multiple", concurrency_limit=None, **hidden)
        undo_btn.click(on_undo, None, [screen, status], **per_frame)
        reset_btn.click(on_reset, None, [screen, status], **per_frame)
        upload.upload(on_upload, upload, [screen, status], **per_frame)
        gallery.select(on_example, None, [screen, status], **per_frame)
        whatif_btn.click(on_whatif, None, whatif, **per_frame)
        save_btn.click(on_download, fmt, [clip_file, status], **hidden)
        gen_btn.click(
            generate,
            [gen_image, gen_example, gen_actions, gen_frames, gen_samples, gen_seed, gen_fmt],
            [gen_video, gen_file, gen_status],
            api_name="generate",
            concurrency_limit=1,
        )
        api_reset_btn.click(
            api_reset,
            api_image,
            [api_frame, api_info],
            api_name="reset",
            concurrency_limit=max_players,
            concurrency_id="play",
        )
        api_step_btn.click(
            api_step,
            api_action,
            [api_frame, api_info],
            api_name="step",
            concurrency_limit=max_players,
            concurrency_id="play",
        )
        api_undo_btn.click(
            api_undo,
            None,
            [api_frame, api_info],
            api_name="undo",
            concurrency_limit=max_players,
            concurrency_id="play",
        )
        demo.load(on_load, None, [screen, status], **hidden)
        demo.unload(on_unload)

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.sessions = sessions
    demo.world = world
    return demo


def launch(demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **kw):
    """Launch with the playground's safe defaults (local only, bounded uploads, no analytics).
    Returns the local URL."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_UPLOAD,
        css=_asset("playground.css"),
        **kw,
    )
    return url


# ---------------------------------------------------------------------------- CLI


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--world", required=True, help="world folder (tokenizer/, dynamics/, world.json, examples/)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    p.add_argument(
        "--max-players",
        type=int,
        default=MAX_PLAYERS,
        help=f"live sessions at once (default {MAX_PLAYERS})",
    )
    p.add_argument(
        "--seed", type=int, help="seed every session the same (default: a random seed per session)"
    )
    p.add_argument("--steps", type=int, help="MaskGIT steps per frame (default: the world's)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the world's)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per step (default 1: steady latency while the server, the browser "
        "and other players share the CPU; on a 2-core machine 2 threads stall badly under load)",
    )
    p.add_argument(
        "--size", type=int, default=384, help="displayed frame size in pixels (default 384)"
    )


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="play a world in the browser (Gradio playground + HTTP API)")
    add_args(p)
    p.set_defaults(func=run)


def make_demo(args: argparse.Namespace):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from genie.world import World

    world = World.from_folder(args.world)  # a bad folder fails here, before any server starts
    return build_demo(
        world,
        max_players=args.max_players,
        seed=args.seed,
        display_size=args.size,
        steps=args.steps,
        temperature=args.temperature,
    )


def run(args: argparse.Namespace) -> int:
    demo = make_demo(args)
    print(f"genie play: {demo.world.name} at http://{args.host}:{args.port} (Ctrl+C to stop)")
    launch(demo, host=args.host, port=args.port, share=args.share)
    return 0
