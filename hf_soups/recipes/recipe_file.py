"""``recipe.yaml``: a human-editable recipe that re-cooks a soup bit for bit.

It lists the ingredients pinned to what was used (Hub ids at their resolved commit, sha256 of every weight file)
and the *mix*: the ingredients in the order they went into the running mean, each with its weight (or its weight per
tensor, for learned per-layer soups). Cooking replays that mix with the same fp32 arithmetic, so the weights come out
with the same sha256.

Example:
    >>> cook("soup/recipe.yaml", "soup-again")  # doctest: +SKIP
    PosixPath('soup-again')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hf_soups.atomic_folder import check_output
from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredients import Ingredient, check_distinct, resolve_ingredients, validate
from hf_soups.mean import RunningMean, Weight
from hf_soups.merge import soup_record, write_soup
from hf_soups.record import RecipeRecord, SoupRecord
from hf_soups.validation import check_mix

RECIPE_FILE = "recipe.yaml"


def pinned_spec(ingredient: Ingredient, folder: Path | None = None) -> str:
    """The spec that names exactly this ingredient: a Hub id at its resolved commit, or the local path (relative to
    ``folder``, the recipe's, when given: the soup and its ingredients can then move together)."""
    if ingredient.source == "hub":
        return f"{ingredient.repo_id}@{ingredient.revision}"
    if folder is None:
        return str(ingredient.path)
    return os.path.relpath(ingredient.path.resolve(), folder.resolve())


def _local_spec(spec: str, recipe: Path) -> str:
    """A recipe's local path, taken relative to the recipe's folder (recipes of hf-soups 0.1: to the working
    directory, when not found there); Hub ids pass through."""
    beside = recipe.parent / spec
    return str(beside) if not Path(spec).is_absolute() and beside.exists() else spec


def _stock_base_entry(base: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A Model Stock base as ``recipe.yaml`` stores it: local paths (model, start head) relative to ``folder``."""
    entry = dict(base)
    for key in ("ingredient", "head"):
        if entry.get(key) and Path(entry[key]).is_absolute():
            entry[key] = os.path.relpath(Path(entry[key]).resolve(), folder.resolve())
    return entry


def write_recipe(folder: Path, record: SoupRecord, mix: Sequence[tuple[Ingredient, Weight]]) -> Path:
    """Write ``recipe.yaml`` into a soup folder."""
    recipe = record.recipe
    data: dict[str, Any] = {
        "hf_soups_version": record.hf_soups_version,
        "recipe": recipe.name if recipe else "uniform",
        "task": recipe.task if recipe else None,
        "metric": recipe.metric if recipe else None,
        "select_split": recipe.select_split if recipe else None,
        "report_split": recipe.report_split if recipe else None,
        "dtype": record.dtype,
        **({"base": _stock_base_entry(recipe.options["base"], folder)} if recipe and recipe.name == "stock" else {}),
        "mix": [
            {
                "ingredient": pinned_spec(ingredient, folder),
                "sha256": dict(ingredient.sha256),
                ("layer_weights" if isinstance(weight, dict) else "weight"): weight,
                **({"adapter": ingredient.record().adapter} if ingredient.record().adapter else {}),
            }
            for ingredient, weight in mix
        ],
    }
    path = folder / RECIPE_FILE
    path.write_text(
        "# Re-cook this soup bit for bit: hf-soups cook recipe.yaml -o DIR\n"
        "# `mix` lists the ingredients in the order they were averaged, with their weights.\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    )
    return path


_TEXT_FIELDS = ("recipe", "task", "metric", "select_split", "report_split", "dtype")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Load and check a recipe file: its fields' types, and every mix entry's ingredient, sha256 and weight.

    Raises:
        SoupError: the file is missing, not YAML, or holds a field of the wrong type, naming it.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SoupError(f"recipe file {path}: cannot be read ({err})") from None
    mix = data.get("mix") if isinstance(data, dict) else None
    if not isinstance(mix, list) or not mix or not all(isinstance(m, dict) and "ingredient" in m for m in mix):
        raise SoupError(f"recipe file {path}: needs a non-empty `mix` list of {{ingredient, sha256, weight}} entries")
    for key in _TEXT_FIELDS:
        if not isinstance(data.get(key), str | None):
            raise SoupError(f"recipe file {path}: `{key}` must be a string, got {data[key]!r}")
    for number, entry in enumerate(mix, 1):
        where = f"recipe file {path}: mix entry {number}"
        if not isinstance(entry["ingredient"], str) or not entry["ingredient"]:
            raise SoupError(f"{where}: `ingredient` must be a path or Hub id, got {entry['ingredient']!r}")
        sha256 = entry.get("sha256")
        if not isinstance(sha256, dict) or not sha256 or not all(isinstance(v, str) for v in sha256.values()):
            raise SoupError(f"{where} ({entry['ingredient']}): needs `sha256` (weight file → hash) to pin it")
        weight = entry.get("layer_weights", entry.get("weight", 1.0))
        if not isinstance(weight, dict | float | int) or isinstance(weight, bool):
            raise SoupError(f"{where} ({entry['ingredient']}): weight is not a number or a mapping")
    return data


def cook(recipe: str | Path, output_dir: str | Path, overwrite: bool = False, token: str | bool | None = None) -> Path:
    """Re-cook a soup from its ``recipe.yaml``: same ingredients, same mix, same fp32 arithmetic, same sha256.

    Local ingredients are found relative to the recipe file, so a recipe cooks from any working directory.

    Args:
        recipe: the recipe file (or a soup folder holding one).
        output_dir: the folder to write.
        overwrite: replace an existing folder.
        token: Hub token.

    Raises:
        SoupError: an unreadable recipe, an ingredient whose weight files changed since (sha256), bad weights or
            ingredients, an output over an ingredient.

    Example:
        >>> cook("soup/recipe.yaml", "soup-again")  # doctest: +SKIP
    """
    path = Path(recipe)
    path = path / RECIPE_FILE if path.is_dir() else path
    output_dir = check_output(output_dir, [], overwrite)
    data = read_recipe(path)
    ingredients = resolve_ingredients([_local_spec(entry["ingredient"], path) for entry in data["mix"]], token=token)
    check_output(output_dir, ingredients, overwrite)
    check_distinct(ingredients)
    plan = validate(ingredients, allow_single=True)
    mix = [entry.get("layer_weights", entry.get("weight", 1.0)) for entry in data["mix"]]
    mix = check_mix(mix, plan.shapes, [i.label for i in ingredients])
    options: dict[str, Any] = {"cooked_from": str(path)}
    if data.get("recipe") == "stock":
        mean, options["base"] = _stock(data, ingredients, plan, path, token)
    else:
        mean = RunningMean(plan, HashCache())
        mean.add_all(ingredients, mix)
    for ingredient, entry in zip(ingredients, data["mix"], strict=True):
        for name, sha in entry["sha256"].items():
            if ingredient.sha256.get(name) != sha:
                raise SoupError(
                    f"{ingredient.label}: {name} has changed since the recipe was written (sha256 differs)"
                )
    weights = [w if not isinstance(w, dict) else sum(w.values()) / len(w) for w in mix]
    record = soup_record(ingredients, weights)
    record.recipe = RecipeRecord(
        name=data.get("recipe") or "uniform", task=data.get("task"), metric=data.get("metric"),
        select_split=data.get("select_split"), report_split=data.get("report_split"), options=options,
    )

    def extras(folder: Path) -> None:
        write_recipe(folder, record, list(zip(ingredients, mix, strict=True)))

    return write_soup(output_dir, mean, record, data.get("dtype") or None, overwrite=overwrite, extras=extras)


def _stock(
    data: dict[str, Any], ingredients: list[Ingredient], plan: Any, path: Path, token: str | bool | None
) -> tuple[RunningMean, dict[str, Any]]:
    """Re-cook a Model Stock soup from the recipe's ``base`` (its weight files' and start head's sha256 checked)."""
    from hf_soups.recipes.stock import StockBase, stock_soup_tensors  # the recipes build on this module

    base_entry = data.get("base")
    if not isinstance(base_entry, dict) or not isinstance(base_entry.get("ingredient"), str):
        raise SoupError(f"recipe file {path}: a stock recipe needs a `base` with its `ingredient`")
    head = base_entry.get("head")
    base = StockBase(
        resolve_ingredients([_local_spec(base_entry["ingredient"], path)], token=token)[0],
        Path(_local_spec(head, path)) if head else None,
    )
    if base_entry.get("head_sha256") != base.head_sha256():
        raise SoupError(
            f"recipe file {path}: start head {base.head} has changed since the recipe was written (sha256 differs)"
        )
    mean, _ = stock_soup_tensors(ingredients, plan, base, HashCache())
    for name, sha in (base_entry.get("sha256") or {}).items():
        if base.ingredient.sha256.get(name) != sha:
            raise SoupError(
                f"{base.ingredient.label}: {name} has changed since the recipe was written (sha256 differs)"
            )
    return mean, base.to_dict()
