"""Ingredients: resolve what the user named to local checkpoint folders, and validate them together.

An ingredient spec is one of:

- a Hub repo ``owner/name`` or ``owner/name@revision`` (branch, tag or commit), downloaded with
  ``huggingface_hub.snapshot_download`` (config, weights and tokenizer files only; honours ``HF_ENDPOINT``,
  ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and ``HF_HOME``); the resolved commit sha is recorded;
- a local ``save_pretrained`` folder;
- a Trainer output folder, which expands to its ``checkpoint-*`` subfolders (all of them, the last, or the best);
- a PEFT adapter folder, which becomes an :class:`~hf_soups.adapters.AdapterIngredient` over its resolved base.

Everything is validated before anything is written: same ``model_type`` and architecture, same label map, same
tensor names and shapes (tied weights, see :data:`~hf_soups.ingredient.TIED_WEIGHTS`, count as one tensor). One
ingredient's folder, files and tensors are :class:`~hf_soups.ingredient.Ingredient`; this module builds on it and
on :mod:`hf_soups.adapters`, never the other way.

Example:
    >>> ingredients = resolve_ingredients(["runs/lr2e-5", "runs/lr3e-5", "me/bert-rte@v2"])  # doctest: +SKIP
    >>> plan = validate_ingredients(ingredients)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hf_soups.adapters import ADAPTER_CONFIG, AdapterIngredient, check_adapters, is_adapter
from hf_soups.errors import SoupError
from hf_soups.ingredient import WEIGHT_LAYOUTS, Ingredient, label_map
from hf_soups.tensorfile import read_tensor_range

# Files a soup needs from a Hub repo: config, weights, tokenizer (never optimizer states or training args).
HUB_ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "*.tiktoken",
    "chat_template*",
    "adapter_config.json",  # PEFT adapters (their weights: *.safetensors, adapter_model.bin)
    "adapter_model.bin",
]

# Name parts of task heads: layers put new (randomly initialised) on a pretrained body at fine-tuning.
HEAD_PARTS = {"classifier", "pre_classifier", "lm_head", "score", "qa_outputs", "cls"}
# Body-matrix weight cosine below which two checkpoints were not fine-tuned from one base model. Fine-tuning moves a
# pretrained model's matrices by a few percent of their norm (cosine near 1; still 0.5 for runs that each moved as
# far as the base's norm), while the matrices of independent random inits or pretraining runs are orthogonal: their
# cosine is 0 up to sampling noise (about 0.003 for a BERT-base sample, 0.02 for the tests' tiny models).
BODY_COSINE = 0.1
BODY_SAMPLE = 4096  # elements read from the start of each body matrix by :func:`body_cosines`

_HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

CheckpointChoice = Literal["all", "last", "best"]


@dataclass(frozen=True)
class MergePlan:
    """What validation found: the soup's tensors (canonical name → shape) and each one's dtype per ingredient."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, list[torch.dtype]]

    def is_float(self, name: str) -> bool:
        return self.dtypes[name][0].is_floating_point


def resolve_ingredients(
    specs: Sequence[str | os.PathLike[str] | Ingredient],
    checkpoints: CheckpointChoice | None = None,
    token: str | bool | None = None,
    base: str | os.PathLike[str] | Ingredient | None = None,
) -> list[Ingredient]:
    """Turn ingredient specs into local folders.

    A folder holding ``adapter_config.json`` (a PEFT adapter) becomes a
    :class:`~hf_soups.adapters.AdapterIngredient` over its base model: ``base`` when given, else the one its config
    names (``base_model_name_or_path`` at ``revision``).

    Args:
        specs: Hub ids (``owner/name[@revision]``), local model folders or Trainer output folders.
        checkpoints: for Trainer output folders, which ``checkpoint-*`` subfolders to take: ``"all"``, ``"last"`` or
            ``"best"`` (from ``trainer_state.json``). ``None`` takes the folder itself when it holds weights, else
            all its checkpoints.
        token: Hub token (default: ``HF_TOKEN`` or the saved login).
        base: the base model of every adapter ingredient (a spec as above, or a resolved ingredient).

    Returns:
        One :class:`Ingredient` per model, in the order given (a Trainer folder's checkpoints by step).

    Example:
        >>> [i.spec for i in resolve_ingredients(["out/run1"], checkpoints="all")]  # doctest: +SKIP
        ['out/run1/checkpoint-500', 'out/run1/checkpoint-1000']
    """
    ingredients: list[Ingredient] = []
    for spec in specs:
        if isinstance(spec, Ingredient):
            ingredients.append(spec)
        elif _exists(Path(spec), spec):
            ingredients.extend(_local(Path(spec), checkpoints))
        elif Path(spec).is_symlink():
            raise SoupError(f"ingredient '{spec}': a symlink to nothing (or a symlink loop)")
        elif isinstance(spec, str) and _HUB_SPEC.match(spec) and not _looks_local(spec):
            ingredients.append(_from_hub(spec, token))
        elif isinstance(spec, str) and _HUB_SPEC.match(spec):
            raise SoupError(
                f"ingredient '{spec}': no such folder (not taken for a Hub repo id: it starts like a local path)"
            )
        else:
            raise SoupError(f"ingredient '{spec}': no such folder, and not a Hub repo id (owner/name[@revision])")
    return with_bases(ingredients, base, token)


def _looks_local(spec: str) -> bool:
    """Whether a spec that could be a Hub id (``runs/a``) names a local path: its first part is a local folder."""
    return _exists(Path(spec.split("/", 1)[0]), spec) or spec.startswith((".", "~"))


def _exists(path: Path, spec: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists.

    Raises:
        SoupError: the file system cannot even look it up (a name longer than its limit, a path too long).
    """
    try:
        return path.exists()
    except OSError as err:
        raise SoupError(f"ingredient '{spec}': {err.strerror} (no such folder, and not a Hub repo id)") from None


def _local(path: Path, checkpoints: CheckpointChoice | None) -> list[Ingredient]:
    if not path.is_dir():
        raise SoupError(f"ingredient '{path}': not a folder (give the folder that holds config.json and the weights)")
    subfolders = sorted(
        (p for p in path.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)),
        key=lambda p: int(_CHECKPOINT.match(p.name).group(1)),  # type: ignore[union-attr]
    )
    has_weights = any((path / name).is_file() for layout in WEIGHT_LAYOUTS for name in layout) or is_adapter(path)
    if checkpoints is None and (has_weights or not subfolders):
        return [Ingredient(spec=str(path), path=path)]
    if not subfolders:
        raise SoupError(f"ingredient '{path}': no checkpoint-* subfolders to take the {checkpoints} one(s) from")
    if checkpoints == "last":
        subfolders = subfolders[-1:]
    elif checkpoints == "best":
        subfolders = [_best_checkpoint(path, subfolders)]
    return [Ingredient(spec=str(p), path=p) for p in subfolders]


def _best_checkpoint(path: Path, subfolders: list[Path]) -> Path:
    state_file = subfolders[-1] / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoupError(f"ingredient '{path}': {state_file} is not valid JSON ({err})") from None
    best = state.get("best_model_checkpoint") if isinstance(state, dict) else None
    if not isinstance(best, str | None):
        raise SoupError(f"ingredient '{path}': {state_file}: best_model_checkpoint is {best!r}, not a path")
    if not best:
        raise SoupError(
            f"ingredient '{path}': {state_file} records no best_model_checkpoint "
            "(train with load_best_model_at_end=True or metric_for_best_model, or take checkpoints='last')"
        )
    chosen = path / Path(best).name
    if not chosen.is_dir():
        raise SoupError(f"ingredient '{path}': best checkpoint {Path(best).name} is not in {path}")
    return chosen


def _from_hub(spec: str, token: str | bool | None) -> Ingredient:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    match = _HUB_SPEC.match(spec)
    assert match is not None
    repo_id, revision = match["repo"], match["revision"]
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_ALLOW_PATTERNS, token=token))
    except HFValidationError as err:
        raise SoupError(f"ingredient '{spec}': no such folder, and not a valid Hub repo id ({err})") from None
    except RevisionNotFoundError:
        raise SoupError(f"ingredient '{spec}': the Hub repo {repo_id} has no revision '{revision}'") from None
    except RepositoryNotFoundError:
        raise SoupError(
            f"ingredient '{spec}': no Hub repo {repo_id} (or it is private and no valid token was given)"
        ) from None
    except LocalEntryNotFoundError:
        raise SoupError(
            f"ingredient '{spec}': not in the local Hub cache and the Hub cannot be reached (HF_HUB_OFFLINE is "
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')})"
        ) from None
    except HfHubHTTPError as err:
        raise SoupError(
            f"ingredient '{spec}': the Hub answered "
            f"{err.response.status_code if err.response is not None else 'an error'}"
        ) from None
    known = {}
    for file in folder.iterdir():
        blob = Path(os.path.realpath(file)).name  # the cache stores LFS files under their sha256
        if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob):
            known[file.name] = blob
    return Ingredient(spec=spec, path=folder, source="hub", repo_id=repo_id, revision=folder.name, sha256=known)


def validate_ingredients(ingredients: Sequence[Ingredient], allow_single: bool = False) -> MergePlan:
    """Check that the ingredients can be averaged, before anything is read in full or written.

    Args:
        ingredients: resolved ingredients.
        allow_single: accept one ingredient (the "soup" is then a copy).

    Returns:
        The :class:`MergePlan`.

    Raises:
        SoupError: naming the first ingredient, config key or tensor that does not fit the first ingredient.
    """
    if not ingredients:
        raise SoupError("no ingredients given: a soup needs at least two checkpoints of one base model")
    if len(ingredients) == 1 and not allow_single:
        raise SoupError(
            f"only one ingredient ({ingredients[0].spec}): a soup needs at least two (allow_single / --allow-single "
            "copies one model)"
        )
    check_adapters(ingredients)
    first = ingredients[0]
    shapes, first_dtypes = _tensors(first)
    dtypes = {name: [dtype] for name, dtype in first_dtypes.items()}
    for other in ingredients[1:]:
        _check_config(first, other)
        _check_tokenizer(first, other)
        other_shapes, other_dtypes = _tensors(other)
        missing = sorted(set(shapes) - set(other_shapes))
        extra = sorted(set(other_shapes) - set(shapes))
        if missing:
            raise _misfit(first, other, f"tensor '{missing[0]}' of {first.label} is missing ({len(missing)} missing)")
        if extra:
            raise _misfit(
                first, other, f"extra tensor '{extra[0]}' that {first.label} does not have ({len(extra)} extra)"
            )
        for name, shape in shapes.items():
            if other_shapes[name] != shape:
                raise _misfit(
                    first,
                    other,
                    f"tensor '{name}' has shape {list(other_shapes[name])}, {first.label} has {list(shape)}",
                )
            if other_dtypes[name].is_floating_point != dtypes[name][0].is_floating_point:
                raise SoupError(
                    f"{other.label}: tensor '{name}' is {other_dtypes[name]}, {first.label} has {dtypes[name][0]}"
                )
            dtypes[name].append(other_dtypes[name])
    return MergePlan(shapes=shapes, dtypes=dtypes)


def validate(ingredients: Sequence[Ingredient], allow_single: bool = False) -> MergePlan:
    """Deprecated name of :func:`validate_ingredients` (beside the :mod:`hf_soups.validation` module of argument
    checks, ``validate`` said too little)."""
    warnings.warn(
        "hf_soups.validate is deprecated and will be removed: call hf_soups.validate_ingredients (the same checks)",
        FutureWarning,
        stacklevel=2,
    )
    return validate_ingredients(ingredients, allow_single=allow_single)


def with_bases(
    ingredients: Sequence[Ingredient],
    base: str | os.PathLike[str] | Ingredient | None = None,
    token: str | bool | None = None,
) -> list[Ingredient]:
    """Turn adapter folders into :class:`AdapterIngredient`\\ s over their resolved base (full models pass through).

    Args:
        ingredients: resolved ingredients.
        base: the base model of every adapter; default: each adapter's ``base_model_name_or_path`` at its
            ``revision``. Adapters naming the same base share one resolved base.
        token: Hub token.

    Raises:
        SoupError: an adapter names no base, or its base cannot be resolved or is itself an adapter.
    """
    bases: dict[str, Ingredient] = {}

    def resolve(spec: str | os.PathLike[str] | Ingredient, label: str) -> Ingredient:
        key = spec.spec if isinstance(spec, Ingredient) else str(spec)
        if key not in bases:
            try:
                (resolved,) = resolve_ingredients([spec], token=token)
            except SoupError as err:
                raise SoupError(f"{label}: base model: {err}") from None
            if isinstance(resolved, AdapterIngredient) or is_adapter(resolved.path):
                raise SoupError(f"{label}: base model {resolved.spec} is itself an adapter")
            bases[key] = resolved
        return bases[key]

    result: list[Ingredient] = []
    for ingredient in ingredients:
        if isinstance(ingredient, AdapterIngredient) or not is_adapter(ingredient.path):
            result.append(ingredient)
            continue
        adapter = AdapterIngredient(**{f.name: getattr(ingredient, f.name) for f in fields(ingredient)})
        if base is not None:
            adapter.base = resolve(base, adapter.label)
        else:
            name = adapter.adapter_config.get("base_model_name_or_path")
            if not name:
                raise SoupError(
                    f"{adapter.label}: {ADAPTER_CONFIG} names no base_model_name_or_path "
                    "(give the base: base= / --base)"
                )
            revision = adapter.adapter_config.get("revision")
            adapter.base = resolve(
                f"{name}@{revision}" if revision and not Path(name).exists() else name, adapter.label
            )
        result.append(adapter)
    return result


def check_distinct(ingredients: Sequence[Ingredient]) -> None:
    """Refuse one model named twice in a soup; its weight says how much it counts. The same model is one folder
    (``a a``, ``a ./a``, a symlink to ``a``, one Hub commit twice), weight files that are the same files (folders of
    hard links to them, as a pantry's checkpoint entries are to the Trainer's), or weight files whose sha256 are
    known and equal (Hub repos holding one upload).

    Raises:
        SoupError: naming both.
    """
    seen: dict[object, Ingredient] = {}
    for ingredient in ingredients:
        keys: list[object] = [ingredient.path.resolve()]
        if keys[0] not in seen:
            files = [ingredient.adapter_file] if isinstance(ingredient, AdapterIngredient) else ingredient.weight_files
            keys.append(frozenset((status.st_dev, status.st_ino) for status in map(os.stat, files)))
            if set(ingredient.sha256) == {file.name for file in files}:
                keys.append(tuple(sorted(ingredient.sha256.items())))
        same = next((seen[key] for key in keys if key in seen), None)
        if same is not None:
            raise SoupError(
                f"{ingredient.label}: the same model as {same.label} (named twice, or its weight files are the same "
                "files or bytes); to weigh it more, give weights instead"
            )
        seen.update(dict.fromkeys(keys, ingredient))


def _check_tokenizer(first: Ingredient, other: Ingredient) -> None:
    for name in sorted(set(first.vocabulary) & set(other.vocabulary)):
        if first.vocabulary[name] != other.vocabulary[name]:
            raise SoupError(
                f"{other.label}: tokenizer file {name} differs from {first.label}'s (other token ids: not one base "
                "model's tokenizer)"
            )


def _tensors(ingredient: Ingredient) -> tuple[dict[str, tuple[int, ...]], dict[str, torch.dtype]]:
    """Canonical tensor name → shape, and → dtype, for one ingredient."""
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, torch.dtype] = {}
    for name, canonical in ingredient.canonical_names.items():
        if canonical is not None:
            info = ingredient.layout[name][1]
            shapes[canonical] = info.shape
            dtypes[canonical] = info.dtype
    return shapes, dtypes


def _misfit(first: Ingredient, other: Ingredient, tensors: str) -> SoupError:
    """The error for ``other``'s tensors that do not fit ``first``'s: by the whole-number config values that differ
    (``hidden_size``, ``num_hidden_layers``, ...: a model of another size), else by the tensor (``tensors``)."""
    sizes = [
        key
        for key in sorted(set(first.config) | set(other.config))
        if first.config.get(key) != other.config.get(key)
        and any(isinstance(v, int) and not isinstance(v, bool) for v in (first.config.get(key), other.config.get(key)))
    ]
    if not sizes:
        return SoupError(f"{other.label}: {tensors}")
    differences = ", ".join(f"{key} {other.config.get(key)!r} ≠ {first.config.get(key)!r}" for key in sizes)
    return SoupError(f"{other.label}: a model of another size than {first.label}: config {differences}")


def _check_config(first: Ingredient, other: Ingredient) -> None:
    for key in ("model_type", "architectures"):
        if first.config.get(key) != other.config.get(key):
            raise SoupError(
                f"{other.label}: config {key} is {other.config.get(key)!r}, "
                f"{first.label} has {first.config.get(key)!r}"
            )
    a, b = label_map(first.config), label_map(other.config)
    if len(a) != len(b):
        raise SoupError(f"{other.label}: config num_labels is {len(b)}, {first.label} has {len(a)}")
    if a != b:
        raise SoupError(f"{other.label}: label map id2label {b} differs from {first.label}'s {a}")


def base_names(base: Ingredient, plan: MergePlan) -> dict[str, str]:
    """The ingredients' float tensor names → the base's names for them (``bert.embeddings.x`` ↔ ``embeddings.x``).

    Raises:
        SoupError: a base tensor's shape differs from the ingredients', or the base shares no tensor with them.
    """
    unprefixed = {name.split(".", 1)[1]: name for name in plan.shapes if "." in name}
    names = {}
    for stored, own in base.canonical_names.items():
        info = base.layout[stored][1]
        name = None if own is None else own if own in plan.shapes else unprefixed.get(own)
        if name is None or not plan.is_float(name) or not info.dtype.is_floating_point:
            continue
        if info.shape != tuple(plan.shapes[name]):
            raise SoupError(
                f"base '{base.spec}': tensor '{own}' has shape {list(info.shape)}, the ingredients have "
                f"{list(plan.shapes[name])}{'' if own == name else f' (as {name!r})'} (is it the model they were "
                "fine-tuned from?)"
            )
        names[name] = own
    if not names:
        raise SoupError(f"base '{base.spec}': shares no tensor names with the ingredients (is it their base model?)")
    return names


def is_head(name: str) -> bool:
    """Whether a tensor belongs to the task head (``classifier.weight``, ``cls.predictions.bias``, ...)."""
    return bool(set(name.split(".")) & HEAD_PARTS)


def body_cosines(ingredients: Sequence[Ingredient], plan: MergePlan) -> np.ndarray | None:
    """Pairwise cosines of the ingredients' body matrices (float tensors of two or more dimensions outside the
    head), on the first :data:`BODY_SAMPLE` elements of each: near 1 for fine-tunes of one base model, near 0 for
    bodies of unrelated inits (see :data:`BODY_COSINE`). Vectors, LayerNorm weights and biases are left out: every
    model starts them at the same constants, related or not.

    Safetensors weights are read by range (a few KiB per matrix); others are streamed once. An adapter is compared
    by its base's weights (a low-rank update does not change which base it is over).

    Returns:
        An N × N matrix, or ``None`` when the ingredients have no body matrix.

    Example:
        >>> cosines = body_cosines(ingredients, validate_ingredients(ingredients))  # doctest: +SKIP
        >>> bool(cosines.min() < BODY_COSINE)  # doctest: +SKIP
        False
    """
    names = {
        n: min(BODY_SAMPLE, math.prod(s))
        for n, s in plan.shapes.items()
        if plan.is_float(n) and len(s) >= 2 and not is_head(n)
    }
    if not names:
        return None
    samples = torch.stack([_body_sample(ingredient, names) for ingredient in ingredients])
    norms = samples.norm(dim=1)
    return (samples @ samples.T / torch.outer(norms, norms).clamp_min(1e-30)).clamp(-1, 1).numpy()


def _body_sample(ingredient: Ingredient, names: dict[str, int]) -> torch.Tensor:
    """The first ``names[name]`` elements of each named tensor of one ingredient, in float64, end to end."""
    stored = {c: n for n, c in ingredient.canonical_names.items() if c in names}
    where = {name: ingredient.layout[stored[name]] for name in names}
    pieces: dict[str, torch.Tensor] = {}
    if all(file.suffix == ".safetensors" for file, _ in where.values()):
        with contextlib.ExitStack() as stack:
            opened = {file: stack.enter_context(open(file, "rb")) for file in {f for f, _ in where.values()}}
            for name, count in names.items():
                file, info = where[name]
                pieces[name] = read_tensor_range(opened[file], info, 0, count).double()
    else:
        stream = ingredient.base_tensors() if isinstance(ingredient, AdapterIngredient) else ingredient.tensors()
        for name, tensor in stream:
            if name in names:
                pieces[name] = tensor.reshape(-1)[: names[name]].double()
    return torch.cat([pieces[name] for name in names])
