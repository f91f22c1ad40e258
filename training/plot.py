"""`genie plot RUN_DIR`: training loss and validation metrics against step, one panel each."""

from __future__ import annotations

import math
from pathlib import Path

from genie.utils.errors import UserError
from training.metrics_log import read

SKIP = {"step", "epoch", "elapsed_s"}  # not curves
TRAILING = {"lr", "grad_norm", "frames_per_s", "tokens_per_s"}  # panels after the metrics


def _floats(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key, "")
        if v not in ("", None) and not math.isnan(float(v)):
            xs.append(float(r["step"]))
            ys.append(float(v))
    return xs, ys


def plot(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a PNG of every column of RUN_DIR/metrics.csv against step; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise UserError(f"{path} not found: is {run_dir} a training run folder?")
    header, rows = read(path)
    if not rows:
        raise UserError(f"{path} has no rows yet")
    # train metrics and their val_ twin share a panel
    names = [c for c in header if c not in SKIP and not c.startswith("val_")]
    names += [c[4:] for c in header if c.startswith("val_") and c[4:] not in names]
    names = [n for n in names if _floats(rows, n)[0] or _floats(rows, "val_" + n)[0]]
    names.sort(key=lambda n: (n != "loss", n in TRAILING))  # loss first, bookkeeping last (stable)
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for key, label, style in ((name, "train", "-"), ("val_" + name, "val", "o-")):
            xs, ys = _floats(rows, key)
            if xs:
                ax.plot(xs, ys, style, label=label, markersize=3)
        if name in ("loss", "recon_mse", "vq_loss", "lr") and all(
            v > 0 for v in _floats(rows, name)[1]
        ):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
