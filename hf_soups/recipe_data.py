"""What ``recipe.yaml`` holds: its keys, declared once (the writer fills these types and the reader refuses any key
they lack), and the pinned spec that names each ingredient and base in it.

Example:
    >>> unknown_keys({"ingredient": "runs/a", "weigth": 3.0}, MixEntry.__annotations__)
    ['weigth']
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypedDict

from hf_soups.ingredients import Ingredient


class BaseEntry(TypedDict):
    """Model Stock's base θ₀: its spec and weight files' sha256, and the start head (a file) with its sha256."""

    ingredient: str
    sha256: dict[str, str]
    head: str | None
    head_sha256: str | None


class StatisticsFile(TypedDict):
    """A fisher or regmean ingredient's statistic (its Fisher, its Gram matrices): the file, relative to the
    recipe's folder, and its sha256."""

    file: str
    sha256: str


class MixEntry(TypedDict, total=False):
    """One ingredient of the mix: its spec, its weight files' sha256, its weight (or weight per tensor), for a
    PEFT adapter what ``soup.json`` records of it, and for fisher and regmean its statistic."""

    ingredient: str
    sha256: dict[str, str]
    weight: float
    layer_weights: dict[str, float]
    adapter: dict[str, Any]
    statistics: StatisticsFile


class RecipeData(TypedDict, total=False):
    """A whole ``recipe.yaml``."""

    hf_soups_version: str
    recipe: str
    task: str | None
    metric: str | None
    select_split: str | None
    report_split: str | None
    dtype: str | None
    options: dict[str, Any]
    base: BaseEntry
    mix: list[MixEntry]


def unknown_keys(data: Mapping[str, Any], known: Collection[str]) -> list[str]:
    """The keys of ``data`` not in ``known`` (a TypedDict's ``__annotations__``: the keys it declares), sorted."""
    return sorted(str(key) for key in data if key not in known)


def pinned_spec(ingredient: Ingredient, folder: Path | None = None) -> str:
    """The spec that names exactly this ingredient: a Hub id at its resolved commit, or the local path (relative to
    ``folder``, the recipe's, when given: the soup and its ingredients can then move together)."""
    if ingredient.source == "hub":
        return f"{ingredient.repo_id}@{ingredient.revision}"
    if folder is None:
        return str(ingredient.path)
    return os.path.relpath(ingredient.path.resolve(), folder.resolve())
