"""RUN_DIR/metrics.csv: one row per logged step (train metrics, and val_* metrics on
evaluation steps). The header grows when a new column appears; rows past a resumed
checkpoint's step are dropped so a resumed run's curve continues where it left off."""

from __future__ import annotations

import csv
import math
from pathlib import Path

FIRST = ["step", "epoch", "lr", "loss"]
LAST = ["frames_per_s", "tokens_per_s", "elapsed_s"]


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _order(columns: set[str]) -> list[str]:
    middle = sorted(
        c for c in columns if c not in FIRST and c not in LAST and not c.startswith("val_")
    )
    val = sorted(c for c in columns if c.startswith("val_"))
    return [c for c in FIRST if c in columns] + middle + val + [c for c in LAST if c in columns]


def _write(path: Path, header: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path
        self.header, _ = read(path)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (they belong to steps a resumed run will redo)."""
        header, rows = read(self.path)
        if rows:
            _write(self.path, header, [r for r in rows if int(r["step"]) <= step])

    def append(self, row: dict[str, float]) -> None:
        row = {k: _fmt(v) for k, v in row.items()}
        if not set(row) <= set(self.header):
            header, rows = read(self.path)
            self.header = _order(set(header) | set(row))
            _write(self.path, self.header, rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.header, extrasaction="ignore").writerow(row)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class RunningMeans:
    """One process's training metrics since the last log row, and its throughput counts.

    `row` averages them over the steps and the processes; the pending sums travel in the
    checkpoint (`state_dict`), so after --resume the first row averages the same steps an
    uninterrupted run's would, not only those after the resume."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.steps, self.frames, self.tokens, self.busy_s = 0, 0, 0, 0.0

    def add(self, metrics: dict[str, float], frames: int, tokens: int, seconds: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.steps, self.frames, self.tokens = (
            self.steps + 1,
            self.frames + frames,
            self.tokens + tokens,
        )
        self.busy_s += seconds  # spent training (not evaluating)

    def row(self, accelerator) -> tuple[dict[str, float], dict[str, float]]:
        """(metric means over steps and processes, {frames_per_s[, tokens_per_s]}); then starts
        over. Every process must call it (it all-reduces)."""
        import torch

        keys = sorted(self.sums)
        means = torch.tensor([self.sums[k] / self.steps for k in keys], device=accelerator.device)
        means = accelerator.reduce(means, "mean")
        counts = torch.tensor(
            [self.frames, self.tokens, self.busy_s], device=accelerator.device, dtype=torch.float64
        )
        counts = accelerator.reduce(counts, "sum")
        busy_s = counts[2].item() / accelerator.num_processes
        speed = {"frames_per_s": counts[0].item() / busy_s}
        if counts[1].item() > 0:
            speed["tokens_per_s"] = counts[1].item() / busy_s
        self.__init__()
        return dict(zip(keys, means.tolist(), strict=True)), speed

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
