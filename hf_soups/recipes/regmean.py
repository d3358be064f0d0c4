"""The RegMean soup (Jin et al. 2023, "Dataless knowledge fusion by merging weights of language models", arXiv
2212.09849): every linear layer merged in closed form so that, on the inputs each ingredient's own layer sees, the
merged layer's outputs are as close as they can be to that ingredient's.

For a linear layer y = W x (``nn.Linear`` keeps W as [out, in]) whose inputs over K selection rows are the rows of
Xᵢ in ingredient i, RegMean minimises Σᵢ ‖Xᵢ W*ᵀ − Xᵢ Wᵢᵀ‖², solved by W*ᵀ = (Σᵢ Gᵢ)⁻¹ Σᵢ Gᵢ Wᵢᵀ, that is
W* = (Σᵢ Wᵢ Gᵢ)(Σᵢ Gᵢ)⁻¹, with Gᵢ = XᵢᵀXᵢ the Gram matrix of the layer's inputs (here their mean over the tokens
of the K rows; padding tokens, by ``attention_mask``, are left out). Biases and every other tensor (embeddings,
layer norms) are averaged uniformly, as in the authors' code.

**α.** Each Gram matrix's off-diagonal entries are multiplied by α (their diagonal kept), which pulls the solution
towards the plain average and keeps Σ Gᵢ invertible. The authors' code (bloomberg/dataless-model-merging,
``regmean_reduce_nondiag``) has no single default: off (α = 1) in its defaults and in its same-task GLUE configs,
0.1 in its emotion and NER configs for RoBERTa, T5 and DeBERTa, 0.9 for DeBERTa on NER, and its demo notebook names
0.9 as "important for deberta and t5". The default here is 0.9: the layers that see one vector per row (a
classifier's pooler and head) have a Gram matrix of rank at most K, singular at α = 1 when K is below their width
(RTE's 249 held-out rows against MiniLM's 384), and 0.9 is the value the authors give for the models that need it.
An input feature no row reaches (a zero diagonal in every Gᵢ) keeps the average's column.

**Cost and memory.** K rows of forward passes per ingredient (no gradients, the judge's batches) with a hook on
every linear layer, then cached (:mod:`~hf_soups.recipes.statistics`): about 2x one scoring pass over the same rows
(all-MiniLM-L6-v2, RTE's 249 held-out rows, one CPU thread on a busy 2-core machine: 60 s against 30 s; the
[1536, 1536] Gram matrices of the feed-forward outputs dominate). The merge streams one ingredient and its Gram
matrices at a time into fp64 sums Σ Gᵢ ([in, in] per layer) and Σ Gᵢ Wᵢᵀ ([in, out]) beside the uniform mean, and
solves each layer's system in fp64 on the merge's threads (:func:`~hf_soups.threads.compute_threads`), so
``hf-soups cook`` re-cooks the same bits.

Example:
    >>> report = run_in_kitchen(kitchen, "regmean", "soup", options={"regmean_alpha": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredients import Ingredient, MergePlan
from hf_soups.mean import SoupWeights
from hf_soups.options import CookOptions, RegMeanOptions, StatisticsOptions
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, soup_report
from hf_soups.recipes.statistics import check_applies, estimation_rows, statistics_soup, tapped_mean
from hf_soups.threads import compute_threads
from hf_soups.validation import unit_interval


def cook_regmean(
    kitchen: Kitchen,
    ensemble: bool = CookOptions.ensemble,
    statistics_rows: int | None = StatisticsOptions.statistics_rows,
    regmean_alpha: float = RegMeanOptions.regmean_alpha,
    state_dir: str | Path | None = None,
) -> SoupReport:
    """Run the RegMean recipe over all ingredients in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see the
    module docstring).

    Args:
        kitchen: the ingredients, the judge and the scoring model.
        ensemble: also score the logit-ensemble baselines.
        statistics_rows: K, the selection rows the Gram matrices are estimated on (``None``: all of them).
        regmean_alpha: α, the scale of the Gram matrices' off-diagonal entries, in [0, 1].
        state_dir: where the Gram matrices are kept (``<output>.regmean-state``; ``None``: a temporary folder, and
            the record names no files to re-cook from).

    Raises:
        SoupError: a kitchen that cannot give the layers' inputs (see
            :func:`~hf_soups.recipes.statistics.check_applies`), a bad K or α; before any scoring.
    """
    alpha = unit_interval(regmean_alpha, "regmean_alpha")
    check_applies(kitchen, "regmean")
    rows = estimation_rows(kitchen, statistics_rows)
    tastings, uniform = kitchen.tastings()

    def merge(paths: list[Path]) -> tuple[SoupWeights, list[str]]:
        with safe_open(str(paths[0]), "pt") as grams:  # the layers the forward passes reached
            layers = sorted(grams.keys())
        return regmean_merge(kitchen.ingredients, paths, kitchen.plan, alpha, kitchen.hash_cache), layers

    (soup, layers), record = statistics_soup(
        kitchen, kitchen.ingredients, "gram", rows, state_dir, gram_matrices, merge, desc="RegMean Gram matrices"
    )
    options = {"statistics_rows": rows, "regmean_alpha": alpha, "regmean_layers": layers} | record
    return soup_report(kitchen, "regmean", soup, tastings, uniform=uniform, ensemble=ensemble, options=options)


def gram_matrices(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    names: Collection[str],
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The Gram matrix XᵀX / (rows of X) of the inputs X of every ``nn.Linear`` whose weight is named in ``names``.

    A layer's input of shape (batch, tokens, in) keeps the tokens ``attention_mask`` marks (no padding); one of
    shape (batch, in), a pooler's or classifier's, keeps every row.

    Returns:
        The weight's name (``...dense.weight``) → the [in, in] Gram matrix (fp32; each batch's product in fp32, their
        sum in fp64), for the layers the forward passes reached.

    Raises:
        SoupError: no rows.
    """
    model.to(device).eval()
    linears = {
        f"{prefix}.weight": module
        for prefix, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and f"{prefix}.weight" in names
    }
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    mask: list[torch.Tensor | None] = [None]  # the batch's attention mask, for the hooks

    def hook(name: str):
        def record(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs = args[0].detach()
            if mask[0] is not None and inputs.dim() == 3 and inputs.shape[:2] == mask[0].shape:
                inputs = inputs[mask[0]]
            inputs = inputs.reshape(-1, inputs.shape[-1]).float()
            gram = (inputs.T @ inputs).double()  # a batch's product in fp32 (4x faster than fp64), the sum in fp64
            sums[name] = sums[name].add_(gram) if name in sums else gram
            counts[name] = counts.get(name, 0) + len(inputs)

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in linears.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                batch = {key: value.to(device) for key, value in batch.items()}
                mask[0] = batch["attention_mask"].bool() if "attention_mask" in batch else None
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    if not counts:
        raise SoupError("regmean soup: no selection rows to estimate the Gram matrices on")
    return {name: (total / counts[name]).float() for name, total in sums.items()}


def regmean_merge(
    ingredients: Sequence[Ingredient],
    grams: Sequence[Path],
    plan: MergePlan,
    alpha: float,
    hash_cache: HashCache | None = None,
) -> SoupWeights:
    """The RegMean soup of ``ingredients``, given each one's Gram matrices file (see the module docstring).

    Streams one ingredient and its Gram matrices at a time; :func:`cook_regmean` and ``hf-soups cook`` both compute
    a soup here, so a re-cooked soup has the same bits.

    Raises:
        SoupError: a layer whose Σ Gᵢ is singular (possible only with α = 1).
    """
    gram_sums: dict[str, torch.Tensor] = {}
    products: dict[str, torch.Tensor] = {}

    def take(name: str, tensor: torch.Tensor, gram: torch.Tensor) -> None:
        gram = reduced(gram.double(), alpha)
        product = gram @ tensor.double().T
        if name in gram_sums:
            gram_sums[name].add_(gram)
            products[name].add_(product)
        else:
            gram_sums[name], products[name] = gram, product

    with compute_threads():
        soup = tapped_mean(ingredients, grams, plan, hash_cache, take)
        for name, gram in gram_sums.items():
            soup.tensors[name] = regmean_weight(gram, products[name], soup.tensors[name], name).float()
    return soup


def reduced(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """``gram`` with its off-diagonal entries multiplied by ``alpha``.

    Example:
        >>> reduced(torch.tensor([[2.0, 1.0], [1.0, 2.0]]), 0.5)
        tensor([[2.0000, 0.5000],
                [0.5000, 2.0000]])
    """
    return gram * alpha + torch.diag(gram.diagonal() * (1 - alpha))


def regmean_weight(gram: torch.Tensor, product: torch.Tensor, average: torch.Tensor, name: str) -> torch.Tensor:
    """W* = (Σ Wᵢ Gᵢ)(Σ Gᵢ)⁻¹ as [out, in], from ``gram`` = Σ Gᵢ and ``product`` = Σ Gᵢ Wᵢᵀ; an input feature with
    a zero diagonal in Σ Gᵢ (no row reaches it) keeps ``average``'s column.

    Raises:
        SoupError: Σ Gᵢ is singular, naming the layer.
    """
    dead = (gram.diagonal() == 0).to(gram.dtype)
    if dead.any():
        gram = gram + torch.diag(dead)
        product = product + dead[:, None] * average.to(gram.dtype).T
    solution, info = torch.linalg.solve_ex(gram, product)
    if info.item() != 0:
        raise SoupError(
            f"regmean soup: the Gram matrix of the inputs of '{name.removesuffix('.weight')}' is singular over these "
            "rows; give regmean_alpha below 1, or more statistics_rows"
        )
    return solution.T


__all__ = ["cook_regmean", "gram_matrices", "reduced", "regmean_merge", "regmean_weight"]
