"""Paired bootstrap: known answers for identical, clearly better and noisy predictions."""

from __future__ import annotations

import numpy as np
import pytest

from hf_soups.errors import SoupError
from hf_soups.evaluation import glue_metrics
from hf_soups.stats import format_gain, paired_bootstrap, pooled_bootstrap, within_noise


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels))


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 2, 400)


def test_identical_predictions_give_exactly_zero(labels):
    predictions = np.random.default_rng(2).integers(0, 2, len(labels))
    gain = paired_bootstrap(accuracy, labels, predictions, predictions.copy())
    assert gain == {"delta": 0.0, "low": 0.0, "high": 0.0, "resamples": 1000}
    assert within_noise(gain)


def test_clearly_better_soup_is_above_zero(labels):
    rng = np.random.default_rng(3)
    best = np.where(rng.random(len(labels)) < 0.7, labels, 1 - labels)  # ~70% right
    soup = np.where(rng.random(len(labels)) < 0.5, labels, best)  # fixes about half of best's errors
    gain = paired_bootstrap(accuracy, labels, best, soup, resamples=500)
    assert gain["delta"] == pytest.approx(accuracy(soup, labels) - accuracy(best, labels))
    assert 0 < gain["low"] < gain["delta"] < gain["high"]
    assert not within_noise(gain)


def test_noise_contains_zero_and_is_seeded(labels):
    rng = np.random.default_rng(4)
    a = np.where(rng.random(len(labels)) < 0.75, labels, 1 - labels)
    b = a.copy()
    flip = rng.choice(len(labels), 6, replace=False)  # a handful of rows change, half for the better
    b[flip] = 1 - b[flip]
    gain = paired_bootstrap(accuracy, labels, a, b, seed=7)
    assert gain["low"] < 0 < gain["high"] and within_noise(gain)
    assert paired_bootstrap(accuracy, labels, a, b, seed=7) == gain
    assert paired_bootstrap(accuracy, labels, a, b, seed=8) != gain


def test_wider_confidence_gives_wider_interval(labels):
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 2, len(labels)), rng.integers(0, 2, len(labels))
    narrow = paired_bootstrap(accuracy, labels, a, b, confidence=0.5)
    wide = paired_bootstrap(accuracy, labels, a, b, confidence=0.99)
    assert wide["low"] < narrow["low"] < narrow["high"] < wide["high"]


def test_glue_metric(labels):
    rng = np.random.default_rng(6)
    scores = labels * 5.0
    a, b = scores + rng.normal(0, 2, len(labels)), scores + rng.normal(0, 0.5, len(labels))

    def pearson(p, y):
        return glue_metrics("stsb", p, y)["pearson"]

    gain = paired_bootstrap(pearson, scores, a, b, resamples=200)
    assert 0 < gain["low"] < gain["delta"] < gain["high"]


def test_non_finite_resamples_are_dropped():
    labels = np.array([0, 0, 0, 1])

    def undefined_without_positives(p, y):
        return accuracy(p, y) if y.any() else float("nan")

    gain = paired_bootstrap(undefined_without_positives, labels, labels, 1 - labels, resamples=200)
    assert 0 < gain["resamples"] < 200  # P(no positive row in 4 draws) = (3/4)^4 ≈ 0.32
    assert gain["delta"] == gain["low"] == gain["high"] == -1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predictions_b": np.zeros(3)}, "have 4, 4 and 3 rows"),
        ({"resamples": 0}, "resamples must be at least 1"),
        ({"confidence": 1.0}, "confidence must be between 0 and 1"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"labels": np.zeros(4), "predictions_a": np.zeros(4), "predictions_b": np.zeros(4)} | kwargs
    with pytest.raises(SoupError, match=message):
        paired_bootstrap(accuracy, **args)


def test_format_gain():
    assert format_gain({"delta": 0.004, "low": -0.008, "high": 0.016}) == "+0.4 (95% CI −0.8 … +1.6)"


def test_pooled_bootstrap_of_one_comparison_is_the_paired_bootstrap():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    a, b = rng.integers(0, 2, 60), np.where(rng.random(60) < 0.8, labels, 1 - labels)
    assert pooled_bootstrap([(accuracy, labels, a, b)], resamples=300) == paired_bootstrap(
        accuracy, labels, a, b, resamples=300
    )


def test_pooled_bootstrap_averages_the_gains_and_resamples_every_comparison():
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    right, wrong = labels, labels ^ 1
    # a gain of +1 on the first comparison, 0 on the second (the same predictions): a mean of +0.5, always
    gain = pooled_bootstrap([(accuracy, labels, wrong, right), (accuracy, labels, right, right)], resamples=200)
    assert gain == {"delta": 0.5, "low": 0.5, "high": 0.5, "resamples": 200}
    with pytest.raises(SoupError, match="no comparison"):
        pooled_bootstrap([])
