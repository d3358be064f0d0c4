"""Diagnostics, verdicts: :func:`diagnose` runs both views and gives each ingredient a verdict and a suggestion.

The verdicts (:data:`VERDICTS`), the first that applies:

- *off-base*: the ingredient does not validate with the others (another architecture, label map or shapes), its
  body is unrelated to theirs (body-matrix weight cosine below :data:`~hf_soups.ingredients.BODY_COSINE` with the
  largest group of ingredients that share a body, see :func:`~hf_soups.ingredients.body_cosines`: fine-tuned from
  another base model; when no two share a body, every ingredient is off-base), or it is far from everything: its
  nearest distance to another ingredient (or the base) exceeds :data:`OFF_BASE_RATIO` times the median distance
  among the others (its task vector is huge and unrelated to the others');
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
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_soups.diagnostics.landscape import BARRIER_THRESHOLD, Landscape, loss_landscape
from hf_soups.diagnostics.task_vectors import WeightSpace, weight_space
from hf_soups.errors import SoupError
from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import BODY_COSINE, body_cosines, resolve_ingredients, validate_ingredients

if TYPE_CHECKING:
    from hf_soups.evaluation.dataset import TextDataset

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
    "off-base": "fine-tune every run from one pretrained base model (the same name or folder in from_pretrained), or "
    "leave this one out of the soup",
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
            "thresholds": {
                "barrier": BARRIER_THRESHOLD,
                "off_base_ratio": OFF_BASE_RATIO,
                "head_cosine": HEAD_COSINE,
                "body_cosine": BODY_COSINE,
            },
            "verdicts": [v.to_dict() for v in self.verdicts],
            "findings": self.findings,
            "weight_space": self.weights.to_dict() if self.weights else None,
            "loss_landscape": self.landscape.to_dict() if self.landscape else None,
        }


def diagnose(
    ingredients: Sequence[str | Path | Ingredient],
    base: str | Path | Ingredient | None = None,
    task: str | TextDataset | None = None,
    glue_dir: str | Path | None = None,
    split: str = "validation:select",
    batch_size: int = 32,
) -> Diagnosis:
    """Diagnose a set of soup ingredients: weight space, loss landscape (when ``task`` is given), verdicts.

    Ingredients that do not validate with the largest compatible set are off-base and left out of both views.

    Args:
        ingredients: ingredient specs (Hub ids, folders) or resolved ingredients; at least two.
        base: the base model they were fine-tuned from (centre of the task vectors); default: their mean.
        task: a GLUE task, or a dataset of yours (:class:`~hf_soups.evaluation.dataset.TextDataset`), for the
            loss-landscape view.
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
        plan = validate_ingredients(compatible, allow_single=True)
        weights = weight_space(compatible, plan, base_ingredient)
        findings += _judge_bodies(weights.specs, body_cosines(compatible, plan), verdicts)
        findings += _judge_weights(weights, verdicts)
        usable = [i for i in compatible if verdicts[i.spec].verdict != "off-base"]
        if task is not None and len(usable) >= 2:
            landscape = loss_landscape(usable, plan, task, split, glue_dir, batch_size)
            findings += _judge_landscape(landscape, verdicts)
    if all(v.verdict == "soup-compatible" for v in verdicts.values()):
        findings.append(
            "all ingredients look soup-compatible"
            + ("" if task else " in weight space (give --task or --dataset to check for loss barriers)")
        )
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
                validate_ingredients([reference, other])
            except SoupError as err:
                errors[r][k] = str(err)
    reference = min(errors, key=lambda r: len(errors[r]))
    compatible = [i for k, i in enumerate(ingredients) if k not in errors[reference]]
    return compatible, {ingredients[k].spec: message for k, message in errors[reference].items()}


def _judge_bodies(specs: list[str], cosines: np.ndarray | None, verdicts: dict[str, Verdict]) -> list[str]:
    """Mark ingredients whose body is unrelated to the largest group sharing one as off-base; return findings."""
    if cosines is None or len(specs) < 2:
        return []
    groups: list[set[int]] = []
    for i in range(len(specs)):  # groups of ingredients linked by related bodies
        linked = [g for g in groups if any(cosines[i, k] >= BODY_COSINE for k in g)]
        groups = [g for g in groups if g not in linked] + [{i}.union(*linked)]
    shared = max(sorted(groups, key=min), key=len)
    if len(shared) == 1:
        for i, spec in enumerate(specs):
            verdicts[spec] = Verdict(
                spec,
                "off-base",
                [
                    f"its body is unrelated to every other ingredient's (body weight cosine at most "
                    f"{max(cosines[i, k] for k in range(len(specs)) if k != i):.2f}; fine-tunes of one base model are "
                    f"near 1): fine-tuned from another base model, or from a random init"
                ],
            )
        return [
            (
                f"the ingredients' bodies are unrelated: no two share a base model (body weight cosines below "
                f"{BODY_COSINE}; fine-tunes of one base are near 1), so a soup of them averages unrelated weights; "
                "fine-tune every run from one pretrained base model"
            )
        ]
    strangers = [i for i in range(len(specs)) if i not in shared]
    for i in strangers:
        verdicts[specs[i]] = Verdict(
            specs[i],
            "off-base",
            [
                f"its body is unrelated to the {len(shared)} ingredients that share one (body weight cosine at most "
                f"{max(cosines[i, k] for k in shared):.2f}; fine-tunes of one base model are near 1): fine-tuned from "
                "another base model, or from a random init"
            ],
        )
    if not strangers:
        return []
    return [
        (
            f"{', '.join(specs[i] for i in strangers)}: body unrelated to the other ingredients' (body weight cosine "
            f"below {BODY_COSINE}): not fine-tuned from their base model"
        )
    ]


def _judge_weights(weights: WeightSpace, verdicts: dict[str, Verdict]) -> list[str]:
    """Mark far-off and different-head ingredients, and an ingredient the base is; return findings."""
    findings = []
    specs = weights.specs
    body = weights.body
    points = body.distances
    if weights.base is not None:  # the base is one more point, at distance ‖τᵢ‖ from each ingredient
        points = np.block([[points, body.norms[:, None]], [body.norms[None, :], np.zeros((1, 1))]])
        findings += _base_is_ingredient(weights, verdicts)
    for i, spec in enumerate(specs):
        if verdicts[spec].verdict == "off-base":
            continue
        others = [k for k in range(len(points)) if k != i]
        nearest = min((points[i, k] for k in others), default=0.0)
        among = [points[a, b] for a in others for b in others if a < b]
        scale = float(np.median(among)) if among else 0.0
        if scale > 0 and nearest > OFF_BASE_RATIO * scale:
            verdicts[spec] = Verdict(
                spec,
                "off-base",
                [
                    (
                        f"its nearest distance to the {'others and the base' if weights.base else 'others'} is "
                        f"{nearest / scale:.0f}× their typical distance (body task-vector norm {body.norms[i]:.3g}): "
                        "fine-tuned from another base model?"
                    )
                ],
            )
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
            verdicts[specs[i]] = Verdict(
                specs[i],
                "different head",
                [
                    (
                        f"head weight cosine {typical:.2f} with the others (below {HEAD_COSINE}) while the body is "
                        "shared: the heads started from different random inits (or training moved them far from a "
                        "shared one)"
                    )
                ],
            )
    if differing:
        findings.append(
            f"classifier heads start from different random inits: the head ({head_names}) of "
            f"{', '.join(differing)} is unrelated to the others' (weight cosine below {HEAD_COSINE}); averaging "
            "unrelated heads gives a head that fits none of the bodies"
        )
    return findings


def _base_is_ingredient(weights: WeightSpace, verdicts: dict[str, Verdict]) -> list[str]:
    """Say so when the base given is one of the ingredients (their weights are identical): task vectors are then
    measured from a fine-tuned model, and that ingredient's is zero."""
    findings = []
    for i, spec in enumerate(weights.specs):
        if weights.overall.norms[i] == 0:
            verdicts[spec].reasons.append(
                f"it is the base given ({weights.base}): identical weights, so its task vector is zero and its "
                "cosines with the others (0) say nothing"
            )
            findings.append(
                f"the base ({weights.base}) is one of the ingredients ({spec}): the task vectors are measured from a "
                "fine-tuned model, not from the pretrained one; give the pretrained model the ingredients were "
                "fine-tuned from as --base, or leave --base out to centre them on their mean"
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
    return [
        (
            f"{len(barred)} of {len(landscape.curves)} ingredients lie behind a loss barrier from the best one "
            f"({landscape.best}): averaging them with it will hurt"
        )
    ]
