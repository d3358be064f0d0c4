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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredients import Ingredient, resolve_ingredients, validate
from hf_soups.merge import RunningMean, Weight, soup_record, write_soup
from hf_soups.record import RecipeRecord, SoupRecord

RECIPE_FILE = "recipe.yaml"


def pinned_spec(ingredient: Ingredient) -> str:
    """The spec that names exactly this ingredient: a Hub id at its resolved commit, or the local path."""
    return f"{ingredient.repo_id}@{ingredient.revision}" if ingredient.source == "hub" else str(ingredient.path)


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
        **({"base": recipe.options["base"]} if recipe and recipe.name == "stock" else {}),
        "mix": [
            {
                "ingredient": pinned_spec(ingredient),
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


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Load and check a recipe file.

    Raises:
        SoupError: the file is missing, not YAML, or has no usable ``mix``.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SoupError(f"recipe file {path}: cannot be read ({err})") from None
    mix = data.get("mix") if isinstance(data, dict) else None
    if not isinstance(mix, list) or not mix or not all(isinstance(m, dict) and "ingredient" in m for m in mix):
        raise SoupError(f"recipe file {path}: needs a non-empty `mix` list of {{ingredient, weight}} entries")
    for entry in mix:
        weight = entry.get("layer_weights", entry.get("weight", 1.0))
        if not isinstance(weight, dict | float | int) or isinstance(weight, bool):
            raise SoupError(f"recipe file {path}: weight of {entry['ingredient']} is not a number or a mapping")
    return data


def cook(recipe: str | Path, output_dir: str | Path, overwrite: bool = False, token: str | bool | None = None) -> Path:
    """Re-cook a soup from its ``recipe.yaml``: same ingredients, same mix, same fp32 arithmetic, same sha256.

    Args:
        recipe: the recipe file (or a soup folder holding one).
        output_dir: the folder to write.
        overwrite: replace an existing folder.
        token: Hub token.

    Raises:
        SoupError: an unreadable recipe, an ingredient whose weight files changed since (sha256), bad ingredients.

    Example:
        >>> cook("soup/recipe.yaml", "soup-again")  # doctest: +SKIP
    """
    path = Path(recipe)
    path = path / RECIPE_FILE if path.is_dir() else path
    data = read_recipe(path)
    ingredients = resolve_ingredients([entry["ingredient"] for entry in data["mix"]], token=token)
    plan = validate(ingredients, allow_single=True)
    mix = [entry.get("layer_weights", entry.get("weight", 1.0)) for entry in data["mix"]]
    options: dict[str, Any] = {"cooked_from": str(path)}
    if data.get("recipe") == "stock":
        mean, options["base"] = _stock(data, ingredients, plan, path, token)
    else:
        mean = RunningMean(plan, HashCache())
        mean.add_all(ingredients, mix)
    for ingredient, entry in zip(ingredients, data["mix"]):
        for name, sha in (entry.get("sha256") or {}).items():
            if ingredient.sha256.get(name) != sha:
                raise SoupError(f"{ingredient.label}: {name} has changed since the recipe was written (sha256 differs)")
    weights = [w if not isinstance(w, dict) else sum(w.values()) / len(w) for w in mix]
    record = soup_record(ingredients, weights)
    record.recipe = RecipeRecord(
        name=data.get("recipe") or "uniform", task=data.get("task"), metric=data.get("metric"),
        select_split=data.get("select_split"), report_split=data.get("report_split"), options=options,
    )

    def extras(folder: Path) -> None:
        write_recipe(folder, record, list(zip(ingredients, [e.get("layer_weights", e.get("weight", 1.0)) for e in data["mix"]])))

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
    base = StockBase(resolve_ingredients([base_entry["ingredient"]], token=token)[0], Path(head) if head else None)
    if base_entry.get("head_sha256") != base.head_sha256():
        raise SoupError(f"recipe file {path}: start head {base.head} has changed since the recipe was written (sha256 differs)")
    mean, _ = stock_soup_tensors(ingredients, plan, base, HashCache())
    for name, sha in (base_entry.get("sha256") or {}).items():
        if base.ingredient.sha256.get(name) != sha:
            raise SoupError(f"{base.ingredient.label}: {name} has changed since the recipe was written (sha256 differs)")
    return mean, base.to_dict()
