"""bf16 where this machine runs it fast, fp32 elsewhere: decided here, never assumed.

On a CPU with bf16 dot-product units (avx512_bf16 or AMX) bf16 matmuls run several times
faster than fp32; on one without them PyTorch emulates bf16 and matmuls run about 100x
slower (docs/DESIGN.md, compute facts). So "auto" asks the CPU's flags first and then times
one small matmul in each precision (well under a second), and picks bf16 only if it measured
faster. GPUs: bf16 where CUDA says the GPU supports it.

    precision, why = resolve_precision("auto", "cpu")   # ("bf16", "this CPU has avx512_bf16; ...")
    with autocast(precision, "cpu"): ...

`GENIE_PRECISION=fp32|bf16|auto` sets the default of every `--precision` option (the test suite
pins fp32 so its equality tests stay exact).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

PRECISIONS = ("auto", "bf16", "fp32")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the units that make bf16 fast
MIN_SPEEDUP = 1.3  # bf16 must beat fp32 by this much on the probe to be chosen


def default_precision() -> str:
    value = os.environ.get("GENIE_PRECISION", "auto").lower()
    return value if value in PRECISIONS else "auto"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def matmul_gflops(dtype, m: int = 512, k: int = 768, n: int = 768, seconds: float = 0.1) -> float:
    """Best GFLOP/s of one (m x k) @ (k x n) product in `dtype` on torch's threads, timed for
    about `seconds`."""
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm up (kernel selection)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype=None) -> float:
    """Best GFLOP/s of an n x n matmul in `dtype` (default fp32) on all of torch's threads: the
    peak `genie bench` reports training and play as a fraction of."""
    import torch

    dtype = dtype or torch.float32
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


@functools.cache
def bf16_is_fast(device_type: str = "cpu") -> tuple[bool, str]:
    """(bf16 is faster than fp32 here, one line saying why)."""
    import torch

    if device_type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "the GPU supports bf16" if ok else "the GPU has no bf16"
    if device_type != "cpu":
        return False, f"no bf16 probe for {device_type}"
    units = sorted(set(BF16_FLAGS) & cpu_flags())
    if not units:
        return False, "this CPU has no bf16 units (avx512_bf16/amx_bf16): bf16 would be far slower"
    fp32 = matmul_gflops(torch.float32, seconds=0.05)
    bf16 = matmul_gflops(torch.bfloat16, seconds=0.05)
    fast = bf16 > MIN_SPEEDUP * fp32
    probe = f"bf16 matmul {bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s"
    return fast, f"this CPU has {'/'.join(units)}; {probe}"


def resolve_precision(requested: str, device_type: str = "cpu") -> tuple[str, str]:
    """'auto' | 'bf16' | 'fp32' -> ('bf16' | 'fp32', the log line that says why)."""
    if requested not in PRECISIONS:
        from genie.utils.errors import UserError

        raise UserError(f"unknown precision '{requested}' (use one of {', '.join(PRECISIONS)})")
    if requested == "fp32":
        return "fp32", "precision fp32 (asked for)"
    fast, why = bf16_is_fast(device_type)
    if requested == "bf16":
        note = "" if fast else " (warning: slower than fp32 here)"
        return "bf16", f"precision bf16 (asked for; {why}){note}"
    return ("bf16" if fast else "fp32"), f"precision {'bf16' if fast else 'fp32'} (auto: {why})"


def autocast(precision: str, device_type: str = "cpu"):
    """bf16 autocast for 'bf16', nothing for 'fp32'. Matmuls and convs run in bf16; the models
    keep attention (on a CPU), norms and losses in fp32."""
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def cast_for_autocast(module, precision: str):
    """`module` as it runs inference under `autocast(precision)`, with the casts autocast makes
    on every call made once: for "bf16" on a CPU, a copy whose Linear and Conv weights and
    biases are already bf16 (autocast casts them again in every call; on the shipped CoinRun
    world that was about 3 ms of a 35 ms played frame). The outputs are the same bit for bit:
    autocast rounds the fp32 weights the same way. Use the copy under autocast only (its
    weights are bf16). fp32, or a module off the CPU: the module itself."""
    import copy

    import torch
    from torch import nn

    if precision != "bf16" or any(p.device.type != "cpu" for p in module.parameters()):
        return module
    module = copy.deepcopy(module).requires_grad_(False)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            m.to(torch.bfloat16)
    return module
