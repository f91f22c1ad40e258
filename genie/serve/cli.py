"""`genie play`: the command line of the playground (genie/serve/app.py builds the app).

    genie play --world worlds/coinrun [--host 0.0.0.0] [--port 7860] [--max-players 8]
    genie play --world worlds/coinrun --world worlds/boxing     # a world picker on the page
    genie play --world worlds/ [--default-world boxing]         # every world folder in worlds/

Every option is checked, and the address tried, before the world loads, so a mistake ends
in one line and exit 2 within a second; players' mistakes while it runs are one line each in
its log (genie/serve/handlers.py), bugs keep their tracebacks.
"""

import argparse
import errno
import logging
import os
import signal
import socket
import sys

from genie.serve.sessions import MAX_PLAYERS
from genie.utils.errors import UserError
from genie.utils.precision import PRECISIONS


def check_address(host: str, port: int) -> None:
    """One line, before the world loads, when `genie play` could not listen on host:port."""
    anywhere = (
        "use 127.0.0.1 (this machine only), 0.0.0.0 (every network) or an address of this machine"
    )
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: use a port in 1..65535 (default 7860)")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise UserError(f"--host {host}: no such host; {anywhere}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is in use (another genie play?): "
                    "stop it or pick another --port"
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise UserError(
                    f"--host {host} is not an address of this machine; {anywhere}"
                ) from None
            if e.errno == errno.EACCES:
                raise UserError(
                    f"port {port} needs administrator rights: use a port above 1023"
                ) from None
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror})") from None


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--world",
        action="append",
        required=True,
        metavar="WORLD",
        help="world folder (tokenizer/, dynamics/, world.json, examples/), or a folder of world "
        "folders; repeat to serve several (players pick one on the page; each is known by its "
        "folder name)",
    )
    p.add_argument(
        "--default-world",
        metavar="NAME",
        help="the world new players start in (default: the first given; for a folder of "
        "worlds, its first by name)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    p.add_argument(
        "--max-players",
        type=int,
        default=MAX_PLAYERS,
        help=f"live sessions at once (default {MAX_PLAYERS})",
    )
    p.add_argument(
        "--seed", type=int, help="seed every session the same (default: a random seed per session)"
    )
    p.add_argument("--steps", type=int, help="MaskGIT steps per frame (default: the world's)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the world's)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per step (default 1: steady latency while the server, the browser "
        "and other players share the CPU; on a 2-core machine 2 threads stall badly under load)",
    )
    p.add_argument(
        "--size", type=int, default=384, help="displayed frame size in pixels (default 384)"
    )
    p.add_argument(
        "--train-dir",
        default="runs/playground",
        help="the Train tab's jobs and the worlds they train (default runs/playground; worlds "
        "trained there before are served too)",
    )
    p.add_argument("--no-train", dest="train", action="store_false", help="no Train tab")
    p.add_argument(
        "--data-dir", default="data", help="datasets the Train tab offers (default data/)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (default; GENIE_PRECISION overrides): bf16 autocast where this CPU runs it "
        "faster than fp32, else fp32",
    )
    p.add_argument(
        "--no-clock",
        dest="clock",
        action="store_false",
        help="no game clock: the world moves only while a key is held, even when it has a "
        "noop action (default: worlds with a noop keep running while no key is held)",
    )


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="play a world in the browser (Gradio playground + HTTP API)")
    add_args(p)
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options in one line before anything loads."""
    if args.max_players < 1:
        raise UserError(f"--max-players must be >= 1, got {args.max_players}")
    if args.temperature is not None and args.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (0: greedy), got {args.temperature}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if not 16 <= args.size <= 2048:
        raise UserError(f"--size must be 16..2048 pixels, got {args.size}")
    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    from genie.serve.worlds import resolve_worlds

    resolve_worlds(args.world, args.default_world)  # names and folders, before any loads


def make_demo(args: argparse.Namespace):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    check_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from genie.serve.app import build_demo
    from genie.serve.worlds import WorldSet

    # each world loads once, shared by every player; a bad one fails here, before any server
    worlds = WorldSet.load(args.world, args.default_world)
    return build_demo(
        worlds,
        max_players=args.max_players,
        seed=args.seed,
        display_size=args.size,
        clock=args.clock,
        steps=args.steps,
        temperature=args.temperature,
        precision=args.precision,
        train_dir=args.train_dir if args.train else None,
        data_dir=args.data_dir,
    )


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _log_to_stderr() -> None:
    """Players' mistakes go to the server's stderr as one line each (genie.serve.handlers)."""
    log = logging.getLogger("genie.play")
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s genie play: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def run(args: argparse.Namespace) -> int:
    check_args(args)
    check_address(args.host, args.port)  # before the world loads: fail in a second
    demo = make_demo(args)
    names = demo.worlds.names
    what = (
        names[0] if len(names) == 1 else f"{', '.join(names)} (new players: {demo.worlds.default})"
    )
    print(f"genie play: {what} at http://{args.host}:{args.port} (Ctrl+C to stop)")
    from genie.serve.app import launch

    _log_to_stderr()
    # `kill` (SIGTERM, as service managers stop a server) ends it like Ctrl+C: Gradio closes
    # the server and atexit removes the temp folder (only kill -9 leaves one, for the next start)
    signal.signal(signal.SIGTERM, _interrupt)
    launch(demo, host=args.host, port=args.port, share=args.share)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
