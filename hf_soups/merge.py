"""``merge_models``: average checkpoints of one base model into a soup folder; ``merge_into_model``: into a model in
memory.

:func:`merge_models` resolves and validates the ingredients (:mod:`hf_soups.ingredients`; :func:`warn_unrelated`
logs a warning when they were not fine-tuned from one base model), checks the output folder before anything is read
in full, averages with one :class:`~hf_soups.mean.RunningMean` pass and writes the soup folder as every soup's is
written (:func:`~hf_soups.soup_folder.write_soup_folder`: weights, ``soup.json``, ``recipe.yaml`` that ``hf-soups
cook`` re-cooks, the card), or a soup of LoRA adapters as an adapter
(:func:`~hf_soups.soup_folder.write_adapter_folder`, :mod:`hf_soups.adapter_soup`). ``hf-soups merge`` is this
function; neither imports the evaluation stack.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> config = BertConfig(
    ...     vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    ... )
    >>> model = BertForSequenceClassification(config)  # two "fine-tuned runs" of one base, tiny, built from a config
    >>> model.save_pretrained("runs/lr2e-5")
    >>> _ = torch.nn.init.normal_(model.classifier.weight)
    >>> model.save_pretrained("runs/lr3e-5")
    >>> from hf_soups import merge_models
    >>> merge_models(["runs/lr2e-5", "runs/lr3e-5"], output_dir="soup")
    PosixPath('soup')
    >>> sorted(path.name for path in Path("soup").iterdir())
    ['README.md', 'config.json', 'model.safetensors', 'recipe.yaml', 'soup.json']
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import torch
from tqdm.auto import tqdm

from hf_soups.adapter_soup import AdapterOutput, AdapterSoup
from hf_soups.atomic_folder import check_output
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
    validate_ingredients,
)
from hf_soups.mean import RunningMean, check_weights
from hf_soups.model_folder import load_model, parse_dtype, write_soup_weights
from hf_soups.options import MergeOptions
from hf_soups.soup_folder import write_adapter_folder, write_soup_folder
from hf_soups.soup_record import soup_record
from hf_soups.threads import merge_threads
from hf_soups.validation import shard_size

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
    repo_id: str | None = None,
) -> Path:
    """Average fine-tuned checkpoints of one base model into a soup folder (a uniform or weighted soup): the
    weights, ``soup.json``, ``recipe.yaml`` (``hf-soups cook`` re-cooks it bit for bit) and a model card, as
    ``hf-soups merge`` writes it.

    Args:
        ingredients: Hub ids (``owner/name[@revision]``), local ``save_pretrained`` folders or Trainer output
            folders (see :func:`~hf_soups.ingredients.resolve_ingredients`), or resolved ingredients.
        output_dir: the soup folder to write (for a model in memory, see :func:`merge_into_model`; ``None`` still
            returns one, with a deprecation warning).
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
        repo_id: the Hub repo the soup will be pushed to, named by the card's snippets (default: the folder).

    Returns:
        The output folder.

    Raises:
        SoupError: bad input, named; nothing is written.

    Example:
        >>> from hf_soups import merge_models
        >>> merge_models(["runs/a", "runs/b"], output_dir="soup", weights=[0.7, 0.3], dtype="bf16")  # doctest: +SKIP
        PosixPath('soup')
    """
    if adapter_output not in get_args(AdapterOutput):
        raise SoupError(f"adapter_output: '{adapter_output}' is not one of {', '.join(get_args(AdapterOutput))}")
    if (adapter_output == "svd") != (adapter_rank is not None):
        raise SoupError("adapter_rank: give it with adapter_output='svd' (and only then)")
    if output_dir is None:  # hf-soups 0.1 returned the model in memory: now merge_into_model's job
        if adapter_output != "full":
            raise SoupError(f"adapter_output='{adapter_output}' writes an adapter folder: give output_dir")
        warnings.warn(
            "merge_models without output_dir is deprecated and will be removed: call hf_soups.merge_into_model for a "
            "model in memory",
            FutureWarning,
            stacklevel=2,
        )
        return merge_into_model(  # type: ignore[return-value]
            ingredients,
            weights=weights,
            dtype=dtype,
            allow_single=allow_single,
            checkpoints=checkpoints,
            token=token,
            progress=progress,
            base=base,
            threads=threads,
        )
    merge_threads(threads)
    output_dir = check_output(output_dir, [], overwrite)
    parse_dtype(dtype)
    max_shard_size = shard_size(max_shard_size, "max_shard_size")
    resolved, plan, raw_weights = _mix(
        ingredients, weights, allow_single, checkpoints, token, base, output_dir, overwrite
    )
    if adapter_output != "full":
        soup = AdapterSoup.exact(resolved, raw_weights)
        soup = soup if adapter_rank is None else soup.truncated(adapter_rank)
        return write_adapter_folder(
            output_dir, soup, soup_record(resolved, raw_weights), resolved[0], dtype, overwrite
        )
    hash_cache = HashCache()
    mean = RunningMean(plan, hash_cache, threads)
    steps = (len(resolved) + 1) * len(plan.shapes)
    with tqdm(total=steps, desc="merging", unit="tensor", disable=not progress) as bar:
        mean.add_all(resolved, raw_weights, bar)
        record = soup_record(resolved, raw_weights)  # after the reads: the weight files' hashes are known now
        write_soup_folder(
            output_dir,
            mean.soup(),
            record,
            dtype=dtype,
            max_shard_size=max_shard_size,
            overwrite=overwrite,
            repo_id=repo_id,
            threads=threads,
            progress=bar,
        )
    hash_cache.save()
    return output_dir


def merge_into_model(
    ingredients: Sequence[str | Path | Ingredient],
    weights: Sequence[float] | None = None,
    dtype: str | torch.dtype | None = None,
    allow_single: bool = MergeOptions.allow_single,
    checkpoints: CheckpointChoice | None = None,
    token: str | bool | None = None,
    progress: bool = True,
    base: str | Path | Ingredient | None = None,
    threads: int | None = MergeOptions.threads,
) -> PreTrainedModel:
    """Average fine-tuned checkpoints of one base model into a model in memory (arguments as :func:`merge_models`'s;
    PEFT adapters are merged into the full model). The weights pass through a temporary folder, so the model is
    exactly what :func:`merge_models` writes.

    Returns:
        The soup, loaded with the class its config names.

    Raises:
        SoupError: bad input, named.

    Example:
        >>> from hf_soups import merge_into_model
        >>> model = merge_into_model(["me/bert-rte@lr2e-5", "me/bert-rte@lr3e-5"])  # doctest: +SKIP
    """
    merge_threads(threads)
    parse_dtype(dtype)
    resolved, plan, raw_weights = _mix(ingredients, weights, allow_single, checkpoints, token, base)
    hash_cache = HashCache()
    mean = RunningMean(plan, hash_cache, threads)
    with tempfile.TemporaryDirectory() as tmp:
        with tqdm(total=(len(resolved) + 1) * len(plan.shapes), desc="merging", disable=not progress) as bar:
            mean.add_all(resolved, raw_weights, bar)
            write_soup_weights(Path(tmp), mean.soup(), parse_dtype(dtype), threads=threads, progress=bar)
        hash_cache.save()
        return load_model(tmp)


def _mix(
    ingredients: Sequence[str | Path | Ingredient],
    weights: Sequence[float] | None,
    allow_single: bool,
    checkpoints: CheckpointChoice | None,
    token: str | bool | None,
    base: str | Path | Ingredient | None,
    output_dir: Path | None = None,
    overwrite: bool = False,
) -> tuple[list[Ingredient], MergePlan, list[float]]:
    """Resolve and check the ingredients (against the output folder, when there is one) and their weights.

    Returns:
        The ingredients, their plan and their weights (not normalised).
    """
    resolved = resolve_ingredients(ingredients, checkpoints=checkpoints, token=token, base=base)
    if output_dir is not None:
        check_output(output_dir, resolved, overwrite)
    check_distinct(resolved)
    plan = validate_ingredients(resolved, allow_single=allow_single)
    raw_weights = check_weights(weights, resolved)
    warn_unrelated(resolved, plan)
    return resolved, plan, raw_weights


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
        ingredients[i].label,
        ingredients[j].label,
        cosines[i, j],
    )
