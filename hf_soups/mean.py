"""The streaming weighted average at the heart of every soup: :class:`RunningMean`.

Ingredients are added into an fp32 running mean Σ wᵢθᵢ / Σ wᵢ, kept as ``lerp`` steps so that every recipe computes
its soups with the same arithmetic. :meth:`RunningMean.add_all` (merges) opens each weight file once and works
tensor by tensor in pieces of ``PIECE`` elements, adding every ingredient's copy of a piece while it is in the CPU
cache; :meth:`RunningMean.add` (greedy, one ingredient at a time) streams one ingredient from start to end. Either
way each file is read once and hashed on the way, and peak memory is about one model (the fp32 mean) whatever the
number of ingredients. Writing the mean as a soup folder is :func:`hf_soups.merge.write_soup`.

Example:
    >>> mean = RunningMean(validate(ingredients))  # doctest: +SKIP
    >>> mean.add_all(ingredients, check_weights(None, ingredients))  # doctest: +SKIP
    >>> mean.check_finite("classifier.weight", torch.bfloat16)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import MergePlan
from hf_soups.tensorfile import BackgroundHasher, spare_cores
from hf_soups.threads import compute_threads
from hf_soups.validation import check_mix

Weight = float | Mapping[str, float]  # one weight per ingredient, or one per ingredient and tensor
PIECE = 1 << 18  # elements of the mean worked on at once by RunningMean.add_all: 1 MiB of fp32 stays in the CPU cache


def check_weights(weights: Sequence[float] | None, ingredients: Sequence[Ingredient]) -> list[float]:
    """Validate mixing weights (``None`` means uniform) and return them as floats, not yet normalised.

    Raises:
        SoupError: the wrong count, a negative or non-finite weight (naming its ingredient), or weights whose sum
            is not positive and finite (see :func:`~hf_soups.validation.check_mix`).
    """
    if weights is None:
        return [1.0] * len(ingredients)
    weights = list(weights)
    if len(weights) != len(ingredients):
        raise SoupError(f"weights: {len(weights)} given for {len(ingredients)} ingredients")
    return check_mix(weights, [], [i.label for i in ingredients])


def _weight(weight: Weight, name: str) -> float:
    return weight[name] if isinstance(weight, Mapping) else weight


def _step(total: float, weight: float) -> tuple[float, float]:
    """The new total weight, and the lerp factor, when an ingredient of ``weight`` joins a mean of ``total``."""
    total += weight
    return total, (weight / total if total > 0 else 1.0)


class RunningMean:
    """The weighted mean Σ wᵢθᵢ / Σ wᵢ of ingredients streamed in one at a time, kept in fp32.

    Each ingredient moves the mean towards itself: ``mean.lerp_(θ, w / W)`` with ``W`` the weight added so far,
    which after the last ingredient is exactly the weighted average, in one model of memory. The greedy recipe
    computes its candidates with the same operation (:meth:`candidate`), so a greedy soup and ``merge_models`` of
    its members give bit-identical weights. Integer and bool tensors are not averaged: the first ingredient's copy
    is kept, and every later ingredient must hold the same values.

    Args:
        plan: the validated :class:`~hf_soups.ingredients.MergePlan`.
        hash_cache: where to look up and remember weight-file hashes.
        threads: torch threads for :meth:`add_all` and :func:`write_soup` (default: :func:`merge_threads`).

    Example:
        >>> mean = RunningMean(validate(ingredients))  # doctest: +SKIP
        >>> for ingredient in ingredients:  # doctest: +SKIP
        ...     mean.add(ingredient, 1.0)
        >>> classifier = mean.tensors["classifier.weight"]  # doctest: +SKIP
    """

    def __init__(self, plan: MergePlan, hash_cache: HashCache | None = None, threads: int | None = None) -> None:
        self.plan = plan
        self.hash_cache = hash_cache
        self.threads = threads
        self.tensors: dict[str, torch.Tensor] = {}
        self.totals: dict[str, float] = {}
        self.added: list[Ingredient] = []

    def factor(self, name: str, weight: Weight) -> float:
        """The interpolation factor that adds an ingredient of ``weight`` to the mean of tensor ``name`` so far."""
        return _step(self.totals.get(name, 0.0), _weight(weight, name))[1]

    def add(self, ingredient: Ingredient, weight: Weight = 1.0, progress: tqdm | None = None) -> None:
        """Stream one ingredient into the mean, reading each of its weight files once.

        Args:
            ingredient: the ingredient.
            weight: its weight, or tensor name → weight (one weight per layer).
            progress: a bar to advance once per tensor.
        """
        self.add_tensors(ingredient.tensors(self.hash_cache), ingredient, weight, progress)

    def add_tensors(
        self,
        tensors: Iterable[tuple[str, torch.Tensor]],
        ingredient: Ingredient,
        weight: Weight = 1.0,
        progress: tqdm | None = None,
    ) -> None:
        """Add an ingredient's tensors given as ``(name, tensor)`` (streamed, or already in memory)."""
        for name, tensor in tensors:
            current = self.tensors.get(name)
            if current is None:
                self.tensors[name] = tensor.to(torch.float32 if self.plan.is_float(name) else tensor.dtype, copy=True)
            elif not self.plan.is_float(name):
                self._check_integer(name, tensor, ingredient, self.added[0])
            else:
                current.lerp_(tensor.to(torch.float32), self.factor(name, weight))
            if progress is not None:
                progress.update()
        self._count(ingredient, weight)

    def add_all(
        self, ingredients: Sequence[Ingredient], weights: Sequence[Weight], progress: tqdm | None = None
    ) -> None:
        """Add several ingredients: the same mean, bit for bit, as :meth:`add` on each in turn, but faster.

        The work goes tensor by tensor and, within a tensor, in pieces of ``PIECE`` elements: every ingredient's copy
        of a piece is read (each weight file opened once, read in ranges) and added while that piece of the mean is
        still in the CPU cache, so the mean crosses memory once instead of once per ingredient. It computes on
        :func:`merge_threads` torch threads (the caller's setting is restored after) and hashes files on the CPUs
        left (:func:`~hf_soups.tensorfile.spare_cores`), several files at once where there are several. Ingredients
        that cannot be read in ranges (``pytorch_model.bin``, adapters) make it fall back to :meth:`add`.

        Args:
            ingredients: the ingredients, in the order :meth:`add` would take them.
            weights: one weight (or tensor name → weight) per ingredient.
            progress: a bar to advance once per tensor and ingredient.
        """
        with compute_threads(self.threads) as threads:
            if all(ingredient.reads_ranges for ingredient in ingredients):
                self._add_ranges(ingredients, weights, spare_cores(threads), progress)
            else:
                for ingredient, weight in zip(ingredients, weights, strict=True):
                    self.add(ingredient, weight, progress)

    def _add_ranges(
        self, ingredients: Sequence[Ingredient], weights: Sequence[Weight], hash_threads: int, progress: tqdm | None
    ) -> None:
        with contextlib.ExitStack() as stack:
            background = stack.enter_context(BackgroundHasher(hash_threads))
            reads = [stack.enter_context(i.open_ranges(background, self.hash_cache)) for i in ingredients]
            for name, shape in self.plan.shapes.items():
                numel = math.prod(shape)
                if self.plan.is_float(name):
                    self._add_pieces(name, shape, reads, weights)
                else:
                    for ingredient, read in zip(ingredients, reads, strict=True):
                        tensor = read(name, 0, numel).view(shape)
                        if name in self.tensors:
                            self._check_integer(name, tensor, ingredient, (self.added or ingredients)[0])
                        else:
                            self.tensors[name] = tensor.clone()
                if progress is not None:
                    progress.update(len(ingredients))
        for ingredient, weight in zip(ingredients, weights, strict=True):
            self._count(ingredient, weight)

    def _add_pieces(
        self,
        name: str,
        shape: tuple[int, ...],
        reads: list[Callable[[str, int, int], torch.Tensor]],
        weights: Sequence[Weight],
    ) -> None:
        """Add every ingredient's copy of one float tensor, ``PIECE`` elements at a time (see :meth:`add_all`)."""
        total, factors = self.totals.get(name, 0.0), []
        for weight in weights:
            total, factor = _step(total, _weight(weight, name))
            factors.append(factor)
        fresh = name not in self.tensors
        if fresh:
            self.tensors[name] = torch.empty(shape, dtype=torch.float32)
        flat = self.tensors[name].view(-1)
        for start in range(0, flat.numel(), PIECE):
            piece = flat[start : start + PIECE]
            for index, (read, factor) in enumerate(zip(reads, factors, strict=True)):
                tensor = read(name, start, piece.numel())
                if fresh and index == 0:
                    piece.copy_(tensor)
                else:
                    piece.lerp_(tensor.to(torch.float32), factor)

    def _check_integer(self, name: str, tensor: torch.Tensor, ingredient: Ingredient, first: Ingredient) -> None:
        if not torch.equal(self.tensors[name], tensor):
            raise SoupError(
                f"{ingredient.label}: integer tensor '{name}' differs from {first.label}'s "
                "(integer and bool buffers are copied, so all ingredients must agree)"
            )

    def candidate(self, ingredient: Ingredient, out: dict[str, torch.Tensor], weight: Weight = 1.0) -> None:
        """Write into ``out`` the mean with ``ingredient`` added, leaving this mean unchanged (greedy's trial step).

        ``out[name]`` are fp32 tensors (a model's parameters); :meth:`accept` then makes them the mean.
        """
        for name, tensor in ingredient.tensors(self.hash_cache):
            if self.plan.is_float(name):
                torch.lerp(self.tensors[name], tensor.to(torch.float32), self.factor(name, weight), out=out[name])

    def accept(self, ingredient: Ingredient, candidate: dict[str, torch.Tensor], weight: Weight = 1.0) -> None:
        """Make the :meth:`candidate` tensors the mean: ``ingredient`` is now part of it."""
        for name in self.tensors:
            if self.plan.is_float(name):
                self.tensors[name].copy_(candidate[name])
        self._count(ingredient, weight)

    def _count(self, ingredient: Ingredient, weight: Weight) -> None:
        for name in self.plan.shapes:
            self.totals[name] = self.totals.get(name, 0.0) + _weight(weight, name)
        self.added.append(ingredient)

    def check_finite(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return the mean of one tensor, cast to ``dtype``, after checking the cast has no NaN or Inf.

        Raises:
            SoupError: naming the tensor and the ingredient that holds such values, or the dtype it overflows.
        """
        tensor = self.tensors[name]
        if self.plan.is_float(name) and not _finite(tensor):
            raise SoupError(f"tensor '{name}' has NaN or Inf values in {self._non_finite_source(name)}")
        cast = tensor if dtype is None else tensor.to(dtype)
        if self.plan.is_float(name) and not _finite(cast):
            raise SoupError(
                f"tensor '{name}': the soup overflows {str(dtype).removeprefix('torch.')} (largest |value| "
                f"{tensor.abs().max().item():.4g}); write bf16 or fp32 (dtype / --dtype)"
            )
        return cast

    def _non_finite_source(self, name: str) -> str:
        for ingredient in self.added:
            for tensor_name, tensor in ingredient.tensors():
                if tensor_name == name and not torch.isfinite(tensor).all():
                    return ingredient.label
        return "the average (overflow)"


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32))) or bool(torch.isfinite(tensor).all())
