"""Diagnostics, weight space: task-vector norms, cosines and distances per layer group.

The centre θ₀ is the base model when one is given (the pretrained init the ingredients were fine-tuned from), else
the ingredients' mean. The task vectors τᵢ = θᵢ − θ₀ are compared per layer group (:func:`layer_group`: embeddings,
each encoder/decoder block, other, pooler, head): their norms (distance from the centre, also relative to ‖θ₀‖),
pairwise cosines and pairwise distances ‖θᵢ − θⱼ‖ (:func:`weight_space`). Tensors the base lacks (a new
classification head) are centred on the ingredients' mean. With the mean as centre, task vectors are deviations from
the mean: they sum to zero, so their cosines are negative on average (exactly −1 for two ingredients) and say which
ingredients deviate together, not whether they agree.

The numbers are exact (float64 sums), computed in one pass over the soup's tensors: each tensor is read in blocks of
:data:`CHUNK` elements, the same element range from every ingredient (and the base), with ``seek`` + ``readinto`` on
the safetensors files, each opened once for the whole pass. Memory is N + 1 float64 blocks of 4 MiB, reused, and one
read at a time, whatever the model size (about 40 MB for 8 ingredients), plus small N × N sums per group.
Ingredients whose tensors are not stored as they are in safetensors files (``pytorch_model.bin`` files, which have
no byte offsets; LoRA adapters, which are their base + ΔW) are loaded whole once instead: one model each in memory.

Example:
    >>> layer_group("bert.encoder.layer.3.output.dense.weight")
    'encoder.layer.3'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import MergePlan, base_names, is_head
from hf_soups.mean import refuse_non_finite
from hf_soups.tensorfile import read_tensor_range

POOLER_PARTS = {"pooler"}  # name parts of pretrained poolers
CHUNK = 1 << 19  # elements per ingredient per read: 4 MiB as float64
_BLOCK = re.compile(r"(?:^|\.)((?:\w+\.)?(?:layer|layers|block|h)\.(\d+))\.")


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
    if is_head(name):
        return "head"
    if set(name.split(".")) & POOLER_PARTS:
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
            self.gram + other.gram,
            self.centre_dot + other.centre_dot,
            self.centre_sq + other.centre_sq,
            self.size + other.size,
            self.tensors + other.tensors,
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
        plan: their :func:`~hf_soups.ingredients.validate_ingredients` plan.
        base: the pretrained model they were fine-tuned from (the centre); ``None`` centres on their mean. Its
            tensor names may lack the ingredients' model prefix (``bert.``), and it may lack the head.

    Returns:
        A :class:`WeightSpace`.

    Raises:
        SoupError: a base tensor's shape differs from the ingredients', or the base shares no tensor with them; an
            ingredient has NaN or Inf weights (as merge refuses them).
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
                refuse_non_finite(name, vectors, ingredients)
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
