"""The streaming weighted average at the heart of every soup.

Ingredients are added into an fp32 running mean Σ wᵢθᵢ / Σ wᵢ, kept as ``lerp`` steps so that every recipe computes
its soups with the same arithmetic. :meth:`RunningMean.add_all` (merges) opens each weight file once and works
tensor by tensor in pieces of ``PIECE`` elements, adding every ingredient's copy of a piece while it is in the CPU
cache; :meth:`RunningMean.add` (greedy, one ingredient at a time) streams one ingredient from start to end. Either
way each file is read once and hashed on the way, and peak memory is about one model (the fp32 mean) whatever the
number of ingredients. The soup is then written tensor by tensor into a temporary folder beside the target and
renamed into place, so an interrupted merge leaves no output folder.

Example:
    >>> from hf_soups import merge_models
    >>> merge_models(["runs/lr2e-5", "runs/lr3e-5", "runs/lr5e-5"], output_dir="soup")  # doctest: +SKIP
    PosixPath('soup')
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import torch
from huggingface_hub.constants import SAFETENSORS_WEIGHTS_FILE_PATTERN
from huggingface_hub.serialization import split_state_dict_into_shards_factory
from tqdm.auto import tqdm

from hf_soups.adapters import AdapterIngredient, AdapterOutput, AdapterSoup, base_name
from hf_soups.dtypes import DTYPE_NAMES
from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredients import (
    TOKENIZER_FILES,
    CheckpointChoice,
    Ingredient,
    MergePlan,
    check_distinct,
    resolve_ingredients,
    validate,
)
from hf_soups.options import MergeOptions
from hf_soups.record import SoupRecord
from hf_soups.tensorfile import BackgroundHasher, plan_layout, spare_cores, write_safetensors
from hf_soups.validation import check_apart, check_mix, output_folder, shard_size
from hf_soups.version import __version__

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, attribute) for name, attribute in DTYPE_NAMES.items()}
Weight = float | Mapping[str, float]  # one weight per ingredient, or one per ingredient and tensor
COPIED_FILES = ["generation_config.json", *TOKENIZER_FILES]
DEFAULT_MAX_SHARD_SIZE = MergeOptions.max_shard_size  # transformers' save_pretrained default


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


PIECE = 1 << 18  # elements of the mean worked on at once by RunningMean.add_all: 1 MiB of fp32 stays in the CPU cache
# torch threads for a merge's element-wise work (1 MiB lerps, memory-bound). Measured (2 cores, 8 BERT-base inputs,
# benchmarks/RESULTS.md): add_all takes 0.38-0.44 s on one thread and 0.38-0.39 s on two, for twice the CPU time; and
# wherever another process keeps the cores busy, a pool of two spin-waits on its barriers: once 11 s, and 8x the
# whole merge beside a training job.
MERGE_THREADS = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # the environment variables torch sizes its pool by
_TORCH_THREADS = torch.get_num_threads()  # torch's setting when hf_soups was imported: a later change is the user's


def merge_threads(threads: int | None = None) -> int:
    """The number of torch threads a merge computes with.

    ``threads`` when given; else the user's own setting where they made one (``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` set, or ``torch.set_num_threads`` called after hf_soups was imported); else
    ``MERGE_THREADS``.

    Raises:
        SoupError: ``threads`` is not a positive integer.

    Example:
        >>> merge_threads(3)
        3
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SoupError(f"threads: must be a positive integer, got {threads!r}")
        return threads
    current = torch.get_num_threads()
    if current != _TORCH_THREADS or any(os.environ.get(name) for name in THREAD_VARIABLES):
        return current
    return MERGE_THREADS


@contextlib.contextmanager
def compute_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with torch set to :func:`merge_threads` threads, then give the caller back their setting.

    Example:
        >>> with compute_threads() as chosen:  # doctest: +SKIP
        ...     mean.lerp_(tensor, 0.5)
    """
    chosen, before = merge_threads(threads), torch.get_num_threads()
    if chosen != before:
        torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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


def output_dtypes(plan: MergePlan, dtype: torch.dtype | None) -> dict[str, torch.dtype]:
    """The dtype each tensor is written in: ``dtype`` when given, else the ingredients' (fp32 where they differ)."""
    chosen = {}
    for name, dtypes in plan.dtypes.items():
        if not dtypes[0].is_floating_point:
            chosen[name] = dtypes[0]
        elif dtype is not None:
            chosen[name] = dtype
        else:
            chosen[name] = dtypes[0] if len(set(dtypes)) == 1 else torch.float32
    return chosen


def write_model_folder(
    folder: Path,
    tensors: Callable[[str], torch.Tensor],
    plan: MergePlan,
    dtypes: dict[str, torch.dtype],
    template: Ingredient,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> None:
    """Write a ``from_pretrained`` folder: safetensors (sharded like transformers), config and tokenizer files.

    Args:
        folder: an existing, empty folder.
        tensors: gives each tensor by name, once, in any order; it is converted to ``dtypes[name]`` as it is written.
        plan: the tensor names and shapes.
        dtypes: the output dtype of each tensor.
        template: the ingredient whose config, generation config and tokenizer files are copied.
        max_shard_size: shard above this size, as ``save_pretrained`` does.
    """
    sizes = {name: math.prod(shape) * dtypes[name].itemsize for name, shape in plan.shapes.items()}
    split = split_state_dict_into_shards_factory(
        sizes, get_storage_size=int, filename_pattern=SAFETENSORS_WEIGHTS_FILE_PATTERN, max_shard_size=max_shard_size
    )
    for filename, names in split.filename_to_tensors.items():
        layout = plan_layout((name, dtypes[name], plan.shapes[name]) for name in names)
        write_safetensors(folder / filename, ((name, tensors(name).to(dtypes[name])) for name in names), layout)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = dict(template.config)
    float_dtypes = {d for d in dtypes.values() if d.is_floating_point}
    if len(float_dtypes) == 1:
        config["dtype"] = str(float_dtypes.pop()).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in COPIED_FILES:
        source = (template.tokenizer_path if name in TOKENIZER_FILES else template.path) / name
        if source.is_file():
            shutil.copyfile(source, folder / name)


TMP_SUFFIX = ".hf-soups-tmp"  # our temporary folders: ``.NAME.PID.RANDOM.hf-soups-tmp`` beside the target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` that becomes ``target`` only if the block finishes.

    The target is claimed atomically at the end: without ``overwrite``, a folder that appeared there meanwhile (a
    concurrent merge, anything) is left alone and the write is refused. On any exception (Ctrl-C included) the
    temporary folder is removed; after a SIGKILL a hidden ``.NAME.PID.*.hf-soups-tmp`` folder remains, and the next
    write to ``target`` removes it once process PID is gone (:func:`remove_stale_temporaries`).

    Raises:
        SoupError: ``target`` exists (or appeared) and ``overwrite`` is false; the folder cannot be written.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise SoupError(f"output folder {target} exists (pass overwrite=True / --overwrite to replace it)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=target.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the soup gets what save_pretrained's folder would
    except OSError as err:
        raise SoupError(f"output folder {target}: cannot be created ({err.strerror}: {err.filename})") from None
    try:
        yield tmp
        if overwrite and (target.exists() or target.is_symlink()):
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=target.parent))
            target.rename(old / target.name)
            try:
                _claim(tmp, target)
            except SoupError:
                with contextlib.suppress(OSError):
                    (old / target.name).rename(target)
                raise
            shutil.rmtree(old)
        else:
            _claim(tmp, target)
    except OSError as err:
        raise SoupError(f"output folder {target}: cannot be written ({err.strerror}: {err.filename})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place


def _claim(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` only if nothing is there: ``mkdir`` claims the name atomically, and a folder
    renamed onto an empty folder replaces it in one step (POSIX)."""
    try:
        target.mkdir()
    except FileExistsError:
        raise SoupError(
            f"output folder {target} appeared while the soup was being made (another process?); it was left as it "
            "is and nothing was written"
        ) from None
    try:
        tmp.rename(target)
    except OSError:
        with contextlib.suppress(OSError):
            target.rmdir()  # only if still empty: whatever someone put there stays
        raise SoupError(
            f"output folder {target} was written to by someone else meanwhile; it was left as it is"
        ) from None


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary folders of ``target`` left by hf-soups processes that were killed (their PID is gone).

    Returns:
        The folders removed.
    """
    removed = []
    for candidate in Path(target).parent.glob(f".{glob.escape(target.name)}.*{TMP_SUFFIX}"):
        pid, *rest = candidate.name[len(target.name) + 2 : -len(TMP_SUFFIX)].split(".")
        if (
            len(rest) == 1
            and pid.isdigit()
            and candidate.is_dir()
            and not candidate.is_symlink()
            and not _alive(int(pid))
        ):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def check_output(output_dir: str | Path, ingredients: Sequence[Ingredient], overwrite: bool = False) -> Path:
    """Check a soup's output folder before anything is read in full: a folder name to create, not existing unless
    ``overwrite``, and never one of the ``ingredients``' folders, inside one, or holding one (whatever ``overwrite``).

    Raises:
        SoupError: naming the output folder (and the ingredient).
    """
    output_dir = output_folder(output_dir)
    if output_dir.exists() and not overwrite:
        raise SoupError(f"output folder {output_dir} exists (pass overwrite=True / --overwrite to replace it)")
    parts = [part for i in ingredients for part in (i, getattr(i, "base", None)) if part is not None]
    check_apart(output_dir, [(part.label, folder) for part in parts for folder in (part.path, part.tokenizer_path)])
    return output_dir


def merge_models(
    ingredients: Sequence[str | Path | Ingredient],
    output_dir: str | Path | None = None,
    weights: Sequence[float] | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = MergeOptions.overwrite,
    allow_single: bool = MergeOptions.allow_single,
    checkpoints: CheckpointChoice | None = None,
    max_shard_size: int | str = MergeOptions.max_shard_size,
    token: str | bool | None = None,
    progress: bool = True,
    base: str | Path | Ingredient | None = None,
    adapter_output: AdapterOutput = MergeOptions.adapter_output,  # type: ignore[assignment]
    adapter_rank: int | None = None,
    threads: int | None = MergeOptions.threads,
) -> Path | PreTrainedModel:
    """Average fine-tuned checkpoints of one base model into one model (a uniform or weighted soup).

    Args:
        ingredients: Hub ids (``owner/name[@revision]``), local ``save_pretrained`` folders or Trainer output
            folders (see :func:`~hf_soups.ingredients.resolve_ingredients`), or resolved ingredients.
        output_dir: the soup folder to write; when ``None`` the soup is returned as a loaded model.
        weights: one mixing weight per ingredient (normalised to sum 1); uniform when ``None``.
        dtype: ``"fp32"``, ``"fp16"``, ``"bf16"`` (or a torch dtype) to write; default: the ingredients' dtype.
        overwrite: replace an existing ``output_dir``.
        allow_single: accept a single ingredient (a plain copy).
        checkpoints: which ``checkpoint-*`` of a Trainer output folder to take: ``"all"``, ``"last"``, ``"best"``.
        max_shard_size: shard the output above this size, like ``save_pretrained``.
        token: Hub token for private repos (default: ``HF_TOKEN`` or the saved login).
        progress: show a tqdm bar over tensors.
        base: the base model of PEFT adapter ingredients (default: the one each adapter's config names).
        adapter_output: for soups of adapters (see :mod:`hf_soups.adapters`): ``"full"`` writes the model
            base + Σ wᵢΔWᵢ (adapters and full models may be mixed); ``"exact"`` writes that soup as a PEFT adapter of
            rank Σrᵢ; ``"svd"`` as a rank-``adapter_rank`` adapter (truncated SVD, relative error in ``soup.json``).
        adapter_rank: the rank of the ``"svd"`` adapter.
        threads: torch threads to average with (default: :func:`merge_threads`: the user's ``OMP_NUM_THREADS`` or
            ``torch.set_num_threads`` setting, else ``MERGE_THREADS``); the caller's setting is restored after.

    Returns:
        The output folder, or the loaded model when ``output_dir`` is ``None``.

    Raises:
        SoupError: bad input, named; nothing is written.

    Example:
        >>> from hf_soups import merge_models
        >>> merge_models(["runs/a", "runs/b"], output_dir="soup", weights=[0.7, 0.3], dtype="bf16")  # doctest: +SKIP
        PosixPath('soup')
        >>> model = merge_models(["me/bert-rte@lr2e-5", "me/bert-rte@lr3e-5"])  # doctest: +SKIP
    """
    if adapter_output not in get_args(AdapterOutput):
        raise SoupError(f"adapter_output: '{adapter_output}' is not one of {', '.join(get_args(AdapterOutput))}")
    if (adapter_output == "svd") != (adapter_rank is not None):
        raise SoupError("adapter_rank: give it with adapter_output='svd' (and only then)")
    if output_dir is None and adapter_output != "full":
        raise SoupError(f"adapter_output='{adapter_output}' writes an adapter folder: give output_dir")
    merge_threads(threads)
    if output_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = merge_models(
                ingredients, Path(tmp) / "soup", weights=weights, dtype=dtype, allow_single=allow_single,
                checkpoints=checkpoints, max_shard_size=max_shard_size, token=token, progress=progress, base=base,
                threads=threads,
            )
            return load_model(folder)  # type: ignore[arg-type]
    output_dir = check_output(output_dir, [], overwrite)
    parse_dtype(dtype)
    max_shard_size = shard_size(max_shard_size, "max_shard_size")
    resolved = resolve_ingredients(ingredients, checkpoints=checkpoints, token=token, base=base)
    check_output(output_dir, resolved, overwrite)
    check_distinct(resolved)
    plan = validate(resolved, allow_single=allow_single)
    raw_weights = check_weights(weights, resolved)
    if adapter_output != "full":
        soup = AdapterSoup.exact(resolved, raw_weights)
        return write_adapter_soup(
            output_dir, soup if adapter_rank is None else soup.truncated(adapter_rank),
            soup_record(resolved, raw_weights), resolved[0], dtype, overwrite,
        )
    hash_cache = HashCache()
    mean = RunningMean(plan, hash_cache, threads)
    steps = (len(resolved) + 1) * len(plan.shapes)
    with tqdm(total=steps, desc="merging", unit="tensor", disable=not progress) as bar:
        mean.add_all(resolved, raw_weights, bar)
        write_soup(output_dir, mean, soup_record(resolved, raw_weights), dtype, max_shard_size, overwrite, bar)
    hash_cache.save()
    return output_dir


def write_soup(
    output_dir: str | Path,
    mean: RunningMean,
    record: SoupRecord,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: tqdm | None = None,
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write a soup folder atomically: weights, config and tokenizer (from the first ingredient), ``soup.json``.

    Args:
        output_dir: the folder to create.
        mean: the soup's weights.
        record: its ``soup.json`` (the ``dtype`` field is filled in here).
        dtype: the dtype to write (default: the ingredients').
        max_shard_size: shard above this size.
        overwrite: replace an existing folder.
        progress: a bar to advance once per tensor written.
        extras: called with the temporary folder to add more files (recipe, plots, card) before it is renamed.

    Returns:
        ``output_dir``.
    """
    dtypes = output_dtypes(mean.plan, parse_dtype(dtype))
    record.dtype = "+".join(sorted({str(d).removeprefix("torch.") for d in dtypes.values() if d.is_floating_point}))

    def tensor(name: str) -> torch.Tensor:
        if progress is not None:
            progress.update()
        return mean.check_finite(name, dtypes[name])

    output_dir = check_output(output_dir, mean.added, overwrite)
    with atomic_folder(output_dir, overwrite) as tmp:
        with compute_threads(mean.threads):
            write_model_folder(tmp, tensor, mean.plan, dtypes, mean.added[0], max_shard_size)
        record.save(tmp)
        if extras is not None:
            extras(tmp)
    return Path(output_dir)


def write_adapter_soup(
    output_dir: str | Path,
    soup: AdapterSoup,
    record: SoupRecord,
    template: Ingredient,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a soup of adapters as a PEFT adapter folder, atomically, with ``soup.json`` and tokenizer files.

    Args:
        output_dir: the folder to create.
        soup: the exact or truncated adapter soup.
        record: its ``soup.json``; ``dtype`` and ``adapter`` (:meth:`~hf_soups.adapters.AdapterSoup.summary`) are
            filled in here.
        template: the ingredient whose tokenizer files are copied.
        dtype: the dtype to write (default fp32).
        overwrite: replace an existing folder.

    Returns:
        ``output_dir``.
    """
    chosen = parse_dtype(dtype) or torch.float32
    record.dtype = str(chosen).removeprefix("torch.")
    record.adapter = soup.summary()
    with atomic_folder(Path(output_dir), overwrite) as tmp:
        soup.save(tmp, chosen)
        record.save(tmp)
        for name in COPIED_FILES:
            if (template.path / name).is_file():
                shutil.copyfile(template.path / name, tmp / name)
    return Path(output_dir)


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"`` → ``torch.bfloat16`` (also fp16/fp32 and long names); ``None`` and torch dtypes pass through."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise SoupError(f"dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def soup_record(ingredients: Sequence[Ingredient], weights: Sequence[float]) -> SoupRecord:
    """The ``soup.json`` record of a soup: each ingredient's origin, file hashes and normalised weight."""
    total = sum(weights)
    config = ingredients[0].config
    return SoupRecord(
        hf_soups_version=__version__,
        dtype="",
        base_model=next((base_name(i.base) for i in ingredients if isinstance(i, AdapterIngredient) and i.base), None),
        model_type=config.get("model_type"),
        architecture=(config.get("architectures") or [None])[0],
        ingredients=[i.record(weight=w / total, kept=w > 0) for i, w in zip(ingredients, weights, strict=True)],
    )


def load_model(folder: str | Path, **kwargs) -> PreTrainedModel:
    """Load a soup (or ingredient) folder with the model class its config names.

    Example:
        >>> model = load_model("soup")  # doctest: +SKIP
    """
    import transformers

    config = json.loads((Path(folder) / "config.json").read_text())
    architecture = (config.get("architectures") or ["AutoModel"])[0]
    model_class = getattr(transformers, architecture, transformers.AutoModel)
    return model_class.from_pretrained(folder, **kwargs)
