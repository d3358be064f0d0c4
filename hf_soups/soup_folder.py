"""The soup folder, written in one place for every front (merges, recipes, re-cooks, the callback): weights,
``soup.json``, ``recipe.yaml``, plots and the model card (:func:`write_soup_folder`), or a soup of LoRA adapters as a
PEFT adapter (:func:`write_adapter_folder`).

The folder is written in a temporary folder renamed into place (:func:`~hf_soups.atomic_folder.atomic_folder`): a
failure, a kill or a bad tensor leaves nothing half-written. Nothing here imports the evaluation stack, so a merge
does not load it.

Example:
    >>> soup = mean.soup()  # doctest: +SKIP
    >>> write_soup_folder("soup", soup, soup_record(soup.members, [1.0] * len(soup.mix)))  # doctest: +SKIP
    PosixPath('soup')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hf_soups.adapter_soup import AdapterSoup
from hf_soups.atomic_folder import atomic_folder, check_output
from hf_soups.card import write_card
from hf_soups.ingredient import Ingredient
from hf_soups.mean import SoupWeights
from hf_soups.model_folder import DEFAULT_MAX_SHARD_SIZE, parse_dtype, write_adapter_weights, write_soup_weights
from hf_soups.plots import plot_soups, plot_trajectory
from hf_soups.recipe_file import write_recipe
from hf_soups.record import SoupRecord

if TYPE_CHECKING:
    from tqdm import tqdm

    from hf_soups.recipes.kitchen import ModelScores


def write_soup_folder(
    output_dir: str | Path,
    soup: SoupWeights,
    record: SoupRecord,
    *,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    repo_id: str | None = None,
    tastings: Sequence[ModelScores] = (),
    soups: Sequence[ModelScores] = (),
    threads: int | None = None,
    progress: tqdm | None = None,
) -> Path:
    """Write a soup folder atomically: the weights with the config, generation config and tokenizer of the first
    member, ``soup.json`` (``record``, its ``dtype`` filled in here), ``recipe.yaml`` (the mix, which ``hf-soups
    cook`` re-cooks bit for bit), the plots when there are scores, and the model card.

    Args:
        output_dir: the folder to create.
        soup: the soup's weights and mix.
        record: its ``soup.json``.
        dtype: the dtype to write (default: the ingredients').
        max_shard_size: shard the weights above this size, like ``save_pretrained``.
        overwrite: replace an existing folder.
        repo_id: the Hub repo the soup will be pushed to; the card's snippets name it (default: the folder).
        tastings / soups: every ingredient's scores and the soups' (a recipe's), plotted against each other.
        threads: torch threads to cast and check the weights with.
        progress: a bar to advance once per tensor written.

    Returns:
        ``output_dir``.

    Raises:
        SoupError: a bad dtype or output folder (before anything is written), a tensor with NaN or Inf values.
    """
    chosen = parse_dtype(dtype)
    output_dir = check_output(output_dir, soup.members, overwrite)
    with atomic_folder(output_dir, overwrite) as tmp:
        record.dtype = write_soup_weights(tmp, soup, chosen, max_shard_size, threads, progress)
        record.save(tmp)
        write_recipe(tmp, record, soup.mix)
        if tastings:
            plot_soups(tmp, tastings, soups)
        if record.recipe is not None and record.recipe.trajectory:
            plot_trajectory(tmp, record.recipe.trajectory, record.recipe.metric or "score")
        write_card(tmp, repo_id=repo_id, destination=output_dir)  # not the temporary folder's name
    return output_dir


def write_adapter_folder(
    output_dir: str | Path,
    soup: AdapterSoup,
    record: SoupRecord,
    template: Ingredient,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a soup of adapters atomically as a PEFT adapter folder, with ``soup.json`` and the ``template``
    ingredient's tokenizer files (no ``recipe.yaml``: ``hf-soups cook`` re-cooks full models).

    Args:
        output_dir: the folder to create.
        soup: the exact or truncated adapter soup.
        record: its ``soup.json``; ``dtype`` and ``adapter`` (:meth:`~hf_soups.adapter_soup.AdapterSoup.summary`) are
            filled in here.
        template: the ingredient whose tokenizer files are copied.
        dtype: the dtype to write (default fp32).
        overwrite: replace an existing folder.

    Returns:
        ``output_dir``.
    """
    chosen = parse_dtype(dtype)
    record.adapter = soup.summary()
    with atomic_folder(Path(output_dir), overwrite) as tmp:
        record.dtype = write_adapter_weights(tmp, soup, template, chosen)
        record.save(tmp)
    return Path(output_dir)
