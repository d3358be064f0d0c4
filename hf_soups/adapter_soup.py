"""Soups of PEFT LoRA adapters written as an adapter, or into one loaded model, averaged by ΔWᵢ = sᵢ·BᵢAᵢ.

Adapters are averaged by what they do, never Aᵢ and Bᵢ apart. When every ingredient is an adapter, the soup can be
written as an adapter (:class:`AdapterSoup`):

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

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from hf_soups.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PREFIX, AdapterIngredient, LoraFactors, base_name
from hf_soups.errors import SoupError
from hf_soups.ingredient import Ingredient

AdapterOutput = Literal["full", "exact", "svd"]  # a soup of adapters as the full model, or as an adapter


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
                A=((root[:, None] * vh[:k]) @ q_a.T).float(),
                B=(q_b @ u[:, :k] * root).float(),
                scaling=1.0,
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
            "r": self.rank,
            "lora_alpha": self.rank,
            "use_rslora": False,
            "rank_pattern": {},
            "alpha_pattern": {},
            "target_modules": sorted(name.removesuffix(".weight") for name in self.factors),
            "layers_to_transform": None,
            "layers_pattern": None,
            "exclude_modules": None,
            "modules_to_save": modules_to_save or None,
            "lora_dropout": 0.0,
            "inference_mode": True,
            "base_model_name_or_path": base_name(self.base),
            "revision": self.base.revision,
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
    base = {n: t.float().clone() for n, t in kept[0][0].base_tensors() if n in missing} if missing else {}
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
        weights: mixing weights, as checked by :func:`~hf_soups.mean.check_weights` (normalised here); uniform when
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
