"""Training jobs of the Train tab: a queue of one, progress a tab can read back, cancel, and a
job that survives a killed server (a new server resumes it in the part it was in)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from synthetic import write_dataset

from genie.serve.jobs import TrainingJobs
from genie.world.folder import World

FAST = ("--precision", "fp32", "--eval-episodes", "2")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(
        tmp_path_factory.mktemp("d") / "sprites", episodes=6, length=24, val_episodes=2
    )


def wait(predicate, timeout: float = 240.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_job_trains_a_world_that_joins_the_picker_and_a_second_one_waits(data, tmp_path):
    ready = []
    jobs = TrainingJobs(tmp_path / "jobs", tmp_path / "worlds", lambda n, w: ready.append((n, w)),
                        extra_args=FAST, poll_s=0.2)  # fmt: skip
    try:
        first = jobs.submit(data, "mine")
        second = jobs.submit(data, "other")
        wait(lambda: jobs.get(first.id).state == "running", what="the first job to start")
        assert jobs.get(second.id).state == "queued"  # one job at a time
        wait(lambda: jobs.status(first.id).get("loss_curve"), what="a loss curve")
        status = jobs.status(first.id)
        assert status["part"] in ("autoencoder", "dynamics") and status["steps"] >= 1
        jobs.cancel(second.id)
        wait(lambda: jobs.get(first.id).state == "done", what="the first job to finish")
        assert ready == [("mine", tmp_path / "worlds" / "mine")]
        World.from_folder(tmp_path / "worlds" / "mine")  # loads: it can join the picker
        assert jobs.get(second.id).state == "cancelled"
        assert not (tmp_path / "worlds" / "other").exists()  # a cancelled job never started
    finally:
        jobs.close()


@pytest.mark.slow
def test_a_killed_server_and_job_resume_on_the_next_start(data, tmp_path):
    jobs = TrainingJobs(tmp_path / "jobs", tmp_path / "worlds", extra_args=FAST, poll_s=0.2)
    job = jobs.submit(data, "mine")
    ckpt = tmp_path / "jobs" / job.id / "runs" / "mine-world" / "autoencoder" / "checkpoint"
    wait(ckpt.exists, what="the first checkpoint")
    pid = jobs.get(job.id).pid
    jobs._stop.set()  # the server dies: nothing watches any more ...
    os.killpg(pid, signal.SIGKILL)  # ... and the job is killed -9 with it
    jobs._thread.join()
    assert jobs.get(job.id).state == "running"  # as a crashed server leaves it
    ready = []
    again = TrainingJobs(tmp_path / "jobs", tmp_path / "worlds", lambda n, w: ready.append(n),
                         extra_args=FAST, poll_s=0.2)  # fmt: skip
    try:
        wait(lambda: again.get(job.id).state in ("done", "failed"), what="the resumed job")
        assert again.get(job.id).state == "done", again.get(job.id).message
        log = (tmp_path / "jobs" / job.id / "log.txt").read_text()
        assert "resuming" in log and ready == ["mine"]
    finally:
        again.close()


def test_a_failed_job_says_why_in_one_line(tmp_path):
    jobs = TrainingJobs(tmp_path / "jobs", tmp_path / "worlds", poll_s=0.1)
    try:
        job = jobs.submit(tmp_path / "no-such-data", "broken")
        wait(lambda: jobs.get(job.id).state == "failed", timeout=60, what="the failure")
        msg = jobs.get(job.id).message
        assert "no-such-data" in msg and "\n" not in msg
    finally:
        jobs.close()


def _video(path: Path, frames: int) -> Path:
    """A small mp4 of the synthetic sprite world (a video the project did not record)."""
    import imageio.v3 as iio
    from synthetic import make_episode

    clip, _ = make_episode(0, frames, size=64)
    iio.imwrite(path, clip, fps=15, codec="libx264", plugin="pyav")
    return path


@pytest.mark.slow
def test_uploaded_videos_are_imported_then_trained(tmp_path):
    ready = []
    jobs = TrainingJobs(tmp_path / "jobs", tmp_path / "worlds", lambda n, w: ready.append(n),
                        extra_args=("--preset", "tiny", *FAST), poll_s=0.2)  # fmt: skip
    try:
        video = _video(tmp_path / "play.mp4", 80)
        job = jobs.submit(None, "from-video", videos=[video])
        wait(lambda: jobs.get(job.id).state in ("done", "failed"), timeout=400, what="the job")
        assert jobs.get(job.id).state == "done", jobs.get(job.id).message
        plan = json.loads((tmp_path / "worlds" / "from-video" / "train-world.json").read_text())
        assert [p["name"] for p in plan["parts"]] == ["autoencoder", "lam", "dynamics"]  # no labels
        assert ready == ["from-video"]
    finally:
        jobs.close()


@pytest.mark.parametrize("kind", ["not a video", "too short"])
def test_a_bad_upload_fails_in_one_line_and_leaves_no_dataset(tmp_path, kind):
    jobs = TrainingJobs(tmp_path / "jobs", tmp_path / "worlds", poll_s=0.1)
    try:
        if kind == "not a video":
            bad = tmp_path / "clip.mp4"
            bad.write_text("this is not a video")
        else:
            bad = _video(tmp_path / "short.mp4", 10)
        job = jobs.submit(None, "bad", videos=[bad])
        wait(lambda: jobs.get(job.id).state == "failed", timeout=120, what="the failure")
        msg = jobs.get(job.id).message
        assert "\n" not in msg and ("unreadable" in msg or "at least" in msg), msg
        assert not (tmp_path / "jobs" / job.id / "data").exists()
        assert not (tmp_path / "worlds" / "bad").exists()
    finally:
        jobs.close()
