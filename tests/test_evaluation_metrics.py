"""GLUE metrics against scikit-learn / scipy, degenerate cases, the Trainer hook and the task registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from hf_soups.errors import SoupError
from hf_soups.evaluation import GLUE_TASKS, compute_metrics, get_task, glue_metrics

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 200)
PREDICTIONS = np.where(RNG.random(200) < 0.7, LABELS, 1 - LABELS)
MNLI_LABELS, MNLI_PREDICTIONS = RNG.integers(0, 3, 150), RNG.integers(0, 3, 150)
SCORES = RNG.uniform(0, 5, 100)
SCORE_PREDICTIONS = SCORES + RNG.normal(0, 1.5, 100)


def test_classification_metrics_match_sklearn():
    assert glue_metrics("cola", PREDICTIONS, LABELS) == {
        "matthews_correlation": pytest.approx(matthews_corrcoef(LABELS, PREDICTIONS))
    }
    accuracy = accuracy_score(LABELS, PREDICTIONS)
    assert glue_metrics("mrpc", PREDICTIONS, LABELS) == {
        "f1": pytest.approx(f1_score(LABELS, PREDICTIONS)),
        "accuracy": pytest.approx(accuracy),
    }
    assert glue_metrics("qqp", PREDICTIONS, LABELS) == glue_metrics("mrpc", PREDICTIONS, LABELS)
    for task in ["sst2", "qnli", "rte", "wnli"]:
        assert glue_metrics(task, PREDICTIONS, LABELS) == {"accuracy": pytest.approx(accuracy)}
    assert glue_metrics("mnli", MNLI_PREDICTIONS, MNLI_LABELS)["accuracy"] == pytest.approx(
        accuracy_score(MNLI_LABELS, MNLI_PREDICTIONS)
    )
    assert glue_metrics("cola", MNLI_PREDICTIONS, MNLI_LABELS)["matthews_correlation"] == pytest.approx(
        matthews_corrcoef(MNLI_LABELS, MNLI_PREDICTIONS)
    )


def test_regression_metrics_match_scipy():
    metrics = glue_metrics("stsb", SCORE_PREDICTIONS, SCORES)
    assert metrics == {
        "pearson": pytest.approx(pearsonr(SCORE_PREDICTIONS, SCORES)[0]),
        "spearmanr": pytest.approx(spearmanr(SCORE_PREDICTIONS, SCORES)[0]),
    }
    assert 0.3 < metrics["pearson"] < 0.95


@pytest.mark.parametrize(
    ("task", "predictions", "labels", "expected"),
    [
        ("cola", [1, 1, 1], [1, 1, 1], {"matthews_correlation": 0.0}),  # one class only
        ("cola", [1, 1, 1, 1], [0, 1, 0, 1], {"matthews_correlation": 0.0}),  # constant predictions
        ("mrpc", [0, 0, 0], [0, 0, 0], {"f1": 0.0, "accuracy": 1.0}),  # no positives at all
        ("mrpc", [0, 0, 0], [1, 0, 1], {"f1": 0.0, "accuracy": 1 / 3}),
        ("stsb", [2.0, 2.0, 2.0], [0.0, 1.0, 5.0], {"pearson": 0.0, "spearmanr": 0.0}),  # constant predictions
        ("stsb", [0.0, 1.0, 5.0], [3.0, 3.0, 3.0], {"pearson": 0.0, "spearmanr": 0.0}),  # constant labels
        ("stsb", [1.0], [2.0], {"pearson": 0.0, "spearmanr": 0.0}),  # one example
        ("rte", [1], [1], {"accuracy": 1.0}),
    ],
)
def test_degenerate_inputs_have_defined_values(task, predictions, labels, expected, recwarn):
    metrics = glue_metrics(task, predictions, labels)
    assert metrics == pytest.approx(expected)
    assert not any(math.isnan(value) for value in metrics.values())
    assert not recwarn.list


def test_metric_input_errors():
    with pytest.raises(SoupError, match="same length"):
        glue_metrics("rte", [0, 1], [0, 1, 1])
    with pytest.raises(SoupError, match="zero examples"):
        glue_metrics("rte", [], [])


def test_compute_metrics_for_trainer():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 1.0]])
    assert compute_metrics("rte")(EvalPrediction(predictions=logits, label_ids=np.array([1, 0, 0]))) == {
        "accuracy": pytest.approx(2 / 3)
    }
    regression = EvalPrediction(predictions=(SCORE_PREDICTIONS[:, None], None), label_ids=SCORES)
    assert compute_metrics("stsb")(regression)["pearson"] == pytest.approx(pearsonr(SCORE_PREDICTIONS, SCORES)[0])


def test_registry():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    for spec in GLUE_TASKS.values():
        assert spec.main_metric in spec.metrics
        assert len(spec.t5_label_words) == (26 if spec.is_regression else spec.num_labels)
    assert get_task("RTE").label_names == ("entailment", "not_entailment")
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("wnli").label_names == ("not_entailment", "entailment")
    assert get_task("stsb").num_labels == 1 and get_task("stsb").is_regression
    assert (
        get_task("stsb").t5_label_words[:3] == ("0.0", "0.2", "0.4") and get_task("stsb").t5_label_words[-1] == "5.0"
    )
    assert get_task("mnli").validation_split == "validation_matched"
    with pytest.raises(SoupError, match="unknown GLUE task 'sts'; valid tasks: cola, sst2, mrpc, stsb, qqp, mnli"):
        get_task("sts")


@pytest.mark.parametrize("task", ["cola", "mrpc", "stsb", "rte"])
def test_same_numbers_as_evaluate_glue(task):
    evaluate = pytest.importorskip("evaluate")
    try:
        reference = evaluate.load("glue", task)
    except Exception as err:  # offline: the metric script lives on the Hub
        pytest.skip(f"evaluate.load('glue', {task!r}) unavailable: {type(err).__name__}")
    predictions, labels = (SCORE_PREDICTIONS, SCORES) if task == "stsb" else (PREDICTIONS, LABELS)
    assert glue_metrics(task, predictions, labels) == pytest.approx(
        reference.compute(predictions=predictions, references=labels)
    )
