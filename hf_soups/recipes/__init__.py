"""Soup recipes: uniform, greedy, bagged greedy, learned, Model Stock, Fisher-weighted and RegMean soups, the
logit-ensemble baselines, and recipe files.

Each recipe is a ``cook_*`` function that runs in a :class:`~hf_soups.recipes.kitchen.Kitchen` (validated
ingredients, one scoring model, a judge; :func:`make_kitchen` sets one up) and returns a
:class:`~hf_soups.recipes.report.SoupReport`; it writes nothing. :data:`RECIPES` finds them by name. The one-call
fronts that cook and then write the soup folder (:func:`~hf_soups.soups.run_recipe`, ``greedy_soup``, ...) are in
:mod:`hf_soups.soups`, above the soup folder and the card.

Example:
    >>> from hf_soups import greedy_soup
    >>> report = greedy_soup(  # doctest: +SKIP
    ...     ["runs/lr2e-5", "runs/lr3e-5", "runs/lr5e-5"], "rte", "soup", glue_dir="glue_data"
    ... )
    >>> print(report.table)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from hf_soups.errors import SoupError
from hf_soups.evaluation import SplitRule
from hf_soups.ingredients import Ingredient, resolve_ingredients, validate
from hf_soups.options import (
    RECIPE_NAMES,
    JudgeOptions,
)
from hf_soups.recipes.bagged import cook_bagged
from hf_soups.recipes.fisher import cook_fisher
from hf_soups.recipes.greedy import cook_greedy
from hf_soups.recipes.judge import GlueJudge, Judge
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.learned import cook_learned
from hf_soups.recipes.recipe_file import cook
from hf_soups.recipes.regmean import cook_regmean
from hf_soups.recipes.report import SoupReport
from hf_soups.recipes.stock import cook_stock
from hf_soups.recipes.uniform import cook_uniform
from hf_soups.validation import vocabulary_files


@dataclass(frozen=True)
class Recipe:
    """A recipe in the registry: its ``cook_*`` function, the options it takes beyond ``ensemble``, and whether it
    keeps files in a state folder.

    A recipe with ``state`` also takes ``state_dir``: :func:`~hf_soups.soups.cook_recipe` gives it
    ``<output_dir>.<name>-state`` (greedy's, to resume from, is removed once the soup folder is written; fisher's and
    regmean's statistics stay, for ``recipe.yaml`` to re-cook from)."""

    cook: Callable[..., SoupReport]
    options: tuple[str, ...] = ()
    state: bool = False


RECIPES: dict[str, Recipe] = {
    "greedy": Recipe(cook_greedy, ("greedy_rule", "min_gain", "resume"), state=True),
    "bagged": Recipe(cook_bagged, ("bags", "bag_seed", "greedy_rule", "min_gain")),
    "uniform": Recipe(cook_uniform),
    "learned": Recipe(cook_learned, ("granularity", "epochs", "lr")),
    "stock": Recipe(cook_stock, ("base", "start_head")),
    "fisher": Recipe(cook_fisher, ("statistics_rows", "fisher_over", "greedy_rule", "min_gain"), state=True),
    "regmean": Recipe(cook_regmean, ("statistics_rows", "regmean_alpha"), state=True),
}
assert tuple(RECIPES) == RECIPE_NAMES, "hf_soups.options.RECIPE_NAMES names the recipes for the command line"


def make_kitchen(
    ingredients: Sequence[str | Path | Ingredient],
    task: str | None = None,
    judge: Judge | None = None,
    tokenizer: Any = None,
    glue_dir: str | Path | None = JudgeOptions.glue_dir,
    select_split: str = JudgeOptions.select_split,
    report_split: str = JudgeOptions.report_split,
    heldout_fraction: float = JudgeOptions.heldout_fraction,
    batch_size: int | None = JudgeOptions.batch_size,
    accelerator: Any = None,
    checkpoints: str | None = None,
    token: str | bool | None = None,
    progress: bool = True,
) -> Kitchen:
    """Resolve and validate the ingredients, then set up their judge: a GLUE ``task`` (with the first ingredient's
    tokenizer unless one is given) or any :class:`~hf_soups.recipes.judge.Judge`.

    Raises:
        SoupError: bad ingredients (before any tokenizer, dataset or model is loaded), or neither task nor judge.
    """
    resolved = resolve_ingredients(ingredients, checkpoints=checkpoints, token=token)  # type: ignore[arg-type]
    if len(resolved) == 1:
        raise SoupError(
            f"only one ingredient ({resolved[0].spec}): a recipe needs at least two (to copy one model, use "
            "hf-soups merge --allow-single)"
        )
    plan = validate(resolved)
    if judge is None:
        if task is None:
            raise ValueError("give a GLUE task or a judge")
        if tokenizer is None:
            vocabulary_files(resolved[0].vocabulary, resolved[0].label, "pass tokenizer=, or put one first")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolved[0].tokenizer_path)
        judge = GlueJudge(
            task, tokenizer, select_split, report_split, glue_dir, batch_size, accelerator,
            rule=SplitRule(heldout_fraction=heldout_fraction), progress=progress,
        )
    return Kitchen(resolved, judge, progress=progress, plan=plan)


def ensemble_scores(ingredients, task=None, **kwargs: Any):
    """The logit-ensemble baseline (mean of the ingredients' probabilities; N× the inference cost, not a soup) on
    the selection and report splits.

    Returns:
        A :class:`~hf_soups.recipes.kitchen.ModelScores` with ``.select`` and ``.report`` results.

    Example:
        >>> ensemble_scores(["runs/a", "runs/b"], "rte", glue_dir="glue_data").report.metrics  # doctest: +SKIP
    """
    kitchen = make_kitchen(ingredients, task, **kwargs)
    tastings, _ = kitchen.taste_all(uniform=False)
    return kitchen.ensemble(tastings)


__all__ = [
    "RECIPES", "GlueJudge", "Judge", "Kitchen", "Recipe", "SoupReport", "cook", "ensemble_scores", "make_kitchen",
]
