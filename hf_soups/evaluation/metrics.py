"""GLUE metrics from scikit-learn and scipy, with every degenerate case given a defined value (never NaN).

The names match ``evaluate.load("glue", task)``: ``accuracy``, ``f1``, ``matthews_correlation``, ``pearson``,
``spearmanr``; ``f1_macro`` (the mean F1 over the classes) is there for a user's own multi-class data (see
:mod:`hf_soups.evaluation.dataset`). Degenerate inputs follow scikit-learn's convention of scoring "no signal" as 0:
a constant prediction or label vector (or fewer than two examples) gives a correlation of 0.0; F1 with no positive
predictions and no positive labels is 0.0; Matthews correlation with one class only is 0.0.

Example:
    >>> glue_metrics("mrpc", [1, 0, 1, 1], [1, 0, 0, 1])
    {'f1': 0.8, 'accuracy': 0.75}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from hf_soups.errors import SoupError
from hf_soups.evaluation.tasks import TaskSpec, get_task

ArrayLike = Sequence[float] | np.ndarray


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(accuracy_score(labels, predictions))


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(f1_score(labels, predictions, zero_division=0.0))


def _f1_macro(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(f1_score(labels, predictions, average="macro", zero_division=0.0))


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    # With one class only sklearn returns its defined 0.0 but warns about the confusion matrix shape first.
    if len(np.union1d(predictions, labels)) < 2:
        return 0.0
    return float(matthews_corrcoef(labels, predictions))


def _correlation(fn: Callable[..., Any]) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(predictions: np.ndarray, labels: np.ndarray) -> float:
        if len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
            return 0.0
        return float(fn(predictions, labels)[0])

    return metric


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "f1_macro": _f1_macro,
    "matthews_correlation": _matthews,
    "pearson": _correlation(pearsonr),
    "spearmanr": _correlation(spearmanr),
}
# The metrics of :data:`METRICS` that score a regressor's outputs; the others score class ids (``f1``: binary, of
# class 1; ``f1_macro``: the mean F1 over the classes).
REGRESSION_METRICS = ("pearson", "spearmanr")


def glue_metrics(task: str | TaskSpec, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """All metrics of a task on predicted class ids (or scores, for STS-B) against gold labels.

    This is the function to call on bootstrap resamples: it takes plain arrays and never returns NaN.

    Args:
        task: a GLUE task name or spec.
        predictions: predicted class ids, or predicted scores for STS-B.
        labels: gold label ids (or scores), same length.

    Returns:
        Metric name → value, in the task's order (the main metric is ``get_task(task).main_metric``).

    Example:
        >>> glue_metrics("cola", [1, 1, 0], [1, 0, 0])
        {'matthews_correlation': 0.5}
    """
    spec = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise SoupError(
            f"task {spec.name!r}: predictions {predictions.shape} and labels {labels.shape} must be 1-d and of "
            "the same length"
        )
    if len(labels) == 0:
        raise SoupError(f"task {spec.name!r}: cannot compute metrics on zero examples")
    return {name: METRICS[name](predictions, labels) for name in spec.metrics}


def predictions_from_logits(task: str | TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Turn model outputs into predictions: argmax over classes, or the single output column for regression.

    Example:
        >>> predictions_from_logits("rte", np.array([[0.1, 2.0], [3.0, -1.0]]))
        array([1, 0])
    """
    spec = get_task(task)
    logits = np.asarray(logits)
    return logits.reshape(len(logits)) if spec.is_regression else logits.argmax(axis=-1)


def compute_metrics(task: str | TaskSpec) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for :class:`transformers.Trainer` on an encoder classifier or regressor.

    Example:
        >>> trainer = Trainer(model, args, compute_metrics=compute_metrics("rte"))  # doctest: +SKIP
    """
    spec = get_task(task)

    def compute(eval_prediction: Any) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return glue_metrics(spec, predictions_from_logits(spec, logits), eval_prediction.label_ids)

    return compute
