"""Model Stock (Jang et al., ECCV 2024, arXiv 2403.19522): a soup of few ingredients pulled towards their base.

Per tensor, with θ₀ the base (the pretrained model the ingredients were fine-tuned from, with the sweep's start
head when one was pinned) and k ingredients θᵢ: cos θ is the mean pairwise cosine of the task vectors θᵢ − θ₀,
t = k·cos θ / (1 + (k − 1)·cos θ), and the soup is t·mean(θᵢ) + (1 − t)·θ₀ — as mergekit's ``model_stock``
(non-filter-wise) computes it, but for one rule: cos θ is clamped to [0, 1], the range the method's geometry assumes
(task vectors that disagree on average pull the tensor to the base, t = 0, instead of past it: unclamped, t runs to
±∞ as cos θ nears −1/(k − 1)), and the record counts the tensors clamped. Tensors the base lacks (a new classifier
head when no start head is known) are averaged uniformly, and the record says which. A base with the weights of an
ingredient (its task vector zero everywhere) is refused: the soup would be the base.

One streaming pass: tensor by tensor, in pieces, every ingredient's copy of a piece is read once, added to the
mean and to the task vectors' Gram matrix; the base's copy of the current tensor is the only other thing held.
Memory is the fp32 soup plus one tensor; each input is read once (and hashed on the way).

Example:
    >>> from hf_soups.recipes.stock import StockBase, stock_soup_tensors
    >>> base = StockBase(resolve_ingredients(["bert-base-uncased"])[0])  # doctest: +SKIP
    >>> plan = validate_ingredients(ingredients)  # doctest: +SKIP
    >>> soup, ratios, clamped = stock_soup_tensors(ingredients, plan, base)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredients import Ingredient, MergePlan, base_names, resolve_ingredients
from hf_soups.mean import PIECE, SoupWeights, check_same_integer
from hf_soups.options import CookOptions
from hf_soups.probe import read_start_head
from hf_soups.recipe_data import BaseEntry, pinned_spec
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, soup_report
from hf_soups.tensorfile import BackgroundHasher, spare_cores
from hf_soups.threads import compute_threads


@dataclass
class StockBase:
    """θ₀ for Model Stock.

    Attributes:
        ingredient: the pretrained model the ingredients were fine-tuned from (its tensor names may lack the
            ingredients' model prefix, ``bert.``, and it may lack the head).
        head: a safetensors file of start-head tensors by soup name (a pantry's ``start-head.safetensors``), which
            the ingredients' training started from; it completes the base.
    """

    ingredient: Ingredient
    head: Path | None = None

    def head_sha256(self) -> str | None:
        return None if self.head is None else hashlib.sha256(self.head.read_bytes()).hexdigest()

    @classmethod
    def resolve(
        cls, base: str | Path | Ingredient | StockBase | None, head: str | Path | None = None
    ) -> StockBase | None:
        """A base from a spec (Hub id or folder), a resolved ingredient, or a base as it is."""
        if base is None or isinstance(base, StockBase):
            return base
        ingredient = base if isinstance(base, Ingredient) else resolve_ingredients([base])[0]
        return cls(ingredient, None if head is None else Path(head))

    def to_dict(self) -> BaseEntry:
        """What ``soup.json`` and ``recipe.yaml`` record of the base (sha256 as far as read)."""
        return {
            "ingredient": pinned_spec(self.ingredient),
            "sha256": dict(self.ingredient.sha256),
            "head": None if self.head is None else str(self.head),
            "head_sha256": self.head_sha256(),
        }


def check_base(
    base: StockBase | None, ingredients: Sequence[Ingredient], plan: MergePlan
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Check the base against the ingredients.

    Returns:
        The ingredients' float tensor names → the base's names for them, and the head tensors by soup name.

    Raises:
        SoupError: no base, fewer than two ingredients, a base that is one of them, a base of another model type,
            a base or head tensor of another shape, a head tensor the ingredients lack or with NaN or Inf values,
            or a base that shares no tensor with them.
    """
    if base is None:
        raise SoupError(
            "model stock: needs the base model θ₀ the ingredients were fine-tuned from (--base, or a pantry that "
            "recorded its start model)"
        )
    if len(ingredients) < 2:
        raise SoupError(f"model stock: needs at least two ingredients, got {len(ingredients)}")
    same = next((i for i in ingredients if i.path.resolve() == base.ingredient.path.resolve()), None)
    if same is not None:
        raise SoupError(f"base '{base.ingredient.spec}': is {same.label} (give the model they were fine-tuned from)")
    ours, theirs = ingredients[0].config.get("model_type"), base.ingredient.config.get("model_type")
    if ours != theirs:
        raise SoupError(f"base '{base.ingredient.spec}': is a {theirs!r} model, the ingredients are {ours!r}")
    names = base_names(base.ingredient, plan)
    head: dict[str, torch.Tensor] = {}
    if base.head is not None:
        head, _ = read_start_head(base.head)
        for name, tensor in head.items():
            if name not in plan.shapes or tuple(tensor.shape) != tuple(plan.shapes[name]):
                have = plan.shapes.get(name)
                raise SoupError(
                    f"start head {base.head}: tensor '{name}' {list(tensor.shape)} does not fit the ingredients "
                    f"({'no such tensor' if have is None else list(have)})"
                )
            _check_finite(tensor, f"start head {base.head}: tensor '{name}'")
    return names, head


def _check_finite(tensor: torch.Tensor, where: str) -> None:
    """Refuse a base tensor with NaN or Inf values (the soup would have them), saying which."""
    if not bool(torch.isfinite(tensor).all()):
        raise SoupError(f"{where} has {'NaN' if bool(torch.isnan(tensor).any()) else 'Inf'} values")


def stock_soup_tensors(
    ingredients: Sequence[Ingredient], plan: MergePlan, base: StockBase | None, hash_cache: HashCache | None = None
) -> tuple[SoupWeights, dict[str, float | None], list[str]]:
    """The Model Stock soup of ``ingredients`` over ``base``, streamed (see the module docstring).

    Args:
        ingredients: validated ingredients (safetensors weights).
        plan: their :func:`~hf_soups.ingredients.validate_ingredients` plan.
        base: θ₀.
        hash_cache: where weight-file hashes are looked up and remembered.

    Returns:
        The soup's :class:`~hf_soups.mean.SoupWeights` (each ingredient mixed in with weight 1), each
        float tensor's ratio t (``None``: not in the base, averaged uniformly), and the tensors whose mean cosine
        was negative, clamped to 0 (t = 0: they are the base's).

    Raises:
        SoupError: see :func:`check_base`; ingredients stored as ``pytorch_model.bin`` or LoRA adapters, a base
            tensor with NaN or Inf values, or a base with the weights of an ingredient.
    """
    names, head = check_base(base, ingredients, plan)
    assert base is not None
    everyone = [*ingredients, base.ingredient]
    unreadable = next((i for i in everyone if type(i).tensors is not Ingredient.tensors or not i.reads_ranges), None)
    if unreadable is not None:
        raise SoupError(
            f"model stock: {unreadable.label} is not stored as safetensors (convert it, or merge it first)"
        )
    k = len(ingredients)
    tensors: dict[str, torch.Tensor] = {}
    ratios: dict[str, float | None] = {}
    clamped: list[str] = []
    moved = torch.zeros(k, dtype=torch.float64)  # each task vector's squared norm over the tensors the base has
    with contextlib.ExitStack() as stack:
        threads = stack.enter_context(compute_threads())  # memory-bound like the merge: its thread choice
        background = stack.enter_context(BackgroundHasher(spare_cores(threads)))
        reads = [stack.enter_context(i.open_ranges(background, hash_cache)) for i in everyone]
        read_base = reads.pop()
        for name, shape in plan.shapes.items():
            numel = math.prod(shape)
            if not plan.is_float(name):
                for ingredient, read in zip(ingredients, reads, strict=True):
                    tensor = read(name, 0, numel).view(shape)
                    if name in tensors:
                        check_same_integer(name, tensors[name], tensor, ingredient, ingredients[0])
                    else:
                        tensors[name] = tensor.clone()
                continue
            if name in head:
                theta0 = head[name].to(torch.float32).reshape(-1)
            elif name in names:
                theta0 = read_base(names[name], 0, numel).to(torch.float32, copy=True)
                _check_finite(theta0, f"base '{base.ingredient.spec}': tensor '{names[name]}'")
            else:
                theta0 = None
            mean, gram = _mean_and_gram(name, numel, reads, theta0, k)
            if theta0 is None:
                tensors[name], ratios[name] = mean.view(shape), None
                continue
            moved += gram.diagonal()
            cos = _mean_cosine(gram)
            if cos < 0:
                clamped.append(name)
            t = stock_ratio(cos, k)
            tensors[name], ratios[name] = mean.mul_(t).add_(theta0, alpha=1 - t).view(shape), t
    same = next((i for i, m in zip(ingredients, moved, strict=True) if m == 0), None)
    if same is not None:
        raise SoupError(
            f"base '{base.ingredient.spec}': has the weights of {same.label} (its task vector is zero, so the soup "
            "would be the base); give the model they were fine-tuned from"
        )
    return SoupWeights(plan, tensors, [(ingredient, 1.0) for ingredient in ingredients]), ratios, clamped


def stock_ratio(cos: float, k: int) -> float:
    """Model Stock's ratio t = k·c / (1 + (k − 1)·c) of ``k`` task vectors of mean pairwise cosine ``cos``, with c
    the cosine clamped to [0, 1]: t runs from 0 (the base) to 1 (the ingredients' mean).

    Example:
        >>> stock_ratio(0.5, 3), stock_ratio(-0.9, 3), stock_ratio(1.0, 3)
        (0.75, 0.0, 1.0)
    """
    c = min(max(cos, 0.0), 1.0)
    return k * c / (1 + (k - 1) * c)


def _mean_and_gram(
    name: str, numel: int, reads: list, theta0: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One tensor's mean over the ingredients (flat), and its task vectors' Gram matrix (zero without a base)."""
    mean = torch.empty(numel, dtype=torch.float32)
    gram = torch.zeros(k, k, dtype=torch.float64)
    block = torch.empty(k, min(PIECE, numel), dtype=torch.float32)
    for start in range(0, numel, PIECE):
        count = min(PIECE, numel - start)
        rows = block[:, :count]
        for row, read in zip(rows, reads, strict=True):
            row.copy_(read(name, start, count))
        torch.mean(rows, 0, out=mean[start : start + count])
        if theta0 is not None:
            offsets = (rows - theta0[start : start + count]).double()
            gram += offsets @ offsets.T
    return mean, gram


def _mean_cosine(gram: torch.Tensor) -> float:
    """The mean pairwise cosine of the task vectors whose Gram matrix is ``gram`` (a zero vector's cosines: 0)."""
    k = gram.shape[0]
    norms = gram.diagonal().sqrt()
    pairs = [
        (gram[i, j] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1.0, 1.0)
        for i in range(k)
        for j in range(i + 1, k)
    ]
    return float(torch.stack(pairs).mean())


def cook_stock(
    kitchen: Kitchen,
    ensemble: bool = CookOptions.ensemble,
    base: str | Path | Ingredient | StockBase | None = None,
    start_head: str | Path | None = None,
) -> SoupReport:
    """Run the Model Stock recipe in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see :func:`hf_soups.stock_soup`).

    Each ingredient is read twice: scored alone (with the uniform soup on the way), then streamed into the stock.
    ``base`` is θ₀ (a spec or a resolved ingredient); ``start_head`` a safetensors file of the head tensors every
    ingredient started from (a pantry's ``start-head.safetensors``).
    """
    base = StockBase.resolve(base, start_head)
    check_base(base, kitchen.ingredients, kitchen.plan)  # before any scoring
    tastings, uniform = kitchen.tastings()
    soup, ratios, clamped = stock_soup_tensors(kitchen.ingredients, kitchen.plan, base, kitchen.hash_cache)
    assert base is not None
    options = {
        "base": base.to_dict(),
        "ratios": {name: t for name, t in ratios.items() if t is not None},
        "uniform_tensors": sorted(name for name, t in ratios.items() if t is None),
        "clamped": len(clamped),
    }
    return soup_report(kitchen, "stock", soup, tastings, uniform=uniform, ensemble=ensemble, options=options)
