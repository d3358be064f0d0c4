"""Everything a recipe does once its soup is chosen: the results, the record, the folder, the table.

Example:
    >>> report = serve(kitchen, "greedy", mean, mix, tastings, [greedy, uniform], "soup")  # doctest: +SKIP
    >>> print(report.table)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_soups.card import write_card
from hf_soups.merge import RunningMean, Weight, soup_record, write_soup
from hf_soups.record import RecipeRecord, SoupRecord
from hf_soups.recipes.kitchen import Kitchen, Tasting, format_table, results
from hf_soups.recipes.plots import plot_soups, plot_trajectory
from hf_soups.recipes.recipe_file import write_recipe


@dataclass
class SoupReport:
    """What a recipe returns.

    Attributes:
        record: the soup's ``soup.json`` content (members, weights, scores, results with bootstrap gains).
        table: the printable results table.
        output_dir: the soup folder, when one was written.
        model: the soup, loaded (the kitchen's model holds its weights).
    """

    record: SoupRecord
    table: str
    output_dir: Path | None = None
    model: Any = field(default=None, repr=False)


def serve(
    kitchen: Kitchen,
    recipe: str,
    mean: RunningMean,
    mix: Sequence[tuple[int, Weight]],
    tastings: Sequence[Tasting],
    soups: Sequence[Tasting],
    output_dir: str | Path | None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    trajectory: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> SoupReport:
    """Build the results and the record of a finished recipe, write its folder (main process only), and load the
    soup into the kitchen's model.

    Args:
        kitchen: the kitchen the recipe ran in.
        recipe: its name.
        mean: the soup's weights.
        mix: ``(ingredient index, weight)`` in the order the soup was mixed (what re-cooks it bit for bit).
        tastings: every ingredient's scores.
        soups: this soup's tasting first, then the other soups and baselines for the table.
        output_dir: where to write the soup folder; ``None`` writes nothing.
        dtype: the dtype to write.
        overwrite: replace an existing folder.
        trajectory: greedy's steps.
        options: recipe options to record (learned: granularity, epochs, ...).
    """
    judge = kitchen.judge
    rows = results(tastings, soups, judge)
    weights = [0.0] * len(kitchen.ingredients)
    for index, weight in mix:
        weights[index] = weight if isinstance(weight, float | int) else float(sum(weight.values()) / len(weight))
    record = soup_record(kitchen.ingredients, weights)
    for ingredient, tasting in zip(record.ingredients, tastings):
        ingredient.scores = tasting.scores()
    record.recipe = RecipeRecord(
        name=recipe, task=judge.task, metric=judge.metric, select_split=judge.split_names["select"],
        report_split=judge.split_names["report"], split_rule=judge.split_rule, trajectory=trajectory or [],
        options=options or {},
    )
    record.results = rows
    kept = [w > 0 for w in weights]
    table = format_table(tastings, rows, judge.metric, kept)
    kitchen.load(mean.tensors.items())
    report = SoupReport(record=record, table=table, model=kitchen.model)
    try:
        if output_dir is not None and is_main_process(judge):

            def extras(folder: Path) -> None:
                write_recipe(folder, record, [(kitchen.ingredients[i], w) for i, w in mix])
                plot_soups(folder, tastings, soups)
                if trajectory:
                    plot_trajectory(folder, trajectory, judge.metric)
                write_card(folder, repo_id=Path(output_dir).name)  # not the temporary folder's name

            report.output_dir = write_soup(output_dir, mean, record, dtype, overwrite=overwrite, extras=extras)
    finally:
        wait_for_everyone(judge)  # also when the main process failed to write: the others must not hang
    return report


def is_main_process(judge: Any) -> bool:
    accelerator = getattr(judge, "accelerator", None)
    return accelerator is None or accelerator.is_main_process


def wait_for_everyone(judge: Any) -> None:
    accelerator = getattr(judge, "accelerator", None)
    if accelerator is not None:
        accelerator.wait_for_everyone()
