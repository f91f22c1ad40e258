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
