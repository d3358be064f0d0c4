"""What a recipe returns once its soup is chosen: the record, the results table, the soup's weights.

A recipe ends with :func:`soup_report`, which scores its soup beside the uniform soup and the logit-ensemble
baselines; nothing here writes a file. The soup folder (weights, ``soup.json``, ``recipe.yaml``, plots, card) is
written afterwards by :func:`hf_soups.soup_folder.write_soup_folder`, once the Hub repo the card names is known.

Example:
    >>> report = soup_report(kitchen, "greedy", soup, tastings, uniform=uniform, ensemble=True)  # doctest: +SKIP
    >>> print(report.table)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from hf_soups.mean import SoupWeights
from hf_soups.recipes.ensemble import baselines
from hf_soups.recipes.kitchen import Kitchen, ModelScores, format_table, results
from hf_soups.record import RecipeRecord, SoupRecord
from hf_soups.soup_record import soup_record


@dataclass
class SoupReport:
    """What a recipe returns.

    Attributes:
        record: the soup's ``soup.json`` content (members, weights, scores, results with bootstrap gains).
        table: the printable results table.
        weights: the soup's weights and their mix (what ``recipe.yaml`` re-cooks bit for bit), to write.
        output_dir: the soup folder, once one was written.
        model: the soup, loaded (the kitchen's model holds its weights).
        tastings: every ingredient's scores (for the plots).
        soups: this soup's scores first, then the other soups and baselines (for the plots).
        scratch: folders the recipe kept to resume from, removed once the soup folder is written.
    """

    record: SoupRecord
    table: str
    weights: SoupWeights = field(repr=False)
    output_dir: Path | None = None
    model: Any = field(default=None, repr=False)
    tastings: list[ModelScores] = field(default_factory=list, repr=False)
    soups: list[ModelScores] = field(default_factory=list, repr=False)
    scratch: list[Path] = field(default_factory=list, repr=False)


def soup_report(
    kitchen: Kitchen,
    recipe: str,
    soup: SoupWeights,
    tastings: Sequence[ModelScores],
    *,
    uniform: ModelScores | None,
    ensemble: bool,
    rule: dict[str, Any] | None = None,
    trajectory: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> SoupReport:
    """Score a finished recipe's soup, build its results and record, and load the soup into the kitchen's model.

    Args:
        kitchen: the kitchen the recipe ran in.
        recipe: its name.
        soup: the soup's weights, mixed from the kitchen's ingredients.
        tastings: every ingredient's scores.
        uniform: the uniform soup's scores, for the table (``None``: the soup is the uniform one).
        ensemble: also the logit-ensemble baselines (:func:`~hf_soups.recipes.ensemble.baselines`).
        rule: the greedy ensemble's rule (default: the default greedy rule).
        trajectory: greedy's steps.
        options: recipe options to record (learned: granularity, epochs, ...).
    """
    soups = [kitchen.score_soup(soup, recipe), *([uniform] if uniform is not None else [])]
    if ensemble:
        soups.extend(baselines(kitchen, tastings, rule))
    judge = kitchen.judge
    rows = results(tastings, soups, judge)
    position = {id(ingredient): index for index, ingredient in enumerate(kitchen.ingredients)}
    weights = [0.0] * len(kitchen.ingredients)
    for ingredient, weight in soup.mix:
        index = position[id(ingredient)]
        weights[index] = weight if isinstance(weight, float | int) else float(sum(weight.values()) / len(weight))
    record = soup_record(kitchen.ingredients, weights)
    for ingredient, tasting in zip(record.ingredients, tastings, strict=True):
        ingredient.scores = tasting.scores()
    record.recipe = RecipeRecord(
        name=recipe,
        task=judge.task,
        metric=judge.metric,
        select_split=judge.split_names["select"],
        report_split=judge.split_names["report"],
        split_rule=judge.split_rule,
        trajectory=trajectory or [],
        options=options or {},
    )
    record.results = rows
    table = format_table(tastings, rows, judge.metric, [w > 0 for w in weights])
    table += "".join(f"\n{row.name} members: {', '.join(row.members)}" for row in rows if row.members)
    kitchen.load(soup.tensors.items())
    return SoupReport(
        record=record, table=table, model=kitchen.model, weights=soup, tastings=list(tastings), soups=list(soups)
    )


def is_main_process() -> bool:
    """Whether this is the process that writes (always, outside ``accelerate launch``)."""
    return PartialState().is_main_process


def wait_for_everyone() -> None:
    """Wait until every process of a distributed run gets here (nothing to wait for in a single process)."""
    PartialState().wait_for_everyone()
