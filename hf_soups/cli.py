"""The ``hf-soups`` command: one sub-command per module in :mod:`hf_soups.commands`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a function taking
the parsed arguments and returning an exit code. Every refusal is one line on stderr with exit code 2: bad flag
values (checked by :mod:`hf_soups.validation` as the arguments are parsed), bad input
(:class:`~hf_soups.errors.SoupError`) and file-system errors (a full disk, a read-only folder); Ctrl-C is one line
and exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

from hf_soups.errors import SoupError
from hf_soups.version import __version__

# Sub-command modules under hf_soups.commands, in the order `--help` lists them.
COMMANDS = ["merge", "soup", "cook", "evaluate", "diagnose", "push"]
_NEGATIVE_VALUE = re.compile(r"^-[\d.]")  # "-1,2", "-5GB": a value, though argparse would take it for an option


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (the usage is one ``--help`` away) and that takes no
    abbreviated flag (``--greedy-rul`` is an error, not ``--greedy-rule``); its sub-command parsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hf-soups",
        description="Model soups for Hugging Face checkpoints: average fine-tuned models of one base model.",
    )
    parser.add_argument("--version", action="version", version=f"hf-soups {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hf_soups.commands.{name}").register(subparsers)
    return parser


def attach_negative_values(argv: list[str]) -> list[str]:
    """``["--weights", "-1,2"]`` → ``["--weights=-1,2"]``, so a negative value reaches its check (and its message).

    Example:
        >>> attach_negative_values(["merge", "a", "--weights", "-1,2"])
        ['merge', 'a', '--weights=-1,2']
    """
    joined: list[str] = []
    for arg in argv:
        if joined and _NEGATIVE_VALUE.match(arg) and joined[-1].startswith("--") and "=" not in joined[-1]:
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: list[str] | None = None) -> int:
    with _noting_interrupts() as interrupted:
        try:
            return _main(argv)
        except BaseException:
            if not interrupted:
                raise
        # a Ctrl-C that a library turned into another error (an import it interrupted fails again, differently)
        print("hf-soups: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _noting_interrupts() -> Iterator[list[int]]:
    """Note each SIGINT (then raise ``KeyboardInterrupt`` as usual) while the command runs."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def note(signum: int, frame: Any) -> None:
        noted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    command = "hf-soups"
    try:
        args = build_parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
        command = f"hf-soups {args.command}"
        return args.func(args)
    except SoupError as err:
        print(f"{command}: error: {_one_line(str(err))}", file=sys.stderr)
    except OSError as err:  # the disk is full, a folder is read-only: not a bug, and nothing was left half-written
        where = f"{err.filename}: " if err.filename else ""
        print(f"{command}: error: {where}{_one_line(err.strerror or str(err))}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    return 2


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
