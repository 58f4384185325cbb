"""The ``convolab`` command line: ``explain``, ``animate``, ``draw``, ``gallery``, ``train`` and ``bench``.

``explain``, ``animate`` and ``draw`` share the flags that describe a case
(``--input``, ``--kernel``, ``--stride``...); with none of them, they use the
standard examples. The steps come from :mod:`convolab.show.explain`; this module
only parses text into a :class:`~convolab.show.explain.Case` and picks a renderer.

What the user typed is never answered with a traceback: a number the CLI cannot
represent, a flag that does not apply, a case too large to walk through (see
:data:`convolab.show.explain.MAX_CELLS` and its neighbours, checked before anything
is computed) or a file that cannot be read is one line,
``convolab <command>: error: <message>``, and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from . import __version__

__all__ = ["main", "build_parser", "parse_matrix", "parse_ints", "parse_padding"]


class UsageError(Exception):
    """A flag's value could not be used: reported on stderr with exit status 2."""


# -- parsing the case -----------------------------------------------------------------------------


def parse_matrix(text: str, flag: str) -> np.ndarray:
    """``"1 2 3; 4 5 6"`` (rows split by ``;``, channels by ``|``) as a ``(C, H, W)`` array.

    Integers stay integers (exact results); any decimal point makes it float64.

    >>> parse_matrix("1 2; 3 4 | 5 6; 7 8", "--input").shape
    (2, 2, 2)
    """
    channels = []
    for channel_text in text.split("|"):
        rows = [row.replace(",", " ").split() for row in channel_text.split(";") if row.strip()]
        if not rows:
            raise UsageError(f"{flag}: {_short(text)} has an empty channel; write rows as '1 2 3; 4 5 6'")
        if len({len(row) for row in rows}) != 1:
            raise UsageError(f"{flag}: {_short(text)} has rows of different lengths {[len(r) for r in rows]}; "
                             "every row needs the same number of values")
        channels.append(rows)
    if len({(len(c), len(c[0])) for c in channels}) != 1:
        raise UsageError(f"{flag}: {_short(text)} has channels of different shapes; channels (split by '|') "
                         "must match")
    words = [word for channel in channels for row in channel for word in row]
    bad = next((word for word in words if not _is_number_word(word)), None)
    if bad is not None:
        raise UsageError(f"{flag}: {bad!r} in {_short(text)} is not a number")
    if all(_is_integer_word(word) for word in words):
        numbers = [int(word) for word in words]
        too_large = next((n for n in numbers if not INT64_MIN <= n <= INT64_MAX), None)
        if too_large is not None:  # NumPy would raise OverflowError; a float would silently round it
            raise UsageError(f"{flag}: {too_large} in {_short(text)} does not fit int64 (integers from -2**63 to "
                             "2**63 - 1 stay exact); write it with a decimal point to use float64")
        values = np.array(numbers, dtype=np.int64)
    else:
        # A written number past float64's range would become infinity: say so rather than compute with it.
        overflow = next((word for word in words if np.isinf(float(word)) and "inf" not in word.lower()), None)
        if overflow is not None:
            raise UsageError(f"{flag}: {overflow!r} in {_short(text)} is outside float64's range (magnitudes up to "
                             f"{np.finfo(np.float64).max:.6g})")
        values = np.array([float(word) for word in words], dtype=np.float64)
    return values.reshape(len(channels), len(channels[0]), len(channels[0][0]))


INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)

#: Flag values longer than this are cut short in error messages (an input can be thousands of numbers).
SHOWN_CHARS = 60


def _short(text: Any) -> str:
    """``repr(text)``, cut to :data:`SHOWN_CHARS` characters with '...' when longer."""
    shown = repr(text)
    return shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS - 4] + "...'"


def _is_integer_word(word: str) -> bool:
    try:
        int(word)
    except ValueError:
        return False
    return True


def _is_number_word(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _load_array(path: str, flag: str) -> np.ndarray:
    try:
        array = np.load(path) if path.endswith(".npy") else np.loadtxt(path, ndmin=2)
    except (OSError, ValueError, EOFError) as error:
        raise UsageError(f"{flag}: cannot read {path!r}: {error}") from None
    if array.dtype.kind not in "biuf":  # complex, strings, dates: no real numbers to explain
        raise UsageError(f"{flag}: {path!r} holds {array.dtype} values; it must hold real numbers "
                         "(booleans, integers or floats)")
    return array.astype(np.int64) if array.dtype.kind == "b" else array  # a mask is 0s and 1s


def _literal(text: str, flag: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):  # the last two: absurdly nested text
        raise UsageError(f"{flag}: {_short(text)} is not an int or a tuple such as '2' or '2,1'") from None


def parse_ints(text: str, flag: str) -> int | tuple[int, ...]:
    """``"2"`` or ``"2,1"`` as an int or a tuple of ints.

    >>> parse_ints("2,1", "--stride")
    (2, 1)
    """
    value = _literal(text, flag)
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, bool) or not (isinstance(value, int) or
                                       (isinstance(value, tuple) and all(isinstance(v, int) for v in value))):
        raise UsageError(f"{flag}: {_short(text)} must be an int or comma-separated ints")
    return value


def parse_padding(text: str) -> Any:
    """``"1"``, ``"1,2"``, ``"(1,2),(0,1)"`` (low, high pairs), ``"same"``, ``"valid"`` or ``"full"``.

    >>> parse_padding("(0,1),(1,1)")
    ((0, 1), (1, 1))
    >>> parse_padding("same")
    'same'
    """
    if text.strip() in ("same", "valid", "full"):
        return text.strip()
    value = _literal(text, "--padding")
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _case_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~convolab.show.explain.Case` the flags describe, or None for the standard examples.

    Case flags without --input and --kernel (``--transposed``, ``--stride 2``...) apply to the classic
    example's input and kernel. A flag that would change nothing is an error rather than silently ignored.
    """
    from .show.explain import Case, standard_cases

    for text_flag, file_flag in (("input", "input_file"), ("kernel", "kernel_file")):
        if getattr(args, text_flag) and getattr(args, file_flag):
            raise UsageError(f"give --{text_flag} or --{file_flag.replace('_', '-')}, not both")
    if args.output_padding is not None and not args.transposed:
        raise UsageError(f"--output-padding {_short(args.output_padding)}: applies only to a transposed "
                         "convolution; add --transposed or drop it")
    given = [args.input, args.input_file, args.kernel, args.kernel_file]
    name = "yours"
    if not any(given):
        case_flags = ("stride", "padding", "dilation", "groups", "transposed", "output_padding")
        if not any(getattr(args, flag) is not None and getattr(args, flag) is not False for flag in case_flags):
            return None
        # Flags alone apply to the classic example, 1..9 under [[9, 8], [7, 6]]: `--transposed` or `--stride 2`
        # then shows what that flag does to numbers the walk-through has already taken apart.
        classic = standard_cases()["classic"]
        name, image, weight = "classic", classic.input, classic.weight
    elif not (args.input or args.input_file) or not (args.kernel or args.kernel_file):
        raise UsageError("give both --input (or --input-file) and --kernel (or --kernel-file)")
    else:
        image, weight = _arrays_from_args(args)
    params = dict(stride=parse_ints(args.stride, "--stride") if args.stride else 1,
                  padding=parse_padding(args.padding) if args.padding else 0,
                  dilation=parse_ints(args.dilation, "--dilation") if args.dilation else 1,
                  groups=1 if args.groups is None else args.groups)  # --groups 0 goes to the op, which refuses it
    if args.transposed:
        params["output_padding"] = parse_ints(args.output_padding, "--output-padding") if args.output_padding else 0
    try:
        return Case(name, image, weight, transposed=args.transposed, **params)
    except (ValueError, TypeError) as error:
        # The library's message names the parameter ("conv2d: weight must fit ..."); say which flag set it.
        match = re.match(r"^[\w.]+: (\w+) ", str(error))
        flag = _FLAG_FOR.get(match.group(1) if match else "")
        if flag is None:  # the output, the multiply-adds...: no one flag set it, and the message names it
            raise UsageError(str(error)) from None
        value = {"--input": args.input or args.input_file, "--kernel": " / ".join(args.kernel or [])
                 or args.kernel_file}.get(flag) or getattr(args, flag[2:].replace("-", "_"), None)
        raise UsageError(f"{flag} {_short(value)}: {error}") from None


def _arrays_from_args(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The input ``(C, H, W)`` and weight ``(C_out, C_in/groups, kH, kW)`` the flags give, in one dtype."""
    image = parse_matrix(args.input, "--input") if args.input else _load_array(args.input_file, "--input-file")
    if image.ndim == 2:
        image = image[np.newaxis]
    if args.kernel:
        kernels = [parse_matrix(text, "--kernel") for text in args.kernel]
        if len({k.shape for k in kernels}) != 1:
            raise UsageError(f"--kernel: every kernel needs the same shape, got {[k.shape for k in kernels]}")
        weight = np.stack(kernels)  # one filter per --kernel: (C_out, channels, kH, kW)
    else:
        weight = _load_array(args.kernel_file, "--kernel-file")
        weight = weight.reshape((1,) * (4 - weight.ndim) + weight.shape) if weight.ndim < 4 else weight
    if image.dtype != weight.dtype:  # e.g. one of them has decimals: both float64
        common = np.result_type(image.dtype, weight.dtype)
        image, weight = image.astype(common), weight.astype(common)
    return image, weight


#: A library error names the parameter; this is the flag that set it.
_FLAG_FOR = {"input": "--input", "weight": "--kernel", "stride": "--stride", "padding": "--padding",
             "dilation": "--dilation", "groups": "--groups", "output_padding": "--output-padding"}


def _add_case_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the case (default: the standard examples; flags without --input and --kernel "
                                              "apply to the classic example, 1..9 under [[9, 8], [7, 6]])")
    group.add_argument("--input", help="the input, rows split by ';', channels by '|': \"1 2 3; 4 5 6; 7 8 9\"")
    group.add_argument("--input-file", help="the input from a .npy or text file, (H, W) or (C, H, W)")
    group.add_argument("--kernel", action="append",
                       help="one filter, written like --input (repeat for more filters, '|' for its channels)")
    group.add_argument("--kernel-file", help="the weight from a .npy or text file, (C_out, C_in/groups, kH, kW)")
    group.add_argument("--stride", help="an int or 'sH,sW'")
    group.add_argument("--padding", help="an int, 'pH,pW', '(lo,hi),(lo,hi)', same, valid or full")
    group.add_argument("--dilation", help="an int or 'dH,dW'")
    group.add_argument("--groups", type=int, help="split the channels into this many groups")
    group.add_argument("--transposed", action="store_true",
                       help="a transposed convolution (weight is (C_in, C_out/groups, kH, kW))")
    group.add_argument("--output-padding", help="with --transposed: extra output size, an int or 'pH,pW'")


# -- the commands ---------------------------------------------------------------------------------


def _explain(args: argparse.Namespace) -> int:
    from .show._format import terminal_width
    from .show.explain import DEFAULT_TOPICS, explain, render_json, render_markdown, render_rich, render_text

    case = _case_from_args(args)
    at = parse_ints(args.at, "--at") if args.at else None
    if at is not None and not isinstance(at, tuple):
        raise UsageError("--at: give the output element as 'c_out,row,col'")
    if at is not None and case is None:
        raise UsageError(f"--at {_short(args.at)}: chooses an element of your own case; give --input and --kernel "
                         "(the standard examples take their own elements apart)")
    if at is not None and "dot" not in (args.topics or (("slide",) if case.transposed else DEFAULT_TOPICS)):
        raise UsageError(f"--at {_short(args.at)}: chooses the element the dot topic takes apart; add the topic "
                         "'dot' or drop --at")
    explanation = explain(case, args.topics or None, at=at)
    style = args.format
    if style == "auto":
        style = "rich" if sys.stdout.isatty() and _has_rich() else "text"
    if style == "rich":
        render_rich(explanation, verbose=args.verbose)
    elif style == "text":
        sys.stdout.write(render_text(explanation, width=terminal_width(), verbose=args.verbose))
    elif style == "markdown":
        sys.stdout.write(render_markdown(explanation, verbose=args.verbose))
    else:
        sys.stdout.write(render_json(explanation))
    return 0 if explanation.passed else 1


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _animate(args: argparse.Namespace) -> int:
    from .show.explain import slide_steps, standard_cases
    from .show.pictures import FRAME_LIMIT, animate, check_frames, kilobytes

    case = _case_from_args(args) or standard_cases()["classic"]
    elements = case.output().size
    if args.frames is None:  # past MAX_FRAMES refused, naming --frames; past FRAME_LIMIT an evenly spread subset
        check_frames(elements)
    frames = elements if args.frames == "all" else min(args.frames or FRAME_LIMIT, elements)
    check_frames(frames)  # before computing one step per element
    if frames < elements:
        print(f"the output has {elements} elements; drawing {frames} of them, evenly spread (--frames all draws "
              "every one)")
    elif frames > FRAME_LIMIT:
        print(f"drawing {frames} frames, one per output element: about half a second each")
    result = animate(slide_steps(case), args.output, fps=args.fps, frames=frames)
    width, height = result["size"]
    print(f"wrote {result['path']}: {result['frames']} frames, {width}x{height} pixels, "
          f"{kilobytes(result['bytes'])}")
    return 0


def _gallery(args: argparse.Namespace) -> int:
    from .show.gallery import write_gallery
    from .show.pictures import kilobytes

    def written(gif: dict[str, Any]) -> None:
        width, height = gif["size"]
        print(f"wrote {gif['path']}: {gif['frames']} frames, {width}x{height} pixels, {kilobytes(gif['bytes'])}",
              flush=True)

    result = write_gallery(args.output, names=args.only, fps=args.fps, progress=written)
    print(f"wrote {result['index']}: what each GIF shows")
    return 0


def _frame_count(text: str) -> int | str:
    """``--frames``: 'all', or an int > 0."""
    from .apps.train import positive

    return "all" if text.strip() == "all" else positive(int)(text)


def _draw(args: argparse.Namespace) -> int:
    from .show.explain import explain, standard_cases
    from .show.pictures import check_drawn_cells, draw_conv_matrix, draw_im2col

    case = _case_from_args(args) or standard_cases()["classic"]
    if case.transposed:
        raise UsageError("--transposed: draw shows the forward convolution's matrices; use animate for transposed")
    check_drawn_cells("draw_conv_matrix", "M", (case.output().size, case.input.size))  # before drawing either
    im2col_step, matrix_step = explain(case, ["im2col"]).steps
    stem = os.fspath(args.output)
    for suffix, drawer, step in (("im2col", draw_im2col, im2col_step), ("conv-matrix", draw_conv_matrix, matrix_step)):
        result = drawer(step, f"{stem}-{suffix}.png")
        print(f"wrote {result['path']}: {result['size'][0]}x{result['size'][1]} pixels")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .apps.train import positive
    from .show.explain import TOPICS

    parser = argparse.ArgumentParser(prog="convolab", description="Convolutions of deep learning, shown with numbers.")
    parser.add_argument("--version", action="version", version=f"convolab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser(
        "explain", help="walk through what a convolution computes, with checks",
        description="Answer the four questions (dot product? one matrix product? rotated filter in backprop? "
                    "why PyTorch differs from the textbook?) and the output size, on the standard examples or "
                    "on your own input and kernels. Every step shows its numbers and a check that ran.")
    explain.add_argument("topics", nargs="*", metavar="TOPIC",
                         help=f"any of {', '.join(TOPICS)} (default: all but slide)")
    _add_case_flags(explain)
    explain.add_argument("--at", help="the output element the dot topic takes apart: 'c_out,row,col'")
    explain.add_argument("--format", choices=("auto", "text", "rich", "markdown", "json"), default="auto",
                         help="auto: rich text in a terminal, plain text when piped; json is strict JSON "
                              "(a non-finite number would be the string \"nan\", \"inf\" or \"-inf\")")
    explain.add_argument("--verbose", action="store_true",
                         help="the long form: every case's every paragraph and array, at every step (the default "
                              "says a repeated idea once, and wraps text to COLUMNS or the terminal, 80 when piped)")
    explain.set_defaults(run=_explain)

    animate = commands.add_parser("animate", help="write a GIF of the kernel sliding over the input")
    _add_case_flags(animate)
    animate.add_argument("--output", required=True, help="the GIF to write")
    animate.add_argument("--fps", type=positive(float), default=1.25, help="frames per second")
    animate.add_argument("--frames", type=_frame_count,
                         help="draw this many output elements, evenly spread, or 'all' (default: every element up "
                              "to 64, an evenly spread 64 up to 400 elements; at most 400 frames either way)")
    animate.set_defaults(run=_animate)

    draw = commands.add_parser("draw", help="write PNGs of the im2col product and of the convolution matrix")
    _add_case_flags(draw)
    draw.add_argument("--output", required=True, help="path stem: writes STEM-im2col.png and STEM-conv-matrix.png")
    draw.set_defaults(run=_draw)

    from .show.gallery import GALLERY_NAMES

    gallery = commands.add_parser(
        "gallery", help="write GIFs of the standard cases (padding, stride, dilation, transposed) and an index",
        description="The standard convolution cases as GIFs with real numbers: no padding, half (same) padding, "
                    "full padding, stride 2, stride 2 with padding, dilation 2, and each one's transposed "
                    "counterpart, with index.md saying what each shows.")
    gallery.add_argument("--output", required=True, help="the folder to write into (created if need be)")
    gallery.add_argument("--only", action="append", choices=GALLERY_NAMES, metavar="NAME",
                         help=f"only this case (repeat for more): {', '.join(GALLERY_NAMES)}")
    gallery.add_argument("--fps", type=positive(float), default=1.0, help="frames per second")
    gallery.set_defaults(run=_gallery)

    # The apps register their flags; the benchmark harness itself loads only when `bench` runs.
    from .apps.bench.command import add_bench_parser
    from .apps.train import add_train_parser

    add_train_parser(commands)
    add_bench_parser(commands)

    # explore: the flags only; its model, page and server load when it runs.
    from .apps.explore.command import add_explore_parser

    add_explore_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``convolab``; a usage error is one line on stderr and exit status 2 (argparse's convention).

    The library's ValueError and TypeError name the parameter, the value and
    the rule, so they are usage errors too, as are an OverflowError or
    MemoryError (numbers or sizes too large for the machine) and an OSError
    (a file that cannot be read or written). Anything else is a bug and
    keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        return _usage_error(args.command, str(error))
    except (ValueError, TypeError, OverflowError) as error:  # the library's own message names the parameter
        return _usage_error(args.command, str(error))
    except MemoryError as error:
        return _usage_error(args.command, f"out of memory ({error or 'no details'}); give a smaller problem")
    except OSError as error:
        return _usage_error(args.command, str(error))
    except ImportError as error:
        hint = "" if "pip install" in str(error) else '; install the extras with pip install "convolab[viz]"'
        return _usage_error(args.command, f"{error}{hint}")


def _usage_error(command: str, message: str) -> int:
    first = " ".join(message.split())  # one line, whatever the message held
    print(f"convolab {command}: error: {first}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
