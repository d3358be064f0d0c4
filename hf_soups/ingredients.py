"""Ingredients: resolve what the user named to local checkpoint folders, read their layout, and validate them.

An ingredient spec is one of:

- a Hub repo ``owner/name`` or ``owner/name@revision`` (branch, tag or commit), downloaded with
  ``huggingface_hub.snapshot_download`` (config, weights and tokenizer files only; honours ``HF_ENDPOINT``,
  ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and ``HF_HOME``); the resolved commit sha is recorded;
- a local ``save_pretrained`` folder;
- a Trainer output folder, which expands to its ``checkpoint-*`` subfolders (all of them, the last, or the best).

Everything is validated before anything is written: same ``model_type`` and architecture, same label map, same
tensor names and shapes. Tied weights (see :data:`TIED_WEIGHTS`) count as one tensor.

Example:
    >>> ingredients = resolve_ingredients(["runs/lr2e-5", "runs/lr3e-5", "me/bert-rte@v2"])  # doctest: +SKIP
    >>> plan = validate(ingredients)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.record import IngredientRecord
from hf_soups.tensorfile import (
    BackgroundHasher,
    RangeReader,
    TensorInfo,
    read_header,
    stream_bin_tensors,
    stream_tensors,
    torch_bin_header,
)

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
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
]
# The tokenizer files that decide the token ids (tokenizer_config.json and chat templates do not).
VOCABULARY_FILES = ["tokenizer.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json",
                    "merges.txt", "spiece.model"]
# Config keys that ingredients are compared on, and their JSON types.
CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "model_type": str, "architectures": list, "id2label": dict, "num_labels": int, "tie_word_embeddings": bool,
}
# Weight layouts in the order transformers prefers them: (index file, single file).
WEIGHT_LAYOUTS = [
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
]

# Tied weights by model_type: alias → (canonical name, config flag that must be true for the tie, or None if always).
# transformers saves only the canonical tensor; older checkpoints may hold both. A soup treats them as one tensor
# and writes the canonical one, which `from_pretrained` ties again.
TIED_WEIGHTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "t5": {
        "encoder.embed_tokens.weight": ("shared.weight", None),
        "decoder.embed_tokens.weight": ("shared.weight", None),
        "lm_head.weight": ("shared.weight", "tie_word_embeddings"),
    },
    "bert": {
        "cls.predictions.decoder.weight": ("bert.embeddings.word_embeddings.weight", "tie_word_embeddings"),
        "cls.predictions.decoder.bias": ("cls.predictions.bias", None),
    },
    "roberta": {
        "lm_head.decoder.weight": ("roberta.embeddings.word_embeddings.weight", "tie_word_embeddings"),
        "lm_head.decoder.bias": ("lm_head.bias", None),
    },
    "distilbert": {
        "vocab_projector.weight": ("distilbert.embeddings.word_embeddings.weight", "tie_word_embeddings"),
    },
}
TIED_WEIGHTS["mt5"] = TIED_WEIGHTS["t5"]
TIED_WEIGHTS["xlm-roberta"] = TIED_WEIGHTS["roberta"]

_HUB_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_SIZE_KEY = re.compile(r"(_size|_dim|^num_|^n_|^d_)")  # config keys that size the model: never negative
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

CheckpointChoice = Literal["all", "last", "best"]


@dataclass
class Ingredient:
    """One resolved checkpoint folder and where it came from.

    Attributes:
        spec: what the user wrote.
        path: the local folder holding config and weights.
        source: ``"hub"`` or ``"local"``.
        repo_id: the Hub repo, for Hub ingredients.
        revision: the resolved commit sha, for Hub ingredients.
        sha256: weight file name → sha256 of its bytes: from the Hub cache for Hub files, else filled in by
            :meth:`tensors` the first time a file is read (or from the :class:`~hf_soups.hashing.HashCache`).
        reads: how many times :meth:`tensors` streamed the weights in full (recipes promise at most two).
        hyperparameters: what is known of how it was trained (a pantry entry's differing TrainingArguments).
        start_head: how the classifier head training started from was made (a pantry's ``"random"`` pinned head
            or ``"probe"``d head), when known.
    """

    spec: str
    path: Path
    source: str = "local"
    repo_id: str | None = None
    revision: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    reads: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    start_head: str | None = None

    @cached_property
    def config(self) -> dict[str, Any]:
        path = self.path / "config.json"
        if not path.is_file():
            raise SoupError(f"ingredient '{self.spec}': no config.json in {self.path}")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SoupError(f"ingredient '{self.spec}': {path} is not valid JSON ({err})") from None
        if not isinstance(config, dict):
            raise SoupError(f"ingredient '{self.spec}': {path} is a JSON {type(config).__name__}, not an object")
        for key, kinds in CONFIG_TYPES.items():
            if key in config and not isinstance(config[key], kinds):
                raise SoupError(f"ingredient '{self.spec}': {path}: {key} is {config[key]!r}")
        negative = next((k for k, v in config.items() if _SIZE_KEY.search(k) and isinstance(v, int) and v < 0), None)
        if negative is not None:
            raise SoupError(f"ingredient '{self.spec}': {path}: {negative} is {config[negative]}, a negative size")
        try:
            label_map(config)
        except (ValueError, TypeError, AttributeError):
            raise SoupError(
                f"ingredient '{self.spec}': {path}: id2label needs integer ids, got {config['id2label']!r}"
            ) from None
        return config

    @cached_property
    def weight_files(self) -> list[Path]:
        """The weight files, sharded or not; safetensors preferred over ``pytorch_model.bin``."""
        for index_name, single_name in WEIGHT_LAYOUTS:
            index = self.path / index_name
            if index.is_file():
                try:
                    names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                except (json.JSONDecodeError, KeyError, AttributeError) as err:
                    raise SoupError(f"ingredient '{self.spec}': {index} is not a valid shard index ({err})") from None
                outside = [n for n in names if not _inside(n)]
                if outside:
                    raise SoupError(
                        f"ingredient '{self.spec}': {index} names {outside[0]!r}, outside the ingredient's folder"
                    )
                missing = [n for n in names if not (self.path / n).is_file()]
                if missing:
                    raise SoupError(f"ingredient '{self.spec}': shard {missing[0]} named in {index} is missing")
                return [self.path / n for n in names]
            if (self.path / single_name).is_file():
                return [self.path / single_name]
        raise SoupError(
            f"ingredient '{self.spec}': no weights found in {self.path} "
            "(looked for model.safetensors[.index.json], pytorch_model.bin[.index.json])"
        )

    @cached_property
    def layout(self) -> dict[str, tuple[Path, TensorInfo]]:
        """Tensor name (as stored) → (file, info), read from the file headers only."""
        layout: dict[str, tuple[Path, TensorInfo]] = {}
        for file in self.weight_files:
            header = read_header(file) if file.suffix == ".safetensors" else torch_bin_header(file)
            for name, info in header.items():
                if name in layout:
                    raise SoupError(f"ingredient '{self.spec}': tensor '{name}' is stored in two shards")
                layout[name] = (file, info)
        return layout

    @cached_property
    def canonical_names(self) -> dict[str, str | None]:
        """Stored name → name in the soup, or ``None`` for a tied alias whose canonical tensor is stored too."""
        ties = TIED_WEIGHTS.get(self.config.get("model_type", ""), {})
        names: dict[str, str | None] = {}
        for name in self.layout:
            canonical, flag = ties.get(name, (name, None))
            if flag is not None and not self.config.get(flag, True):
                canonical = name
            names[name] = None if canonical != name and canonical in self.layout else canonical
        return names

    def tensors(self, hash_cache: HashCache | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream the ingredient's tensors under their soup names, each weight file read once, start to end.

        Tied aliases whose canonical tensor is stored too are skipped. Files not hashed yet are hashed on the way
        into :attr:`sha256` (and ``hash_cache``). Each tensor is valid until the next one is yielded.

        Example:
            >>> for name, tensor in ingredient.tensors():  # doctest: +SKIP
            ...     model_state[name].copy_(tensor)
        """
        for file in self.weight_files:
            known = self._known_hash(file, hash_cache)
            hasher = None if known else hashlib.sha256()
            if file.suffix == ".safetensors":
                stream = stream_tensors(file, {n: i for n, (f, i) in self.layout.items() if f == file}, hasher)
            else:
                stream = stream_bin_tensors(file, hasher)
            for stored, tensor in stream:
                name = self.canonical_names[stored]
                if name is not None:
                    yield name, tensor
            self._remember_hash(file, known or hasher.hexdigest(), hash_cache)  # type: ignore[union-attr]
        self.reads += 1

    @property
    def reads_ranges(self) -> bool:
        """Whether :meth:`open_ranges` can read this ingredient: safetensors weights (``pytorch_model.bin`` cannot)."""
        return all(file.suffix == ".safetensors" for file in self.weight_files)

    @contextlib.contextmanager
    def open_ranges(
        self, background: BackgroundHasher, hash_cache: HashCache | None = None
    ) -> Iterator[Callable[[str, int, int], torch.Tensor]]:
        """Open each weight file once for reads of element ranges of tensors, by soup name, in any order.

        Yields ``read(name, start, count)``, which returns elements ``start .. start + count`` of the flattened tensor,
        valid until its next call. Files not hashed yet are hashed on ``background`` as they are read (see
        :class:`~hf_soups.tensorfile.RangeReader`); when the block ends without error their hashes go into
        :attr:`sha256` (and ``hash_cache``) and the ingredient counts one more read.

        Example:
            >>> with BackgroundHasher() as background, ingredient.open_ranges(background) as read:  # doctest: +SKIP
            ...     first_row = read("bert.embeddings.word_embeddings.weight", 0, 768)
        """
        stored = {canonical: name for name, canonical in self.canonical_names.items() if canonical is not None}
        with contextlib.ExitStack() as stack:
            readers, known = {}, {}
            for file in self.weight_files:
                known[file] = self._known_hash(file, hash_cache)
                hasher = None if known[file] else hashlib.sha256()
                readers[file] = stack.enter_context(RangeReader(file, hasher, background))

            def read(name: str, start: int, count: int) -> torch.Tensor:
                file, info = self.layout[stored[name]]
                return readers[file].read(info, start, count)

            yield read
            for file, reader in readers.items():
                self._remember_hash(file, known[file] or reader.hexdigest(), hash_cache)
        self.reads += 1

    def _known_hash(self, file: Path, hash_cache: HashCache | None) -> str | None:
        return self.sha256.get(file.name) or (hash_cache.get(file) if hash_cache is not None else None)

    def _remember_hash(self, file: Path, digest: str, hash_cache: HashCache | None) -> None:
        if hash_cache is not None and self.sha256.get(file.name) != digest:
            hash_cache.put(file, digest)
        self.sha256[file.name] = digest

    @property
    def tokenizer_path(self) -> Path:
        """The folder whose tokenizer files go with this ingredient."""
        return self.path

    @cached_property
    def vocabulary(self) -> dict[str, str]:
        """What defines the tokenizer: sha256 of each vocabulary file present (see :data:`VOCABULARY_FILES`);
        ``tokenizer.json`` without its padding and truncation settings, which do not change the ids."""
        digests = {}
        for name in VOCABULARY_FILES:
            file = self.tokenizer_path / name
            if file.is_file():
                content = file.read_bytes()
                if name == "tokenizer.json":
                    with contextlib.suppress(ValueError, AttributeError):
                        data = {k: v for k, v in json.loads(content).items() if k not in ("padding", "truncation")}
                        content = json.dumps(data, sort_keys=True).encode()
                digests[name] = hashlib.sha256(content).hexdigest()
        return digests

    def record(self, weight: float = 0.0, kept: bool = True) -> IngredientRecord:
        """This ingredient's entry in ``soup.json`` (hashes as far as they are known)."""
        return IngredientRecord(
            spec=self.spec, source=self.source, repo_id=self.repo_id, revision=self.revision, files=dict(self.sha256),
            weight=weight, kept=kept, hyperparameters=dict(self.hyperparameters), start_head=self.start_head,
        )

    @property
    def label(self) -> str:
        """How messages name this ingredient."""
        return f"ingredient '{self.spec}'"


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
        elif Path(spec).exists():
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
    from hf_soups.adapters import with_bases  # imported here: hf_soups.adapters builds on this module

    return with_bases(ingredients, base, token)


def _looks_local(spec: str) -> bool:
    """Whether a spec that could be a Hub id (``runs/a``) names a local path: its first part is a local folder."""
    return Path(spec.split("/", 1)[0]).exists() or spec.startswith((".", "~"))


def _local(path: Path, checkpoints: CheckpointChoice | None) -> list[Ingredient]:
    if not path.is_dir():
        raise SoupError(f"ingredient '{path}': not a folder (give the folder that holds config.json and the weights)")
    subfolders = sorted(
        (p for p in path.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)),
        key=lambda p: int(_CHECKPOINT.match(p.name).group(1)),  # type: ignore[union-attr]
    )
    has_weights = any((path / name).is_file() for layout in WEIGHT_LAYOUTS for name in layout) or (
        path / "adapter_config.json"
    ).is_file()
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
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    match = _HUB_SPEC.match(spec)
    assert match is not None
    repo_id, revision = match["repo"], match["revision"]
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_ALLOW_PATTERNS, token=token))
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


def validate(ingredients: Sequence[Ingredient], allow_single: bool = False) -> MergePlan:
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
    from hf_soups.adapters import check_adapters  # imported here: hf_soups.adapters builds on this module

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
            raise SoupError(
                f"{other.label}: tensor '{missing[0]}' of {first.label} is missing ({len(missing)} missing)"
            )
        if extra:
            raise SoupError(
                f"{other.label}: extra tensor '{extra[0]}' that {first.label} does not have ({len(extra)} extra)"
            )
        for name, shape in shapes.items():
            if other_shapes[name] != shape:
                raise SoupError(
                    f"{other.label}: tensor '{name}' has shape {list(other_shapes[name])}, "
                    f"{first.label} has {list(shape)}"
                )
            if other_dtypes[name].is_floating_point != dtypes[name][0].is_floating_point:
                raise SoupError(
                    f"{other.label}: tensor '{name}' is {other_dtypes[name]}, {first.label} has {dtypes[name][0]}"
                )
            dtypes[name].append(other_dtypes[name])
    return MergePlan(shapes=shapes, dtypes=dtypes)


def _inside(name: str) -> bool:
    """Whether a file name from a shard index stays inside the ingredient's folder (no absolute path, no ``..``)."""
    normal = os.path.normpath(name)
    return not os.path.isabs(normal) and normal != ".." and not normal.startswith(".." + os.sep)


def check_distinct(ingredients: Sequence[Ingredient]) -> None:
    """Refuse one folder named twice in a soup (``a a``, ``a ./a``, a symlink to ``a``, one Hub commit twice); its
    weight says how much it counts.

    Raises:
        SoupError: naming both.
    """
    seen: dict[Path, Ingredient] = {}
    for ingredient in ingredients:
        key = ingredient.path.resolve()
        if key in seen:
            raise SoupError(
                f"{ingredient.label}: the same model as {seen[key].label} (named twice); to weigh it more, give "
                "weights instead"
            )
        seen[key] = ingredient


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


def label_map(config: dict[str, Any]) -> dict[int, str]:
    """A config's ``id2label`` with int keys, as transformers fills it in (``LABEL_i``) when the file omits it."""
    if "id2label" in config:
        return {int(k): v for k, v in config["id2label"].items()}
    return {i: f"LABEL_{i}" for i in range(config.get("num_labels", 2))}


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
