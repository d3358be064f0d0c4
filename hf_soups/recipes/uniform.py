"""The uniform soup: the plain average of every ingredient, scored beside each ingredient alone."""

from __future__ import annotations

from pathlib import Path

import torch

from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.serving import SoupReport, serve


def cook_uniform(
    kitchen: Kitchen,
    output_dir: str | Path | None = None,
    ensemble: bool = False,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
) -> SoupReport:
    """Run the uniform recipe in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see :func:`hf_soups.uniform_soup`).

    Each ingredient is read once: scored alone and added to the mean in the same pass.
    """
    tastings, mean = kitchen.taste_all(uniform=True)
    soups = [kitchen.serve(mean, "uniform")]
    if ensemble:
        soups.append(kitchen.ensemble(tastings))
    mix = [(i, 1.0) for i in range(len(kitchen.ingredients))]
    return serve(kitchen, "uniform", mean, mix, tastings, soups, output_dir, dtype, overwrite)
