"""One ingredient: a checkpoint folder (config, weight files, tokenizer) read lazily, tensor by tensor.

An :class:`Ingredient` knows its folder and where it came from; it reads ``config.json`` (checked), finds its
weight files (safetensors preferred, shards by their index), reads their headers into a layout, names tied weights
as one tensor (:data:`TIED_WEIGHTS`), and streams its tensors (whole files, or element ranges of tensors) with each
file hashed on the way. Turning what the user named into ingredients, and checking that several fit together, is
:mod:`hf_soups.ingredients`; a PEFT adapter over a base is :class:`~hf_soups.adapters.AdapterIngredient`.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> config = BertConfig(
    ...     vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    ... )
    >>> BertForSequenceClassification(config).save_pretrained("runs/lr2e-5")  # a tiny run, built from a config
    >>> ingredient = Ingredient(spec="runs/lr2e-5", path=Path("runs/lr2e-5"))
    >>> for name, tensor in ingredient.tensors():
    ...     if name.startswith("classifier."):
    ...         print(name, tuple(tensor.shape))
    classifier.bias (2,)
    classifier.weight (2, 8)
    >>> list(ingredient.sha256)  # hashed on the way
    ['model.safetensors']
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from hf_soups.errors import SoupError
from hf_soups.file_names import VOCABULARY_FILES
from hf_soups.hashing import HashCache, default_cache_path
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

# Config keys that ingredients are compared on, and their JSON types.
CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "model_type": str,
    "architectures": list,
    "id2label": dict,
    "num_labels": int,
    "tie_word_embeddings": bool,
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

_SIZE_KEY = re.compile(r"(_size|_dim|^num_|^n_|^d_)")  # config keys that size the model: never negative


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
        start_model: the pretrained model it was fine-tuned from, when known (a pantry entry's record): a Hub id, or
            a local folder by its absolute path.
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
    start_model: str | None = None

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
        """Stored name → name in the soup, or ``None`` for a tensor the soup leaves out: a tied alias whose canonical
        tensor is stored too, or one that transformers ignores on load (see :func:`ignored_on_load`)."""
        ties = TIED_WEIGHTS.get(self.config.get("model_type", ""), {})
        ignored = ignored_on_load(self.config)
        names: dict[str, str | None] = {}
        for name in self.layout:
            if ignored(name):
                names[name] = None
                continue
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
            spec=self.spec,
            source=self.source,
            repo_id=self.repo_id,
            revision=self.revision,
            files=dict(self.sha256),
            weight=weight,
            kept=kept,
            hyperparameters=dict(self.hyperparameters),
            start_head=self.start_head,
        )

    @property
    def label(self) -> str:
        """How messages name this ingredient."""
        return f"ingredient '{self.spec}'"


def _inside(name: str) -> bool:
    """Whether a file name from a shard index stays inside the ingredient's folder (no absolute path, no ``..``)."""
    normal = os.path.normpath(name)
    return not os.path.isabs(normal) and normal != ".." and not normal.startswith(".." + os.sep)


def ignored_on_load(config: dict[str, Any]) -> Callable[[str], bool]:
    """Whether ``from_pretrained`` ignores a stored tensor of a checkpoint with this config, as transformers decides
    it for the config's model class (``architectures[0]``, else the ``model_type``'s base model): the class's
    non-persistent buffers (``embeddings.position_ids``, which older checkpoints such as all-MiniLM-L6-v2 store),
    keys matching its ``_keys_to_ignore_on_load_unexpected`` patterns, and the legacy ``position_ids`` and
    ``rotary_emb.inv_freq`` buffers it ignores when the class has such buffers
    (``PreTrainedModel._adjust_missing_and_unexpected_keys``). Nothing is ignored for a config transformers cannot
    build a model from.

    Example:
        >>> ignored = ignored_on_load({"model_type": "bert", "architectures": ["BertModel"]})
        >>> ignored("embeddings.position_ids"), ignored("embeddings.word_embeddings.weight")
        (True, False)
    """
    buffers, pattern = _load_rules(json.dumps(config, sort_keys=True))
    return lambda name: name in buffers or (pattern is not None and pattern.search(name) is not None)


# Buffers transformers made non-persistent: suffix → the pattern it ignores when the model has such a buffer.
_LEGACY_BUFFERS = {"position_ids": r"(^|\.)position_ids$", "rotary_emb.inv_freq": r"rotary_emb\.inv_freq"}
LOAD_RULES_FILE = "load_rules.json"  # beside the sha256 cache
_KEPT_RULES = 256  # the configs whose rules the file remembers, the latest first


@functools.lru_cache(maxsize=16)
def _load_rules(config_json: str) -> tuple[frozenset[str], re.Pattern[str] | None]:
    """The non-persistent buffer names and the ignore pattern of the model class a config builds, remembered across
    runs by config and transformers version (in :data:`LOAD_RULES_FILE`, beside the sha256 cache), so that a merge
    of models seen before imports no modeling code (about 150 MB and seconds of imports)."""
    from importlib.metadata import version

    path = default_cache_path().with_name(LOAD_RULES_FILE)
    key = hashlib.sha256(f"transformers {version('transformers')}\n{config_json}".encode()).hexdigest()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}  # a damaged file is only a lost shortcut
    match known.get(key):
        case [list() as buffers, str() | None as pattern] if all(isinstance(b, str) for b in buffers):
            with contextlib.suppress(re.error):
                return frozenset(buffers), None if pattern is None else re.compile(pattern)
    rules = _built_rules(config_json)
    others = [(other, entry) for other, entry in known.items() if other != key][: _KEPT_RULES - 1]
    known = {key: [sorted(rules[0]), rules[1] and rules[1].pattern], **dict(others)}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as file:
            json.dump(known, file)
        os.replace(file.name, path)
    return rules


def _built_rules(config_json: str) -> tuple[frozenset[str], re.Pattern[str] | None]:
    """:func:`_load_rules` from the model class itself (built on the meta device: no memory, no random numbers
    drawn)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    config = json.loads(config_json)
    model_type = config.get("model_type", "")
    names = [*(config.get("architectures") or []), MODEL_MAPPING_NAMES.get(model_type)]
    classes = (getattr(transformers, n, None) for n in names if isinstance(n, str))
    model_class = next(
        (c for c in classes if isinstance(c, type) and issubclass(c, transformers.PreTrainedModel)), None
    )
    if model_type not in transformers.CONFIG_MAPPING or model_class is None:
        return frozenset(), None
    try:
        with torch.device("meta"):
            model = model_class(transformers.CONFIG_MAPPING[model_type].from_dict(config))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError):  # nor can from_pretrained
        return frozenset(), None
    buffers = [name for name, _ in model.named_buffers()]
    state = model.state_dict()
    patterns = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])
    patterns |= {p for suffix, p in _LEGACY_BUFFERS.items() if any(b.endswith(suffix) for b in buffers)}
    pattern = re.compile("|".join(f"({p})" for p in sorted(patterns))) if patterns else None
    return frozenset(b for b in buffers if b not in state), pattern


def base_model_prefix(config: dict[str, Any]) -> str | None:
    """The name transformers gives the base model inside the task models of a config's ``model_type`` (its
    ``base_model_prefix``: ``"bert"``, so ``BertForSequenceClassification`` holds ``bert.encoder.*``); ``None`` when
    transformers has no base model class for it.

    Example:
        >>> base_model_prefix({"model_type": "bert"})
        'bert'
    """
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(config.get("model_type", ""))
    model_class = getattr(transformers, name, None) if isinstance(name, str) else None
    return getattr(model_class, "base_model_prefix", None) or None


def label_map(config: dict[str, Any]) -> dict[int, str]:
    """A config's ``id2label`` with int keys, as transformers fills it in (``LABEL_i``) when the file omits it."""
    if "id2label" in config:
        return {int(k): v for k, v in config["id2label"].items()}
    return {i: f"LABEL_{i}" for i in range(config.get("num_labels", 2))}
