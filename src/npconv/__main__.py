"""Command line: ``python -m npconv demo [--epochs N] [--seed S] [--out DIR] [--batch-size B]
[--distributed]`` (see :mod:`npconv.demo`)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m npconv",
                                     description="npconv: PyTorch's convolution layers on NumPy.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .demo import add_arguments

    demo = commands.add_parser(
        "demo", help="train a small CNN on scikit-learn's handwritten digits",
        description="Train a small CNN (conv, batch norm, ReLU, max pooling, linear) on the 8x8 digits "
                    "shipped with scikit-learn; print the held-out accuracy and write the weights "
                    "(safetensors), a PNG of the filters and predictions, and metrics.json.")
    add_arguments(demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from . import demo

    try:
        return demo.main(args)
    except (ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
