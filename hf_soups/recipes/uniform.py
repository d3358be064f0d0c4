"""The uniform soup: the plain average of every ingredient, scored beside each ingredient alone."""

from __future__ import annotations

from hf_soups.options import CookOptions
from hf_soups.recipes.ensemble import baselines
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, soup_report


def cook_uniform(kitchen: Kitchen, ensemble: bool = CookOptions.ensemble) -> SoupReport:
    """Run the uniform recipe in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see :func:`hf_soups.uniform_soup`).

    Each ingredient is read once: scored alone and added to the mean in the same pass.
    """
    tastings, mean = kitchen.taste_all(uniform=True)
    soups = [kitchen.score_soup(mean, "uniform")]
    if ensemble:
        soups.extend(baselines(kitchen, tastings))
    mix = [(i, 1.0) for i in range(len(kitchen.ingredients))]
    return soup_report(kitchen, "uniform", mean, mix, tastings, soups)
