"""`genie bench data|train|play`: benchmark commands that print measured numbers."""

from __future__ import annotations

import argparse
import importlib

# subcommand -> (module, help). Each module exposes add_args(parser) and run(args) -> int.
BENCHES = {
    "data": ("genie.data.bench", "clip-loading and recording throughput"),
    "train": ("training.bench", "training throughput, FLOPs and fraction of CPU peak per part"),
    "play": (
        "genie.serve.bench",
        "step latency / frames per second of a world, and in the browser",
    ),
}


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print measured numbers")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    for name, (module_name, help_text) in BENCHES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue
            raise
        bp = bsub.add_parser(name, help=help_text)
        module.add_args(bp)
        bp.set_defaults(func=module.run)
