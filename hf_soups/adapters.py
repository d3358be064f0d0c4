"""PEFT LoRA adapters as soup ingredients, averaged by what they do: ΔWᵢ = sᵢ·BᵢAᵢ, never Aᵢ and Bᵢ apart.

An ingredient folder (or Hub repo) holding ``adapter_config.json`` is an :class:`AdapterIngredient`: it stands for
the full model ``base + ΔW``. Its base is resolved from ``base_model_name_or_path`` (with ``revision``) or given
explicitly; its :meth:`~AdapterIngredient.tensors` stream the base's tensors with ΔW added to every LoRA target
weight and ``modules_to_save`` (e.g. classifier heads) replaced by the adapter's own copy. So the streaming mean of
:mod:`hf_soups.merge` averages adapters, full models or a mix of both into the full model base + Σ wᵢΔWᵢ.

When every ingredient is an adapter, the soup can also be written as an adapter (:class:`AdapterSoup`):

- ``exact``: rank Σrᵢ. Σ wᵢsᵢBᵢAᵢ = [w₁s₁B₁ … wₙsₙBₙ] · [A₁; …; Aₙ], so concatenating the factors (weights and
  scalings folded into B) gives the averaged ΔW exactly, as PEFT's ``add_weighted_adapter(combination_type="cat")``;
- ``svd``: rank r, the truncated SVD of that exact ΔW, with its relative error ‖ΔW − ΔWᵣ‖_F / ‖ΔW‖_F over all
  target weights.

For recipes that score many candidate soups, :func:`apply_adapters` writes the weights of any weighted combination
of adapters into one loaded base model in place, instead of loading a full model per candidate.

Example:
    >>> from hf_soups import merge_models
    >>> merge_models(["runs/lora-a", "runs/lora-b"], "soup", adapter_output="svd", adapter_rank=8)  # doctest: +SKIP
    PosixPath('soup')
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredients import TOKENIZER_FILES, Ingredient, resolve_ingredients
from hf_soups.record import IngredientRecord
from hf_soups.tensorfile import read_header, stream_bin_tensors, stream_tensors

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

AdapterOutput = Literal["full", "exact", "svd"]


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

    ``config``, ``layout`` and ``canonical_names`` are the base's; ``sha256`` holds the adapter file's hash (the
    base's hashes are on ``base``).

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
        return self._base.config

    @cached_property
    def weight_files(self) -> list[Path]:
        return self._base.weight_files

    @cached_property
    def layout(self) -> dict:
        return self._base.layout

    @cached_property
    def canonical_names(self) -> dict[str, str | None]:
        return self._base.canonical_names

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

    def tensors(self, hash_cache: HashCache | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream the full model's tensors: the base's, ΔW added to LoRA targets, ``modules_to_save`` replaced.

        Example:
            >>> state = dict((n, t.clone()) for n, t in adapter.tensors())  # doctest: +SKIP
        """
        for name, tensor in self._base.tensors(hash_cache):
            if name in self.factors:
                yield name, tensor.float() + self.factors[name].delta()
            else:
                yield name, self.full.get(name, tensor)

    def record(self, weight: float = 0.0, kept: bool = True) -> IngredientRecord:
        record = super().record(weight, kept)
        config = self.adapter_config
        record.adapter = {
            "type": "lora", "r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
            "base": base_name(self._base), "revision": self._base.revision,
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


@dataclass
class AdapterSoup:
    """Σ wᵢΔWᵢ (weights normalised) as LoRA factors, plus the averaged ``modules_to_save`` tensors.

    Attributes:
        factors: base weight name → factors with weights and scalings folded in (scaling 1).
        full: base tensor name → the weighted mean of the adapters' full copies (the base's where an adapter has none).
        template: the adapter config the soup's config is derived from (the first adapter's).
        base: the base model.
        svd_rank: the rank it was truncated to, ``None`` for the exact soup.
        relative_error: ‖ΔW − ΔWᵣ‖_F / ‖ΔW‖_F over all target weights (0 for the exact soup).
        module_errors: base weight name → that weight's relative error.
    """

    factors: dict[str, LoraFactors]
    full: dict[str, torch.Tensor]
    template: dict[str, Any]
    base: Ingredient
    svd_rank: int | None = None
    relative_error: float = 0.0
    module_errors: dict[str, float] = field(default_factory=dict)

    @classmethod
    def exact(cls, adapters: Sequence[Ingredient], weights: Sequence[float]) -> AdapterSoup:
        """The rank-Σrᵢ adapter whose ΔW is exactly Σ wᵢΔWᵢ / Σ wᵢ (ingredients of weight 0 are left out).

        Raises:
            SoupError: an ingredient is a full model, or the adapters' ``task_type`` or ``fan_in_fan_out`` differ.
        """
        full_models = [i for i in adapters if not isinstance(i, AdapterIngredient)]
        if full_models:
            raise SoupError(
                f"{full_models[0].label}: is a full model; an adapter soup needs every ingredient to be an adapter"
            )
        total = sum(weights)
        kept = [(a, w / total) for a, w in zip(adapters, weights, strict=True) if w > 0]
        first = kept[0][0].adapter_config
        for adapter, _ in kept:
            for key in ("task_type", "fan_in_fan_out"):
                if adapter.adapter_config.get(key) != first.get(key):
                    raise SoupError(
                        f"{adapter.label}: {key} is {adapter.adapter_config.get(key)!r}, "
                        f"{kept[0][0].label} has {first.get(key)!r}"
                    )
        names = sorted({n for a, _ in kept for n in a.factors})
        factors = {}
        for name in names:
            parts = [(a.factors[name], w) for a, w in kept if name in a.factors]
            factors[name] = LoraFactors(
                A=torch.cat([f.A.float() for f, _ in parts]),
                B=torch.cat([f.B.float() * (w * f.scaling) for f, w in parts], dim=1),
                scaling=1.0,
                fan_in_fan_out=parts[0][0].fan_in_fan_out,
            )
        return cls(factors, _mean_full(kept), first, kept[0][0]._base)

    def truncated(self, rank: int) -> AdapterSoup:
        """The best rank-``rank`` approximation of each target's ΔW (truncated SVD), with its relative error.

        The SVD of B @ A is taken through QR factors of B and Aᵀ, so no weight-sized matrix is decomposed.

        Raises:
            SoupError: ``rank`` < 1.
        """
        if rank < 1:
            raise SoupError(f"adapter_rank: must be ≥ 1, got {rank}")
        factors, kept_energy, total_energy, errors = {}, 0.0, 0.0, {}
        for name, f in self.factors.items():
            q_b, r_b = torch.linalg.qr(f.B.double())
            q_a, r_a = torch.linalg.qr(f.A.double().T)
            u, s, vh = torch.linalg.svd(r_b @ r_a.T)
            k = min(rank, s.numel())
            root = s[:k].sqrt()
            factors[name] = LoraFactors(
                A=((root[:, None] * vh[:k]) @ q_a.T).float(), B=(q_b @ u[:, :k] * root).float(), scaling=1.0,
                fan_in_fan_out=f.fan_in_fan_out,
            )
            energy = float((s**2).sum())
            kept_energy += float((s[:k] ** 2).sum())
            total_energy += energy
            errors[name] = math.sqrt(max(energy - float((s[:k] ** 2).sum()), 0.0) / energy) if energy > 0 else 0.0
        error = math.sqrt(max(total_energy - kept_energy, 0.0) / total_energy) if total_energy > 0 else 0.0
        return replace(self, factors=factors, svd_rank=rank, relative_error=error, module_errors=errors)

    @property
    def rank(self) -> int:
        """The adapter's rank: the largest target's (smaller ones are padded with zeros)."""
        return max(f.rank for f in self.factors.values())

    def summary(self) -> dict[str, Any]:
        """What ``soup.json`` records of the adapter written: output kind, rank and relative errors."""
        return {
            "type": "lora",
            "output": "exact" if self.svd_rank is None else "svd",
            "r": self.rank,
            "relative_error": self.relative_error,
            "max_module_relative_error": max(self.module_errors.values(), default=0.0),
        }

    def state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The tensors of ``adapter_model.safetensors``, named as PEFT saves them."""
        rank, state = self.rank, {}
        for name, f in self.factors.items():
            module = name.removesuffix(".weight")
            pad = rank - f.rank
            state[f"{PREFIX}{module}.lora_A.weight"] = torch.nn.functional.pad(f.A, (0, 0, 0, pad))
            state[f"{PREFIX}{module}.lora_B.weight"] = torch.nn.functional.pad(f.B, (0, pad))
        state.update({f"{PREFIX}{name}": tensor for name, tensor in self.full.items()})
        return {n: t.to(dtype or t.dtype).contiguous() for n, t in state.items()}

    def adapter_config(self) -> dict[str, Any]:
        """``adapter_config.json``: the first adapter's, with this soup's rank, targets and base (scaling 1)."""
        modules_to_save = sorted({name.rsplit(".", 1)[0] for name in self.full})
        return {
            **self.template,
            "r": self.rank, "lora_alpha": self.rank, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {},
            "target_modules": sorted(name.removesuffix(".weight") for name in self.factors),
            "layers_to_transform": None, "layers_pattern": None, "exclude_modules": None,
            "modules_to_save": modules_to_save or None, "lora_dropout": 0.0, "inference_mode": True,
            "base_model_name_or_path": base_name(self.base), "revision": self.base.revision,
        }

    def save(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``folder`` (``PeftModel`` loads it)."""
        folder = Path(folder)
        (folder / ADAPTER_CONFIG).write_text(json.dumps(self.adapter_config(), indent=2, sort_keys=True) + "\n")
        save_file(self.state_dict(dtype), folder / ADAPTER_WEIGHTS[0], metadata={"format": "pt"})


def _mean_full(kept: Sequence[tuple[AdapterIngredient, float]]) -> dict[str, torch.Tensor]:
    """Weighted mean of the adapters' full tensors; an adapter without one contributes the base's."""
    names = sorted({n for a, _ in kept for n in a.full})
    missing = {n for a, _ in kept for n in names if n not in a.full}
    base = {n: t.float().clone() for n, t in kept[0][0]._base.tensors() if n in missing} if missing else {}
    return {n: sum(w * (a.full[n].float() if n in a.full else base[n]) for a, w in kept) for n in names}


def base_snapshot(model: torch.nn.Module, adapters: Sequence[Ingredient]) -> dict[str, torch.Tensor]:
    """Copy the base model's parameters that any of ``adapters`` changes, for :func:`apply_adapters` to start from.

    Args:
        model: the base model, as loaded (e.g. ``load_model(adapters[0].base.path)``).
        adapters: the adapter ingredients that will be applied.

    Returns:
        Parameter name → a copy of its base value.
    """
    names = {n for a in adapters if isinstance(a, AdapterIngredient) for n in (*a.factors, *a.full)}
    return {name: model.get_parameter(name).detach().clone() for name in sorted(names)}


@torch.no_grad()
def apply_adapters(
    model: torch.nn.Module,
    adapters: Sequence[AdapterIngredient],
    base_state: Mapping[str, torch.Tensor],
    weights: Sequence[float] | None = None,
) -> None:
    """Set a loaded base model's weights, in place, to those of the soup of ``adapters``: base + Σ wᵢΔWᵢ / Σ wᵢ.

    Only the parameters in ``base_state`` (the LoRA targets and ``modules_to_save`` of the adapters, from
    :func:`base_snapshot`) are written, so a recipe can score candidate after candidate on one loaded model; the
    weights are exactly those :func:`~hf_soups.merge.merge_models` writes for the same adapters and weights (up to
    fp32 rounding). One adapter with weight 1 gives that adapter's model (``merge_and_unload``).

    Args:
        model: the base model, loaded once.
        adapters: the adapters in the soup (all over that base).
        base_state: the base values of the parameters to write, from :func:`base_snapshot`.
        weights: mixing weights, as checked by :func:`~hf_soups.merge.check_weights` (normalised here); uniform when
            ``None``.

    Example:
        >>> model = load_model(adapters[0].base.path)  # doctest: +SKIP
        >>> base_state = base_snapshot(model, adapters)  # doctest: +SKIP
        >>> apply_adapters(model, adapters[:2], base_state)  # the uniform soup of the first two  # doctest: +SKIP
        >>> apply_adapters(model, adapters[2:3], base_state)  # the third adapter alone  # doctest: +SKIP
    """
    weights = [1.0] * len(adapters) if weights is None else list(weights)
    total = sum(weights)
    for name, base in base_state.items():
        value = base.float().clone()
        for adapter, weight in zip(adapters, weights, strict=True):
            if name in adapter.factors:
                value += adapter.factors[name].delta() * (weight / total)
            elif name in adapter.full:
                value += (adapter.full[name].float() - base.float()) * (weight / total)
        model.get_parameter(name).copy_(value)


def _read_json(path: Path, label: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SoupError(f"{label}: cannot read {path} ({err})") from None
