"""What the recipes that look inside each ingredient (``fisher``, ``regmean``) share: the rows of the selection
split they estimate a statistic on, the check that the kitchen can give the model's inputs, logits and gradients at
all, and the cache that keeps each ingredient's statistic as one safetensors file.

The rows are K rows of the selection split, a seeded random choice (all of them by default: one pass), taken from
the judge's own batches (:meth:`~hf_soups.recipes.judge.Judge.train_batches`): the same tokenisation the scores
use. A statistic is written to ``<kind>-<key>.safetensors`` in the recipe's state folder (``<output>.<recipe>-state``
beside the soup folder), ``key`` being the sha256 of everything it depends on: the ingredient's weight files'
sha256, the inputs of the rows (their sha256) and the estimator's settings. A later soup over the same ingredients,
rows and settings reads it instead of estimating it again, and ``recipe.yaml`` names the files (with their sha256)
that ``hf-soups cook`` re-cooks the soup from, bit for bit. :func:`statistics_soup` runs those steps for a recipe,
and :func:`tapped_mean` streams the ingredients into their uniform mean while handing each one's statistic to the
recipe's own sums.

Example:
    >>> cache = StatisticsCache(Path("soup.fisher-state"), "fisher", kitchen, rows=249)  # doctest: +SKIP
    >>> estimate = lambda: fisher_diagonal(kitchen.model, cache.batches(), names)  # doctest: +SKIP
    >>> path = cache.get(kitchen.ingredients[0], estimate)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache, file_sha256
from hf_soups.ingredients import Ingredient, MergePlan
from hf_soups.mean import RunningMean, SoupWeights
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.validation import positive_int

Merged = TypeVar("Merged")
# an estimator: (model, the rows' batches, the float tensor names, device) → tensor name → statistic
Estimator = Callable[
    [torch.nn.Module, Iterable[dict[str, torch.Tensor]], Collection[str], torch.device], dict[str, torch.Tensor]
]
Take = Callable[[str, torch.Tensor, torch.Tensor], None]  # (tensor name, an ingredient's tensor, its statistic)

ROW_SEED = 0  # the seed of the rows' choice when K is less than the selection split
VERSION = "1"  # of the estimators: a change of what a statistic holds changes its key


def check_applies(kitchen: Kitchen, recipe: str) -> None:
    """Refuse, in one message, a kitchen that cannot give a recipe the model's inputs, logits and gradients.

    Raises:
        SoupError: a text-to-text model (T5: label words scored by likelihood, no classifier logits), a judge with no
            selection batches (:meth:`~hf_soups.recipes.judge.Judge.train_batches`), or several processes.
    """
    judge = kitchen.judge
    if kitchen.text_to_text or not callable(getattr(judge, "train_batches", None)):
        cannot = (
            f"a text-to-text model ({type(kitchen.model).__name__})"
            if kitchen.text_to_text
            else (f"the judge {type(judge).__name__}, which gives no batches of the selection split")
        )
        raise SoupError(
            f"{recipe} soup: needs the inputs, logits and gradients of an encoder classifier or regressor on the "
            f"selection split, which {cannot} cannot give; cook greedy, uniform or stock instead"
        )
    accelerator = getattr(judge, "accelerator", None)
    if accelerator is not None and accelerator.num_processes > 1:
        raise SoupError(f"{recipe} soup: estimates its statistics in one process; run it without accelerate launch")


def estimation_rows(kitchen: Kitchen, rows: int | None) -> int:
    """K, the number of selection rows to estimate on: ``rows``, or all of them when ``None``.

    Raises:
        SoupError: ``rows`` is not a whole number ≥ 1, or more than the selection split holds.
    """
    available = kitchen.judge.split_rule.get("rows", {}).get("select")
    if not isinstance(available, int):
        raise SoupError(f"the judge {type(kitchen.judge).__name__} does not say how many rows its selection split has")
    if rows is None:
        return available
    rows = positive_int(rows, "statistics_rows")
    if rows > available:
        raise SoupError(
            f"statistics_rows: {rows} is more than the {available} rows of the selection split "
            f"{kitchen.judge.split_names['select']}"
        )
    return rows


def selected_batches(kitchen: Kitchen, rows: int) -> Iterator[dict[str, torch.Tensor]]:
    """The model inputs of ``rows`` rows of the selection split: the judge's batches with the rows not chosen taken
    out (a seeded choice by position in the judge's fixed batch order; every row when ``rows`` is all of them)."""
    available = kitchen.judge.split_rule["rows"]["select"]
    chosen = np.zeros(available, dtype=bool)
    chosen[np.random.default_rng(ROW_SEED).choice(available, rows, replace=False)] = True
    position = 0
    for inputs, _ in kitchen.judge.train_batches(kitchen.model):
        size = len(next(iter(inputs.values())))
        keep = torch.as_tensor(chosen[position : position + size])
        position += size
        if keep.any():
            yield {name: value[keep.to(value.device)] for name, value in inputs.items()}


class StatisticsCache:
    """One statistic per ingredient, as ``<folder>/<kind>-<key>.safetensors`` (see the module docstring).

    Args:
        folder: where the files are kept (created when needed).
        kind: the statistic (``"fisher"``, ``"gram"``), in the file names.
        kitchen: the kitchen whose judge gives the rows.
        rows: K.
        settings: anything else the statistic depends on (recorded in its key).
    """

    def __init__(self, folder: Path, kind: str, kitchen: Kitchen, rows: int, **settings: Any) -> None:
        self.folder, self.kind, self.kitchen, self.rows = folder, kind, kitchen, rows
        digest = hashlib.sha256()
        for batch in self.batches():
            for name, value in sorted(batch.items()):
                digest.update(f"{name}{value.dtype}{list(value.shape)}".encode())
                digest.update(value.cpu().contiguous().numpy().tobytes())
        self.settings = {"kind": kind, "version": VERSION, "rows": rows, "inputs": digest.hexdigest(), **settings}

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The inputs of the K rows (see :func:`selected_batches`)."""
        return selected_batches(self.kitchen, self.rows)

    def path(self, ingredient: Ingredient) -> Path:
        """The file of ``ingredient``'s statistic (read its weight files first: the key holds their sha256)."""
        key = json.dumps({"weights": dict(sorted(ingredient.sha256.items())), **self.settings}, sort_keys=True)
        return self.folder / f"{self.kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    def get(self, ingredient: Ingredient, estimate: Callable[[], dict[str, torch.Tensor]]) -> Path:
        """The file of ``ingredient``'s statistic, estimated (``estimate()``, with the ingredient's weights in the
        kitchen's model) and written first when it is not there yet."""
        path = self.path(ingredient)
        if not path.is_file():
            self.kitchen.load(ingredient.tensors(self.kitchen.hash_cache))
            tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in estimate().items()}
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            save_file(tensors, str(tmp), metadata={"hf_soups": json.dumps(self.settings)})
            os.replace(tmp, path)  # a kill never leaves half a file under the final name
        return path


@contextlib.contextmanager
def statistics_folder(state_dir: str | Path | None) -> Iterator[Path]:
    """``state_dir`` (kept: ``recipe.yaml`` re-cooks from its files), or a temporary folder removed after the block
    when there is none (no soup folder is written)."""
    if state_dir is not None:
        yield Path(state_dir)
        return
    with tempfile.TemporaryDirectory(prefix="hf-soups-statistics-") as folder:
        yield Path(folder)


def statistics_record(paths: list[Path]) -> list[dict[str, str]]:
    """What ``soup.json`` records of the statistics files, one per mix entry (``recipe.yaml`` names them)."""
    return [{"file": str(path.resolve()), "sha256": file_sha256(path)} for path in paths]


def statistics_soup(
    kitchen: Kitchen,
    ingredients: Sequence[Ingredient],
    kind: str,
    rows: int,
    state_dir: str | Path | None,
    estimate: Estimator,
    merge: Callable[[list[Path]], Merged],
    desc: str,
) -> tuple[Merged, dict[str, Any]]:
    """Each ingredient's statistic, taken from the cache or estimated on the kitchen's device (the judge's), then
    ``merge(paths)`` while the files exist.

    Args:
        kitchen: gives the rows, the model and the device.
        ingredients: the ingredients to estimate it for, in the mix's order.
        kind / rows: see :class:`StatisticsCache`.
        state_dir: where the files are kept (``None``: a temporary folder, removed after ``merge``).
        estimate: ``estimate(model, batches, names, device)`` → tensor name → statistic, over the float tensors.
        merge: the recipe's merge, given the files in ingredient order.
        desc: the progress bar's label.

    Returns:
        ``merge``'s result, and the options the record adds: the files with their sha256 as ``statistics``, when
        they are kept (none for a temporary folder).
    """
    names = [name for name in kitchen.plan.shapes if kitchen.plan.is_float(name)]
    with statistics_folder(state_dir) as folder:
        cache = StatisticsCache(folder, kind, kitchen, rows)
        paths = [
            cache.get(ingredient, lambda: estimate(kitchen.model, cache.batches(), names, kitchen.device))
            for ingredient in tqdm(ingredients, desc=desc, disable=not kitchen.progress)
        ]
        merged = merge(paths)
        record = {"statistics": statistics_record(paths)} if state_dir is not None else {}
    return merged, record


def tapped_mean(
    ingredients: Sequence[Ingredient],
    files: Sequence[Path],
    plan: MergePlan,
    hash_cache: HashCache | None,
    take: Take,
) -> SoupWeights:
    """The uniform mean of ``ingredients``, streamed one at a time; on the way, ``take(name, tensor, statistic)``
    gets each tensor that the ingredient's statistics file (in ``files``, in the same order) holds, with it.

    The mean is on the host, as ``hf-soups cook`` computes it, so a re-cooked soup has the same bits.
    """
    mean = RunningMean(plan, hash_cache)
    for ingredient, path in zip(ingredients, files, strict=True):
        with safe_open(str(path), "pt") as statistics:
            mean.add_tensors(_tapped(ingredient.tensors(hash_cache), statistics, take), ingredient)
    return mean.soup()


def _tapped(
    stream: Iterable[tuple[str, torch.Tensor]], statistics: Any, take: Take
) -> Iterator[tuple[str, torch.Tensor]]:
    """``stream`` as it is, calling ``take`` on the tensors the open statistics file holds."""
    known = set(statistics.keys())
    for name, tensor in stream:
        if name in known:
            take(name, tensor, statistics.get_tensor(name))
        yield name, tensor


__all__ = [
    "StatisticsCache",
    "check_applies",
    "estimation_rows",
    "selected_batches",
    "statistics_folder",
    "statistics_record",
    "statistics_soup",
    "tapped_mean",
]
