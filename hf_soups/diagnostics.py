"""Soup diagnostics: why a soup of some ingredients helps or not, and what to change.

Two views, then a verdict per ingredient.

**Weight space** (:func:`weight_space`). The centre θ₀ is the base model when one is given (the pretrained init the
ingredients were fine-tuned from), else the ingredients' mean. The task vectors τᵢ = θᵢ − θ₀ are compared per layer
group (:func:`layer_group`: embeddings, each encoder/decoder block, other, pooler, head): their norms (distance from
the centre, also relative to ‖θ₀‖), pairwise cosines and pairwise distances ‖θᵢ − θⱼ‖. Tensors the base lacks (a
new classification head) are centred on the ingredients' mean. With the mean as centre, task vectors are deviations
from the mean: they sum to zero, so their cosines are negative on average (exactly −1 for two ingredients) and say
which ingredients deviate together, not whether they agree.

The numbers are exact (float64 sums), computed in one pass over the soup's tensors: each tensor is read in blocks of
:data:`CHUNK` elements, the same element range from every ingredient (and the base), with ``seek`` + ``readinto`` on
the safetensors files, each opened once for the whole pass. Memory is N + 1 float64 blocks of 4 MiB, reused, and one
read at a time, whatever the model size (about 40 MB for 8 ingredients), plus small N × N sums per group.
Ingredients whose tensors are not stored as they are in safetensors files (``pytorch_model.bin`` files, which have
no byte offsets; LoRA adapters, which are their base + ΔW) are loaded whole once instead: one model each in memory.

**Loss landscape** (:func:`loss_landscape`), when a GLUE task is given: the selection-split score of each
ingredient, and along the straight line (1 − α)·θ_best + α·θⱼ from the best ingredient to each other one at
α ∈ :data:`ALPHAS`, using one loaded model whose weights are overwritten (memory: the model plus a float32 copy of
the best ingredient). The barrier is the endpoints' mean score minus the midpoint's: above
:data:`BARRIER_THRESHOLD` the two lie in different basins and averaging them hurts.

**Verdicts** (:data:`VERDICTS`), the first that applies:

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
    >>> print(format_report(diagnosis))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_soups.errors import SoupError
from hf_soups.ingredients import Ingredient, MergePlan, base_names, resolve_ingredients, validate
from hf_soups.tensorfile import read_tensor_range

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# A midpoint more than 2 points (of a 0..1 metric) below the endpoints' mean is a barrier: larger than the usual
# interpolation wobble between runs in one basin, and what costs a soup its gain.
BARRIER_THRESHOLD = 0.02
# Nearest distance over the others' median distance above which an ingredient is off-base. Fine-tunes of one base
# lie within a few times each other's distance; another base is tens to hundreds of times further away.
OFF_BASE_RATIO = 5.0
# Head-weight cosine below which two heads did not start from one init.
HEAD_COSINE = 0.5
# Name parts of task heads (new, randomly initialised at fine-tuning) and of pretrained poolers.
HEAD_PARTS = {"classifier", "pre_classifier", "lm_head", "score", "qa_outputs", "cls"}
POOLER_PARTS = {"pooler"}
CHUNK = 1 << 19  # elements per ingredient per read: 4 MiB as float64
_BLOCK = re.compile(r"(?:^|\.)((?:\w+\.)?(?:layer|layers|block|h)\.(\d+))\.")

VERDICTS: dict[str, str] = {
    "soup-compatible": "averages well with the others",
    "different head": "pin the head init: call transformers.set_seed(<one seed>) before from_pretrained in every run "
    "(vary data_seed, not seed), or fine-tune every run from one saved initialised model",
    "different basin": "narrow the learning-rate range (large rates leave the shared basin) or train longer from a "
    "shared warm start; greedy soups will leave it out",
    "off-base": "fine-tune it from the same base model as the others, or leave it out of the soup",
}


def layer_group(name: str) -> str:
    """The layer group of a tensor: ``"embeddings"``, a block (``"encoder.layer.3"``, ``"decoder.block.0"``),
    ``"pooler"``, ``"head"`` or ``"other"``.

    Example:
        >>> [layer_group(n) for n in ["bert.embeddings.word_embeddings.weight",
        ...                           "bert.encoder.layer.1.output.dense.bias",
        ...                           "encoder.block.0.layer.1.DenseReluDense.wi.weight", "shared.weight",
        ...                           "bert.pooler.dense.weight", "classifier.weight",
        ...                           "encoder.final_layer_norm.weight"]]
        ['embeddings', 'encoder.layer.1', 'encoder.block.0', 'embeddings', 'pooler', 'head', 'other']
    """
    parts = set(name.split("."))
    if parts & HEAD_PARTS:
        return "head"
    if parts & POOLER_PARTS:
        return "pooler"
    block = _BLOCK.search(name)
    if block:
        return block.group(1)
    if "embed" in name or name.startswith(("shared.", "wte.", "wpe.")):
        return "embeddings"
    return "other"


def _group_order(group: str) -> tuple[int, str, int]:
    block = _BLOCK.search(group + ".")
    if block:
        return 1, str(group.startswith("decoder")) + group[: block.start(2)], int(block.group(2))
    return {"embeddings": 0, "other": 2, "pooler": 3, "head": 4}[group], "", 0


@dataclass
class GroupSums:
    """Exact sums over the tensors of one layer group, from which every weight-space number follows.

    Attributes:
        gram: N × N, ⟨τᵢ, τⱼ⟩.
        centre_dot: N, ⟨τᵢ, θ₀⟩.
        centre_sq: ‖θ₀‖².
        size: number of elements.
        tensors: the tensor names.
    """

    gram: np.ndarray
    centre_dot: np.ndarray
    centre_sq: float = 0.0
    size: int = 0
    tensors: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> GroupSums:
        return cls(np.zeros((n, n)), np.zeros(n))

    def __add__(self, other: GroupSums) -> GroupSums:
        return GroupSums(
            self.gram + other.gram, self.centre_dot + other.centre_dot, self.centre_sq + other.centre_sq,
            self.size + other.size, self.tensors + other.tensors,
        )

    @property
    def norms(self) -> np.ndarray:
        """‖τᵢ‖: each ingredient's distance from the centre."""
        return np.sqrt(np.clip(np.diag(self.gram), 0, None))

    @property
    def relative_norms(self) -> np.ndarray:
        """‖τᵢ‖ / ‖θ₀‖."""
        return self.norms / np.sqrt(self.centre_sq) if self.centre_sq > 0 else np.full(len(self.gram), np.inf)

    @property
    def cosines(self) -> np.ndarray:
        """Pairwise cosines of the task vectors (two zero vectors count as identical: 1)."""
        return _cosines(self.gram)

    @property
    def weight_cosines(self) -> np.ndarray:
        """Pairwise cosines of the weights θᵢ themselves (no centre involved)."""
        dots = self.gram + self.centre_dot[:, None] + self.centre_dot[None, :] + self.centre_sq
        return _cosines(dots)

    @property
    def distances(self) -> np.ndarray:
        """Pairwise distances ‖θᵢ − θⱼ‖."""
        squared = np.diag(self.gram)[:, None] + np.diag(self.gram)[None, :] - 2 * self.gram
        return np.sqrt(np.clip(squared, 0, None))

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "norm": self.norms.tolist(),
            "relative_norm": self.relative_norms.tolist(),
            "cosine": self.cosines.tolist(),
            "weight_cosine": self.weight_cosines.tolist(),
            "distance": self.distances.tolist(),
        }


def _cosines(dots: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.clip(np.diag(dots), 0, None))
    denominator = np.outer(norms, norms)
    both_zero = denominator == 0
    cosines = np.divide(dots, denominator, out=np.zeros_like(dots), where=~both_zero)
    cosines[both_zero & (norms[:, None] == norms[None, :])] = 1.0
    return np.clip(cosines, -1.0, 1.0)


@dataclass
class WeightSpace:
    """The weight-space view: exact sums per layer group (see :func:`weight_space`).

    Attributes:
        specs: the ingredients, in order.
        base: the base model's spec, or ``None`` when the centre is the ingredients' mean.
        groups: layer group → sums, groups in model order.
    """

    specs: list[str]
    base: str | None
    groups: dict[str, GroupSums]

    @property
    def centre(self) -> str:
        return f"base model {self.base}" if self.base else "mean of the ingredients (no base given)"

    def total(self, exclude: Sequence[str] = ()) -> GroupSums:
        """Sums over all groups but ``exclude``."""
        total = GroupSums.empty(len(self.specs))
        for name, sums in self.groups.items():
            if name not in exclude:
                total = total + sums
        return total

    @property
    def overall(self) -> GroupSums:
        return self.total()

    @property
    def body(self) -> GroupSums:
        """Everything but the head."""
        return self.total(exclude=("head",))

    def to_dict(self) -> dict[str, Any]:
        return {
            "centre": "base" if self.base else "mean",
            "base": self.base,
            "overall": self.overall.to_dict(),
            "body": self.body.to_dict(),
            "groups": {name: sums.to_dict() | {"tensors": sums.tensors} for name, sums in self.groups.items()},
        }


def weight_space(ingredients: Sequence[Ingredient], plan: MergePlan, base: Ingredient | None = None) -> WeightSpace:
    """Task-vector norms, cosines and distances per layer group, in one pass of element ranges (see the module doc).

    Args:
        ingredients: validated ingredients.
        plan: their :func:`~hf_soups.ingredients.validate` plan.
        base: the pretrained model they were fine-tuned from (the centre); ``None`` centres on their mean. Its
            tensor names may lack the ingredients' model prefix (``bert.``), and it may lack the head.

    Returns:
        A :class:`WeightSpace`.

    Raises:
        SoupError: a base tensor's shape differs from the ingredients', or the base shares no tensor with them.
    """
    n = len(ingredients)
    names_in_base = base_names(base, plan) if base is not None else {}
    groups: dict[str, GroupSums] = {}
    block, centre = torch.empty(n, CHUNK, dtype=torch.float64), torch.empty(CHUNK, dtype=torch.float64)  # reused
    with ExitStack() as files:
        readers = [_reader(ingredient, files) for ingredient in ingredients]
        read_base = _reader(base, files) if base is not None else None
        for name in filter(plan.is_float, plan.shapes):
            sums = groups.setdefault(layer_group(name), GroupSums.empty(n))
            size = math.prod(plan.shapes[name])
            for start in range(0, size, CHUNK):
                count = min(CHUNK, size - start)
                vectors, middle = block[:, :count], centre[:count]
                for row, read in zip(vectors, readers, strict=True):
                    row.copy_(read(name, start, count))
                if read_base is not None and name in names_in_base:
                    middle.copy_(read_base(names_in_base[name], start, count))
                else:
                    torch.mean(vectors, 0, out=middle)
                vectors -= middle
                sums.gram += (vectors @ vectors.T).numpy()
                sums.centre_dot += (vectors @ middle).numpy()
                sums.centre_sq += float(middle @ middle)
            sums.size += size
            sums.tensors.append(name)
    ordered = {name: groups[name] for name in sorted(groups, key=_group_order)}
    return WeightSpace([i.spec for i in ingredients], base.spec if base is not None else None, ordered)


def _reader(ingredient: Ingredient, files: ExitStack) -> Callable[[str, int, int], torch.Tensor]:
    """``read(name, start, count)``: elements ``start .. start + count`` of a tensor (by soup name), flattened.

    Safetensors ingredients are read by byte range from their files, opened once (closed with ``files``).
    ``pytorch_model.bin`` files (no byte offsets) and ingredients that compute their tensors (LoRA adapters: base
    + ΔW) are loaded whole, once.
    """
    stored_as_is = type(ingredient).tensors is Ingredient.tensors
    if not stored_as_is or any(file.suffix != ".safetensors" for file in ingredient.weight_files):
        state = {name: tensor.clone().reshape(-1) for name, tensor in ingredient.tensors()}
        return lambda name, start, count: state[name][start : start + count]
    opened = {file: files.enter_context(open(file, "rb")) for file in ingredient.weight_files}
    where = {
        canonical: (opened[file], info)
        for stored, (file, info) in ingredient.layout.items()
        if (canonical := ingredient.canonical_names[stored]) is not None
    }
    return lambda name, start, count: read_tensor_range(*where[name], start, count)


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
            "task": self.task, "split": self.split, "metric": self.metric, "scores": self.scores, "best": self.best,
            "barrier_threshold": BARRIER_THRESHOLD, "curves": [c.to_dict() for c in self.curves],
        }


def loss_landscape(
    ingredients: Sequence[Ingredient],
    plan: MergePlan,
    task: str,
    split: str = "validation:select",
    glue_dir: str | Path | None = None,
    batch_size: int = 32,
    alphas: Sequence[float] = ALPHAS,
) -> Landscape:
    """Score each ingredient on a GLUE split, then the line from the best one to each other one.

    Args:
        ingredients: validated ingredients (two or more).
        plan: their plan.
        task: a GLUE task name.
        split: the split to score on; the selection split by default, so the report split stays unseen.
        glue_dir: a local GLUE tsv folder (default: the Hub).
        batch_size: evaluation batch size.
        alphas: the interpolation points; must include 0, 0.5 and 1.

    Returns:
        A :class:`Landscape`: N + (len(alphas) − 2) × (N − 1) evaluations.
    """
    from hf_soups.evaluation import GlueScorer, load_glue_model

    alphas = [float(a) for a in alphas]
    if not {0.0, 0.5, 1.0} <= set(alphas) or alphas != sorted(alphas):
        raise SoupError(f"alphas: {alphas} must be increasing and include 0, 0.5 and 1")
    model, tokenizer = load_glue_model(ingredients[0].path)
    model.float()
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


def format_report(diagnosis: Diagnosis) -> str:
    """The diagnosis as plain text: verdicts, findings, the overall cosine matrix and the interpolation curves."""
    lines = []
    if diagnosis.weights is not None:
        lines.append(f"centre: {diagnosis.weights.centre}")
        if diagnosis.weights.base is None:
            lines.append("  (task vectors from the mean sum to zero: their cosines show which ingredients deviate "
                         "together, -1 for two; give --base for cosines of true task vectors)")
    width = max(len(v.spec) for v in diagnosis.verdicts) + 2
    lines += ["", f"{'ingredient':<{width}}verdict"]
    for verdict in diagnosis.verdicts:
        lines.append(f"{verdict.spec:<{width}}{verdict.verdict}")
        lines += [f"{'':<{width}}  - {reason}" for reason in verdict.reasons]
        if verdict.verdict != "soup-compatible":
            lines.append(f"{'':<{width}}  → {verdict.suggestion}")
    lines += ["", "findings:", *(f"  - {f}" for f in diagnosis.findings)]
    weights = diagnosis.weights
    if weights is not None:
        overall = weights.overall
        lines += ["", "task-vector cosines (all tensors) and relative distance from the centre:"]
        for i, spec in enumerate(weights.specs):
            cells = " ".join(f"{c:+.2f}" for c in overall.cosines[i])
            lines.append(f"  {i:>2} {cells}   ‖τ‖/‖θ₀‖ {overall.relative_norms[i]:.3g}   {spec}")
    if diagnosis.landscape is not None:
        land = diagnosis.landscape
        lines += ["", f"{land.metric} on {land.split} from the best ingredient {land.best} (α = 0) to each other:"]
        for curve in land.curves:
            cells = " ".join(f"{s:.3f}" for s in curve.scores)
            lines.append(f"  {cells}   barrier {curve.barrier:+.3f}   {curve.partner}")
    return "\n".join(lines)


def plot_cosines(weights: WeightSpace, path: str | Path) -> Path:
    """Save a heatmap of the pairwise task-vector cosines, overall and per layer group, as a PNG."""
    from matplotlib.figure import Figure

    panels = {"all tensors": weights.overall, **weights.groups}
    n = len(weights.specs)
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.2 * columns + 1, 3.0 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    image = None
    for ax, (name, sums) in zip(axes.flat, panels.items(), strict=False):
        image = ax.imshow(sums.cosines, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(n), [str(i) for i in range(n)], fontsize=7)
        ax.set_yticks(range(n), [str(i) for i in range(n)], fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    figure.colorbar(image, ax=axes, shrink=0.8, label="task-vector cosine")
    figure.suptitle(
        f"centre: {weights.centre}\n" + "; ".join(f"{i}: {Path(s).name}" for i, s in enumerate(weights.specs)),
        fontsize=8,
    )
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_interpolation(landscape: Landscape, path: str | Path) -> Path:
    """Save the interpolation curves (score against α, best ingredient at α = 0) as a PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for curve in landscape.curves:
        ax.plot(
            curve.alphas, curve.scores, marker="o", label=f"{Path(curve.partner).name} (barrier {curve.barrier:+.3f})"
        )
    ax.set_xlabel(f"α (0: best, {Path(landscape.best).name}; 1: partner)")
    ax.set_ylabel(f"{landscape.metric} on {landscape.split}")
    ax.set_title(f"{landscape.task}: linear interpolation from the best ingredient")
    ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return Path(path)
