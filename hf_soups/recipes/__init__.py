"""Soup recipes: uniform, greedy and learned soups, the logit-ensemble baseline, and recipe files.

Each recipe is a ``cook_*`` function that runs in a :class:`~hf_soups.recipes.kitchen.Kitchen` (validated
ingredients, one scoring model, a judge); :data:`RECIPES` finds them by name. The ``*_soup`` functions are the
one-call fronts for GLUE tasks.

Example:
    >>> from hf_soups import greedy_soup
    >>> report = greedy_soup(["runs/lr2e-5", "runs/lr3e-5", "runs/lr5e-5"], "rte", "soup", glue_dir="glue_data")  # doctest: +SKIP
    >>> print(report.table)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from hf_soups.errors import SoupError
from hf_soups.ingredients import Ingredient, resolve_ingredients
from hf_soups.merge import check_output
from hf_soups.recipes.greedy import cook_greedy
from hf_soups.recipes.judge import GlueJudge, Judge
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.learned import cook_learned
from hf_soups.recipes.recipe_file import cook
from hf_soups.recipes.serving import SoupReport
from hf_soups.recipes.uniform import cook_uniform


@dataclass(frozen=True)
class Recipe:
    """A recipe in the registry: its ``cook_*`` function and the options it takes beyond the common ones."""

    cook: Callable[..., SoupReport]
    options: tuple[str, ...] = ()


RECIPES: dict[str, Recipe] = {
    "uniform": Recipe(cook_uniform),
    "greedy": Recipe(cook_greedy, ("resume",)),
    "learned": Recipe(cook_learned, ("granularity", "epochs", "lr")),
}


def make_kitchen(
    ingredients: Sequence[str | Path | Ingredient],
    task: str | None = None,
    judge: Judge | None = None,
    tokenizer: Any = None,
    glue_dir: str | Path | None = None,
    select_split: str = "validation:select",
    report_split: str = "validation:report",
    batch_size: int = 32,
    accelerator: Any = None,
    checkpoints: str | None = None,
    token: str | bool | None = None,
    progress: bool = True,
) -> Kitchen:
    """Resolve and validate the ingredients and set up their judge: a GLUE ``task`` (with the first ingredient's
    tokenizer unless one is given) or any :class:`~hf_soups.recipes.judge.Judge`."""
    resolved = resolve_ingredients(ingredients, checkpoints=checkpoints, token=token)  # type: ignore[arg-type]
    if judge is None:
        if task is None:
            raise ValueError("give a GLUE task or a judge")
        if tokenizer is None and not resolved[0].vocabulary:  # transformers would map every word to [UNK]
            raise SoupError(f"{resolved[0].label}: no tokenizer files to score with (pass tokenizer=, or put one first)")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolved[0].tokenizer_path)
        judge = GlueJudge(task, tokenizer, select_split, report_split, glue_dir, batch_size, accelerator, progress=progress)
    return Kitchen(resolved, judge, progress=progress)


def run_recipe(
    name: str,
    ingredients: Sequence[str | Path | Ingredient],
    task: str | None = None,
    output_dir: str | Path | None = None,
    *,
    ensemble: bool = False,
    dtype: str | None = None,
    overwrite: bool = False,
    options: dict[str, Any] | None = None,
    **kitchen_options: Any,
) -> SoupReport:
    """Cook the recipe ``name`` (see :data:`RECIPES`); ``kitchen_options`` go to :func:`make_kitchen`.

    Raises:
        SoupError: an unknown recipe, an existing ``output_dir`` (unless ``overwrite``), or bad ingredients.
    """
    if name not in RECIPES:
        raise SoupError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    if output_dir is not None:
        check_output(output_dir, [], overwrite)
    kitchen = make_kitchen(ingredients, task, **kitchen_options)
    if output_dir is not None:
        check_output(output_dir, kitchen.ingredients, overwrite)  # before any scoring
    return RECIPES[name].cook(kitchen, output_dir, ensemble=ensemble, dtype=dtype, overwrite=overwrite, **(options or {}))


def greedy_soup(ingredients, task=None, output_dir=None, *, resume: bool = False, **kwargs: Any) -> SoupReport:
    """The greedy soup: ingredients added best first, each kept only if the selection score does not drop.

    Args:
        ingredients: Hub ids (``owner/name[@revision]``), local folders, Trainer output folders.
        task: a GLUE task (``"rte"``), unless a ``judge`` is given.
        output_dir: the soup folder to write (``None``: nothing written; the report holds the model).
        resume: continue an interrupted run from ``<output_dir>.greedy-state``.
        **kwargs: ``ensemble``, ``dtype``, ``overwrite``, and :func:`make_kitchen`'s options (``glue_dir``,
            ``select_split``, ``report_split``, ``batch_size``, ``accelerator``, ``judge``, ``tokenizer``, ...).

    Returns:
        A :class:`~hf_soups.recipes.serving.SoupReport` (record, printable table, folder, model).

    Example:
        >>> report = greedy_soup(["runs/a", "runs/b", "runs/c"], "mrpc", "soup", glue_dir="glue_data")  # doctest: +SKIP
        >>> [i.spec for i in report.record.ingredients if i.kept]  # doctest: +SKIP
        ['runs/b', 'runs/a']
    """
    return run_recipe("greedy", ingredients, task, output_dir, options={"resume": resume}, **kwargs)


def uniform_soup(ingredients, task=None, output_dir=None, **kwargs: Any) -> SoupReport:
    """The uniform soup, scored beside every ingredient (arguments as :func:`greedy_soup`).

    Example:
        >>> uniform_soup(["runs/a", "runs/b"], "sst2", glue_dir="glue_data").table  # doctest: +SKIP
    """
    return run_recipe("uniform", ingredients, task, output_dir, **kwargs)


def learned_soup(
    ingredients, task=None, output_dir=None, *, granularity: str = "ingredient", epochs: int = 5, lr: float = 0.05,
    **kwargs: Any,
) -> SoupReport:
    """The learned soup: softmax mixing weights (per ingredient, or per ingredient and tensor with
    ``granularity="layer"``) trained on the selection split; all ingredients must fit in memory at once.

    Example:
        >>> learned_soup(["runs/a", "runs/b"], "rte", "soup", glue_dir="glue_data", epochs=3)  # doctest: +SKIP
    """
    options = {"granularity": granularity, "epochs": epochs, "lr": lr}
    return run_recipe("learned", ingredients, task, output_dir, options=options, **kwargs)


def ensemble_scores(ingredients, task=None, **kwargs: Any):
    """The logit-ensemble baseline (mean of the ingredients' probabilities; N× the inference cost, not a soup) on
    the selection and report splits.

    Returns:
        A :class:`~hf_soups.recipes.kitchen.Tasting` with ``.select`` and ``.report`` results.

    Example:
        >>> ensemble_scores(["runs/a", "runs/b"], "rte", glue_dir="glue_data").report.metrics  # doctest: +SKIP
    """
    kitchen = make_kitchen(ingredients, task, **kwargs)
    tastings, _ = kitchen.taste_all(uniform=False)
    return kitchen.ensemble(tastings)


__all__ = [
    "RECIPES", "GlueJudge", "Judge", "Kitchen", "Recipe", "SoupReport", "cook", "ensemble_scores", "greedy_soup",
    "learned_soup", "make_kitchen", "run_recipe", "uniform_soup",
]
