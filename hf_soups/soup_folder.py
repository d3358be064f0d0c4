"""Write a soup folder from a recipe's report: weights, ``soup.json``, ``recipe.yaml``, plots and the model card.

Recipes only choose and score (:class:`~hf_soups.recipes.report.SoupReport`); this is the one step that writes what
they chose, once the Hub repo the card's snippets name is known. Under ``accelerate launch`` only the main process
writes; every process must call it (it waits for the others, also when writing failed).

Example:
    >>> report = cook_greedy(kitchen)  # doctest: +SKIP
    >>> write_soup_folder(report, "soup", repo_id="me/bert-rte-soup")  # doctest: +SKIP
    PosixPath('soup')
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from hf_soups.card import write_card
from hf_soups.merge import write_soup
from hf_soups.plots import plot_soups, plot_trajectory
from hf_soups.recipes.recipe_file import write_recipe
from hf_soups.recipes.report import SoupReport, is_main_process, wait_for_everyone


def write_soup_folder(
    report: SoupReport,
    output_dir: str | Path,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    repo_id: str | None = None,
) -> Path:
    """Write the soup of ``report`` to ``output_dir`` (atomically) and set ``report.output_dir``, on the main
    process only (elsewhere it stays ``None``); then remove the recipe's resume state (``report.scratch``).

    Args:
        report: what the recipe returned.
        output_dir: the soup folder.
        dtype: the dtype to write (default: the ingredients').
        overwrite: replace an existing folder.
        repo_id: the Hub repo the soup will be pushed to; the card's snippets name it (default: the folder).

    Returns:
        ``output_dir``.
    """
    output_dir = Path(output_dir)
    record, recipe = report.record, report.record.recipe
    try:
        if is_main_process():

            def extras(folder: Path) -> None:
                write_recipe(folder, record, report.weights.mix)
                if report.tastings:
                    plot_soups(folder, report.tastings, report.soups)
                if recipe is not None and recipe.trajectory:
                    plot_trajectory(folder, recipe.trajectory, recipe.metric or "score")
                write_card(folder, repo_id=repo_id, destination=output_dir)  # not the temporary folder's name

            weights = report.weights
            report.output_dir = write_soup(output_dir, weights, record, dtype, overwrite=overwrite, extras=extras)
            for folder in report.scratch:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        wait_for_everyone()  # also when the main process failed to write: the others must not hang
    return output_dir
