"""Checks of the values a user gives (CLI flags, and the Python arguments that reach the same code), each raising
one :class:`~hf_soups.errors.SoupError` that names the argument.

Every check is a small function ``check(value, name) -> parsed value``; :func:`cli_type` turns one into an
``argparse`` ``type=`` so the command line and the Python API refuse the same values with the same message.

Example:
    >>> positive_int("8", "batch_size")
    8
    >>> shard_size("5GB", "max_shard_size")
    5000000000
    >>> weight_list("3,1", "weights")
    [3.0, 1.0]
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hf_soups.errors import SoupError

T = TypeVar("T")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def positive_int(value: Any, name: str) -> int:
    """An integer ≥ 1 (``"8"`` or ``8``)."""
    try:
        number = int(value) if not isinstance(value, float | bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise SoupError(f"{name}: must be a whole number ≥ 1, got {value!r}")
    return number


def positive_float(value: Any, name: str) -> float:
    """A finite number > 0."""
    number = finite_float(value, name)
    if number <= 0:
        raise SoupError(f"{name}: must be > 0, got {value!r}")
    return number


def finite_float(value: Any, name: str) -> float:
    """A finite number (no NaN, no ±Inf)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise SoupError(f"{name}: must be a finite number, got {value!r}")
    return number


def non_negative_float(value: Any, name: str) -> float:
    """A finite number ≥ 0."""
    number = finite_float(value, name)
    if number < 0:
        raise SoupError(f"{name}: must be ≥ 0, got {value!r}")
    return number


def int_value(value: Any, name: str) -> int:
    """A whole number (``"3"`` or ``3``; not ``3.5``)."""
    try:
        number = int(value) if not isinstance(value, float | bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise SoupError(f"{name}: must be a whole number, got {value!r}")
    return number


def non_negative_int(value: Any, name: str) -> int:
    """A whole number ≥ 0, such as a seed (numpy's generators take no negative seed)."""
    number = int_value(value, name)
    if number < 0:
        raise SoupError(f"{name}: must be a whole number ≥ 0, got {value!r}")
    return number


def heldout_fraction(value: Any, name: str) -> float:
    """The share of a train split held out to select on: in (0, 0.5], so the runs keep most of their data."""
    number = finite_float(value, name)
    if not 0.0 < number <= 0.5:
        raise SoupError(f"{name}: must be in (0, 0.5], got {value!r}")
    return number


def open_unit_interval(value: Any, name: str) -> float:
    """A number in (0, 1), such as the share of a split that one of its two parts takes."""
    number = finite_float(value, name)
    if not 0.0 < number < 1.0:
        raise SoupError(f"{name}: must be in (0, 1), got {value!r}")
    return number


def unit_interval(value: Any, name: str) -> float:
    """A number in [0, 1]."""
    number = finite_float(value, name)
    if not 0.0 <= number <= 1.0:
        raise SoupError(f"{name}: must be in [0, 1], got {value!r}")
    return number


def sweep_size(value: Any, name: str) -> int:
    """The number of runs of a sweep: a whole number ≥ 2 (Python's or NumPy's integer; not a bool, float or
    string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise SoupError(f"{name}: must be a whole number ≥ 2, got {value!r}")
    return int(value)


def ema_decay(value: Any, name: str = "ema decay") -> float:
    """An EMA's decay: a number in (0, 1) (0 would keep the last step, 1 the first)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise SoupError(f"{name} {value!r}: give a number in (0, 1), e.g. 0.999 (about the last 1,000 steps)")
    return float(value)


def ema_decays(value: Any, name: str) -> tuple[float, ...]:
    """EMA decays, each a number in (0, 1) (:func:`ema_decay`), each once."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise SoupError(f"{name}: give a sequence of decays, e.g. (0.999,), got {value!r}")
    decays = tuple(ema_decay(decay, f"{name}: decay") for decay in value)
    if len(set(decays)) != len(decays):
        raise SoupError(f"{name}: each decay once, got {tuple(value)}")
    return decays


def weight_list(value: str, name: str) -> list[float]:
    """Comma-separated mixing weights, ``"3,1"`` → ``[3.0, 1.0]`` (their rules are checked by :func:`check_mix`)."""
    parts = value.split(",")
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise SoupError(f"{name}: {value!r} is not a comma-separated list of numbers") from None


def shard_size(value: int | str, name: str) -> int:
    """A size in bytes > 0: an int, or ``"50GB"``, ``"500MB"``, ``"2GiB"`` (decimal and binary units)."""
    match = _SIZE.match(value) if isinstance(value, str) else None
    size = int(float(match[1]) * _UNITS[(match[2] or "").upper()]) if match else value
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise SoupError(f"{name}: {value!r} is not a size > 0 (bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB)")
    return size


def check_mix(weights: Iterable[float | Mapping[str, float]], names: Iterable[str], labels: list[str]) -> list[Any]:
    """Check mixing weights, one per ingredient: a number, or tensor name → number for every tensor in ``names``.

    Every weight must be finite and ≥ 0, and the weights of each tensor must have a positive finite sum; the
    weights are returned as floats (mappings as dicts of floats), not normalised.

    Args:
        weights: one weight (or per-tensor mapping) per ingredient.
        names: the soup's tensor names.
        labels: how to name each ingredient in a message.

    Raises:
        SoupError: naming the ingredient (and tensor) at fault.

    Example:
        >>> check_mix([1, 0], ["w"], ["a", "b"])
        [1.0, 0.0]
    """
    names = list(names)
    checked: list[Any] = []
    for weight, label in zip(weights, labels, strict=True):
        if isinstance(weight, Mapping):
            missing = sorted(set(names) - set(weight)) or sorted(set(weight) - set(names))
            if missing:
                raise SoupError(
                    f"weights: {label}: layer weights do not match the soup's tensors (e.g. '{missing[0]}')"
                )
            checked.append({n: non_negative_float(weight[n], f"weights: {label}, tensor '{n}'") for n in names})
        else:
            checked.append(non_negative_float(weight, f"weights: {label}"))
    per_tensor = any(isinstance(w, dict) for w in checked)
    for name in names if per_tensor else [None]:
        total = sum(w[name] if isinstance(w, dict) else w for w in checked)
        if not (math.isfinite(total) and total > 0):
            where = f" of tensor '{name}'" if per_tensor else ""
            raise SoupError(f"weights{where}: must have a positive, finite sum (they sum to {total}: {checked})")
    return checked


def vocabulary_files(files: Mapping[str, str], name: str, remedy: str) -> Mapping[str, str]:
    """The vocabulary files a model is scored with (file name → sha256, as
    :attr:`~hf_soups.ingredients.Ingredient.vocabulary` finds them): at least one, or transformers would load a
    tokenizer that maps every word to ``[UNK]``. ``remedy`` ends the message.

    Example:
        >>> vocabulary_files({"vocab.txt": "3f2a"}, "ingredient 'runs/a'", "save its tokenizer")
        {'vocab.txt': '3f2a'}
    """
    if not files:
        raise SoupError(f"{name}: no tokenizer files to score with ({remedy})")
    return files


def output_folder(value: str | os.PathLike[str], name: str = "output") -> Path:
    """A folder to create: it has a name (not ``""``, ``.`` or ``..``), does not hold the working directory, and
    its parent is not a file.

    Example:
        >>> output_folder("soups/rte")
        PosixPath('soups/rte')
    """
    path = Path(value)
    if str(value) == "" or path.name in ("", ".", ".."):
        raise SoupError(f"{name}: {str(value)!r} is not a folder name to create")
    resolved = path.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise SoupError(f"{name}: {value} holds the working directory")
    return writable_folder(path, name)


def writable_folder(value: str | os.PathLike[str], name: str) -> Path:
    """A folder to write into, existing or not: neither it nor the nearest existing folder above it is a file."""
    path = Path(value)
    for parent in [path.resolve(), *path.resolve().parents]:
        if parent.exists():
            if not parent.is_dir():
                raise SoupError(f"{name}: {parent} is a file, not a folder")
            break
    return path


def output_file(value: str | os.PathLike[str], name: str = "output") -> Path:
    """A file to write: its folder exists, and it is not a folder itself."""
    path = Path(value)
    if str(value) == "" or path.is_dir():
        raise SoupError(f"{name}: {str(value)!r} is a folder, not a file to write")
    if not path.resolve().parent.is_dir():
        raise SoupError(f"{name}: the folder of {value} does not exist")
    return path


def check_folders_apart(output: Path, folders: Iterable[tuple[str, Path]], name: str = "output") -> None:
    """Refuse an output folder that is, is inside, or holds one of ``folders`` (``(label, folder)`` pairs),
    whatever the flags.

    Raises:
        SoupError: naming the output and the ingredient.
    """
    out = Path(output).resolve()
    for label, folder in folders:
        inside = folder.resolve()
        if out == inside:
            how = "is"
        elif inside in out.parents:
            how = "is inside"
        elif out in inside.parents:
            how = "holds"
        else:
            continue
        raise SoupError(f"{name}: {output} {how} {label} (a soup is never written over its ingredients)")


def cli_type(check: Callable[[Any, str], T], name: str) -> Callable[[str], T]:
    """An ``argparse`` ``type=`` running ``check``: its :class:`SoupError` becomes argparse's one-line error."""

    def parse(text: str) -> T:
        try:
            return check(text, name)
        except SoupError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"{name}: ")) from None

    parse.__name__ = check.__name__
    return parse
