"""``merge_models``: average checkpoints of one base model into a soup folder, and write a mean as a soup.

:func:`merge_models` resolves and validates the ingredients (:mod:`hf_soups.ingredients`; :func:`warn_unrelated`
logs a warning when they were not fine-tuned from one base model), checks the output folder before anything is read
in full, averages with one :class:`~hf_soups.mean.RunningMean` pass and writes the soup
(:func:`write_soup`: weights by :mod:`hf_soups.model_folder`, ``soup.json`` from :func:`soup_record`, all inside
an :func:`~hf_soups.atomic_folder.atomic_folder`), or a soup of LoRA adapters as an adapter
(:func:`write_adapter_soup`, :mod:`hf_soups.adapter_soup`). Recipes write their soups with the same functions.

Example:
    >>> from hf_soups import merge_models
    >>> merge_models(["runs/lr2e-5", "runs/lr3e-5", "runs/lr5e-5"], output_dir="soup")  # doctest: +SKIP
    PosixPath('soup')
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import torch
from tqdm.auto import tqdm

from hf_soups.adapter_soup import AdapterOutput, AdapterSoup
from hf_soups.adapters import AdapterIngredient
from hf_soups.atomic_folder import atomic_folder, check_output
from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import (
    BODY_COSINE,
    CheckpointChoice,
    MergePlan,
    body_cosines,
    check_distinct,
    resolve_ingredients,
    validate,
)
from hf_soups.mean import RunningMean, SoupWeights, check_weights
from hf_soups.model_folder import (
    COPIED_FILES,
    DEFAULT_MAX_SHARD_SIZE,
    load_model,
    output_dtypes,
    parse_dtype,
    write_model_folder,
)
from hf_soups.options import MergeOptions
from hf_soups.record import SoupRecord
from hf_soups.threads import compute_threads, merge_threads
from hf_soups.validation import shard_size
from hf_soups.version import __version__

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


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
    extras: Callable[[Path, list[tuple[Ingredient, float]]], None] | None = None,
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
        adapter_output: for soups of adapters (see :mod:`hf_soups.adapter_soup`): ``"full"`` writes the model
            base + Σ wᵢΔWᵢ (adapters and full models may be mixed); ``"exact"`` writes that soup as a PEFT adapter of
            rank Σrᵢ; ``"svd"`` as a rank-``adapter_rank`` adapter (truncated SVD, relative error in ``soup.json``).
        adapter_rank: the rank of the ``"svd"`` adapter.
        threads: torch threads to average with (default: :func:`merge_threads`: the user's ``OMP_NUM_THREADS`` or
            ``torch.set_num_threads`` setting, else ``MERGE_THREADS``); the caller's setting is restored after.
        extras: for a full soup written to ``output_dir``, called with the temporary folder (``soup.json`` in it) and
            the mix (each ingredient with its weight, in the order averaged) to add files before the folder is renamed
            into place: ``hf-soups merge`` adds ``recipe.yaml`` and the card
            (:func:`hf_soups.commands.merge.write_merge_files`).

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
    warn_unrelated(resolved, plan)
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
        mix = list(zip(resolved, raw_weights, strict=True))
        add = None if extras is None else lambda folder: extras(folder, mix)
        record = soup_record(resolved, raw_weights)
        write_soup(output_dir, mean.soup(), record, dtype, max_shard_size, overwrite, bar, add, threads)
    hash_cache.save()
    return output_dir


def warn_unrelated(ingredients: Sequence[Ingredient], plan: MergePlan) -> None:
    """Log one warning when two ingredients were not fine-tuned from one base model: their body-matrix weight cosine
    (:func:`~hf_soups.ingredients.body_cosines`) is below :data:`~hf_soups.ingredients.BODY_COSINE`."""
    cosines = body_cosines(ingredients, plan)
    if cosines is None or cosines.min() >= BODY_COSINE:
        return
    i, j = divmod(int(cosines.argmin()), len(cosines))
    logger.warning(
        "%s and %s were not fine-tuned from one base model (body weight cosine %.2f; fine-tunes of one base are near "
        "1): the soup averages unrelated weights (hf-soups diagnose tells which ingredients share a body)",
        ingredients[i].label, ingredients[j].label, cosines[i, j],
    )


def write_soup(
    output_dir: str | Path,
    soup: SoupWeights,
    record: SoupRecord,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: tqdm | None = None,
    extras: Callable[[Path], None] | None = None,
    threads: int | None = None,
) -> Path:
    """Write a soup folder atomically: weights, config and tokenizer (from the first ingredient), ``soup.json``.

    Args:
        output_dir: the folder to create.
        soup: the soup's weights.
        record: its ``soup.json`` (the ``dtype`` field is filled in here).
        dtype: the dtype to write (default: the ingredients').
        max_shard_size: shard above this size.
        overwrite: replace an existing folder.
        progress: a bar to advance once per tensor written.
        extras: called with the temporary folder to add more files (recipe, plots, card) before it is renamed.
        threads: torch threads to cast and check the tensors with (default: :func:`merge_threads`).

    Returns:
        ``output_dir``.
    """
    dtypes = output_dtypes(soup.plan, parse_dtype(dtype))
    record.dtype = "+".join(sorted({str(d).removeprefix("torch.") for d in dtypes.values() if d.is_floating_point}))

    def tensor(name: str) -> torch.Tensor:
        if progress is not None:
            progress.update()
        return soup.check_finite(name, dtypes[name])

    output_dir = check_output(output_dir, soup.members, overwrite)
    with atomic_folder(output_dir, overwrite) as tmp:
        with compute_threads(threads):
            write_model_folder(tmp, tensor, soup.plan, dtypes, soup.members[0], max_shard_size)
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
        record: its ``soup.json``; ``dtype`` and ``adapter`` (:meth:`~hf_soups.adapter_soup.AdapterSoup.summary`) are
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


def base_model(ingredients: Sequence[Ingredient]) -> str | None:
    """What a soup was fine-tuned from, when known: its adapters' base, else the pretrained model every ingredient
    records (a pantry's entries); a Hub id, or a local folder by its absolute path (the card names it only by a Hub
    id, :func:`hf_soups.card.hub_id`)."""
    bases = [i.base for i in ingredients if isinstance(i, AdapterIngredient) and i.base]
    if bases:
        return bases[0].repo_id or str(bases[0].path.resolve())
    starts = {i.start_model for i in ingredients}
    return starts.pop() if len(starts) == 1 else None


def soup_record(ingredients: Sequence[Ingredient], weights: Sequence[float]) -> SoupRecord:
    """The ``soup.json`` record of a soup: each ingredient's origin, file hashes and normalised weight."""
    total = sum(weights)
    config = ingredients[0].config
    return SoupRecord(
        hf_soups_version=__version__,
        dtype="",
        base_model=base_model(ingredients),
        model_type=config.get("model_type"),
        architecture=(config.get("architectures") or [None])[0],
        ingredients=[i.record(weight=w / total, kept=w > 0) for i, w in zip(ingredients, weights, strict=True)],
    )
