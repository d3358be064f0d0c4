"""The ``hf-soups`` command: one sub-command per module in :mod:`hf_soups.commands`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a function taking
the parsed arguments and returning an exit code. Bad input (:class:`~hf_soups.errors.SoupError`) is printed as one
line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hf_soups import __version__
from hf_soups.errors import SoupError

# Sub-command modules under hf_soups.commands, in the order `--help` lists them.
COMMANDS = ["merge", "soup", "cook", "evaluate", "diagnose", "push"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-soups",
        description="Model soups for Hugging Face checkpoints: average fine-tuned models of one base model.",
    )
    parser.add_argument("--version", action="version", version=f"hf-soups {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hf_soups.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SoupError as err:
        print(f"hf-soups {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-soups {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
