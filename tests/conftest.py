"""Shared test helpers."""

from __future__ import annotations

import pytest

from genie.cli import main


@pytest.fixture
def genie_cli(capsys):
    """Run `genie ARGS...` in-process: returns (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
