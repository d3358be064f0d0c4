"""Soup recipes: uniform, greedy, bagged greedy, learned, Model Stock, Fisher-weighted and RegMean soups, and the
logit-ensemble baselines.

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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from hf_soups.errors import SoupError
from hf_soups.evaluation import SplitRule
from hf_soups.evaluation.dataset import text_dataset
from hf_soups.ingredient import label_map
from hf_soups.ingredients import Ingredient, resolve_ingredients, validate_ingredients
from hf_soups.options import (
    RECIPE_NAMES,
    DatasetOptions,
    JudgeOptions,
)
from hf_soups.recipes.bagged import cook_bagged
from hf_soups.recipes.dataset_judge import DatasetJudge
from hf_soups.recipes.fisher import cook_fisher
from hf_soups.recipes.greedy import cook_greedy
from hf_soups.recipes.judge import GlueJudge, Judge
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.learned import cook_learned
from hf_soups.recipes.regmean import cook_regmean
from hf_soups.recipes.report import SoupReport
from hf_soups.recipes.stock import cook_stock
from hf_soups.recipes.uniform import cook_uniform
from hf_soups.validation import vocabulary_files

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """A recipe in the registry: its ``cook_*`` function, the options it takes beyond ``ensemble``, and whether it
    keeps files in a state folder.

    A recipe with ``state`` also takes ``state_dir``: :func:`~hf_soups.soups.run_in_kitchen` gives it
    ``<output_dir>.<name>-state`` (greedy's, to resume from, is removed once the soup folder is written; fisher's and
    regmean's statistics stay, for ``recipe.yaml`` to re-cook from)."""

    cook: Callable[..., SoupReport]
    options: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # what it needs of its judge beyond scores: names of NEEDS
    state: bool = False


RECIPES: dict[str, Recipe] = {
    "greedy": Recipe(cook_greedy, ("greedy_rule", "min_gain", "resume"), state=True),
    "bagged": Recipe(cook_bagged, ("bags", "bag_seed", "greedy_rule", "min_gain")),
    "uniform": Recipe(cook_uniform),
    "learned": Recipe(cook_learned, ("granularity", "epochs", "lr"), needs=("logits", "loss")),
    "stock": Recipe(cook_stock, ("base", "start_head")),
    "fisher": Recipe(
        cook_fisher, ("statistics_rows", "fisher_over", "greedy_rule", "min_gain"), needs=("loss",), state=True
    ),
    "regmean": Recipe(cook_regmean, ("statistics_rows", "regmean_alpha"), state=True),
}
assert tuple(RECIPES) == RECIPE_NAMES, "hf_soups.options.RECIPE_NAMES names the recipes for the command line"
# What a recipe may need of its judge beyond scores. A judge says what it gives in ``provides`` (a judge without it
# gives all) and what it scores from in ``scores_from``: the Trainer judge of a Seq2SeqTrainer that predicts with
# generate gives neither (see hf_soups.recipes.trainer_judge).
NEEDS = {
    "logits": "the model's logits (the logit ensemble mixes them)",
    "loss": "logits of one label a row to differentiate (learned trains through them, fisher takes their gradients)",
}


def judge_fits(recipe: str, judge: Judge, ensemble: bool) -> bool:
    """Refuse a recipe its judge cannot serve (:attr:`Recipe.needs`), before any work; leave the logit-ensemble
    rows out, with a logged note, where the judge gives no logits.

    Returns:
        Whether to score the logit-ensemble baselines: ``ensemble``, unless the judge gives no logits.

    Raises:
        SoupError: the recipe needs what the judge does not give.
    """
    provided = getattr(judge, "provides", set(NEEDS))
    missing = [need for need in RECIPES[recipe].needs if need not in provided]
    if missing:
        raise SoupError(
            f"recipe {recipe!r} does not apply here: it needs {NEEDS[missing[0]]}, and the judge scores from "
            f"{getattr(judge, 'scores_from', 'other outputs')}; cook greedy, bagged or uniform"
        )
    if ensemble and "logits" not in provided:
        logger.warning(
            "the logit-ensemble rows are left out: they need %s, and the judge scores from %s",
            NEEDS["logits"],
            getattr(judge, "scores_from", "other outputs"),
        )
        return False
    return ensemble


def make_kitchen(
    ingredients: Sequence[str | Path | Ingredient],
    task: str | None = None,
    judge: Judge | None = None,
    tokenizer: Any = None,
    dataset: str | None = DatasetOptions.dataset,
    dataset_config: str | None = DatasetOptions.dataset_config,
    text_columns: str | Sequence[str] = DatasetOptions.text_columns,
    label_column: str = DatasetOptions.label_column,
    metric: str | None = DatasetOptions.metric,
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
    """Resolve and validate the ingredients, then set up their judge: a GLUE ``task`` or a ``dataset`` of yours
    (:class:`~hf_soups.recipes.dataset_judge.DatasetJudge`, its labels matched to the first ingredient's
    ``id2label``), each with the first ingredient's tokenizer unless one is given, or any
    :class:`~hf_soups.recipes.judge.Judge`.

    Raises:
        SoupError: bad ingredients (before any tokenizer, dataset or model is loaded), both a task and a dataset,
            dataset options without a dataset, or a bad dataset (see :class:`DatasetJudge`).
    """
    resolved = resolve_ingredients(ingredients, checkpoints=checkpoints, token=token)  # type: ignore[arg-type]
    if len(resolved) == 1:
        raise SoupError(
            f"only one ingredient ({resolved[0].spec}): a recipe needs at least two (to copy one model, use "
            "hf-soups merge --allow-single)"
        )
    plan = validate_ingredients(resolved)
    data = text_dataset(
        dataset, dataset_config=dataset_config, text_columns=text_columns, label_column=label_column, metric=metric
    )
    if task is not None and data is not None:
        raise SoupError(f"give a GLUE task or a dataset, not both (task={task!r}, dataset={dataset!r})")
    if judge is None:
        if task is None and data is None:
            raise ValueError("give a GLUE task, a dataset or a judge")
        if tokenizer is None:
            vocabulary_files(resolved[0].vocabulary, resolved[0].label, "pass tokenizer=, or put one first")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolved[0].tokenizer_path)
        if data is not None:
            judge = DatasetJudge(
                data,
                tokenizer,
                label_map(resolved[0].config),
                select_split=select_split,
                report_split=report_split,
                heldout_fraction=heldout_fraction,
                batch_size=batch_size,
                accelerator=accelerator,
                progress=progress,
            )
        else:
            judge = GlueJudge(
                task,
                tokenizer,
                select_split,
                report_split,
                glue_dir,
                batch_size,
                accelerator,
                rule=SplitRule(heldout_fraction=heldout_fraction),
                progress=progress,
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
    tastings, _ = kitchen.taste_ingredients(uniform=False)
    return kitchen.ensemble(tastings)


__all__ = [
    "RECIPES",
    "DatasetJudge",
    "GlueJudge",
    "Judge",
    "Kitchen",
    "Recipe",
    "SoupReport",
    "ensemble_scores",
    "judge_fits",
    "make_kitchen",
]
