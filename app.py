"""The genie playground as a script (e.g. for a Hugging Face Space):

    python app.py --world worlds/coinrun [--world worlds/boxing] [--host 0.0.0.0] [--share]

Same options as `genie play` (genie/serve/cli.py); the app is genie/serve/app.py.
"""

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from genie.serve import cli as play_cli  # noqa: E402
from genie.utils.errors import UserError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Play a genie world in the browser.")
    play_cli.add_args(parser)
    for action in parser._actions:  # --world may come from $GENIE_WORLD (default worlds/coinrun)
        if action.dest == "world":
            action.required = False
    args = parser.parse_args(argv)
    args.world = args.world or [os.environ.get("GENIE_WORLD", "worlds/coinrun")]
    try:
        return play_cli.run(args)
    except UserError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
