"""The logit-ensemble baselines a soup is read against: the ensemble of every ingredient, and the *greedy ensemble*
(Wortsman et al. 2022, the baseline their soups are set against).

An ensemble's prediction is the mean of its members' class probabilities (the mean output of a regressor), as
:meth:`~hf_soups.recipes.judge.Judge.ensemble` computes it; it costs N forward passes at inference time. The greedy
ensemble takes its members by the greedy rule (:mod:`~hf_soups.recipes.selection`) on the selection score of the
*ensemble*: the best ingredient first, then each one down the selection order, kept when the ensemble with it scores
higher (``strict``) or no lower (``ties``) by more than ``min_gain``. It scores nothing anew: the tasting pass kept
every ingredient's logits on both splits.

Example:
    >>> tastings, _ = kitchen.tastings()  # doctest: +SKIP
    >>> [b.name for b in baselines(kitchen, tastings)]  # doctest: +SKIP
    ['ensemble', 'ensemble (greedy)']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from hf_soups.options import GreedyOptions
from hf_soups.recipes.kitchen import Kitchen, ModelScores
from hf_soups.recipes.selection import greedy_order, joins, selection_rule

GREEDY_ENSEMBLE = "ensemble (greedy)"


def baselines(
    kitchen: Kitchen, tastings: Sequence[ModelScores], rule: dict[str, Any] | None = None
) -> list[ModelScores]:
    """The ensemble of every ingredient, then the greedy ensemble under ``rule`` (default: the default greedy rule,
    strict), for a recipe's results table."""
    rule = rule or selection_rule(GreedyOptions.greedy_rule, GreedyOptions.min_gain)
    return [kitchen.ensemble(tastings), greedy_ensemble(kitchen, tastings, rule)]


def greedy_ensemble(kitchen: Kitchen, tastings: Sequence[ModelScores], rule: dict[str, Any]) -> ModelScores:
    """The greedy ensemble of the tasted ingredients (see the module docstring), named :data:`GREEDY_ENSEMBLE`,
    its members (ingredient specs, in the order they joined) in ``members``.

    Args:
        kitchen: the kitchen the ingredients were tasted in (its judge ensembles their logits).
        tastings: every ingredient's scores, with logits, on both splits.
        rule: a :func:`~hf_soups.recipes.selection.selection_rule`.
    """
    members = greedy_ensemble_members(kitchen, tastings, rule)
    ensemble = kitchen.ensemble([tastings[i] for i in members])
    return dataclasses.replace(ensemble, name=GREEDY_ENSEMBLE, members=[tastings[i].name for i in members])


def greedy_ensemble_members(kitchen: Kitchen, tastings: Sequence[ModelScores], rule: dict[str, Any]) -> list[int]:
    """The greedy ensemble's members: indices into ``tastings``, in the order they joined."""
    order = greedy_order(list(tastings))
    members, score = order[:1], tastings[order[0]].select.main
    for index in order[1:]:
        candidate = [*members, index]
        candidate_score = kitchen.judge.ensemble([tastings[i].select for i in candidate]).main
        if joins(candidate_score, score, **rule):
            members, score = candidate, candidate_score
    return members


__all__ = ["GREEDY_ENSEMBLE", "baselines", "greedy_ensemble", "greedy_ensemble_members"]
