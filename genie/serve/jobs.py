"""Training jobs of the playground's Train tab: `genie train world` in a background process.

    jobs = TrainingJobs("runs/jobs", worlds_dir="worlds/trained", on_ready=add_to_picker)
    job = jobs.submit("data/coinrun-sticky", "mine", hours=0.5)
    jobs.status(job.id)       # state, part, step/steps, ETA, loss curve, newest sample strip
    jobs.cancel(job.id)

* One job runs at a time per server; more wait in a queue (first come, first served).
* A job is a folder, `JOBS/<id>/` (job.json: what it trains and its state; log.txt: its
  output), so it outlives the browser tab that started it: any tab reads it back.
* A server restart resumes it: `TrainingJobs(...)` finds jobs left "running" or "queued" and
  starts them again, with `--resume` when they had begun (`genie train world --resume` carries
  on in the part it was in, from its last checkpoint).
* The job gets a bounded share of the CPU, so play stays real-time: one torch thread
  (OMP_NUM_THREADS=1) and the lowest scheduling priority (nice 19): on a 2-core machine the
  players keep the other core and whatever the job leaves.
* When a job finishes, `on_ready(name, world_dir)` adds the world to the picker of every tab.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "cancelled")
JOB_THREADS = 1  # torch threads of a training job
JOB_NICE = 19  # scheduling priority of a training job (lowest)


@dataclass
class Job:
    id: str
    data: str
    name: str  # the world's name in the picker (its folder under worlds_dir)
    world: str
    hours: float | None
    state: str = "queued"
    started: bool = False  # has run at least once (a restart resumes it)
    created: float = field(default_factory=time.time)
    message: str = ""  # the last line of a failure, or "cancelled"
    pid: int | None = None
    videos: list[str] = field(default_factory=list)  # uploads to import first (data: JOB/data)


class TrainingJobs:
    def __init__(
        self,
        root: str | Path,
        worlds_dir: str | Path,
        on_ready: Callable[[str, Path], None] | None = None,
        extra_args: tuple[str, ...] = (),
        poll_s: float = 1.0,
    ):
        self.root, self.worlds_dir = Path(root), Path(worlds_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.on_ready, self.extra_args, self.poll_s = on_ready, tuple(extra_args), poll_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._current: str | None = None
        self._stop = threading.Event()
        for job in self.jobs():  # a restart: what was running or waiting runs again
            if job.state == "running":
                self._save(job, state="queued", pid=None)
        self._thread = threading.Thread(target=self._loop, name="training-jobs", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the queue

    def submit(
        self,
        data: str | Path | None,
        name: str,
        hours: float | None = None,
        videos: list[str | Path] | None = None,
    ) -> Job:
        """Queue a world to train on a dataset folder, or on videos imported first (the job
        copies them into its folder: the upload's temporary files may go away)."""
        job_id = uuid.uuid4().hex[:8]
        folder = self.root / job_id
        kept = []
        if videos:
            (folder / "uploads").mkdir(parents=True, exist_ok=True)
            for i, v in enumerate(videos):
                dst = folder / "uploads" / f"{i:02d}-{Path(v).name}"
                shutil.copyfile(v, dst)
                kept.append(str(dst))
            data = folder / "data"
        world = self.worlds_dir / name
        job = Job(job_id, str(data), name, str(world), hours, videos=kept)
        self._save(job)
        return job

    def jobs(self) -> list[Job]:
        out = []
        for path in sorted(self.root.glob("*/job.json")):
            try:
                out.append(Job(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # a half-written or foreign file is not a job
        return sorted(out, key=lambda j: j.created)

    def get(self, job_id: str) -> Job | None:
        path = self.root / job_id / "job.json"
        return Job(**json.loads(path.read_text())) if path.is_file() else None

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self.get(job_id)
            if job is None or job.state not in ("queued", "running"):
                return
            if self._current == job_id and self._proc is not None:
                os.killpg(self._proc.pid, signal.SIGTERM)  # the job and its workers
            self._save(job, state="cancelled", message="cancelled")

    def close(self) -> None:
        """Stop watching (the server stops); a running job is stopped and resumes next time."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._proc is not None and self._proc.poll() is not None:
                    self._finished(self._proc.returncode)
                if self._proc is None:
                    nxt = next((j for j in self.jobs() if j.state == "queued"), None)
                    if nxt is not None:
                        self._start(nxt)
            self._stop.wait(self.poll_s)

    def _start(self, job: Job) -> None:
        cmd = [sys.executable, "-m", "genie.serve.jobs", str(self.root / job.id), *self.extra_args]
        env = dict(os.environ, OMP_NUM_THREADS=str(JOB_THREADS), GRADIO_ANALYTICS_ENABLED="False")
        log = open(self.root / job.id / "log.txt", "a")
        self._proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: cancel stops all of it
            preexec_fn=lambda: os.nice(JOB_NICE),
        )
        log.close()
        self._current = job.id
        self._save(job, state="running", started=True, pid=self._proc.pid)

    def _finished(self, rc: int) -> None:
        job = self.get(self._current)
        self._proc, self._current = None, None
        if job is None or job.state == "cancelled":
            return
        if rc == 0:
            if self.on_ready is not None:  # in the picker before any tab reads "done"
                self.on_ready(job.name, Path(job.world))
            self._save(job, state="done", pid=None)
        elif self._stop.is_set():
            self._save(job, state="queued", pid=None)  # stopped with the server: resume later
        else:
            self._save(
                job, state="failed", pid=None, message=_last_line(self.root / job.id / "log.txt")
            )

    def _save(self, job: Job, **changes) -> None:
        for k, v in changes.items():
            setattr(job, k, v)
        folder = self.root / job.id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(asdict(job), indent=2) + "\n")
        tmp.replace(folder / "job.json")  # never half-written

    # ------------------------------------------------------------------ what a tab shows

    def status(self, job_id: str) -> dict:
        """State, the part being trained, step / steps, ETA, loss curve (step, loss) and the
        newest sample strip of a job."""
        job = self.get(job_id)
        if job is None:
            return {"state": "unknown"}
        out: dict = {"state": job.state, "name": job.name, "message": job.message}
        plan_path = Path(job.world) / "train-world.json"
        if not plan_path.is_file():
            return out
        plan = json.loads(plan_path.read_text())
        parts = plan["parts"]
        current = next((p for p in parts if not p["done"]), parts[-1])
        out["parts"] = [f"{p['name']}{' (done)' if p['done'] else ''}" for p in parts]
        out["part"] = current["name"]
        rows = _rows(Path(current["run_dir"]) / "metrics.csv")
        steps = current.get("steps")
        step = int(rows[-1]["step"]) if rows else 0
        out.update(step=step, steps=steps)
        curve = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
        out["loss_curve"] = curve
        elapsed = [float(r["elapsed_s"]) for r in rows if r.get("elapsed_s")]
        if steps and elapsed and step > 0:
            left = elapsed[-1] / step * (steps - step)
            todo = [p for p in parts if not p["done"] and p is not current]
            left += sum(p.get("seconds") or 0 for p in todo)
            out["eta_s"] = round(left)
        samples = sorted((Path(current["run_dir"]) / "samples").glob("*.png"))
        out["sample"] = str(samples[-1]) if samples else None
        return out


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("step")]


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return "failed"
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["failed"])[-1][:300]


# ---------------------------------------------------------------------------- the job process

MIN_FRAMES = 64  # imported videos shorter than this in all make no world


def train_command(job_dir: Path, job: Job, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "genie", "train", "world", "--data", job.data, "--world",
           job.world, "--runs", str(job_dir / "runs"), *extra]  # fmt: skip
    if job.hours:
        cmd += ["--hours", str(job.hours)]
    if (Path(job.world) / "train-world.json").is_file():
        cmd.append("--resume")  # it had begun: carry on in the part it was in
    return cmd


def run_job(job_dir: Path, extra: list[str]) -> int:
    """What a job's process does: import the uploaded videos (once; a failed import leaves no
    dataset behind), then become `genie train world`."""
    job = Job(**json.loads((job_dir / "job.json").read_text()))
    data = Path(job.data)
    if job.videos and not (data / "manifest.json").is_file():
        from genie.data.format import open_dataset
        from genie.data.importer import import_videos
        from genie.utils.errors import UserError

        try:
            val = 0.1 if len(job.videos) >= 5 else 0.0  # a few videos: all train (validated on it)
            res = import_videos(job.videos, data, 64, None, None, val, 0.0, True)
            frames = open_dataset(data).num_frames if (data / "manifest.json").is_file() else 0
            if frames < MIN_FRAMES:
                skipped = (
                    f" ({len(res.skipped)} unreadable: {', '.join(res.skipped)})"
                    if res.skipped
                    else ""
                )
                raise UserError(
                    f"the uploads hold {frames} video frames{skipped}; a world needs at least "
                    f"{MIN_FRAMES}: upload longer videos"
                )
        except (UserError, OSError) as e:
            shutil.rmtree(data, ignore_errors=True)  # nothing half-written is left
            print(f"error: {e}", flush=True)
            return 2
        print(f"imported {res.imported} videos ({res.frames:,} frames)", flush=True)
    cmd = train_command(job_dir, job, extra)
    os.execv(cmd[0], cmd)  # the same process (and process group) trains


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1]), sys.argv[2:]))
