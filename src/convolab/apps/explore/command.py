"""The ``explore`` command: its flags, and running it (``convolab explore``).

Registering the flags loads only this module; the model, the page and the
server load when the command runs, so the other commands start without them.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_explore_parser", "run_explore", "controls_from_args"]

_DESCRIPTION = ("Start a local web app that shows a convolution with your numbers: hover an output to see its window, "
                "its products and its sum, its im2col row and its row of the convolution matrix; the backward view "
                "shows both gradients; the transposed view the spread, padded input. Every number is computed by "
                "convolab. With --output, write a self-contained page of one configuration instead.")

#: Flag (as argparse stores it) -> the control it sets.
_CONTROL_FLAGS = {"size": "size", "channels": "channels", "input": "input", "stride": "stride", "padding": "padding",
                  "dilation": "dilation", "groups": "groups", "padding_mode": "padding_mode",
                  "output_padding": "output_padding", "grad_output": "grad_output"}


def add_explore_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``explore`` to the ``convolab`` subcommands."""
    parser = commands.add_parser("explore", help="an interactive convolution explorer in the browser",
                                 description=_DESCRIPTION)
    case = parser.add_argument_group("the configuration the page opens with (every one can be changed on the page)")
    case.add_argument("--input", help="your numbers, rows split by ';', channels by '|': \"1 2 3; 4 5 6; 7 8 9\"")
    case.add_argument("--size", help="or the numbers 1, 2, 3, ... in an input of this size, 'H,W' (default 5,5)")
    case.add_argument("--channels", help="with --size: the number of input channels (default 1)")
    case.add_argument("--kernel", action="append", help="one filter, written like --input (repeat for more filters)")
    case.add_argument("--stride", help="an int or 'sH,sW'")
    case.add_argument("--padding", help="an int, 'pH,pW', '(lo,hi),(lo,hi)', same, valid or full")
    case.add_argument("--dilation", help="an int or 'dH,dW'")
    case.add_argument("--groups", help="split the channels into this many groups")
    case.add_argument("--padding-mode", help="zeros, reflect, replicate, circular or symmetric")
    case.add_argument("--flip", action="store_true", help="the textbook's true convolution (kernel reversed)")
    case.add_argument("--transposed", action="store_true", help="a transposed convolution")
    case.add_argument("--output-padding", help="with --transposed: extra output size, an int or 'pH,pW'")
    case.add_argument("--grad-output", help="the backward view's grad_output, written like --input (default: ones)")
    serving = parser.add_argument_group("serving")
    serving.add_argument("--host", default=None, help="the address to listen on (default 127.0.0.1: this machine only)")
    serving.add_argument("--port", type=_port, default=None, help="the port (default 8765; 0 picks a free one)")
    serving.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    serving.add_argument("--output", metavar="PAGE.html",
                         help="write a self-contained offline page of this configuration and exit (no server)")
    parser.set_defaults(run=run_explore)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int from 0 to 65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be an int from 0 to 65535, got {port}")
    return port


def controls_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The controls' text the flags give (only those given; the rest keep their defaults).

    >>> ns = argparse.Namespace(input="1 2; 3 4", size=None, channels=None, kernel=["1 0; 0 1", "0 1; 1 0"],
    ...                         stride="2", padding=None, dilation=None, groups=None, padding_mode=None,
    ...                         flip=True, transposed=False, output_padding=None, grad_output=None)
    >>> controls_from_args(ns)
    {'input': '1 2; 3 4', 'stride': '2', 'input_from': 'text', 'kernel': '1 0; 0 1\\n0 1; 1 0', 'flip': '1'}
    """
    if args.input is not None and (args.size is not None or args.channels is not None):
        raise ValueError("explore: give --input (your numbers) or --size/--channels (1, 2, 3, ...), not both")
    controls = {control: getattr(args, flag) for flag, control in _CONTROL_FLAGS.items()
                if getattr(args, flag) is not None}
    if args.input is not None:
        controls["input_from"] = "text"
    if args.kernel:
        controls["kernel"] = "\n".join(args.kernel)
    for flag in ("flip", "transposed"):
        if getattr(args, flag):
            controls[flag] = "1"
    return controls


def run_explore(args: argparse.Namespace) -> int:
    """Write the snapshot (``--output``), or serve the page until Ctrl-C."""
    from .model import problem

    controls = controls_from_args(args)
    if args.output:
        if args.host is not None or args.port is not None or args.no_browser:
            raise ValueError("explore: --host, --port and --no-browser apply to the server; --output writes a page "
                             "and starts none")
        from .page import snapshot_html

        path = Path(args.output)
        path.write_text(snapshot_html(controls), encoding="utf-8")
        print(f"wrote {path}: an offline page of {problem(controls).config.op}, {path.stat().st_size:,} bytes")
        return 0
    problem(controls)  # a bad flag is one line and exit status 2 now, not a page that opens with an error
    from .server import DEFAULT_HOST, DEFAULT_PORT, make_server, serve

    host = DEFAULT_HOST if args.host is None else args.host
    server = make_server(host, DEFAULT_PORT if args.port is None else args.port, controls, quiet=False)
    print(f"convolab explore: serving {server.url} (Ctrl-C to stop)", flush=True)
    if not _is_loopback(host):
        print(f"convolab explore: note: listening on {host}, so other machines on the network can reach the page",
              file=sys.stderr)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(server.url)
    serve(server)
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
