"""The Fisher-weighted soup (Matena & Raffel 2022, "Merging models with Fisher-weighted averaging", arXiv
2111.09832): each weight is the average of the ingredients' copies weighted by their diagonal Fisher information,
θ* = Σᵢ Fᵢ θᵢ / Σᵢ Fᵢ, element by element.

**Which Fisher.** The *true* Fisher, computed exactly: for each of K selection rows x,
F += Σ_y p(y|x) (∂ log p(y|x) / ∂θ)², the expectation over the model's own predictive distribution taken in closed
form (one backward pass per class, per row), then divided by K. This is Matena & Raffel's choice (their code's
"exact" Fisher: the labels are the model's, not the data's) for three reasons: the empirical Fisher (gradients at the
gold labels) is a different quantity that vanishes on rows the model fits well; sampling a label per row from
p(y|x) gives the same expectation but with sampling noise and a seed to record, while the exact sum costs only
one backward pass per class (2 or 3 on GLUE) and is deterministic; and no gold label is read. Gradients are per
row (batch size one, trailing padding trimmed), as the diagonal Fisher needs: the square of a batch's summed
gradient is not the sum of its rows' squares. For a one-output regressor (STS-B) the model is a Gaussian of fixed
variance around its output, whose Fisher is the squared gradient of the output, (∂f/∂θ)².

**The floor.** Where no ingredient has Fisher information (Σ Fᵢ = 0: a token no selection row holds, a buffer) the
average would be 0/0. Every Fisher is raised by ε = 10⁻⁸ · mean(Σᵢ Fᵢ) / N per tensor (the mean over the tensor's
elements), which leaves the weighting alone wherever there is information and gives the uniform average where there
is none (and the whole tensor's uniform average when its Fisher is zero everywhere). The Fishers are not normalised
(Matena & Raffel's code can divide each by its norm; the issue's Σ Fᵢθᵢ / Σ Fᵢ does not).

**Cost and memory.** K rows × (one forward, C backward passes) per ingredient, on the judge's device, then cached
(:mod:`~hf_soups.recipes.statistics`). Measured (all-MiniLM-L6-v2, RTE's 249 held-out rows, one CPU thread on a
busy 2-core machine): about 10x one scoring pass over the same rows (300-340 s against 30 s), since each row runs
alone and backward twice; ``statistics_rows`` trades it for noise. The merge streams one ingredient and its Fisher
at a time into fp64 sums Σ Fᵢθᵢ and Σ Fᵢ beside the uniform mean: about five models of memory whatever the number
of ingredients.

Example:
    >>> report = run_in_kitchen(kitchen, "fisher", "soup", options={"statistics_rows": 256})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

import torch

from hf_soups.errors import SoupError
from hf_soups.hashing import HashCache
from hf_soups.ingredients import Ingredient, MergePlan
from hf_soups.mean import SoupWeights
from hf_soups.options import FISHER_OVER, CookOptions, FisherOptions, GreedyOptions, StatisticsOptions
from hf_soups.recipes.ensemble import greedy_ensemble_members
from hf_soups.recipes.greedy import cook_greedy
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, soup_report
from hf_soups.recipes.selection import selection_rule
from hf_soups.recipes.statistics import check_applies, estimation_rows, statistics_soup, tapped_mean
from hf_soups.threads import compute_threads

FISHER_FLOOR = 1e-8  # ε = FISHER_FLOOR · mean(Σ Fᵢ) / N, per tensor


def cook_fisher(
    kitchen: Kitchen,
    ensemble: bool = CookOptions.ensemble,
    statistics_rows: int | None = StatisticsOptions.statistics_rows,
    fisher_over: str = FisherOptions.fisher_over,
    greedy_rule: str = GreedyOptions.greedy_rule,
    min_gain: float = GreedyOptions.min_gain,
    state_dir: str | Path | None = None,
) -> SoupReport:
    """Run the Fisher recipe in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see the module docstring).

    Args:
        kitchen: the ingredients, the judge and the scoring model.
        ensemble: also score the logit-ensemble baselines.
        statistics_rows: K, the selection rows each Fisher is estimated on (``None``: all of them).
        fisher_over: the greedy ``"ensemble"``'s members (the models whose outputs the soup stands in for: the
            default, best on the GLUE re-run), the ``"greedy"`` soup's members (greedy cooked first), both chosen
            with ``greedy_rule`` and ``min_gain``, or ``"all"`` ingredients.
        greedy_rule / min_gain: greedy's rule, for ``fisher_over="greedy"`` or ``"ensemble"`` and the greedy
            ensemble.
        state_dir: where the Fishers are kept (``<output>.fisher-state``; ``None``: a temporary folder, and the
            record names no files to re-cook from).

    Raises:
        SoupError: a kitchen that cannot give gradients (see
            :func:`~hf_soups.recipes.statistics.check_applies`), a bad K or ``fisher_over``; before any scoring.
    """
    if fisher_over not in FISHER_OVER:
        raise SoupError(f"fisher_over: {fisher_over!r} is not one of {', '.join(FISHER_OVER)}")
    rule = selection_rule(greedy_rule, min_gain)
    check_applies(kitchen, "fisher")
    rows = estimation_rows(kitchen, statistics_rows)
    tastings, uniform = kitchen.tastings()
    if fisher_over == "all":
        members = list(range(len(kitchen.ingredients)))
    elif fisher_over == "ensemble":
        members = greedy_ensemble_members(kitchen, tastings, rule)
    else:
        greedy = cook_greedy(kitchen, ensemble=False, greedy_rule=greedy_rule, min_gain=min_gain)
        members = [kitchen.ingredients.index(ingredient) for ingredient in greedy.weights.members]
    ingredients = [kitchen.ingredients[i] for i in members]
    soup, record = statistics_soup(
        kitchen,
        ingredients,
        "fisher",
        rows,
        state_dir,
        fisher_diagonal,
        lambda paths: fisher_merge(ingredients, paths, kitchen.plan, kitchen.hash_cache),
        desc="Fisher information",
    )
    options = {"statistics_rows": rows, "fisher_over": fisher_over, "fisher": "exact", "fisher_floor": FISHER_FLOOR}
    if fisher_over != "all":
        options |= rule
    return soup_report(
        kitchen, "fisher", soup, tastings, uniform=uniform, ensemble=ensemble, rule=rule, options=options | record
    )


def fisher_diagonal(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    names: Collection[str],
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The exact diagonal Fisher of ``model`` over the rows of ``batches`` (see the module docstring).

    Args:
        model: a classifier or one-output regressor whose output has ``.logits`` of shape (rows, classes).
        batches: model inputs; each row is run alone (trailing padding, by ``attention_mask``, trimmed).
        names: the parameters (by ``state_dict`` name) to estimate it for; those without a gradient get none.
        device: where to run.

    Returns:
        Parameter name → its Fisher (fp32, the parameter's shape), averaged over the rows.

    Raises:
        SoupError: no rows, or outputs that are not one row of logits per example.
    """
    model.to(device).eval()
    state = model.state_dict(keep_vars=True)
    params = {name: state[name] for name in names if state[name].requires_grad}
    sums = {name: torch.zeros_like(param, dtype=torch.float32) for name, param in params.items()}
    count = 0
    with torch.enable_grad():
        for row in _rows(batches, device):
            logits = model(**row).logits
            if logits.dim() != 2 or len(logits) != 1:
                raise SoupError(
                    f"fisher soup: {type(model).__name__} gives logits of shape {list(logits.shape)}, not one row of "
                    "class scores per example"
                )
            for weight, output, last in _likelihood_terms(logits[0]):
                grads = torch.autograd.grad(output, list(params.values()), retain_graph=not last, allow_unused=True)
                for total, grad in zip(sums.values(), grads, strict=True):
                    if grad is not None:
                        total.addcmul_(grad, grad, value=weight)
            count += 1
    if count == 0:
        raise SoupError("fisher soup: no selection rows to estimate the Fisher on")
    return {name: total.div_(count) for name, total in sums.items()}


def _likelihood_terms(logits: torch.Tensor) -> Iterator[tuple[float, torch.Tensor, bool]]:
    """``(p(y|x), log p(y|x), is last)`` for each class y of one row; ``(1, f(x), True)`` for a regressor, whose
    Gaussian log-likelihood has the gradient of its output (up to a factor that cancels in the average)."""
    if logits.numel() == 1:
        yield 1.0, logits[0], True
        return
    log_probs = logits.float().log_softmax(-1)
    probs = log_probs.detach().exp().tolist()
    for label, prob in enumerate(probs):
        yield prob, log_probs[label], label == len(probs) - 1


def _rows(batches: Iterable[dict[str, torch.Tensor]], device: torch.device | str) -> Iterator[dict[str, torch.Tensor]]:
    """Each row of each batch alone, on ``device``, without the padding after its last token."""
    for batch in batches:
        mask = batch.get("attention_mask")
        for index in range(len(next(iter(batch.values())))):
            length = int(mask[index].nonzero().max()) + 1 if mask is not None else None
            yield {
                name: (
                    value[index : index + 1, :length]
                    if length is not None and value.dim() > 1 and value.shape[1] == mask.shape[1]
                    else value[index : index + 1]
                ).to(device)
                for name, value in batch.items()
            }


def fisher_merge(
    ingredients: Sequence[Ingredient], fishers: Sequence[Path], plan: MergePlan, hash_cache: HashCache | None = None
) -> SoupWeights:
    """The Fisher-weighted average of ``ingredients``, given each one's Fisher file (see the module docstring).

    Streams one ingredient and its Fisher at a time; :func:`cook_fisher` and ``hf-soups cook`` both compute a soup
    here, so a re-cooked soup has the same bits.

    Returns:
        The soup's :class:`~hf_soups.mean.SoupWeights` (the uniform mean, where a tensor has Fishers replaced by
        the Fisher-weighted one).
    """
    weighted: dict[str, torch.Tensor] = {}
    totals: dict[str, torch.Tensor] = {}

    def take(name: str, tensor: torch.Tensor, fisher: torch.Tensor) -> None:
        if not plan.is_float(name):
            return
        information, theta = fisher.double(), tensor.double()
        if name in totals:
            weighted[name].addcmul_(information, theta)
            totals[name].add_(information)
        else:
            weighted[name], totals[name] = information * theta, information

    with compute_threads():
        soup = tapped_mean(ingredients, fishers, plan, hash_cache, take)
        for name, total in totals.items():
            floor = FISHER_FLOOR * float(total.mean())
            if floor > 0:  # else no information anywhere: the uniform average stays
                uniform = soup.tensors[name].double()
                soup.tensors[name] = weighted[name].add_(uniform, alpha=floor).div_(total.add_(floor)).float()
    return soup


__all__ = ["FISHER_FLOOR", "cook_fisher", "fisher_diagonal", "fisher_merge"]
