"""PEFT LoRA adapters as soup ingredients, seen as what they do: the full model base + ΔW, ΔW = s·BA.

An ingredient folder (or Hub repo) holding ``adapter_config.json`` is an :class:`AdapterIngredient` (made by
:func:`~hf_soups.ingredients.resolve_ingredients`, which resolves its base from ``base_model_name_or_path`` at its
``revision``, or takes the one given). Its :meth:`~AdapterIngredient.tensors` stream the base's tensors with ΔW added
to every LoRA target weight and ``modules_to_save`` (e.g. classifier heads) replaced by the adapter's own copy, so the
streaming mean of :mod:`hf_soups.mean` averages adapters, full models or a mix of both into the full model
base + Σ wᵢΔWᵢ. A base stored as a bare model (a sentence-transformers ``BertModel``: ``encoder.*``) is named as
transformers names it when it loads it into the adapter's task model (``bert.encoder.*``, its ``base_model_prefix``),
and the new head that model adds comes from the adapter. :func:`check_adapters` checks that the adapters of one soup
share one base and fit it. Writing a soup of adapters as an adapter, or into a loaded model, is
:mod:`hf_soups.adapter_soup`.

Example:
    >>> (adapter,) = resolve_ingredients(["runs/lora-a"])  # doctest: +SKIP
    >>> adapter.factors["bert.encoder.layer.0.attention.self.query.weight"].rank  # doctest: +SKIP
    8
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from hf_soups.errors import SoupError
from hf_soups.file_names import TOKENIZER_FILES
from hf_soups.hashing import HashCache
from hf_soups.ingredient import Ingredient, base_model_prefix
from hf_soups.record import IngredientRecord
from hf_soups.tensorfile import TensorInfo, read_header, stream_bin_tensors, stream_tensors, torch_bin_header

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ["adapter_model.safetensors", "adapter_model.bin"]  # in the order PEFT prefers them
PREFIX = "base_model.model."  # PeftModel → LoraModel → the transformers model
FACTOR_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}
# LoRA variants whose update is not sᵢ·BᵢAᵢ: config key → what it is.
UNSUPPORTED = {
    "use_dora": "DoRA",
    "lora_bias": "a LoRA bias",
    "use_qalora": "QALoRA",
    "layer_replication": "layer replication",
}
# PEFT task type → transformers' mapping of model_type to the task model a bare base is loaded into.
TASK_MODELS = {
    "SEQ_CLS": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "TOKEN_CLS": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "QUESTION_ANS": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "CAUSAL_LM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
}


@dataclass(frozen=True)
class LoraFactors:
    """One LoRA target weight: ΔW = scaling · B @ A (transposed for ``fan_in_fan_out`` layers, e.g. GPT-2's Conv1D)."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float
    fan_in_fan_out: bool = False

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        """ΔW in fp32, in the layout of the base weight."""
        delta = (self.B.float() @ self.A.float()) * self.scaling
        return delta.T if self.fan_in_fan_out else delta


@dataclass
class AdapterIngredient(Ingredient):
    """A PEFT LoRA adapter over a base model, seen as the full model base + ΔW.

    ``layout`` and ``canonical_names`` are the base's, under the names of the adapter's model (see :attr:`prefix`),
    plus the new head only the adapter holds; ``sha256`` holds the adapter file's hash (the base's hashes are on
    ``base``).

    Attributes:
        base: the resolved base model.
    """

    base: Ingredient | None = None

    @cached_property
    def adapter_config(self) -> dict[str, Any]:
        """``adapter_config.json``, checked to be a plain LoRA."""
        config = _read_json(self.path / ADAPTER_CONFIG, self.label)
        if config.get("peft_type") != "LORA":
            raise SoupError(
                f"{self.label}: peft_type is {config.get('peft_type')!r}; only LORA adapters can be souped"
            )
        for key, name in UNSUPPORTED.items():
            if config.get(key):
                raise SoupError(
                    f"{self.label}: uses {name} ({key} in {ADAPTER_CONFIG}), which hf_soups cannot average"
                )
        return config

    @cached_property
    def config(self) -> dict[str, Any]:
        """The config of the model the adapter was trained in: the folder's own ``config.json`` (a pantry entry's),
        else its base's, naming the task model of the adapter's ``task_type`` when the base is a bare model."""
        if (self.path / "config.json").is_file():
            return Ingredient.config.func(self)  # type: ignore[attr-defined]
        from transformers.models.auto import modeling_auto

        mapping = getattr(modeling_auto, TASK_MODELS.get(self.adapter_config.get("task_type") or "", ""), {})
        task_model = mapping.get(self._base.config.get("model_type"))
        return self._base.config | ({"architectures": [task_model]} if self.prefix and task_model else {})

    @cached_property
    def weight_files(self) -> list[Path]:
        return self._base.weight_files

    @cached_property
    def prefix(self) -> str:
        """What the adapter's model puts before the base's tensor names: ``"bert."`` when the base is stored without
        the ``base_model_prefix`` that the adapter's names carry (a bare ``BertModel`` under a
        ``BertForSequenceClassification`` adapter), as transformers adds it when it loads the base; else ``""``."""
        name = base_model_prefix(self._base.config)
        prefix = f"{name}."
        if name is None or any(n.startswith(prefix) for n in self._base.layout):
            return ""
        return prefix if any(n.startswith(prefix) for n in self._stored) else ""

    @cached_property
    def head_only(self) -> dict[str, tuple[Path, TensorInfo]]:
        """The adapter's full tensors outside the base model when the base is a bare model (:attr:`prefix` added):
        the task model's new head (``classifier.*``), which transformers initialises on loading and PEFT saves in
        full (``modules_to_save``), by name, with where the adapter file stores it."""
        if not self.prefix:
            return {}
        file = self.adapter_file
        header = read_header(file) if file.suffix == ".safetensors" else torch_bin_header(file)
        names = [n for n in self.full if not n.startswith(self.prefix)]
        return {n: (file, header[PREFIX + n]) for n in names}

    @cached_property
    def layout(self) -> dict[str, tuple[Path, TensorInfo]]:
        return {self.prefix + n: entry for n, entry in self._base.layout.items()} | self.head_only

    @cached_property
    def canonical_names(self) -> dict[str, str | None]:
        names = {self.prefix + n: c and self.prefix + c for n, c in self._base.canonical_names.items()}
        return names | {n: n for n in self.head_only}

    @property
    def reads_ranges(self) -> bool:
        return False  # its tensors are computed (base + ΔW), not stored

    @cached_property
    def adapter_file(self) -> Path:
        for name in ADAPTER_WEIGHTS:
            if (self.path / name).is_file():
                return self.path / name
        raise SoupError(f"{self.label}: no adapter weights in {self.path} (looked for {', '.join(ADAPTER_WEIGHTS)})")

    @cached_property
    def _stored(self) -> dict[str, torch.Tensor]:
        """The adapter file's tensors under their base names (``PREFIX`` removed), hashed on the way."""
        file = self.adapter_file
        hasher = hashlib.sha256()
        if file.suffix == ".safetensors":
            stream: Iterator = ((n, t.clone()) for n, t in stream_tensors(file, read_header(file), hasher))
        else:
            stream = stream_bin_tensors(file, hasher)
        tensors = {}
        for name, tensor in stream:
            if not name.startswith(PREFIX):
                raise SoupError(f"{self.label}: tensor '{name}' in {file.name} does not start with '{PREFIX}'")
            tensors[name.removeprefix(PREFIX)] = tensor
        self.sha256[file.name] = hasher.hexdigest()
        return tensors

    @cached_property
    def factors(self) -> dict[str, LoraFactors]:
        """Base weight name (``bert.encoder.layer.0.attention.self.query.weight``) → its LoRA factors."""
        from peft.utils.other import get_pattern_key

        config = self.adapter_config
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in self._stored.items():
            for suffix, factor in FACTOR_SUFFIXES.items():
                if name.endswith(suffix):
                    pairs.setdefault(name.removesuffix(suffix), {})[factor] = tensor
        factors = {}
        for module, pair in sorted(pairs.items()):
            if set(pair) != {"A", "B"}:
                raise SoupError(
                    f"{self.label}: module '{module}' has lora_{''.join(pair)} but not both lora_A and lora_B"
                )
            rank = pair["A"].shape[0]
            alpha = config.get("alpha_pattern", {}).get(get_pattern_key(config.get("alpha_pattern", {}), module))
            alpha = config["lora_alpha"] if alpha is None else alpha
            scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
            factors[f"{module}.weight"] = LoraFactors(
                pair["A"], pair["B"], scaling, bool(config.get("fan_in_fan_out"))
            )
        return factors

    @cached_property
    def full(self) -> dict[str, torch.Tensor]:
        """Base tensor name → the adapter's own full copy (``modules_to_save``, trained biases)."""
        return {n: t for n, t in self._stored.items() if not any(n.endswith(s) for s in FACTOR_SUFFIXES)}

    def check_base(self) -> None:
        """Check that every tensor of the adapter fits a tensor of its base (name and shape).

        Raises:
            SoupError: naming the first tensor that does not.
        """
        shapes = {c: self.layout[n][1].shape for n, c in self.canonical_names.items() if c is not None}
        for name, factors in self.factors.items():
            if name not in shapes:
                raise SoupError(f"{self.label}: LoRA target '{name}' is not a tensor of its base {self._base.label}")
            if factors.B.shape[1] != factors.rank:
                raise SoupError(
                    f"{self.label}: '{name}' has lora_A of rank {factors.rank} but lora_B of rank {factors.B.shape[1]}"
                )
            delta_shape = (factors.B.shape[0], factors.A.shape[1])
            if (delta_shape[::-1] if factors.fan_in_fan_out else delta_shape) != shapes[name]:
                raise SoupError(
                    f"{self.label}: LoRA factors of '{name}' make a {list(delta_shape)} update, the base weight is "
                    f"{list(shapes[name])} (is the adapter over another base?)"
                )
        for name, tensor in self.full.items():
            if name not in shapes:
                raise SoupError(
                    f"{self.label}: tensor '{name}' of the adapter is neither a LoRA factor nor a tensor of its base "
                    f"{self._base.label} (unsupported PEFT feature?)"
                )
            if tuple(tensor.shape) != shapes[name]:
                raise SoupError(
                    f"{self.label}: tensor '{name}' has shape {list(tensor.shape)}, the base has {list(shapes[name])}"
                )

    def base_tensors(self, hash_cache: HashCache | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream the base's tensors under the names of the adapter's model (:attr:`prefix` added)."""
        for name, tensor in self._base.tensors(hash_cache):
            yield self.prefix + name, tensor

    def tensors(self, hash_cache: HashCache | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream the full model's tensors: the base's, ΔW added to LoRA targets, ``modules_to_save`` replaced,
        then the new head of a bare base (:attr:`head_only`).

        Example:
            >>> state = dict((n, t.clone()) for n, t in adapter.tensors())  # doctest: +SKIP
        """
        for name, tensor in self.base_tensors(hash_cache):
            if name in self.factors:
                yield name, tensor.float() + self.factors[name].delta()
            else:
                yield name, self.full.get(name, tensor)
        for name in self.head_only:
            yield name, self.full[name]

    def record(self, weight: float = 0.0, kept: bool = True) -> IngredientRecord:
        record = super().record(weight, kept)
        config = self.adapter_config
        record.adapter = {
            "type": "lora",
            "r": config.get("r"),
            "lora_alpha": config.get("lora_alpha"),
            "base": base_name(self._base),
            "revision": self._base.revision,
        }
        return record

    @property
    def tokenizer_path(self) -> Path:
        """The adapter folder when it holds tokenizer files, else the base's."""
        has_tokenizer = any((self.path / name).is_file() for name in TOKENIZER_FILES)
        return self.path if has_tokenizer else self._base.tokenizer_path

    @property
    def _base(self) -> Ingredient:
        if self.base is None:
            raise SoupError(f"{self.label}: its base model was not resolved (use resolve_ingredients)")
        return self.base


def is_adapter(path: Path) -> bool:
    """Whether a folder holds a PEFT adapter."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def base_name(base: Ingredient) -> str:
    """How records name a base model: its Hub repo id, or its folder."""
    return base.repo_id or str(base.path)


def check_adapters(ingredients: Sequence[Ingredient]) -> None:
    """Check that all adapters share one base (folder, or Hub repo and commit) and fit it.

    Raises:
        SoupError: naming the adapter over another base, or the adapter tensor that does not fit.
    """
    adapters = [i for i in ingredients if isinstance(i, AdapterIngredient)]
    for adapter in adapters:
        if _identity(adapter._base) != _identity(adapters[0]._base):
            raise SoupError(
                f"{adapter.label}: is an adapter over the base {_describe(adapter._base)}, but {adapters[0].label} is "
                f"over {_describe(adapters[0]._base)}: all adapters of a soup must share one base model"
            )
        adapter.check_base()


def _identity(base: Ingredient) -> tuple:
    return ("hub", base.repo_id, base.revision) if base.source == "hub" else ("local", base.path.resolve())


def _describe(base: Ingredient) -> str:
    return f"'{base.repo_id}@{base.revision}'" if base.source == "hub" else f"'{base.path}'"


def _read_json(path: Path, label: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SoupError(f"{label}: cannot read {path} ({err})") from None
