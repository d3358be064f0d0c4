"""The learned soup (Wortsman et al. 2022, Recipe 2): mixing weights trained on the selection split.

The soup's weights are ``θ(α) = Σᵢ softmax(α)ᵢ θᵢ`` (one α per ingredient, or one per ingredient and per tensor),
and α is trained by gradient descent on the selection split through ``torch.func.functional_call``, the
ingredients themselves frozen. This needs every ingredient in memory at once (N models, plus the mixed model and
activations): the recipe checks that before loading and stops with a clear message instead of running out.

Example:
    >>> from hf_soups import learned_soup
    >>> report = learned_soup(["runs/a", "runs/b"], "rte", "soup", glue_dir="glue_data", epochs=3)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from hf_soups.errors import SoupError
from hf_soups.mean import Weight
from hf_soups.options import CookOptions, LearnedOptions
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, soup_report

Granularity = Literal["ingredient", "layer"]


def cook_learned(
    kitchen: Kitchen,
    ensemble: bool = CookOptions.ensemble,
    granularity: Granularity = LearnedOptions.granularity,  # type: ignore[assignment]
    epochs: int = LearnedOptions.epochs,
    lr: float = LearnedOptions.lr,
) -> SoupReport:
    """Run the learned recipe in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see :func:`hf_soups.learned_soup`)."""
    if len(kitchen.ingredients) < 2:
        raise SoupError("learned soup: needs at least two ingredients")
    if granularity not in ("ingredient", "layer"):
        raise SoupError(f"learned soup: granularity must be 'ingredient' or 'layer', not {granularity!r}")
    device = kitchen.device
    names = [name for name in kitchen.plan.shapes if kitchen.plan.is_float(name)]
    check_memory(kitchen, names, device)
    tastings, uniform = kitchen.tastings()
    stacks = {name: torch.empty(len(kitchen.ingredients), *kitchen.plan.shapes[name], device=device) for name in names}
    for i, ingredient in enumerate(
        tqdm(kitchen.ingredients, desc="loading ingredients", disable=not kitchen.progress)
    ):
        for name, tensor in ingredient.tensors(kitchen.hash_cache):
            if name in stacks:
                stacks[name][i].copy_(tensor)
    weights = train_mixing_weights(kitchen, stacks, granularity, epochs, lr, device)
    mix: list[tuple[int, Weight]] = [
        (
            i,
            float(weights[i, 0])
            if granularity == "ingredient"
            else {n: float(weights[i, t]) for t, n in enumerate(names)},
        )
        for i in range(len(kitchen.ingredients))
    ]
    mean = kitchen.new_mean()
    for i, weight in mix:
        mean.add_tensors(_tensors(kitchen, stacks, i), kitchen.ingredients[i], weight)
    del stacks
    soup = mean.soup()
    options = {"granularity": granularity, "epochs": epochs, "lr": lr}
    return soup_report(kitchen, "learned", soup, tastings, uniform=uniform, ensemble=ensemble, options=options)


def _tensors(kitchen: Kitchen, stacks: dict[str, torch.Tensor], index: int) -> Iterator[tuple[str, torch.Tensor]]:
    """An ingredient's tensors from memory (float ones from the stacks, integer buffers from the kitchen's model),
    where they are (the mean takes them to its device)."""
    params = kitchen.parameters()
    for name in kitchen.plan.shapes:
        yield name, stacks[name][index] if name in stacks else params[name]


def check_memory(kitchen: Kitchen, names: list[str], device: torch.device) -> None:
    """Fail before loading when N ingredients plus the mixed model cannot fit in the device's free memory."""
    model_bytes = sum(torch.Size(kitchen.plan.shapes[name]).numel() * 4 for name in names)
    needed = (len(kitchen.ingredients) + 3) * model_bytes
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > free:
        raise SoupError(
            f"learned soup: needs about {needed / 2**30:.1f} GiB of {device.type} memory for "
            f"{len(kitchen.ingredients)} ingredients of {model_bytes / 2**30:.2f} GiB (all at once), but "
            f"{free / 2**30:.1f} GiB are free; use the greedy recipe, fewer ingredients or a larger device"
        )


def train_mixing_weights(
    kitchen: Kitchen,
    stacks: dict[str, torch.Tensor],
    granularity: Granularity,
    epochs: int,
    lr: float,
    device: torch.device,
) -> torch.Tensor:
    """Train softmax-parameterised mixing weights on the selection split.

    Returns:
        ``(N, 1)`` weights for ``"ingredient"``, ``(N, tensors)`` for ``"layer"``; each column sums to 1.
    """
    names = list(stacks)
    count = len(kitchen.ingredients)
    logits = torch.zeros(count, 1 if granularity == "ingredient" else len(names), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    model = kitchen.model.to(device).train(False)
    accelerator = getattr(kitchen.judge, "accelerator", None)
    for _ in tqdm(range(epochs), desc="learning mixing weights", disable=not kitchen.progress):
        for inputs, labels in kitchen.judge.train_batches(model):
            weights = logits.softmax(0)
            params = {
                name: torch.tensordot(weights[:, 0 if granularity == "ingredient" else t], stacks[name], dims=1)
                for t, name in enumerate(names)
            }
            outputs = functional_call(model, params, args=(), kwargs=inputs)
            loss = kitchen.judge.loss(outputs.logits, labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            if accelerator is not None and accelerator.num_processes > 1:
                logits.grad = accelerator.reduce(logits.grad, reduction="mean")
            optimizer.step()
    return logits.detach().softmax(0).cpu()
