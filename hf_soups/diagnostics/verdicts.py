"""Diagnostics, verdicts: :func:`diagnose` runs both views and gives each ingredient a verdict and a suggestion.

The verdicts (:data:`VERDICTS`), the first that applies:

- *off-base*: the ingredient does not validate with the others (another architecture, label map or shapes), or it
  is far from everything: its nearest distance to another ingredient (or the base) exceeds :data:`OFF_BASE_RATIO`
  times the median distance among the others (a model fine-tuned from another base: its task vector is huge and
  unrelated to the others');
- *different head*: its head weights (``classifier``, ``lm_head``, ``score``...) have a cosine below
  :data:`HEAD_COSINE` with the other ingredients' while the body is shared: classifier heads started from different
  random inits (heads from one init stay correlated through fine-tuning; independent random inits are orthogonal);
- *different basin*: a loss barrier with the best ingredient;
- *soup-compatible*.

Example:
    >>> diagnosis = diagnose(["runs/lr2e-5", "runs/lr3e-5", "runs/lr5e-5"], base="bert-base-uncased",
    ...                      task="rte", glue_dir="glue_data")  # doctest: +SKIP
    >>> [(v.spec, v.verdict) for v in diagnosis.verdicts]  # doctest: +SKIP
    [('runs/lr2e-5', 'soup-compatible'), ('runs/lr3e-5', 'soup-compatible'), ('runs/lr5e-5', 'different basin')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_soups.diagnostics.landscape import BARRIER_THRESHOLD, Landscape, loss_landscape
from hf_soups.diagnostics.task_vectors import WeightSpace, weight_space
from hf_soups.errors import SoupError
from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import resolve_ingredients, validate

# Nearest distance over the others' median distance above which an ingredient is off-base. Fine-tunes of one base
# lie within a few times each other's distance; another base is tens to hundreds of times further away.
OFF_BASE_RATIO = 5.0
# Head-weight cosine below which two heads did not start from one init.
HEAD_COSINE = 0.5

VERDICTS: dict[str, str] = {
    "soup-compatible": "averages well with the others",
    "different head": "pin the head init: call transformers.set_seed(<one seed>) before from_pretrained in every run "
    "(vary data_seed, not seed), or fine-tune every run from one saved initialised model",
    "different basin": "narrow the learning-rate range (large rates leave the shared basin) or train longer from a "
    "shared warm start; greedy soups will leave it out",
    "off-base": "fine-tune it from the same base model as the others, or leave it out of the soup",
}


@dataclass
class Verdict:
    """One ingredient's verdict (a key of :data:`VERDICTS`), why, and what to do."""

    spec: str
    verdict: str
    reasons: list[str] = field(default_factory=list)

    @property
    def suggestion(self) -> str:
        return VERDICTS[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "verdict": self.verdict, "reasons": self.reasons, "suggestion": self.suggestion}


@dataclass
class Diagnosis:
    """Everything :func:`diagnose` found."""

    specs: list[str]
    weights: WeightSpace | None
    landscape: Landscape | None
    verdicts: list[Verdict]
    findings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingredients": self.specs,
            "centre": self.weights.centre if self.weights else None,
            "thresholds": {"barrier": BARRIER_THRESHOLD, "off_base_ratio": OFF_BASE_RATIO, "head_cosine": HEAD_COSINE},
            "verdicts": [v.to_dict() for v in self.verdicts],
            "findings": self.findings,
            "weight_space": self.weights.to_dict() if self.weights else None,
            "loss_landscape": self.landscape.to_dict() if self.landscape else None,
        }


def diagnose(
    ingredients: Sequence[str | Path | Ingredient],
    base: str | Path | Ingredient | None = None,
    task: str | None = None,
    glue_dir: str | Path | None = None,
    split: str = "validation:select",
    batch_size: int = 32,
) -> Diagnosis:
    """Diagnose a set of soup ingredients: weight space, loss landscape (when ``task`` is given), verdicts.

    Ingredients that do not validate with the largest compatible set are off-base and left out of both views.

    Args:
        ingredients: ingredient specs (Hub ids, folders) or resolved ingredients; at least two.
        base: the base model they were fine-tuned from (centre of the task vectors); default: their mean.
        task: a GLUE task for the loss-landscape view.
        glue_dir: a local GLUE tsv folder.
        split: the split the landscape is scored on.
        batch_size: evaluation batch size.

    Returns:
        A :class:`Diagnosis`.

    Example:
        >>> diagnose(["runs/a", "runs/b"]).findings  # doctest: +SKIP
        ["classifier heads start from different random inits: ..."]
    """
    resolved = resolve_ingredients(ingredients)
    if len(resolved) < 2:
        raise SoupError(f"diagnose needs at least two ingredients, got {len(resolved)}")
    base_ingredient = resolve_ingredients([base])[0] if base is not None else None
    compatible, rejected = _compatible(resolved)
    verdicts = {i.spec: Verdict(i.spec, "soup-compatible") for i in resolved}
    findings = []
    for spec, reason in rejected.items():
        verdicts[spec] = Verdict(spec, "off-base", [reason])
    weights = landscape = None
    if compatible:
        plan = validate(compatible, allow_single=True)
        weights = weight_space(compatible, plan, base_ingredient)
        findings += _judge_weights(weights, verdicts)
        usable = [i for i in compatible if verdicts[i.spec].verdict != "off-base"]
        if task is not None and len(usable) >= 2:
            landscape = loss_landscape(usable, plan, task, split, glue_dir, batch_size)
            findings += _judge_landscape(landscape, verdicts)
    if all(v.verdict == "soup-compatible" for v in verdicts.values()):
        findings.append("all ingredients look soup-compatible" + ("" if task else " in weight space (give --task to "
                        "check for loss barriers)"))
    return Diagnosis([i.spec for i in resolved], weights, landscape, [verdicts[i.spec] for i in resolved], findings)


def _compatible(ingredients: list[Ingredient]) -> tuple[list[Ingredient], dict[str, str]]:
    """The largest set validating with one reference ingredient, and why each other one does not."""
    errors: dict[int, dict[int, str]] = {}
    for r, reference in enumerate(ingredients):
        errors[r] = {}
        for k, other in enumerate(ingredients):
            if k == r:
                continue
            try:
                validate([reference, other])
            except SoupError as err:
                errors[r][k] = str(err)
    reference = min(errors, key=lambda r: len(errors[r]))
    compatible = [i for k, i in enumerate(ingredients) if k not in errors[reference]]
    return compatible, {ingredients[k].spec: message for k, message in errors[reference].items()}


def _judge_weights(weights: WeightSpace, verdicts: dict[str, Verdict]) -> list[str]:
    """Mark off-base and different-head ingredients; return findings."""
    findings = []
    specs = weights.specs
    body = weights.body
    points = body.distances
    if weights.base is not None:  # the base is one more point, at distance ‖τᵢ‖ from each ingredient
        points = np.block([[points, body.norms[:, None]], [body.norms[None, :], np.zeros((1, 1))]])
    for i, spec in enumerate(specs):
        others = [k for k in range(len(points)) if k != i]
        nearest = min((points[i, k] for k in others), default=0.0)
        among = [points[a, b] for a in others for b in others if a < b]
        scale = float(np.median(among)) if among else 0.0
        if scale > 0 and nearest > OFF_BASE_RATIO * scale:
            verdicts[spec] = Verdict(spec, "off-base", [
                (f"its nearest distance to the {'others and the base' if weights.base else 'others'} is "
                f"{nearest / scale:.0f}× their typical distance (body task-vector norm {body.norms[i]:.3g}): "
                "fine-tuned from another base model?")
            ])
    head = weights.groups.get("head")
    on_base = [i for i, spec in enumerate(specs) if verdicts[spec].verdict != "off-base"]
    if head is None or len(on_base) < 2:
        return findings
    cosines = head.weight_cosines
    head_names = ", ".join(head.tensors)
    differing = []
    for i in on_base:
        others = [cosines[i, k] for k in on_base if k != i]
        typical = float(np.median(others))
        if typical < HEAD_COSINE:
            differing.append(specs[i])
            verdicts[specs[i]] = Verdict(specs[i], "different head", [
                (f"head weight cosine {typical:.2f} with the others (below {HEAD_COSINE}) while the body is shared: "
                "the heads started from different random inits (or training moved them far from a shared one)")
            ])
    if differing:
        findings.append(
            f"classifier heads start from different random inits: the head ({head_names}) of "
            f"{', '.join(differing)} is unrelated to the others' (weight cosine below {HEAD_COSINE}); averaging "
            "unrelated heads gives a head that fits none of the bodies"
        )
    return findings


def _judge_landscape(landscape: Landscape, verdicts: dict[str, Verdict]) -> list[str]:
    """Mark ingredients behind a loss barrier from the best one; return findings."""
    barred = []
    for curve in landscape.curves:
        if curve.barrier > BARRIER_THRESHOLD:
            barred.append(curve.partner)
            reason = (
                f"loss barrier with the best ingredient {landscape.best}: the midpoint scores {curve.barrier:.3f} "
                f"{landscape.metric} below the endpoints' mean (threshold {BARRIER_THRESHOLD})"
            )
            if verdicts[curve.partner].verdict == "soup-compatible":
                verdicts[curve.partner] = Verdict(curve.partner, "different basin", [reason])
            else:
                verdicts[curve.partner].reasons.append(reason)
    if not barred:
        return []
    return [(f"{len(barred)} of {len(landscape.curves)} ingredients lie behind a loss barrier from the best one "
            f"({landscape.best}): averaging them with it will hurt")]
