"""Replay a ``recipe.yaml`` into a soup folder, bit for bit: :func:`replay_recipe` (``hf-soups cook``).

The recipe file (:mod:`hf_soups.recipe_file`) names the ingredients, pinned by sha256, and the mix; this replays the
mix with the arithmetic that made it (the running mean; Model Stock, Fisher or RegMean from their files), so the
weights come out with the same sha256, and writes the folder as every soup's is written.

Example:
    >>> # runs/lr2e-5, runs/lr3e-5: two fine-tuned runs of one base (tiny ones: see hf_soups.merge's example)
    >>> from hf_soups import merge_models, replay_recipe
    >>> soup = merge_models(["runs/lr2e-5", "runs/lr3e-5"], output_dir="soup", dtype="bf16")
    >>> replay_recipe("soup/recipe.yaml", "soup-again")
    PosixPath('soup-again')
    >>> Path("soup-again/model.safetensors").read_bytes() == Path("soup/model.safetensors").read_bytes()
    True
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from hf_soups.atomic_folder import check_output
from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache, file_sha256
from hf_soups.ingredients import Ingredient, MergePlan, check_distinct, resolve_ingredients, validate_ingredients
from hf_soups.mean import RunningMean, SoupWeights
from hf_soups.recipe_file import RECIPE_FILE, STATISTICS_RECIPES, local_spec, read_recipe
from hf_soups.recipes.fisher import fisher_merge
from hf_soups.recipes.regmean import regmean_merge
from hf_soups.recipes.statistics import statistics_record
from hf_soups.recipes.stock import StockBase, stock_soup_tensors
from hf_soups.record import RecipeRecord
from hf_soups.soup_folder import write_soup_folder
from hf_soups.soup_record import soup_record
from hf_soups.validation import check_mix, unit_interval


def replay_recipe(
    recipe: str | Path, output_dir: str | Path, overwrite: bool = False, token: str | bool | None = None
) -> Path:
    """Re-cook a soup from its ``recipe.yaml``: same ingredients, same mix, same fp32 arithmetic, same sha256
    (``hf-soups cook``). The soup folder is written as every soup's is
    (:func:`~hf_soups.soup_folder.write_soup_folder`): weights, ``soup.json``, ``recipe.yaml`` and its card.

    Local ingredients are found relative to the recipe file, so a recipe cooks from any working directory.

    Args:
        recipe: the recipe file (or a soup folder holding one).
        output_dir: the folder to write.
        overwrite: replace an existing folder.
        token: Hub token.

    Raises:
        SoupError: an unreadable recipe, an ingredient whose weight files changed since (sha256), bad weights or
            ingredients, an output over an ingredient or over the soup the recipe is from (its card and scores
            cannot be cooked again).

    Example:
        >>> replay_recipe("soup/recipe.yaml", "soup-again")  # doctest: +SKIP
        PosixPath('soup-again')
    """
    path = Path(recipe)
    path = path / RECIPE_FILE if path.is_dir() else path
    output_dir = check_output(output_dir, [], overwrite)
    data = read_recipe(path)
    ingredients = resolve_ingredients([local_spec(entry["ingredient"], path) for entry in data["mix"]], token=token)
    check_output(output_dir, ingredients, overwrite)
    if output_dir.resolve() in path.resolve().parents:
        raise SoupError(
            f"output: {output_dir} holds the recipe file {path}: cooking there would replace the soup's card and "
            "scores, which a recipe cannot cook again (write to another folder)"
        )
    check_distinct(ingredients)
    plan = validate_ingredients(ingredients, allow_single=True)
    mix = [entry.get("layer_weights", entry.get("weight", 1.0)) for entry in data["mix"]]
    mix = check_mix(mix, plan.shapes, [i.label for i in ingredients])
    options: dict[str, Any] = {"cooked_from": str(path), **(data.get("options") or {})}
    if data.get("recipe") == "stock":
        soup, stock = _stock(data, ingredients, plan, path, token)
        options.update(stock)
    elif data.get("recipe") in STATISTICS_RECIPES:
        soup, files = _statistics_soup(data, ingredients, mix, plan, path)
        options["statistics"] = statistics_record(files)
    else:
        mean = RunningMean(plan, HashCache())
        mean.add_all(ingredients, mix)
        soup = mean.soup()
    for ingredient, entry in zip(ingredients, data["mix"], strict=True):
        for name, sha in entry["sha256"].items():
            if ingredient.sha256.get(name) != sha:
                raise SoupError(
                    f"{ingredient.label}: {name} has changed since the recipe was written (sha256 differs)"
                )
    weights = [w if not isinstance(w, dict) else sum(w.values()) / len(w) for w in mix]
    record = soup_record(ingredients, weights)
    record.recipe = RecipeRecord(
        name=data.get("recipe") or "uniform",
        task=data.get("task"),
        metric=data.get("metric"),
        select_split=data.get("select_split"),
        report_split=data.get("report_split"),
        options=options,
    )
    soup.mix = list(zip(ingredients, mix, strict=True))  # as the recipe gives it (Model Stock ignores the weights)
    return write_soup_folder(output_dir, soup, record, dtype=data.get("dtype") or None, overwrite=overwrite)


def cook(recipe: str | Path, output_dir: str | Path, overwrite: bool = False, token: str | bool | None = None) -> Path:
    """Deprecated name of :func:`replay_recipe` (``cook`` is what a recipe does; replaying its file is this)."""
    warnings.warn(
        "hf_soups.cook is deprecated and will be removed: call hf_soups.replay_recipe (the same replay of a "
        "recipe.yaml; the command line keeps `hf-soups cook`)",
        FutureWarning,
        stacklevel=2,
    )
    return replay_recipe(recipe, output_dir, overwrite=overwrite, token=token)


def _statistics_soup(
    data: dict[str, Any], ingredients: list[Ingredient], mix: list[Any], plan: MergePlan, path: Path
) -> tuple[SoupWeights, list[Path]]:
    """Re-cook a fisher or regmean soup from each mix entry's statistics file (its sha256 checked first)."""
    recipe, files = data["recipe"], []
    if any(weight != 1.0 for weight in mix):
        raise SoupError(f"recipe file {path}: a {recipe} recipe mixes by its statistics, so every weight must be 1")
    for ingredient, entry in zip(ingredients, data["mix"], strict=True):
        statistics = entry.get("statistics")
        if not isinstance(statistics, dict) or not isinstance(statistics.get("file"), str):
            raise SoupError(
                f"recipe file {path}: a {recipe} recipe needs each mix entry's `statistics` (file, sha256); "
                f"{ingredient.label} has none"
            )
        file = Path(local_spec(statistics["file"], path))
        if not file.is_file():
            raise SoupError(
                f"recipe file {path}: the {recipe} statistics of {ingredient.label}, {file}, are missing (the soup's "
                "state folder keeps them; cook the soup again to estimate them)"
            )
        if file_sha256(file) != statistics.get("sha256"):
            raise SoupError(f"recipe file {path}: {file} has changed since the recipe was written (sha256 differs)")
        files.append(file)
    if recipe == "fisher":
        return fisher_merge(ingredients, files, plan, HashCache()), files
    alpha = unit_interval((data.get("options") or {}).get("regmean_alpha"), f"recipe file {path}: regmean_alpha")
    return regmean_merge(ingredients, files, plan, alpha, HashCache()), files


def _stock(
    data: dict[str, Any], ingredients: list[Ingredient], plan: MergePlan, path: Path, token: str | bool | None
) -> tuple[SoupWeights, dict[str, Any]]:
    """Re-cook a Model Stock soup from the recipe's ``base`` (its weight files' and start head's sha256 checked)."""
    base_entry = data.get("base")
    if not isinstance(base_entry, dict) or not isinstance(base_entry.get("ingredient"), str):
        raise SoupError(f"recipe file {path}: a stock recipe needs a `base` with its `ingredient`")
    head = base_entry.get("head")
    base = StockBase(
        resolve_ingredients([local_spec(base_entry["ingredient"], path)], token=token)[0],
        Path(local_spec(head, path)) if head else None,
    )
    if base_entry.get("head_sha256") != base.head_sha256():
        raise SoupError(
            f"recipe file {path}: start head {base.head} has changed since the recipe was written (sha256 differs)"
        )
    soup, _, clamped = stock_soup_tensors(ingredients, plan, base, HashCache())
    for name, sha in (base_entry.get("sha256") or {}).items():
        if base.ingredient.sha256.get(name) != sha:
            raise SoupError(
                f"{base.ingredient.label}: {name} has changed since the recipe was written (sha256 differs)"
            )
    return soup, {"base": base.to_dict(), "clamped": len(clamped)}
