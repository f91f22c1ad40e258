"""The playground's Train tab: upload gameplay videos (or pick a recorded dataset), train a
world in the background, watch it learn, then play it from the world picker of every tab.

The training itself is a `genie.serve.jobs.TrainingJobs` job (`genie train world` in a
background process with a bounded share of the CPU); this module holds the tab's components
and the events that read the job back every 2 s. Every tab shows the server's newest job, so
a closed and reopened tab (or another browser) sees the job that is running.
"""

from __future__ import annotations

import atexit
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIDEO_TYPES = [".mp4", ".webm", ".mkv", ".gif"]
MAX_VIDEO_MB = 200  # all uploads of one job together
MIN_FREE_GB = 2.0  # refuse a job that could fill the disk
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
TICK_S = 2.0


@dataclass
class TrainTab:
    videos: Any
    dataset: Any
    name: Any
    hours: Any
    start: Any
    cancel: Any
    progress: Any
    curve: Any
    sample: Any
    timer: Any


def datasets(data_dir: Path) -> list[str]:
    """Recorded or imported datasets under `data_dir` (folders holding a manifest.json)."""
    if not data_dir.is_dir():
        return []
    return sorted(str(p.parent) for p in data_dir.glob("*/manifest.json"))


def layout(data_dir: Path) -> TrainTab:
    """The tab's components (inside a `gr.Tab` of the page being built)."""
    import gradio as gr

    gr.Markdown(
        "Train a world on gameplay: upload videos (mp4, webm, mkv or gif; "
        f"{MAX_VIDEO_MB} MB in all) or pick a recorded dataset, name the world and give it "
        "some CPU time. It trains in the background (one job at a time, at low priority so "
        "play stays smooth); when it is ready it appears in the world picker of every tab. "
        "Videos without action labels get a latent action model: keys are learned from the video."
    )
    with gr.Row():
        videos = gr.File(
            label="Videos",
            file_count="multiple",
            file_types=VIDEO_TYPES,
            elem_id="genie-train-videos",
        )
        with gr.Column():
            dataset = gr.Dropdown(
                datasets(data_dir), value=None, label="or a recorded dataset", interactive=True
            )
            name = gr.Textbox(
                value="my-world", label="World name", max_lines=1, elem_id="genie-train-name"
            )
            hours = gr.Number(
                value=0.5,
                minimum=0.001,
                maximum=48,
                label="Hours of CPU",
                elem_id="genie-train-hours",
            )
            with gr.Row():
                start = gr.Button("Train", variant="primary", elem_id="genie-train-start")
                cancel = gr.Button("Cancel", elem_id="genie-train-cancel")
    progress = gr.Markdown("No training job yet.", elem_id="genie-train-progress")
    with gr.Row():
        curve = gr.LinePlot(x="step", y="loss", title="training loss", height=220)
        sample = gr.Image(
            label="latest sample (real above generated)", interactive=False, height=220
        )
    timer = gr.Timer(TICK_S)
    return TrainTab(videos, dataset, name, hours, start, cancel, progress, curve, sample, timer)


class TrainEvents:
    """The tab's events over one `TrainingJobs` and the served `WorldSet`."""

    def __init__(self, jobs, worlds, data_dir: Path, worlds_dir: Path):
        self.jobs, self.worlds = jobs, worlds
        self.data_dir, self.worlds_dir = Path(data_dir), Path(worlds_dir)

    def check(self, videos, dataset, name: str, hours) -> str | None:
        """One line saying what is wrong with a request, or None."""
        name = (name or "").strip()
        if not NAME.match(name):
            return "Name the world with lower-case letters, digits, - or _ (up to 40)."
        if name in self.worlds.names or (self.worlds_dir / name).exists():
            return f"There is already a world named '{name}': pick another name."
        if bool(videos) == bool(dataset):
            return "Upload videos or pick a dataset (one of them)."
        if not hours or hours <= 0:
            return "Give it some hours of CPU (e.g. 0.5)."
        for v in videos or []:
            if Path(v).suffix.lower() not in VIDEO_TYPES:
                return f"{Path(v).name} is not a video ({', '.join(VIDEO_TYPES)})."
        if sum(Path(v).stat().st_size for v in videos or []) > MAX_VIDEO_MB * 2**20:
            return f"The videos are larger than {MAX_VIDEO_MB} MB together."
        free = shutil.disk_usage(self.jobs.root).free / 2**30
        if free < MIN_FREE_GB:
            return f"The server's disk has {free:.1f} GB free; a job needs {MIN_FREE_GB:g} GB."
        return None

    def on_start(self, videos, dataset, name, hours):
        problem = self.check(videos, dataset, name, hours)
        if problem:
            return problem
        job = self.jobs.submit(dataset or None, name.strip(), float(hours), videos=videos or None)
        waiting = sum(j.state == "queued" for j in self.jobs.jobs()) - 1
        queue = f" ({waiting} job(s) ahead of it)" if waiting > 0 else ""
        return f"Queued world '{job.name}'{queue}."

    def on_cancel(self):
        job = self.newest()
        if job is None or job.state not in ("queued", "running"):
            return "Nothing to cancel."
        self.jobs.cancel(job.id)
        return f"Cancelled '{job.name}'."

    def newest(self):
        """The job a tab shows: the running one, else the next queued, else the last one."""
        jobs = self.jobs.jobs()
        running = [j for j in jobs if j.state == "running"]
        queued = [j for j in jobs if j.state == "queued"]
        return (running or queued or jobs[-1:] or [None])[0]

    def on_tick(self):
        """Progress text, loss curve, newest sample, and the world picker's choices."""
        import gradio as gr
        import pandas as pd

        picker = gr.update(choices=self.worlds.names, visible=len(self.worlds) > 1)
        job = self.newest()
        if job is None:
            return "No training job yet.", None, None, picker
        st = self.jobs.status(job.id)
        text = f"**{job.name}**: {st['state']}"
        if st.get("part"):
            text += f" · parts {', '.join(st['parts'])} · {st['part']} step {st['step']}"
            text += f" of {st['steps']}" if st.get("steps") else ""
        if st.get("eta_s") is not None and st["state"] == "running":
            text += f" · about {st['eta_s'] / 60:.0f} min left"
        if st["state"] == "failed":
            text += f" · {st['message']}"
        if st["state"] == "done":
            text += " · ready: pick it in the World menu"
        curve = pd.DataFrame(st.get("loss_curve") or [], columns=["step", "loss"])
        return text, curve, st.get("sample"), picker


def wire(tab: TrainTab, events: TrainEvents, picker, hidden: dict) -> None:
    """Connect the tab's components to `events`; the timer also refreshes `picker`."""
    tab.start.click(
        events.on_start, [tab.videos, tab.dataset, tab.name, tab.hours], tab.progress, **hidden
    )
    tab.cancel.click(events.on_cancel, None, tab.progress, **hidden)
    tab.timer.tick(events.on_tick, None, [tab.progress, tab.curve, tab.sample, picker], **hidden)


def training_jobs(worlds, train_dir: str | Path, extra_args: tuple[str, ...] = ()):
    """The Train tab's jobs (TRAIN_DIR/jobs) and the worlds they make (TRAIN_DIR/worlds): those
    trained before are served now, each new one joins the picker when its job is done."""
    from genie.serve.jobs import TrainingJobs
    from genie.utils.errors import UserError
    from genie.world.folder import World

    root = Path(train_dir)
    for folder in sorted((root / "worlds").glob("*/dynamics")):
        try:
            worlds.add(folder.parent.name, World.from_folder(folder.parent))
        except UserError as e:  # a half-trained or broken one: skipped, said in one line
            print(f"note: not serving {folder.parent}: {e}")

    def ready(name: str, world_dir: Path) -> None:
        worlds.add(name, World.from_folder(world_dir))

    jobs = TrainingJobs(root / "jobs", root / "worlds", on_ready=ready, extra_args=extra_args)
    atexit.register(jobs.close)
    return jobs
