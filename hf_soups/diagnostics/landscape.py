"""Diagnostics, loss landscape: scores along the straight lines from the best ingredient to each other one.

:func:`loss_landscape` scores each ingredient on the selection split, and the straight line (1 − α)·θ_best + α·θⱼ
from the best ingredient to each other one at α ∈ :data:`ALPHAS`, using one loaded model whose weights are
overwritten (memory: the model plus a float32 copy of the best ingredient). The barrier is the endpoints' mean score
minus the midpoint's (:attr:`Curve.barrier`): above :data:`BARRIER_THRESHOLD` the two lie in different basins and
averaging them hurts.

Example:
    >>> round(Curve("runs/b", [0.0, 0.5, 1.0], [0.70, 0.62, 0.68]).barrier, 4)
    0.07
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hf_soups.errors import SoupError
from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import MergePlan
from hf_soups.validation import vocabulary_files

if TYPE_CHECKING:
    from hf_soups.evaluation.dataset import TextDataset

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# A midpoint more than 2 points (of a 0..1 metric) below the endpoints' mean is a barrier: larger than the usual
# interpolation wobble between runs in one basin, and what costs a soup its gain.
BARRIER_THRESHOLD = 0.02


@dataclass
class Curve:
    """Selection scores along the line from the best ingredient (α = 0) to ``partner`` (α = 1)."""

    partner: str
    alphas: list[float]
    scores: list[float]

    @property
    def barrier(self) -> float:
        """The endpoints' mean score minus the midpoint's (positive: the midpoint is worse)."""
        middle = self.scores[self.alphas.index(0.5)]
        return (self.scores[0] + self.scores[-1]) / 2 - middle

    def to_dict(self) -> dict[str, Any]:
        return {"partner": self.partner, "alphas": self.alphas, "scores": self.scores, "barrier": self.barrier}


@dataclass
class Landscape:
    """The loss-landscape view (see :func:`loss_landscape`)."""

    task: str
    split: str
    metric: str
    scores: dict[str, float]
    best: str
    curves: list[Curve]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "split": self.split,
            "metric": self.metric,
            "scores": self.scores,
            "best": self.best,
            "barrier_threshold": BARRIER_THRESHOLD,
            "curves": [c.to_dict() for c in self.curves],
        }


def loss_landscape(
    ingredients: Sequence[Ingredient],
    plan: MergePlan,
    task: str | TextDataset,
    split: str = "validation:select",
    glue_dir: str | Path | None = None,
    batch_size: int = 32,
    alphas: Sequence[float] = ALPHAS,
) -> Landscape:
    """Score each ingredient on a GLUE split, then the line from the best one to each other one.

    Args:
        ingredients: validated ingredients (two or more).
        plan: their plan.
        task: a GLUE task name, or a dataset of yours (:class:`~hf_soups.evaluation.dataset.TextDataset`).
        split: the split to score on; the selection split by default, so the report split stays unseen.
        glue_dir: a local GLUE tsv folder (default: the Hub).
        batch_size: evaluation batch size.
        alphas: the interpolation points; must include 0, 0.5 and 1.

    Returns:
        A :class:`Landscape`: N + (len(alphas) − 2) × (N − 1) evaluations.

    Raises:
        SoupError: ``alphas`` lack 0, 0.5 or 1, or the first ingredient (whose tokenizer scores) has no tokenizer
            files, as ``evaluate`` and the recipes refuse it.
    """
    from hf_soups.evaluation import GlueScorer, load_glue_model
    from hf_soups.evaluation.dataset import TextDataset

    alphas = [float(a) for a in alphas]
    if not {0.0, 0.5, 1.0} <= set(alphas) or alphas != sorted(alphas):
        raise SoupError(f"alphas: {alphas} must be increasing and include 0, 0.5 and 1")
    vocabulary_files(ingredients[0].vocabulary, ingredients[0].label, "save its tokenizer beside the weights")
    model, tokenizer = load_glue_model(ingredients[0].path)
    model.float()
    if isinstance(task, TextDataset):
        scorer = task.scorer(tokenizer, split, model, batch_size=batch_size, progress=False)
    else:
        scorer = GlueScorer(task, tokenizer, split, glue_dir=glue_dir, batch_size=batch_size, progress=False)
    state = model.state_dict()

    def score(ingredient: Ingredient, start: dict[str, torch.Tensor] | None = None, alpha: float = 1.0) -> float:
        with torch.no_grad():
            for name, tensor in ingredient.tensors():
                if not plan.is_float(name):
                    continue
                if start is None:
                    state[name].copy_(tensor)
                else:
                    torch.lerp(start[name], tensor.to(torch.float32), alpha, out=state[name])
        return scorer.score(model).main

    scores = {ingredient.spec: score(ingredient) for ingredient in ingredients}
    best = max(ingredients, key=lambda ingredient: scores[ingredient.spec])
    start = {name: tensor.to(torch.float32, copy=True) for name, tensor in best.tensors() if plan.is_float(name)}
    curves = []
    for other in ingredients:
        if other is best:
            continue
        values = [
            scores[best.spec] if alpha == 0 else scores[other.spec] if alpha == 1 else score(other, start, alpha)
            for alpha in alphas
        ]
        curves.append(Curve(other.spec, alphas, values))
    return Landscape(scorer.task.name, scorer.split, scorer.task.main_metric, scores, best.spec, curves)
