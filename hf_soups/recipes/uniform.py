"""The uniform soup: the plain average of every ingredient, scored beside each ingredient alone."""

from __future__ import annotations

from hf_soups.options import CookOptions
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, soup_report


def cook_uniform(kitchen: Kitchen, ensemble: bool = CookOptions.ensemble) -> SoupReport:
    """Run the uniform recipe in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see :func:`hf_soups.uniform_soup`).

    Each ingredient is read once: scored alone and added to the mean in the same pass.
    """
    tastings, soup = kitchen.taste_ingredients(uniform=True)
    return soup_report(kitchen, "uniform", soup, tastings, uniform=None, ensemble=ensemble)
