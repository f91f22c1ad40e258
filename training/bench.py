"""`genie bench train`: training throughput of each part at a preset's sizes, on random data.

For each part kind of the registry (tokenizer, lam, dynamics = MaskGIT, diffusion): one
optimizer step (compute_loss, backward, clip, AdamW) on random uint8 frames and actions shaped
like the preset's batches (a dynamics gets them as its `make_batch` makes them, through a
random tokenizer of the preset's size). Reports
frames/s (tokens/s for the dynamics), the model FLOPs of one step (forward + backward,
counted by torch.utils.flop_counter.FlopCounterMode: matmuls, convolutions, attention; no
elementwise ops), the GFLOP/s that makes, and its fraction of this machine's matmul peak in
the same precision, measured here with large matmuls on all threads. Each part is measured in
fp32 and, where this machine runs bf16 fast (`genie.utils.precision`), under bf16 autocast
(attention, norms and losses in fp32, as training runs it), their steps alternating, with the
speed-up beside it. Data
loading and, for the dynamics, the tokenizer/LAM passes that make its batch are not included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from genie.models.registry import KINDS


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", default="coinrun-cpu", help="preset whose sizes to use (default coinrun-cpu)"
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per part (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument(
        "--parts",
        nargs="+",
        choices=list(KINDS),
        default=list(KINDS),
        help="part kinds to measure (default: all of them: tokenizer, autoencoder, lam, dynamics "
        "= MaskGIT, diffusion)",
    )
    p.add_argument(
        "--precision",
        choices=("both", "fp32", "bf16"),
        default="both",
        help="both (default): fp32 and, where this machine runs it fast, bf16 side by side",
    )
    p.add_argument("--json", action="store_true", help="print JSON only")


def build(part: str, preset_name: str):
    """(model, batch, train config) for one part kind at the preset's sizes."""
    import torch

    from genie.models.pretrained import config_from_dict
    from genie.models.registry import kind
    from training import presets

    k = kind(part)
    preset = presets.load(preset_name, part)
    cfg = preset.train
    b, t = cfg.batch_size, cfg.clip_len
    g = torch.Generator().manual_seed(0)
    model_cfg = dict(preset.model)
    tokenizer = None
    if k.slot == "dynamics":  # what the world's frozen parts fix: the preset's tokenizer and LAM
        torch.manual_seed(0)
        tok = kind("tokenizer")
        tokenizer = tok.model_class(
            config_from_dict(tok.config_class, presets.load(preset_name, "tokenizer").model)
        ).eval()
        lam = config_from_dict(kind("lam").config_class, presets.load(preset_name, "lam").model)
        model_cfg.update(k.model_class.fixed_config(tokenizer, lam.num_actions))
    config = config_from_dict(k.config_class, model_cfg)
    torch.manual_seed(0)
    model = k.model_class(config).train()
    s = (tokenizer or model).config.frame_size
    raw = {
        "frames": torch.randint(0, 256, (b, t, s, s, 3), dtype=torch.uint8, generator=g),
        "actions": torch.randint(0, getattr(config, "num_actions", 1), (b, t), generator=g),
    }
    batch = k.model_class.make_batch(raw, tokenizer) if tokenizer is not None else raw
    return model, batch, cfg


def measure(
    part: str, preset_name: str, steps: int, warmup: int, peaks: dict[str, float]
) -> list[dict]:
    """One row per precision in `peaks` (precision -> this machine's matmul peak in it). The
    precisions' steps alternate (one model, one optimizer): a slow spell of a shared host
    slows both alike, so their ratio holds where separate runs drifted by 10-15%."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from genie.utils.precision import autocast

    model, batch, cfg = build(part, preset_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(precision: str) -> None:
        with autocast(precision):
            loss, _ = model.compute_loss(batch)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        loss, _ = model.compute_loss(batch)
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    for _ in range(warmup):
        for p in peaks:
            step(p)
    times: dict[str, list[float]] = {p: [] for p in peaks}
    for _ in range(steps):
        for p in peaks:
            t = time.perf_counter()
            step(p)
            times[p].append(time.perf_counter() - t)
    b, t_ = batch["frames"].shape[:2]
    rows = []
    for p, peak in peaks.items():
        sec = statistics.median(times[p])  # robust to a step slowed down by another process
        row = {
            "part": part,
            "precision": p,
            "params_m": sum(x.numel() for x in model.parameters()) / 1e6,
            "batch": f"{b}x{t_}",
            "s_per_step": sec,
            "frames_per_s": b * t_ / sec,
            "gflop_per_step": flops / 1e9,
            "gflop_per_s": flops / sec / 1e9,
            "fraction_of_peak": flops / sec / 1e9 / peak,
        }
        if hasattr(model.config, "tokens_per_frame"):  # a dynamics: its tokens are its work
            row["tokens_per_s"] = b * t_ * model.config.tokens_per_frame / sec
        rows.append(row)
    return rows


def run(args) -> int:
    import torch

    from genie.utils.errors import UserError
    from genie.utils.precision import bf16_is_fast, matmul_peak_gflops
    from training import presets

    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    presets.load(args.preset, args.parts[0])  # unknown preset -> one-line error before any work
    load = os.getloadavg()[0]  # other processes skew the numbers; reported beside them
    fast, why = bf16_is_fast("cpu")
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if args.precision == "both" and not fast:
        precisions = ["fp32"]  # bf16 would be ~100x slower here: not worth minutes of waiting
    peaks = {"fp32": matmul_peak_gflops()}
    if "bf16" in precisions:
        peaks["bf16"] = matmul_peak_gflops(dtype=torch.bfloat16)
    peaks = {p: peaks[p] for p in precisions}
    rows = [
        row
        for part in args.parts
        for row in measure(part, args.preset, args.steps, args.warmup, peaks)
    ]
    result = {
        "preset": args.preset,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": load,
        "fp32_peak_gflop_per_s": peaks["fp32"],
        "bf16_peak_gflop_per_s": peaks.get("bf16"),
        "bf16": why,
        "steps": args.steps,
        "parts": rows,
        "bf16_speedup": _speedups(rows),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    threads = torch.get_num_threads()
    peak_text = ", ".join(f"{p} matmul peak {v:.0f} GFLOP/s" for p, v in peaks.items())
    print(f"preset {args.preset}, {threads} threads, {peak_text}, load {load:.1f}")
    print(f"bf16: {why}" + ("" if "bf16" in precisions else " (measured in fp32 only)"))
    if load > 0.5 * (os.cpu_count() or 1):
        print("warning: other processes are loading the CPU: these numbers are low")
    cols = ("part", "precision", "params", "batch", "s/step", "frames/s", "tokens/s",
            "GFLOP/step", "GFLOP/s", "of peak", "bf16 x")  # fmt: skip
    print(f"{cols[0]:<12}" + "".join(f"{c:>11}" for c in cols[1:]))
    speed = result["bf16_speedup"]
    for r in rows:
        cells = [
            r["precision"],
            f"{r['params_m']:.2f}M",
            r["batch"],
            f"{r['s_per_step']:.3f}",
            f"{r['frames_per_s']:.1f}",
            f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-",
            f"{r['gflop_per_step']:.2f}",
            f"{r['gflop_per_s']:.1f}",
            f"{r['fraction_of_peak']:.0%}",
            f"{speed[r['part']]:.2f}" if r["precision"] == "bf16" and r["part"] in speed else "",
        ]
        print(f"{r['part']:<12}" + "".join(f"{c:>11}" for c in cells))
    print(json.dumps(result))
    return 0


def _speedups(rows: list[dict]) -> dict[str, float]:
    """part -> bf16 frames/s / fp32 frames/s, for the parts measured in both."""
    by = {(r["part"], r["precision"]): r["frames_per_s"] for r in rows}
    return {
        part: by[(part, "bf16")] / by[(part, "fp32")]
        for part, p in by
        if p == "fp32" and (part, "bf16") in by
    }
