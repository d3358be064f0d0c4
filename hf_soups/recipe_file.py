"""``recipe.yaml``, the file format: a human-editable recipe that re-cooks a soup bit for bit.

It lists the ingredients pinned to what was used (Hub ids at their resolved commit, sha256 of every weight file)
and the *mix*: the ingredients in the order they went into the running mean, each with its weight (or its weight per
tensor, for learned per-layer soups; for fisher and regmean, the file of its Fisher or Gram matrices, pinned by
sha256). :func:`write_recipe` writes it into every soup folder (:mod:`hf_soups.soup_folder`); :func:`read_recipe`
reads it back, checked: its keys are declared in :mod:`hf_soups.recipe_data`, and a key not declared there (a typo
such as ``weigth``), an unknown recipe name or a YAML alias is refused. Replaying the mix with the same arithmetic,
so that the weights come out with the same sha256, is :func:`hf_soups.replay.replay_recipe` (``hf-soups cook``).

Example:
    >>> # runs/lr2e-5, runs/lr3e-5: two fine-tuned runs of one base (tiny ones: see hf_soups.merge's example)
    >>> from hf_soups import merge_models
    >>> soup = merge_models(["runs/lr2e-5", "runs/lr3e-5"], output_dir="soup", weights=[0.7, 0.3])
    >>> [(entry["ingredient"], entry["weight"]) for entry in read_recipe(soup / "recipe.yaml")["mix"]]
    [('../runs/lr2e-5', 0.7), ('../runs/lr3e-5', 0.3)]
"""

from __future__ import annotations

import dataclasses
import os
import reprlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from stat import S_ISREG
from typing import Any

import yaml

from hf_soups.errors import SoupError
from hf_soups.ingredient import Ingredient
from hf_soups.mean import Weight
from hf_soups.options import (
    RECIPE_NAMES,
    BaggedOptions,
    FisherOptions,
    GreedyOptions,
    LearnedOptions,
    RegMeanOptions,
    StatisticsOptions,
)
from hf_soups.recipe_data import BaseEntry, MixEntry, RecipeData, StatisticsFile, pinned_spec, unknown_keys
from hf_soups.record import SoupRecord

RECIPE_FILE = "recipe.yaml"
# The recipe options recipe.yaml records: how the soup was chosen (greedy's rule, the bags, the learned schedule,
# the statistics' rows, fisher's members, regmean's α).
RECIPE_FILE_OPTIONS = tuple(
    spec.name
    for options in (GreedyOptions, BaggedOptions, LearnedOptions, StatisticsOptions, FisherOptions, RegMeanOptions)
    for spec in dataclasses.fields(options)
)
STATISTICS_RECIPES = ("fisher", "regmean")  # recipes that mix by each ingredient's statistic, not by weights
_SHOWN = reprlib.Repr()  # the few items and characters of a value from the file that a message quotes
_SHOWN.maxlevel, _SHOWN.maxdict, _SHOWN.maxlist, _SHOWN.maxstring, _SHOWN.maxother = 2, 3, 3, 40, 40
_SHOWN_CHARS = 80
# What a recipe file may hold: more than a recipe of a hundred ingredients needs (with per-tensor weights of a
# 400-tensor model), and little enough to read in seconds.
MAX_RECIPE_BYTES = 4 * 2**20
MAX_RECIPE_VALUES = 100_000
MAX_RECIPE_DEPTH = 32


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases (``*name`` could expand a small file into an exponential document) and
    with at most :data:`MAX_RECIPE_VALUES` values nested at most :data:`MAX_RECIPE_DEPTH` deep (Python's recursion
    limit, and the time and memory a file of a hundred thousand entries would take)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.values, self.depth = 0, 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.values, self.depth = self.values + 1, self.depth + 1
        refused = (
            "aliases (*name) are not allowed in a recipe file"
            if self.check_event(yaml.AliasEvent)
            else f"more than {MAX_RECIPE_VALUES} values, more than a recipe holds"
            if self.values > MAX_RECIPE_VALUES
            else f"nested deeper than {MAX_RECIPE_DEPTH} levels, deeper than a recipe"
            if self.depth > MAX_RECIPE_DEPTH
            else None
        )
        if refused:
            raise yaml.composer.ComposerError(None, None, refused, self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes a repeated value out again instead of as an alias (which :class:`_Loader`
    refuses)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def local_spec(spec: str, recipe: Path) -> str:
    """A recipe's local path, taken relative to the recipe's folder (recipes of hf-soups 0.1: to the working
    directory, when not found there); Hub ids pass through."""
    beside = recipe.parent / spec
    return str(beside) if not Path(spec).is_absolute() and os.path.exists(beside) else spec  # no OSError: a bad name


def _stock_base_entry(base: BaseEntry, folder: Path) -> BaseEntry:
    """A Model Stock base as ``recipe.yaml`` stores it: local paths (model, start head), absolute or relative to the
    working directory, relative to ``folder``."""
    entry = BaseEntry(**base)
    if Path(entry["ingredient"]).exists():  # a local base, as the resolver tells it from a Hub id
        entry["ingredient"] = os.path.relpath(Path(entry["ingredient"]).resolve(), folder.resolve())
    if entry["head"]:
        entry["head"] = os.path.relpath(Path(entry["head"]).resolve(), folder.resolve())
    return entry


def _mix_entry(ingredient: Ingredient, weight: Weight, folder: Path, stat: dict[str, str] | None = None) -> MixEntry:
    entry = MixEntry(ingredient=pinned_spec(ingredient, folder), sha256=dict(ingredient.sha256))
    if isinstance(weight, dict):
        entry["layer_weights"] = weight
    else:
        entry["weight"] = weight
    adapter = ingredient.record().adapter
    if adapter:
        entry["adapter"] = adapter
    if stat is not None:  # fisher's or regmean's statistic: the file, relative to the recipe's folder
        file = os.path.relpath(Path(stat["file"]).resolve(), folder.resolve())
        entry["statistics"] = StatisticsFile(file=file, sha256=stat["sha256"])
    return entry


def write_recipe(folder: Path, record: SoupRecord, mix: Sequence[tuple[Ingredient, Weight]]) -> Path:
    """Write ``recipe.yaml`` into a soup folder."""
    recipe = record.recipe
    data = RecipeData(
        hf_soups_version=record.hf_soups_version,
        recipe=recipe.name if recipe else "uniform",
        task=recipe.task if recipe else None,
        metric=recipe.metric if recipe else None,
        select_split=recipe.select_split if recipe else None,
        report_split=recipe.report_split if recipe else None,
        dtype=record.dtype,
    )
    chosen_by = {key: recipe.options[key] for key in RECIPE_FILE_OPTIONS if key in recipe.options} if recipe else {}
    if chosen_by:
        data["options"] = chosen_by
    if recipe and recipe.name == "stock":
        data["base"] = _stock_base_entry(recipe.options["base"], folder)
    stats = (recipe.options.get("statistics") if recipe else None) or [None] * len(mix)
    data["mix"] = [
        _mix_entry(ingredient, weight, folder, stat) for (ingredient, weight), stat in zip(mix, stats, strict=True)
    ]
    path = folder / RECIPE_FILE
    path.write_text(
        "# Re-cook this soup bit for bit: hf-soups cook recipe.yaml -o DIR\n"
        "# `mix` lists the ingredients in the order they were averaged, with their weights.\n"
        + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    )
    return path


_TEXT_FIELDS = ("recipe", "task", "metric", "select_split", "report_split", "dtype")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Load and check a recipe file: its keys (those :class:`~hf_soups.recipe_data.RecipeData` declares),
    its fields' types, its recipe's name, and every mix entry's ingredient, sha256 and weight.

    Raises:
        SoupError: the file is missing, not a regular file, larger than :data:`MAX_RECIPE_BYTES`, not YAML, uses a
            YAML alias, holds more values or deeper nesting than a recipe (:data:`MAX_RECIPE_VALUES`,
            :data:`MAX_RECIPE_DEPTH`), or an unknown key or recipe, or a field of the wrong type, naming it.
    """
    path = Path(path)
    try:
        data = yaml.load(_recipe_text(path), Loader=_Loader)  # noqa: S506 (a safe loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SoupError(f"recipe file {path}: cannot be read ({err})") from None
    mix = data.get("mix") if isinstance(data, dict) else None
    if not isinstance(mix, list) or not mix or not all(isinstance(m, dict) and "ingredient" in m for m in mix):
        raise SoupError(f"recipe file {path}: needs a non-empty `mix` list of {{ingredient, sha256, weight}} entries")
    _check_keys(data, RecipeData.__annotations__, f"recipe file {path}")
    for key in _TEXT_FIELDS:
        if not isinstance(data.get(key), str | None):
            raise SoupError(f"recipe file {path}: `{key}` must be a string, got {_shown(data[key])}")
    if data.get("recipe") is not None and data["recipe"] not in RECIPE_NAMES:
        raise SoupError(
            f"recipe file {path}: unknown recipe {_shown(data['recipe'])} (recipes: {', '.join(RECIPE_NAMES)})"
        )
    for key in ("options", "base"):
        if not isinstance(data.get(key), Mapping | None):
            raise SoupError(f"recipe file {path}: `{key}` must be a mapping, got {_shown(data[key])}")
    if data.get("base") is not None:
        _check_keys(data["base"], BaseEntry.__annotations__, f"recipe file {path}: `base`")
    _check_keys(data.get("options") or {}, RECIPE_FILE_OPTIONS, f"recipe file {path}: `options`")
    for number, entry in enumerate(mix, 1):
        where = f"recipe file {path}: mix entry {number}"
        if not isinstance(entry["ingredient"], str) or not entry["ingredient"]:
            raise SoupError(f"{where}: `ingredient` must be a path or Hub id, got {_shown(entry['ingredient'])}")
        where = f"{where} ({_shown(entry['ingredient'])})"
        _check_keys(entry, MixEntry.__annotations__, where)
        sha256 = entry.get("sha256")
        if not isinstance(sha256, dict) or not sha256 or not all(isinstance(v, str) for v in sha256.values()):
            raise SoupError(f"{where}: needs `sha256` (weight file → hash) to pin it")
        weight = entry.get("layer_weights", entry.get("weight", 1.0))
        if not isinstance(weight, dict | float | int) or isinstance(weight, bool):
            raise SoupError(f"{where}: weight is not a number or a mapping")
    return data


def _recipe_text(path: Path) -> str:
    """The text of a recipe file: a regular file (not a device, FIFO or folder, which could be read forever or
    block) of at most :data:`MAX_RECIPE_BYTES`.

    Raises:
        SoupError: not a regular file, or a larger one.
        OSError / UnicodeDecodeError: it cannot be opened or is not UTF-8.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO for reading does not wait for a writer
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not S_ISREG(status.st_mode):
            raise SoupError(f"recipe file {path}: not a regular file (a folder, device or FIFO); give a recipe.yaml")
        data = file.read(MAX_RECIPE_BYTES + 1)
    if len(data) > MAX_RECIPE_BYTES:
        raise SoupError(
            f"recipe file {path}: larger than {MAX_RECIPE_BYTES // 2**20} MiB, the most a recipe file may hold "
            f"({status.st_size} bytes)"
        )
    return data.decode("utf-8")


def _shown(value: Any) -> str:
    """``value`` quoted for a message, in at most ``_SHOWN_CHARS`` characters, however large it is."""
    text = _SHOWN.repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _check_keys(data: Mapping[str, Any], known: Collection[str], where: str) -> None:
    unknown = unknown_keys(data, known)
    if unknown:
        raise SoupError(f"{where}: unknown key {_shown(unknown[0])} (the keys: {', '.join(known)})")
