"""Run a recipe and write its soup folder in one call: :func:`run_recipe` (from ingredients), :func:`run_in_kitchen`
(in a kitchen set up already) and the ``*_soup`` functions (the fronts the command line, the callback and the
package's names use). A recipe's own step, which writes nothing, is its ``cook_*`` function
(:data:`hf_soups.recipes.RECIPES`).

They sit above the recipes (:mod:`hf_soups.recipes`, which write nothing) and the soup folder
(:func:`hf_soups.soup_folder.write_soup_folder`: weights, ``soup.json``, ``recipe.yaml``, plots, the card).

Example:
    >>> from hf_soups import greedy_soup
    >>> report = greedy_soup(  # doctest: +SKIP
    ...     ["runs/lr2e-5", "runs/lr3e-5", "runs/lr5e-5"], "rte", "soup", glue_dir="glue_data"
    ... )
    >>> print(report.table)  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_soups.atomic_folder import check_output, fitted_name
from hf_soups.errors import SoupError
from hf_soups.ingredients import Ingredient
from hf_soups.options import BaggedOptions, CookOptions, GreedyOptions, LearnedOptions, MergeOptions, ResumeOptions
from hf_soups.recipes import RECIPES, judge_fits, make_kitchen
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, is_main_process, wait_for_everyone
from hf_soups.soup_folder import write_soup_folder


def run_recipe(
    name: str,
    ingredients: Sequence[str | Path | Ingredient],
    task: str | None = None,
    output_dir: str | Path | None = None,
    *,
    ensemble: bool = CookOptions.ensemble,
    dtype: str | None = MergeOptions.dtype,
    overwrite: bool = MergeOptions.overwrite,
    repo_id: str | None = None,
    options: dict[str, Any] | None = None,
    **kitchen_options: Any,
) -> SoupReport:
    """Cook the recipe ``name`` (see :data:`RECIPES`) in a :func:`make_kitchen` kitchen (``kitchen_options`` go
    there) and write its folder to ``output_dir`` when given (see :func:`run_in_kitchen`).

    Raises:
        SoupError: an unknown recipe, an existing ``output_dir`` (unless ``overwrite``), or bad ingredients; all
            before any work.
    """
    _check_target(name, output_dir, overwrite)
    kitchen = make_kitchen(ingredients, task, **kitchen_options)
    return run_in_kitchen(
        kitchen,
        name,
        output_dir,
        ensemble=ensemble,
        dtype=dtype,
        overwrite=overwrite,
        repo_id=repo_id,
        options=options,
    )


def run_in_kitchen(
    kitchen: Kitchen,
    name: str,
    output_dir: str | Path | None = None,
    *,
    ensemble: bool = CookOptions.ensemble,
    dtype: str | None = MergeOptions.dtype,
    overwrite: bool = MergeOptions.overwrite,
    repo_id: str | None = None,
    options: dict[str, Any] | None = None,
) -> SoupReport:
    """Cook the recipe ``name`` in ``kitchen`` (its ``cook_*`` step), then write the soup folder (when ``output_dir``
    is given).

    Args:
        kitchen: the ingredients, judge and scoring model.
        name: a recipe of :data:`RECIPES`.
        output_dir: the soup folder (``None``: nothing written; the report holds the model). A recipe with a
            ``state`` (:class:`~hf_soups.recipes.Recipe`) keeps its files in ``<output_dir>.<name>-state`` unless
            ``options`` names a ``state_dir`` (recipes cooked into several folders can share fisher's or regmean's
            statistics so).
        ensemble: also score the logit-ensemble baseline.
        dtype: the dtype to write.
        overwrite: replace an existing folder.
        repo_id: the Hub repo the soup will be pushed to, named by the card's snippets (default: the folder name).
        options: the recipe's own options (:attr:`Recipe.options`).
    """
    _check_target(name, output_dir, overwrite, kitchen.ingredients)
    recipe, options = RECIPES[name], dict(options or {})
    ensemble = judge_fits(name, kitchen.judge, ensemble)
    if recipe.state and output_dir is not None:
        folder, state = Path(output_dir), f".{name}-state"  # beside the output, named after it (fitted to NAME_MAX)
        options.setdefault("state_dir", folder.with_name(fitted_name(folder.name, len(state)) + state))
    report = recipe.cook(kitchen, ensemble=ensemble, **options)
    if output_dir is not None:
        _write(report, Path(output_dir), dtype, overwrite, repo_id)
    return report


def cook_recipe(kitchen: Kitchen, name: str, output_dir: str | Path | None = None, **kwargs: Any) -> SoupReport:
    """Deprecated name of :func:`run_in_kitchen`."""
    warnings.warn(
        "hf_soups.soups.cook_recipe is deprecated and will be removed: call run_in_kitchen (the same run)",
        FutureWarning,
        stacklevel=2,
    )
    return run_in_kitchen(kitchen, name, output_dir, **kwargs)


def _write(report: SoupReport, output_dir: Path, dtype: str | None, overwrite: bool, repo_id: str | None) -> None:
    """Write the report's soup folder (:func:`~hf_soups.soup_folder.write_soup_folder`) and set
    ``report.output_dir`` on the main process only (elsewhere it stays ``None``), then remove the recipe's resume
    state (``report.scratch``). Every process calls it: it waits for the others, also when writing failed."""
    try:
        if is_main_process():
            report.output_dir = write_soup_folder(
                output_dir,
                report.weights,
                report.record,
                dtype=dtype,
                overwrite=overwrite,
                repo_id=repo_id,
                tastings=report.tastings,
                soups=report.soups,
            )
            for folder in report.scratch:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        wait_for_everyone()  # also when the main process failed to write: the others must not hang


def _check_target(
    name: str, output_dir: str | Path | None, overwrite: bool, ingredients: Sequence[Ingredient] = ()
) -> None:
    if name not in RECIPES:
        raise SoupError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    if output_dir is not None:
        check_output(output_dir, ingredients, overwrite)  # before any scoring


def greedy_soup(
    ingredients,
    task=None,
    output_dir=None,
    *,
    greedy_rule: str = GreedyOptions.greedy_rule,
    min_gain: float = GreedyOptions.min_gain,
    resume: bool = ResumeOptions.resume,
    **kwargs: Any,
) -> SoupReport:
    """The greedy soup: ingredients added best first, each kept only if the selection score rises (``"strict"``,
    the default) or does not drop (``greedy_rule="ties"``), by more than ``min_gain``.

    Args:
        ingredients: Hub ids (``owner/name[@revision]``), local folders, Trainer output folders.
        task: a GLUE task (``"rte"``), unless a ``dataset`` or a ``judge`` is given.
        output_dir: the soup folder to write (``None``: nothing written; the report holds the model).
        greedy_rule / min_gain: when a candidate joins (:func:`hf_soups.recipes.greedy.joins`).
        resume: continue an interrupted run from ``<output_dir>.greedy-state``.
        **kwargs: ``ensemble``, ``dtype``, ``overwrite``, ``repo_id``, and :func:`make_kitchen`'s options
            (``glue_dir``, ``select_split``, ``report_split``, ``heldout_fraction``, ``batch_size``,
            ``accelerator``, ``judge``, ``tokenizer``, ...); a dataset of yours instead of a GLUE task: ``dataset``
            (a Hub id, a folder, csv/json/jsonl/parquet files), ``dataset_config``, ``text_columns``,
            ``label_column``, ``metric`` (:class:`~hf_soups.options.DatasetOptions`,
            :class:`~hf_soups.recipes.dataset_judge.DatasetJudge`).

    Returns:
        A :class:`~hf_soups.recipes.report.SoupReport` (record, printable table, folder, model).

    Example:
        >>> report = greedy_soup(  # doctest: +SKIP
        ...     ["runs/a", "runs/b", "runs/c"], "mrpc", "soup", glue_dir="glue_data"
        ... )
        >>> [i.spec for i in report.record.ingredients if i.kept]  # doctest: +SKIP
        ['runs/b', 'runs/a']
        >>> greedy_soup(  # doctest: +SKIP
        ...     ["runs/a", "runs/b"], output_dir="soup", dataset="reviews/", text_columns="review", metric="f1_macro"
        ... )
    """
    options = {"greedy_rule": greedy_rule, "min_gain": min_gain, "resume": resume}
    return run_recipe("greedy", ingredients, task, output_dir, options=options, **kwargs)


def bagged_soup(
    ingredients,
    task=None,
    output_dir=None,
    *,
    bags: int = BaggedOptions.bags,
    bag_seed: int = BaggedOptions.bag_seed,
    greedy_rule: str = GreedyOptions.greedy_rule,
    min_gain: float = GreedyOptions.min_gain,
    **kwargs: Any,
) -> SoupReport:
    """Bagged greedy: greedy on ``bags`` seeded bootstrap resamples of the selection split, keeping the ingredients
    at least half of them keep (see :mod:`hf_soups.recipes.bagged`; arguments as :func:`greedy_soup`).

    Example:
        >>> bagged_soup(["runs/a", "runs/b", "runs/c"], "rte", "soup", glue_dir="glue_data", bags=20)  # doctest: +SKIP
    """
    options = {"bags": bags, "bag_seed": bag_seed, "greedy_rule": greedy_rule, "min_gain": min_gain}
    return run_recipe("bagged", ingredients, task, output_dir, options=options, **kwargs)


def uniform_soup(ingredients, task=None, output_dir=None, **kwargs: Any) -> SoupReport:
    """The uniform soup, scored beside every ingredient (arguments as :func:`greedy_soup`).

    Example:
        >>> uniform_soup(["runs/a", "runs/b"], "sst2", glue_dir="glue_data").table  # doctest: +SKIP
    """
    return run_recipe("uniform", ingredients, task, output_dir, **kwargs)


def learned_soup(
    ingredients,
    task=None,
    output_dir=None,
    *,
    granularity: str = LearnedOptions.granularity,
    epochs: int = LearnedOptions.epochs,
    lr: float = LearnedOptions.lr,
    **kwargs: Any,
) -> SoupReport:
    """The learned soup: softmax mixing weights (per ingredient, or per ingredient and tensor with
    ``granularity="layer"``) trained on the selection split; all ingredients must fit in memory at once.

    Example:
        >>> learned_soup(["runs/a", "runs/b"], "rte", "soup", glue_dir="glue_data", epochs=3)  # doctest: +SKIP
    """
    options = {"granularity": granularity, "epochs": epochs, "lr": lr}
    return run_recipe("learned", ingredients, task, output_dir, options=options, **kwargs)


def stock_soup(ingredients, task=None, output_dir=None, *, base=None, start_head=None, **kwargs: Any) -> SoupReport:
    """The Model Stock soup (Jang et al. 2024): per tensor, the ingredients' mean pulled towards the base θ₀ by the
    agreement of their task vectors (see :mod:`hf_soups.recipes.stock`), scored beside every ingredient.

    Args:
        ingredients, task, output_dir, **kwargs: as :func:`greedy_soup`.
        base: θ₀, the pretrained model the ingredients were fine-tuned from (Hub id, folder or ingredient).
        start_head: a safetensors file of the classifier head every ingredient started from (a pantry's
            ``start-head.safetensors``); without it a new head is averaged uniformly.

    Example:
        >>> stock_soup(  # doctest: +SKIP
        ...     ["runs/a", "runs/b", "runs/c"], "rte", "soup", base="bert-base-uncased", glue_dir="glue"
        ... )
    """
    return run_recipe(
        "stock", ingredients, task, output_dir, options={"base": base, "start_head": start_head}, **kwargs
    )


__all__ = ["bagged_soup", "greedy_soup", "learned_soup", "run_in_kitchen", "run_recipe", "stock_soup", "uniform_soup"]
