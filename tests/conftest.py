"""Shared test helpers."""

from __future__ import annotations

import os

import pytest

# Tests that assert equality (resumed == uninterrupted, batched == alone, the shipped world's
# frames) are about fp32; the bf16 tests ask for bf16 explicitly (tests/test_precision.py).
os.environ.setdefault("GENIE_PRECISION", "fp32")

import torch

from genie.cli import main


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test starts with the session's torch thread count: one that builds the playground
    in-process (`genie play` sets its default of 1 thread) must not leave every later test,
    training included, on one core."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def genie_cli(capsys):
    """Run `genie ARGS...` in-process: returns (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
