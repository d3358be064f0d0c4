"""Bagged greedy: the greedy soup run on B seeded bootstrap resamples of the selection split, and a vote.

Greedy selection overfits a small selection split (Caruana et al. 2004, "Ensemble selection from libraries of
models"; their remedy is bagging). Each bag resamples the selection rows with replacement and runs greedy over the
ingredients in one order (best single selection score first, as greedy) with the same rule (:func:`joins`); an
ingredient goes into the soup when at least half of the bags keep it. The soup mixes its members by votes, most
first, ties going to the better single selection score; it is re-cooked from ``recipe.yaml`` like any soup.

A candidate soup is scored once on the whole selection split and its predictions are kept by its member set: every
bag standing at the same members takes the same candidate and only recomputes the metric on its own rows. The cost
is one model evaluation per distinct member set the bags stand at, per step, not one per bag (the count is recorded
as ``evaluations``; in the GLUE benchmark 12–19 for six runs against greedy's 5, 93 for twelve against 11, where
B separate greedy passes would cost B times greedy's).
Memory: one fp32 mean per distinct member set the bags stand at (and its candidate's, while a step runs: at most
2B), beside the model where that many fit (:meth:`~hf_soups.recipes.kitchen.Kitchen.new_mean`), else on the host.

Example:
    >>> from hf_soups.soups import run_recipe
    >>> report = run_recipe(  # doctest: +SKIP
    ...     "bagged", ["runs/a", "runs/b", "runs/c"], "rte", "soup", glue_dir="glue_data", options={"bags": 20}
    ... )
    >>> report.record.recipe.options["votes"]  # bags keeping each ingredient, in input order  # doctest: +SKIP
    [20, 13, 4]
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from hf_soups.errors import SoupError
from hf_soups.options import BaggedOptions, CookOptions, GreedyOptions
from hf_soups.recipes.kitchen import Kitchen
from hf_soups.recipes.report import SoupReport, soup_report
from hf_soups.recipes.selection import greedy_order, joins, selection_rule
from hf_soups.validation import non_negative_int, positive_int

Members = frozenset[int]


def cook_bagged(
    kitchen: Kitchen,
    ensemble: bool = CookOptions.ensemble,
    bags: int = BaggedOptions.bags,
    bag_seed: int = BaggedOptions.bag_seed,
    greedy_rule: str = GreedyOptions.greedy_rule,
    min_gain: float = GreedyOptions.min_gain,
) -> SoupReport:
    """Run bagged greedy in a :class:`~hf_soups.recipes.kitchen.Kitchen` (see the module docstring).

    Args:
        kitchen: the ingredients, the judge and the scoring model.
        ensemble: also score the logit-ensemble baselines (every ingredient's, and the greedy ensemble's).
        bags: the number of bootstrap resamples B.
        bag_seed: their seed.
        greedy_rule / min_gain: each bag's greedy rule (:func:`~hf_soups.recipes.selection.joins`).

    Raises:
        SoupError: fewer than two ingredients, ``bags`` < 1, a bad rule.
    """
    if len(kitchen.ingredients) < 2:
        raise SoupError("bagged greedy soup: needs at least two ingredients")
    bags, bag_seed = positive_int(bags, "bags"), non_negative_int(bag_seed, "bag_seed")
    rule = selection_rule(greedy_rule, min_gain)
    tastings, uniform = kitchen.tastings()
    order = greedy_order(tastings)
    labels = tastings[0].select.labels
    rng = np.random.default_rng(bag_seed)
    resamples = [rng.integers(0, len(labels), len(labels)) for _ in range(bags)]
    # member set → the candidate soup's selection predictions (a single ingredient's are its tasting's)
    predictions: dict[Members, np.ndarray] = {frozenset([i]): t.select.predictions for i, t in enumerate(tastings)}
    first = frozenset(order[:1])
    means = {first: kitchen.new_mean(copies=2 * bags)}  # the parents standing and the candidates they take
    means[first].add(kitchen.ingredients[order[0]])
    standing = [first] * bags

    def score(members: Members, rows: np.ndarray) -> float:
        return kitchen.judge.main_metric(predictions[members][rows], labels[rows])

    evaluations = 0
    for index in tqdm(order[1:], desc="bagged greedy", disable=not kitchen.progress):
        ingredient, moved = kitchen.ingredients[index], {}
        for members in sorted(set(standing), key=sorted):
            candidate = members | {index}
            trial = means[members].candidate(ingredient, kitchen.parameters())
            predictions[candidate] = kitchen.judge.score(kitchen.model, "select", return_predictions=True).predictions
            evaluations += 1
            takers = [
                bag
                for bag, at in enumerate(standing)
                if at == members and joins(score(candidate, resamples[bag]), score(members, resamples[bag]), **rule)
            ]
            if takers:
                means[candidate] = means[members].copy()  # the parent stays, for the bags that did not take it
                means[candidate].accept(trial)
                moved.update(dict.fromkeys(takers, candidate))
        standing = [moved.get(bag, at) for bag, at in enumerate(standing)]
        means = {members: mean for members, mean in means.items() if members in standing}
    votes = [sum(i in members for members in standing) for i in range(len(tastings))]
    position = {index: rank for rank, index in enumerate(order)}
    chosen = sorted((i for i in order if 2 * votes[i] >= bags), key=lambda i: (-votes[i], position[i]))
    del means
    mean = kitchen.new_mean()
    for index in chosen:
        mean.add(kitchen.ingredients[index])
    soup = mean.soup()
    options = rule | {"bags": bags, "bag_seed": bag_seed, "votes": votes, "evaluations": evaluations}
    return soup_report(
        kitchen, "bagged", soup, tastings, uniform=uniform, ensemble=ensemble, rule=rule, options=options
    )


__all__ = ["cook_bagged"]
