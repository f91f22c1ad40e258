"""The `genie` command. Each subcommand lives beside the code it drives and registers itself
through `add_cli(subparsers)`; heavy imports (torch, gradio) happen only when it runs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from genie.utils.errors import UserError

# module -> registers these subcommands
COMMAND_MODULES = [
    "genie.data.cli",  # record coinrun|atari, data info|preview
    "genie.data.importer",  # import-videos
    "training.cli",  # train tokenizer|autoencoder|lam|dynamics, plot
    "genie.generate",  # generate
    "genie.serve.cli",  # play
    "genie.eval.cli",  # eval, playtest
    "genie.world.naming",  # name-actions
    "genie.bench",  # bench data|train|play
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genie",
        description="Genie-style generative interactive worlds: record gameplay, train, play.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a part not built yet; never hides a broken import
            if e.name == name:
                continue
            raise
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except UserError as e:
        print(f"genie {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genie {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
