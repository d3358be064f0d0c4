"""Honest numbers: a paired bootstrap of the gain of one model over another on the same examples.

Both models are scored on the same resampled rows (the same seeded indices for both), so the interval is that of the
*difference*, with the per-example correlation between the two models taken into account. Values are on the scale of
the metric (fractions 0..1 for GLUE); :func:`format_gain` shows a gain as ``"+0.4 (95% CI −0.8 … +1.6)"``.

Example:
    >>> import numpy as np
    >>> labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    >>> accuracy = lambda predictions, labels: float(np.mean(predictions == labels))
    >>> gain = paired_bootstrap(accuracy, labels, labels ^ 1, labels, resamples=200)
    >>> gain["delta"], gain["low"] > 0
    (1.0, True)
    >>> within_noise(gain)
    False
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hf_soups.errors import SoupError

Metric = Callable[[np.ndarray, np.ndarray], float]


def paired_bootstrap(
    metric: Metric,
    labels: np.ndarray,
    predictions_a: np.ndarray,
    predictions_b: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """The gain ``metric(b) − metric(a)`` and its percentile-bootstrap confidence interval.

    Each resample draws ``len(labels)`` row indices with replacement (a seeded ``numpy.random.Generator``) and scores
    both models on those same rows. Resamples where the metric is not finite (e.g. a correlation on constant
    predictions) are dropped.

    Args:
        metric: ``metric(predictions, labels) -> float``, e.g. ``lambda p, y: glue_metrics("mrpc", p, y)["f1"]``.
        labels: gold labels, one per example.
        predictions_a: the reference model's predictions (the best individual model), in the same row order.
        predictions_b: the challenger's predictions (a soup).
        resamples: how many bootstrap resamples.
        seed: the generator's seed.
        confidence: the interval's coverage.

    Returns:
        ``{"delta": ..., "low": ..., "high": ..., "resamples": ...}``: the gain on all rows, the interval's ends, and
        the number of resamples the interval rests on. Identical predictions give exactly ``[0, 0]``.

    Raises:
        SoupError: the arrays differ in length or are empty, or ``resamples``/``confidence`` are out of range.

    Example:
        >>> labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
        >>> best_predictions = np.array([0, 1, 0, 0, 1, 1, 0, 1])
        >>> soup_predictions = np.array([0, 1, 1, 0, 1, 1, 1, 1])
        >>> accuracy = lambda predictions, labels: float((predictions == labels).mean())
        >>> gain = paired_bootstrap(accuracy, labels, best_predictions, soup_predictions)
        >>> gain["delta"], gain["low"] <= gain["delta"] <= gain["high"], gain["resamples"]
        (0.25, True, 1000)
    """
    return pooled_bootstrap([(metric, labels, predictions_a, predictions_b)], resamples, seed, confidence)


Comparison = tuple[Metric, np.ndarray, np.ndarray, np.ndarray]


def pooled_bootstrap(
    comparisons: Sequence[Comparison], resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """The mean gain over several paired comparisons (e.g. one per GLUE task) and its bootstrap interval: each
    resample draws every comparison's rows together (in order, from one seeded generator) and averages the gains.
    With one comparison this is :func:`paired_bootstrap`.

    Args:
        comparisons: ``(metric, labels, predictions_a, predictions_b)`` each, as :func:`paired_bootstrap` takes.
        resamples / seed / confidence: as :func:`paired_bootstrap`.

    Returns:
        As :func:`paired_bootstrap`; ``delta`` is the mean of the comparisons' gains on all their rows.

    Raises:
        SoupError: no comparison, a comparison whose arrays differ in length or are empty, ``resamples`` or
            ``confidence`` out of range.

    Example:
        >>> accuracy = lambda predictions, labels: float(np.mean(predictions == labels))
        >>> y = np.array([0, 1, 1, 0])
        >>> pooled_bootstrap([(accuracy, y, y ^ 1, y), (accuracy, y, y, y)], resamples=50)["delta"]
        0.5
    """
    if not comparisons:
        raise SoupError("paired_bootstrap: no comparison")
    arrays = []
    for metric, labels, a, b in comparisons:
        labels, a, b = np.asarray(labels), np.asarray(a), np.asarray(b)
        if not len(labels) == len(a) == len(b):
            raise SoupError(
                f"paired_bootstrap: labels, predictions_a and predictions_b have {len(labels)}, {len(a)} and {len(b)} "
                "rows (they must be scored on the same examples)"
            )
        if len(labels) == 0:
            raise SoupError("paired_bootstrap: no examples")
        arrays.append((metric, labels, a, b))
    if resamples < 1:
        raise SoupError(f"paired_bootstrap: resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise SoupError(f"paired_bootstrap: confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples)
    for k in range(resamples):
        gains = []
        for metric, labels, a, b in arrays:
            rows = rng.integers(0, len(labels), len(labels))
            gains.append(metric(b[rows], labels[rows]) - metric(a[rows], labels[rows]))
        deltas[k] = np.mean(gains)
    deltas = deltas[np.isfinite(deltas)]
    if len(deltas) == 0:
        raise SoupError("paired_bootstrap: the metric is not finite on any resample")
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return {
        "delta": float(np.mean([metric(b, labels) - metric(a, labels) for metric, labels, a, b in arrays])),
        "low": float(low),
        "high": float(high),
        "resamples": len(deltas),
    }


def within_noise(gain: dict[str, float]) -> bool:
    """Whether the interval of a :func:`paired_bootstrap` gain contains 0 (the gain cannot be told from noise).

    Example:
        >>> within_noise({"delta": 0.003, "low": -0.008, "high": 0.016, "resamples": 1000})
        True
    """
    return gain["low"] <= 0 <= gain["high"]


def format_gain(gain: dict[str, float]) -> str:
    """A gain in points: ``{"delta": 0.004, "low": -0.008, "high": 0.016}`` → ``"+0.4 (95% CI −0.8 … +1.6)"``.

    Example:
        >>> format_gain({"delta": 0.004, "low": -0.008, "high": 0.016})
        '+0.4 (95% CI −0.8 … +1.6)'
    """
    return f"{_signed(gain['delta'])} (95% CI {_signed(gain['low'])} … {_signed(gain['high'])})"


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")
