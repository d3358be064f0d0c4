"""The streaming weighted average at the heart of every soup: :class:`RunningMean`.

Ingredients are added into an fp32 running mean Σ wᵢθᵢ / Σ wᵢ, kept as ``lerp`` steps so that every recipe computes
its soups with the same arithmetic. :meth:`RunningMean.add_all` (merges) opens each weight file once and works
tensor by tensor in pieces of ``PIECE`` elements, adding every ingredient's copy of a piece while it is in the CPU
cache; :meth:`RunningMean.add` (greedy, one ingredient at a time) streams one ingredient from start to end. Either
way each file is read once and hashed on the way, and peak memory is about one model (the fp32 mean) whatever the
number of ingredients. The mean may live on an accelerator (a recipe's kitchen puts it beside the scoring model when
it fits): each tensor read crosses to it once. What a mean (or a recipe that computes its tensors otherwise: Model
Stock, Fisher, RegMean) hands on is a :class:`SoupWeights`: the tensors and the mix that made them, which the
kitchen scores and :func:`hf_soups.soup_folder.write_soup_folder` writes.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from hf_soups import resolve_ingredients, validate_ingredients
    >>> config = BertConfig(
    ...     vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    ... )
    >>> model = BertForSequenceClassification(config)  # two "fine-tuned runs" of one base, tiny, built from a config
    >>> model.save_pretrained("runs/a")
    >>> _ = torch.nn.init.normal_(model.classifier.bias)  # run a's bias is zero, run b's this
    >>> model.save_pretrained("runs/b")
    >>> ingredients = resolve_ingredients(["runs/a", "runs/b"])
    >>> mean = RunningMean(validate_ingredients(ingredients))
    >>> mean.add_all(ingredients, check_weights([3, 1], ingredients))
    >>> soup = mean.soup()
    >>> torch.allclose(soup.tensors["classifier.bias"], 0.25 * model.classifier.bias)
    True
    >>> soup.check_finite("classifier.weight", torch.bfloat16).dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

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


@dataclass
class SoupWeights:
    """A soup's weights: its tensors and the mix that made them.

    Attributes:
        plan: the ingredients' :class:`~hf_soups.ingredients.MergePlan` (tensor names, shapes, dtypes).
        tensors: name → the soup's tensor: fp32 for float tensors, the ingredients' shared copy for integer and bool
            ones; on any device.
        mix: ``(ingredient, weight)`` in the order the soup was mixed (the weight: a number, or one per tensor), what
            ``recipe.yaml`` records to re-cook it bit for bit.

    Example:
        >>> soup = mean.soup()  # doctest: +SKIP
        >>> [i.spec for i in soup.members], soup.tensors["classifier.bias"]  # doctest: +SKIP
    """

    plan: MergePlan
    tensors: dict[str, torch.Tensor]
    mix: list[tuple[Ingredient, Weight]]

    @property
    def members(self) -> list[Ingredient]:
        """The ingredients mixed in, in order."""
        return [ingredient for ingredient, _ in self.mix]

    def check_finite(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Return one tensor, cast to ``dtype``, on the CPU, after checking the cast has no NaN or Inf.

        Raises:
            SoupError: naming the tensor and the ingredient that holds such values, or the dtype it overflows.
        """
        tensor = self.tensors[name]
        if self.plan.is_float(name):
            refuse_non_finite(name, tensor, self.members)
        cast = (tensor if dtype is None else tensor.to(dtype)).cpu()
        if self.plan.is_float(name) and not _finite(cast):
            raise SoupError(
                f"tensor '{name}': the soup overflows {str(dtype).removeprefix('torch.')} (largest |value| "
                f"{tensor.abs().max().item():.4g}); write bf16 or fp32 (dtype / --dtype)"
            )
        return cast


@dataclass
class Candidate:
    """The mean with one more ingredient, as :meth:`RunningMean.candidate` wrote it into a model's tensors.

    Attributes:
        ingredient / weight: what was added.
        exact: fp32 tensors that hold the candidate itself (a model's own, when they are fp32 beside the mean).
        kept: for the other tensors, the ingredient's own copy, kept on the host: :meth:`RunningMean.accept` redoes
            the same ``lerp`` with it, bit for bit, instead of reading the ingredient again.
    """

    ingredient: Ingredient
    weight: Weight
    exact: dict[str, torch.Tensor] = field(default_factory=dict)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)


def _step(total: float, weight: float) -> tuple[float, float]:
    """The new total weight, and the lerp factor, when an ingredient of ``weight`` joins a mean of ``total``."""
    total += weight
    return total, (weight / total if total > 0 else 1.0)


class RunningMean:
    """The weighted mean Σ wᵢθᵢ / Σ wᵢ of ingredients streamed in one at a time, kept in fp32.

    Each ingredient moves the mean towards itself: ``mean.lerp_(θ, w / W)`` with ``W`` the weight added so far,
    which after the last ingredient is exactly the weighted average, in one model of memory. The greedy recipe
    computes its candidates with the same operation (:meth:`candidate`), so a greedy soup and ``merge_models`` of
    its members give bit-identical weights (on the same kind of device). Integer and bool tensors are not averaged:
    the first ingredient's copy is kept, and every later ingredient must hold the same values.

    Args:
        plan: the validated :class:`~hf_soups.ingredients.MergePlan`.
        hash_cache: where to look up and remember weight-file hashes.
        threads: torch threads for :meth:`add_all` (default: :func:`merge_threads`).
        device: where the mean's tensors live (default: the CPU).

    Example:
        >>> mean = RunningMean(validate_ingredients(ingredients))  # doctest: +SKIP
        >>> for ingredient in ingredients:  # doctest: +SKIP
        ...     mean.add(ingredient, 1.0)
        >>> soup = mean.soup()  # doctest: +SKIP
    """

    def __init__(
        self,
        plan: MergePlan,
        hash_cache: HashCache | None = None,
        threads: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.plan = plan
        self.hash_cache = hash_cache
        self.threads = threads
        self.device = torch.device(device)
        self._staging: torch.Tensor | None = None  # the pinned buffer of _lerp_into
        self.tensors: dict[str, torch.Tensor] = {}
        self.totals: dict[str, float] = {}
        self.mix: list[tuple[Ingredient, Weight]] = []

    def soup(self) -> SoupWeights:
        """The mean so far as :class:`SoupWeights` (its tensors themselves, not a copy)."""
        return SoupWeights(self.plan, self.tensors, list(self.mix))

    def copy(self) -> RunningMean:
        """An independent copy (its tensors cloned), to grow apart from this one."""
        mean = RunningMean(self.plan, self.hash_cache, self.threads, self.device)
        mean.tensors = {name: tensor.clone() for name, tensor in self.tensors.items()}
        mean.totals, mean.mix = dict(self.totals), list(self.mix)
        return mean

    def factor(self, name: str, weight: Weight) -> float:
        """The interpolation factor that adds an ingredient of ``weight`` to the mean of tensor ``name`` so far."""
        return _step(self.totals.get(name, 0.0), _weight(weight, name))[1]

    def add(
        self,
        ingredient: Ingredient,
        weight: Weight = 1.0,
        progress: tqdm | None = None,
        into: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Add one ingredient to the mean, reading each of its weight files once, a :data:`PIECE` at a time where
        it can (safetensors; see :meth:`pieces`), so that reading holds no second model in memory.

        Args:
            ingredient: the ingredient.
            weight: its weight, or tensor name → weight (one weight per layer).
            progress: a bar to advance once per tensor.
            into: also copy the ingredient's tensors into these (a model's, on any device, of any dtype: the
                tasting pass scores each ingredient while it adds it to the uniform soup).
        """
        first = (self.mix or [(ingredient, weight)])[0][0]
        for name, start, piece in self.pieces(ingredient):
            if into is not None:
                into[name].view(-1)[start : start + len(piece)].copy_(piece)
            if not self.plan.is_float(name):
                tensor = piece.view(self.plan.shapes[name])
                if name in self.tensors:
                    check_same_integer(name, self.tensors[name], tensor, ingredient, first)
                else:
                    self.tensors[name] = tensor.to(self.device, copy=True)
            else:
                if name not in self.tensors:
                    self.tensors[name] = torch.empty(self.plan.shapes[name], dtype=torch.float32, device=self.device)
                flat = self.tensors[name].view(-1)[start : start + len(piece)]
                if name in self.totals:
                    flat.lerp_(piece.to(self.device, torch.float32), self.factor(name, weight))
                else:
                    flat.copy_(piece)
            if progress is not None and start + len(piece) == math.prod(self.plan.shapes[name]):
                progress.update()
        self._count(ingredient, weight)

    def pieces(self, ingredient: Ingredient) -> Iterator[tuple[str, int, torch.Tensor]]:
        """An ingredient's tensors as ``(name, start, piece)``: elements ``start .. start + len(piece)`` of the
        flattened tensor, each piece valid until the next. Safetensors files are read in ranges of :data:`PIECE`
        elements (integer tensors whole), in the plan's order; other files (``pytorch_model.bin``, adapters) are
        streamed a whole tensor at a time. Files not hashed yet are hashed on the way."""
        if not ingredient.reads_ranges:
            for name, tensor in ingredient.tensors(self.hash_cache):
                yield name, 0, tensor.reshape(-1)
            return
        with BackgroundHasher(spare_cores(1)) as background:
            with ingredient.open_ranges(background, self.hash_cache) as read:
                for name, shape in self.plan.shapes.items():
                    numel = math.prod(shape)
                    step = PIECE if self.plan.is_float(name) else max(numel, 1)
                    for start in range(0, max(numel, 1), step):
                        yield name, start, read(name, start, min(step, numel - start))

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
                dtype = torch.float32 if self.plan.is_float(name) else tensor.dtype
                self.tensors[name] = tensor.to(self.device, dtype, copy=True)
            elif not self.plan.is_float(name):
                check_same_integer(name, current, tensor, ingredient, self.mix[0][0])
            else:
                current.lerp_(tensor.to(self.device, torch.float32), self.factor(name, weight))
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
                            first = self.mix[0][0] if self.mix else ingredients[0]
                            check_same_integer(name, self.tensors[name], tensor, ingredient, first)
                        else:
                            self.tensors[name] = tensor.to(self.device, copy=True)
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
            self.tensors[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
        flat = self.tensors[name].view(-1)
        for start in range(0, flat.numel(), PIECE):
            piece = flat[start : start + PIECE]
            for index, (read, factor) in enumerate(zip(reads, factors, strict=True)):
                tensor = read(name, start, piece.numel())
                if fresh and index == 0:
                    piece.copy_(tensor)
                else:
                    piece.lerp_(tensor.to(self.device, torch.float32), factor)

    def candidate(self, ingredient: Ingredient, out: dict[str, torch.Tensor], weight: Weight = 1.0) -> Candidate:
        """Write into ``out`` the mean with ``ingredient`` added, leaving this mean unchanged (greedy's trial step).

        ``out[name]`` are a model's tensors, on any device and of any dtype: float ones get the candidate (computed
        in fp32 where the mean is, then cast), the others the mean's copy. The ingredient is read a piece at a time
        (:meth:`pieces`). Where ``out[name]`` is fp32 beside the mean the candidate is computed straight into it;
        elsewhere it is computed where the mean is and copied over (from the host to a GPU through a pinned buffer),
        and the ingredient's tensor is kept on the host for :meth:`accept`.

        Returns:
            The :class:`Candidate`, for :meth:`accept`.
        """
        candidate = Candidate(ingredient, weight)
        for name, start, piece in self.pieces(ingredient):
            mean, target = self.tensors[name], out[name]
            stop = start + len(piece)
            if not self.plan.is_float(name):
                target.copy_(mean)
            elif target.dtype == torch.float32 and target.device == mean.device:
                x = piece.to(self.device, torch.float32)
                torch.lerp(mean.view(-1)[start:stop], x, self.factor(name, weight), out=target.view(-1)[start:stop])
                candidate.exact[name] = target
            else:
                if name not in candidate.kept:
                    candidate.kept[name] = torch.empty(mean.shape, dtype=piece.dtype)
                kept = candidate.kept[name].view(-1)[start:stop]
                kept.copy_(piece)
                self._lerp_into(
                    target.view(-1)[start:stop], mean.view(-1)[start:stop], kept, self.factor(name, weight)
                )
        return candidate

    def _lerp_into(self, target: torch.Tensor, mean: torch.Tensor, piece: torch.Tensor, factor: float) -> None:
        """``target.copy_(lerp(mean, piece, factor))`` for flat pieces, computed where the mean is (through a
        pinned buffer when that is the host and the target a GPU)."""
        if target.device == mean.device:
            target.copy_(torch.lerp(mean, piece.to(mean.device, torch.float32), factor))
            return
        if self._staging is None:
            self._staging = torch.empty(PIECE, dtype=torch.float32, pin_memory=target.device.type == "cuda")
        for start in range(0, len(mean), PIECE):
            stop = min(start + PIECE, len(mean))
            staging = self._staging[: stop - start]
            torch.lerp(mean[start:stop], piece[start:stop].to(torch.float32), factor, out=staging)
            target[start:stop].copy_(staging)

    def accept(self, candidate: Candidate) -> None:
        """Make a :meth:`candidate`'s tensors the mean: its ingredient is now part of it (the model that received
        the candidate must not have changed since)."""
        for name, tensor in self.tensors.items():
            if name in candidate.exact:
                tensor.copy_(candidate.exact[name])
            elif name in candidate.kept:
                tensor.lerp_(candidate.kept[name].to(self.device, torch.float32), self.factor(name, candidate.weight))
        self._count(candidate.ingredient, candidate.weight)

    def _count(self, ingredient: Ingredient, weight: Weight) -> None:
        for name in self.plan.shapes:
            self.totals[name] = self.totals.get(name, 0.0) + _weight(weight, name)
        self.mix.append((ingredient, weight))


def check_same_integer(
    name: str, kept: torch.Tensor, tensor: torch.Tensor, ingredient: Ingredient, first: Ingredient
) -> None:
    """Refuse an integer or bool tensor that differs from the copy ``kept`` (``first``'s): such tensors are copied,
    not averaged.

    Raises:
        SoupError: naming the ingredient, the tensor and ``first``.
    """
    if not torch.equal(kept, tensor.to(kept.device)):
        raise SoupError(
            f"{ingredient.label}: integer tensor '{name}' differs from {first.label}'s "
            "(integer and bool buffers are copied, so all ingredients must agree)"
        )


def refuse_non_finite(name: str, tensor: torch.Tensor, ingredients: Sequence[Ingredient]) -> None:
    """Refuse NaN or Inf values in a float tensor computed from ``ingredients`` (their mean, or their copies of it
    side by side), as merge, the recipes and ``diagnose`` do.

    Raises:
        SoupError: naming the tensor and the ingredient that holds such values (the average, when none does: an
            overflow). Only then are the ingredients read again, to find it.
    """
    if _finite(tensor):
        return
    source = next(
        (i.label for i in ingredients for n, t in i.tensors() if n == name and not torch.isfinite(t).all()),
        "the average (overflow)",
    )
    raise SoupError(f"tensor '{name}' has NaN or Inf values in {source}")


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32))) or bool(torch.isfinite(tensor).all())
