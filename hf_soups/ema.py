"""Exponential moving averages (EMA) of a model's trainable weights, the model-soups paper's EMA ingredients.

:class:`WeightEMA` keeps an fp32 copy of every trainable parameter, on the parameter's device, and after each
optimizer step moves it towards the live weights: ``ema ← ema + w·(θ − ema)`` with ``w = (1 − d) / (1 − dᵗ)`` at
step ``t``. That is the bias-corrected average of Adam's moment estimates: after ``t`` steps the EMA is the weighted
mean of the weights after steps ``1 … t`` with weights ∝ ``d^(t−s)``, whatever ``t`` is, so a short fine-tuning run
gets a true average of its trajectory (no zero start pulling it towards the origin, no warm-up schedule to tune).
The decay sets the window: about the last ``1 / (1 − d)`` steps (``0.99``: 100 steps, ``0.999``: 1,000; a run
shorter than the window averages its whole trajectory).

:meth:`WeightEMA.applied` swaps the average into the model for as long as it is needed (to save or score it) and
swaps the live weights back: no second copy of the model is made when the parameters are fp32.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(1, 1)
    >>> _ = torch.nn.init.zeros_(model.bias)
    >>> ema = WeightEMA(model, 0.9)
    >>> for _ in range(2):  # two optimizer steps, each adding 1 to the bias
    ...     _ = model.bias.data.add_(1.0)
    ...     ema.update(model)
    >>> with ema.applied(model):  # (0.9 · 1 + 1 · 2) / 1.9
    ...     print(round(model.bias.item(), 3))
    1.526
    >>> model.bias.item()
    2.0
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hf_soups.errors import SoupError
from hf_soups.validation import ema_decay


def check_decay(decay: object) -> float:
    """``decay`` as a float in (0, 1) (:func:`hf_soups.validation.ema_decay`).

    Raises:
        SoupError: anything else (the EMA would not average: 0 keeps the last step, 1 the first).
    """
    return ema_decay(decay)


def ema_label(decay: float) -> str:
    """How entries and options name an EMA: ``ema:0.999``."""
    return f"ema:{decay:g}"


class WeightEMA:
    """An fp32 exponential moving average of a model's trainable parameters (see the module docstring).

    Args:
        model: the model being trained; its parameters that require gradients are averaged, by name.
        decay: in (0, 1).

    Attributes:
        names: the averaged parameters' names (``model.named_parameters()``).
        shadow: their averages, fp32, each on its parameter's device.
        steps: how many updates the average has taken.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = check_decay(decay)
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in trainable]
        self.shadow = [p.detach().to(torch.float32, copy=True) for _, p in trainable]
        self.steps = 0

    def _parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        named = dict(model.named_parameters())
        missing = [name for name in self.names if name not in named]
        if missing:
            raise SoupError(f"ema: the model no longer has parameter {missing[0]!r} (was it re-wrapped?)")
        return [named[name] for name in self.names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Take one step towards the model's current weights (call after every optimizer step)."""
        self.steps += 1
        weight = (1 - self.decay) / (1 - self.decay**self.steps)
        live = [p.detach().to(torch.float32) for p in self._parameters(model)]
        torch._foreach_lerp_(self.shadow, live, weight)  # what torch.optim.swa_utils' EMA uses

    @contextmanager
    @torch.no_grad()
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The model with its averaged parameters in place of the live ones, restored on exit.

        fp32 parameters trade storage with the average (nothing copied); others are backed up and overwritten.
        """
        params = self._parameters(model)
        backups: list[torch.Tensor | None] = []
        for p, avg in zip(params, self.shadow, strict=True):
            if p.dtype == avg.dtype and p.device == avg.device:
                p.data, avg.data = avg.data, p.data
                backups.append(None)
            else:
                backups.append(p.detach().clone())
                p.copy_(avg)
        try:
            yield model
        finally:
            for p, avg, backup in zip(params, self.shadow, backups, strict=True):
                if backup is None:
                    p.data, avg.data = avg.data, p.data
                else:
                    p.copy_(backup)


__all__ = ["WeightEMA", "check_decay", "ema_label"]
