"""The ``convolab`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .explain import render_json, render_text, worked_examples

__all__ = ["main"]


def _explain(args: argparse.Namespace) -> int:
    steps = worked_examples()
    print(render_json(steps) if args.format == "json" else render_text(steps), end="")
    return 0 if all(step.passed for step in steps) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convolab", description="Convolutions of deep learning, shown with numbers.")
    parser.add_argument("--version", action="version", version=f"convolab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="walk through what a convolution computes, with checks")
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.set_defaults(run=_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
