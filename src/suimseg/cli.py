"""The ``suimseg`` command-line interface.

The CLI only parses arguments into typed values and calls the library; library code never
sees an ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable, Sequence

import torch
import torchvision

from suimseg._version import __version__
from suimseg.classes import format_class_table
from suimseg.errors import SUIMSegError

__all__ = ["main"]


def _cmd_info(_: argparse.Namespace) -> int:
    cuda = torch.cuda.is_available()
    print(f"suimseg      {__version__}")
    print(f"python       {platform.python_version()}")
    print(f"torch        {torch.__version__}")
    print(f"torchvision  {torchvision.__version__}")
    if cuda:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"CUDA         available ({torch.version.cuda}; {names})")
    else:
        print("CUDA         not available (CPU only)")
    print()
    print("SUIM classes:")
    print(format_class_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the ``suimseg`` argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(
        prog="suimseg",
        description="Semantic segmentation of underwater imagery (SUIM).",
    )
    parser.add_argument("--version", action="version", version=f"suimseg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for runtime errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="print versions, CUDA availability and the class table")
    p_info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``suimseg`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print("suimseg: error: a command is required (try 'suimseg info')", file=sys.stderr)
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        print("suimseg: interrupted", file=sys.stderr)
        return 130
    except SUIMSegError as exc:
        if args.debug:
            raise
        print(f"suimseg: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
