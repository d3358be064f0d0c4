"""The greedy rule, shared by the greedy soup, bagged greedy and the greedy ensemble: the order candidates are tried
in (best single selection score first) and when one joins (``greedy_rule`` and ``min_gain``).

Example:
    >>> rule = selection_rule("strict", 0.0)
    >>> joins(0.81, 0.80, **rule), joins(0.80, 0.80, **rule)
    (True, False)
"""

from __future__ import annotations

from typing import Any

from hf_soups.errors import SoupError
from hf_soups.options import GREEDY_RULES
from hf_soups.recipes.kitchen import ModelScores, best_index
from hf_soups.validation import non_negative_float


def selection_rule(greedy_rule: str, min_gain: float) -> dict[str, Any]:
    """The checked rule of :func:`joins`, as recorded in ``soup.json`` and ``recipe.yaml``.

    Raises:
        SoupError: an unknown rule, or a min gain that is negative or not finite.
    """
    if greedy_rule not in GREEDY_RULES:
        raise SoupError(f"greedy_rule: {greedy_rule!r} is not one of {', '.join(GREEDY_RULES)}")
    return {"greedy_rule": greedy_rule, "min_gain": non_negative_float(min_gain, "min_gain")}


def joins(score: float, soup_score: float, greedy_rule: str, min_gain: float) -> bool:
    """Whether a candidate whose soup scores ``score`` joins a soup scoring ``soup_score``: ``strict`` when the
    score rises by more than ``min_gain`` (the authors' code: ``>``), ``ties`` when it rises by at least
    ``min_gain`` (the paper's Recipe 1: ``≥``).

    Example:
        >>> joins(0.8, 0.8, "strict", 0.0), joins(0.8, 0.8, "ties", 0.0), joins(0.81, 0.8, "strict", 0.02)
        (False, True, False)
    """
    gain = score - soup_score
    return gain > min_gain if greedy_rule == "strict" else gain >= min_gain


def greedy_order(tastings: list[ModelScores]) -> list[int]:
    """Ingredients by selection score, best first (input order on ties); the best is :func:`best_index`."""
    order = sorted(range(len(tastings)), key=lambda i: -tastings[i].select.main)
    assert order[0] == best_index(tastings)
    return order


__all__ = ["greedy_order", "joins", "selection_rule"]
