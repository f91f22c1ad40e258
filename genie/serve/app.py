"""`genie play`: play a world in the browser (Gradio 6), and its HTTP API.

    demo = build_demo(World.from_folder("worlds/coinrun"))
    demo = build_demo(WorldSet.load(["worlds/coinrun", "worlds/boxing"]))  # a world picker
    url = launch(demo, port=7860)

Three pieces: `layout` builds the page (components only), `Handlers` (genie/serve/handlers.py)
holds the event functions over the per-player `Sessions` (genie/serve/sessions.py), and
`build_demo` loads the world once and wires events to handlers. The HTML pieces and the key
bindings are genie/serve/html.py; keyboard, chords and the game clock run in the browser
(genie/serve/assets/playground.js); the command line is genie/serve/cli.py. Everything the model
does goes through `WorldEngine`, every player's steps through one batcher (genie/serve/batcher.py).

HTTP API (gradio_client): `/reset` (start image [, world name] -> frame), `/step` (action ->
frame), `/undo`, `/generate` (image + actions -> video). See docs/PLAY.md.
"""

import atexit
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from genie.serve.sessions import MAX_PLAYERS, Sessions
from genie.utils.errors import UserError

MAX_UPLOAD = "20mb"  # launch(max_file_size=...)
QUEUE_SIZE = 64  # events waiting beyond this get Gradio's "queue is full" answer
IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"]
HEARTBEAT_S = 2  # Gradio's heartbeat: a closed tab or client is noticed (and its seat and
# memory freed, `demo.unload`) within this long; Gradio's default of 15 s kept closed API
# clients' seats (the 9th client in a row was refused)
CACHE_CLEAN = (120, 600)  # Gradio's file cache (frames and clips served): every 2 min, delete
# files older than 10 min (clients fetch a frame as soon as it is returned)
TMP_PREFIX = "genie-play-"  # + pid: clips before Gradio copies them
OPTIONAL_INPUTS = {"reset": 1}  # endpoint -> trailing inputs a raw HTTP call may leave out
# (reset's world name came later: old callers send only the image)


def _asset(name: str) -> str:
    return resources.files("genie.serve").joinpath("assets", name).read_text()


# ---------------------------------------------------------------------------- layout


@dataclass
class Layout:
    """The components events are wired to (`build_demo`); `api` holds the hidden inputs,
    outputs and trigger buttons behind the HTTP API."""

    demo: Any
    header: Any
    world: Any  # the world picker (a dropdown, shown when several worlds are served)
    screen: Any
    status: Any
    keys: Any
    undo: Any
    reset: Any
    upload: Any
    gallery: Any
    fmt: Any
    save: Any
    clip_file: Any
    whatif_btn: Any
    whatif: Any
    gen_inputs: list  # image, example, actions, frames, samples, seed, format
    gen_outputs: list
    gen_btn: Any
    api: dict
    train: Any = None  # the Train tab (genie/serve/train_tab.py), when training is offered


def layout(worlds, keys_html: str, display_size: int, data_dir: Path | None = None) -> Layout:
    """The page for a `WorldSet`, on its default world: the world picker (several worlds only),
    the Play tab (screen, key legend `keys_html`, start frames, undo/reset, download, what-if),
    the Generate tab, and hidden API components."""
    import gradio as gr

    from genie.serve.handlers import GENERATE_MAX_FRAMES
    from genie.serve.html import actions_help, header_md

    world = worlds.default_world
    labels, examples = world.action_labels, world.examples
    title = f"genie · {world.name}" if len(worlds) == 1 else f"genie · {len(worlds)} worlds"
    # Gradio caches every frame the API returns and every clip: drop files older than 30 min
    with gr.Blocks(title=title, delete_cache=CACHE_CLEAN) as demo:
        with gr.Row(equal_height=True):
            header = gr.Markdown(header_md(world))
            picker = gr.Dropdown(
                worlds.names,
                value=worlds.default,
                label="World",
                visible=len(worlds) > 1,
                interactive=True,
                scale=0,
                min_width=200,
                elem_id="genie-world",
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
                        keys_html, elem_id="genie-keys", js_on_load=_asset("playground.js")
                    )
                    with gr.Row():
                        undo = gr.Button("↶ Undo", size="sm", elem_id="genie-undo")
                        reset = gr.Button("⟲ Reset", size="sm", elem_id="genie-reset")
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
                        save = gr.Button("Save clip", size="sm")
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
                        info=actions_help(labels),
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

        train = None
        if data_dir is not None:
            from genie.serve import train_tab

            with gr.Tab("Train"):
                train = train_tab.layout(data_dir)

        with gr.Row(visible=False):  # components behind the HTTP API only
            api = {
                "image": gr.File(label="image", type="filepath", file_types=IMAGE_TYPES),
                "world": gr.Textbox("", label="world"),  # reset's optional world name
                "action": gr.Textbox(label="action"),
                "frame": gr.Image(label="frame", type="numpy", format="png"),
                "info": gr.JSON(label="info"),
                "reset": gr.Button(),
                "step": gr.Button(),
                "undo": gr.Button(),
            }
    return Layout(
        demo=demo,
        header=header,
        world=picker,
        screen=screen,
        status=status,
        keys=keys,
        undo=undo,
        reset=reset,
        upload=upload,
        gallery=gallery,
        fmt=fmt,
        save=save,
        clip_file=clip_file,
        whatif_btn=whatif_btn,
        whatif=whatif,
        gen_inputs=[
            gen_image,
            gen_example,
            gen_actions,
            gen_frames,
            gen_samples,
            gen_seed,
            gen_fmt,
        ],
        gen_outputs=[gen_video, gen_file, gen_status],
        gen_btn=gen_btn,
        api=api,
        train=train,
    )


# ---------------------------------------------------------------------------- the app


def build_demo(
    worlds,
    max_players: int = MAX_PLAYERS,
    seed: int | None = None,
    display_size: int = 384,
    clock: bool = True,
    train_dir: str | Path | None = None,
    data_dir: str | Path = "data",
    train_args: tuple[str, ...] = (),
    **engine_kw,
):
    """The playground for a loaded `World`, a world folder, or a `genie.serve.worlds.WorldSet`
    of several (each browser tab picks its world; the API's `/reset` takes one by name).
    `clock`: offer the game clock (worlds with a "noop" action only; False: the world moves
    only while a key is held). Returns a gr.Blocks with `.sessions`, `.worlds` and `.world`
    (the default world) attached; launch it with `launch(demo, ...)`. `train_dir`: offer the
    Train tab, with jobs and the worlds they train in that folder (datasets offered from
    `data_dir`; `train_args`: more `genie train world` options); worlds trained there before
    are served too."""
    from genie.serve.handlers import Handlers
    from genie.serve.worlds import WorldSet

    worlds = WorldSet.of(worlds)
    jobs = None
    if train_dir is not None:
        from genie.serve.train_tab import training_jobs

        jobs = training_jobs(worlds, train_dir, train_args)
    sessions = Sessions(worlds, max_players=max_players, seed=seed, **engine_kw)
    clean_stale_tmp()
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    h = Handlers(sessions, display_size, tmp, clock=clock)
    ui = layout(worlds, h.keys_html(), display_size, Path(data_dir) if jobs else None)

    hidden = {"show_progress": "hidden", "api_visibility": "private"}
    # Undo, Reset, what-if and the API share `max_players` slots; streams (a held key, a
    # running clock) have their own unbounded pool: each session streams at most once, and a
    # long-lived stream must never hold up its own player's Undo or another player's keys
    per_frame = {"concurrency_limit": max_players, "concurrency_id": "play", **hidden}
    stream = {"concurrency_limit": None, **hidden}
    with ui.demo as demo:
        ui.keys.play(h.press, None, ui.screen, trigger_mode="multiple", **stream)
        ui.keys.pause(h.release, None, None, trigger_mode="multiple", **stream)
        ui.undo.click(h.on_undo, None, [ui.screen, ui.status], **per_frame)
        ui.reset.click(h.on_reset, None, [ui.screen, ui.status], **per_frame)
        ui.upload.upload(h.on_upload, ui.upload, [ui.screen, ui.status], **per_frame)
        ui.gallery.select(h.on_example, None, [ui.screen, ui.status], **per_frame)
        ui.whatif_btn.click(h.on_whatif, None, ui.whatif, **per_frame)
        ui.save.click(h.on_download, ui.fmt, [ui.clip_file, ui.status], **hidden)
        # the new world's header, screen, status, keys, start frames, Generate tab's choices
        switched = [ui.header, ui.screen, ui.status, ui.keys, ui.gallery, *ui.gen_inputs[1:3]]
        ui.world.select(h.on_world, ui.world, switched, **per_frame)
        api, out = ui.api, [ui.api["frame"], ui.api["info"]]
        play = {"concurrency_limit": max_players, "concurrency_id": "play"}
        gen = (ui.gen_inputs, ui.gen_outputs, {"concurrency_limit": 1})  # one clip at a time
        endpoints = [  # name, trigger, function, inputs, outputs, concurrency
            ("reset", api["reset"], h.api_reset, [api["image"], api["world"]], out, play),
            ("step", api["step"], h.api_step, api["action"], out, play),
            ("undo", api["undo"], h.api_undo, None, out, play),
            ("generate", ui.gen_btn, h.generate, *gen),
        ]
        for name, trigger, fn, inputs, outputs, limits in endpoints:
            trigger.click(fn, inputs, outputs, api_name=name, **limits)
        demo.load(h.on_load, None, [ui.screen, ui.status], **hidden)
        demo.unload(h.on_unload)
        if jobs is not None:
            from genie.serve.train_tab import TrainEvents, wire

            events = TrainEvents(jobs, worlds, Path(data_dir), jobs.worlds_dir)
            wire(ui.train, events, ui.world, hidden)

    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    _refuse_bad_inputs_in_one_line(demo)
    _free_the_seat_of_a_call_without_session(demo, sessions)
    demo.sessions, demo.worlds, demo.world = sessions, worlds, worlds.default_world
    demo.jobs = jobs
    return demo


def _refuse_bad_inputs_in_one_line(demo) -> None:
    """Gradio checks inputs before our functions run: a path on the server (not uploaded) is
    refused with a ValueError the player sees as `{"error": null}`, a payload that is not a
    file fails validation the same way, and a wrong file type is a message, but each writes
    a traceback to the log. Make them user errors: the message shown, one line logged."""
    import gradio as gr
    from gradio.exceptions import InvalidPathError
    from pydantic import ValidationError

    from genie.serve.handlers import log_user_error

    preprocess = demo.preprocess_data
    send = "Send a file from your machine instead (gradio_client.handle_file)."

    async def preprocess_data(block_fn, inputs, *args, **kwargs):
        missing = OPTIONAL_INPUTS.get(block_fn.api_name, 0)  # a call from before they existed
        if isinstance(inputs, list) and len(block_fn.inputs) - missing <= len(inputs):
            inputs = inputs + [None] * (len(block_fn.inputs) - len(inputs))
        try:
            return await preprocess(block_fn, inputs, *args, **kwargs)
        except InvalidPathError as e:
            msg = f"refused: {e} {send}"
        except ValidationError as e:
            msg = f"not a file ({e.errors()[0].get('msg', 'invalid input')}). {send}"
        except gr.Error as e:  # Gradio's own message (e.g. a file type not accepted)
            msg = e.message
        log_user_error(msg)
        raise gr.Error(msg, print_exception=False)

    demo.preprocess_data = preprocess_data


def _free_the_seat_of_a_call_without_session(demo, sessions: Sessions) -> None:
    """A raw HTTP call that sends no session hash (`POST /gradio_api/call/step` as curl sends
    it) is a session of its own: Gradio names it after the call's event id. Nothing ever says
    goodbye for it (no page, no heartbeat), so its seat stayed until evicted 2 minutes later
    and a script calling in a loop filled the server. Its seat is freed when the call ends."""
    process = demo.process_api

    async def process_api(*args, **kwargs):
        sid = kwargs.get("session_hash")
        one_call = sid is not None and sid == kwargs.get("event_id")
        try:
            out = await process(*args, **kwargs)
        except BaseException:
            if one_call:
                sessions.free(sid)
            raise
        if one_call and not out.get("is_generating"):  # a stream frees it after its last frame
            sessions.free(sid)
        return out

    demo.process_api = process_api


def clean_stale_tmp(root: Path | None = None, legacy_age_s: float = 3600) -> list[Path]:
    """Delete the temp folders of playgrounds that are gone (killed: atexit never ran).
    A folder names its server's pid; older unnamed ones go once untouched for an hour."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        pid = d.name[len(TMP_PREFIX) :].split("-")[0]
        try:
            stale = (
                not _alive(int(pid))
                if pid.isdigit()
                else time.time() - d.stat().st_mtime > legacy_age_s
            )
        except OSError:
            continue
        if stale and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def launch(demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **kw):
    """Launch with the playground's safe defaults (local only, bounded uploads, no analytics).
    Returns the local URL."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", str(HEARTBEAT_S))
    worlds = getattr(demo, "worlds", None)  # the world picker serves each world's start frames
    if worlds is not None:
        examples = [str(w.root / "examples") for w in worlds.worlds.values()]
        kw["allowed_paths"] = [*kw.get("allowed_paths", []), *examples]
    try:
        _, url, _ = demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            max_file_size=MAX_UPLOAD,
            css=_asset("playground.css"),
            **kw,
        )
    except (OSError, OverflowError) as e:  # what check_address did not foresee
        raise UserError(f"cannot serve on {host}:{port}: {str(e).split('. ')[0]}") from None
    return url
