"""Judges: what a recipe scores a model with, on a *selection* split and a separate *report* split.

A recipe only needs :class:`Judge`'s three things: the name of the metric it selects on, a way to score a model on
``"select"`` or ``"report"``, and the main-metric function for bootstrap resamples. A judge that also has an
``accelerator`` and a ``precision(text_to_text)`` method (both judges here) gets its kitchen's scoring model built on
that accelerator's device in that precision (:func:`scoring_target`); any other judge scores an fp32 model on the
CPU. :class:`GlueJudge` scores a GLUE
task with :class:`~hf_soups.evaluation.GlueScorer`; :class:`~hf_soups.recipes.trainer_judge.TrainerJudge`, beside it,
is built on a Trainer's ``eval_dataset`` and ``compute_metrics`` and shares this module's ensemble and loss.

Example:
    >>> judge = GlueJudge("rte", tokenizer, glue_dir="glue_data")  # doctest: +SKIP
    >>> judge.score(model, "select").main  # doctest: +SKIP
    0.652
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hf_soups.errors import SoupError
from hf_soups.evaluation import EvalResult, GlueScorer, SplitRule, TaskSpec, get_task, glue_metrics
from hf_soups.evaluation.data import GlueSplit, check_splits_apart
from hf_soups.evaluation.models import is_text_to_text
from hf_soups.evaluation.scoring import FORMATS, Precision, scoring_precision

SPLITS = ("select", "report")


class Judge(Protocol):
    """Scores models for a recipe.

    Attributes:
        task: the task name (``"rte"``), or a free name for custom judges.
        metric: the main metric's name; recipes select on it.
        split_names: ``{"select": "validation:select", "report": "validation:report"}``.
        split_rule: what reproduces the splits (recorded in ``soup.json``; ``rows`` gives each split's size).
    """

    task: str
    metric: str
    split_names: dict[str, str]
    split_rule: dict[str, Any]

    def score(self, model: PreTrainedModel, split: str, return_predictions: bool = False) -> EvalResult:
        """Score a model on ``"select"`` or ``"report"``; every process of a distributed run calls it."""

    def main_metric(self, predictions: np.ndarray, labels: np.ndarray) -> float:
        """The main metric on arrays (bootstrap resamples)."""

    def ensemble(self, results: list[EvalResult]) -> EvalResult:
        """The logit ensemble of models scored with ``return_predictions=True`` on one split."""

    def train_batches(self, model: PreTrainedModel) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """``(model inputs, labels)`` batches of the selection split, for the learned recipe."""

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of the learned recipe."""


class GlueJudge:
    """A GLUE task scored on a selection split and a report split.

    Args:
        task: a GLUE task name.
        tokenizer: the ingredients' tokenizer.
        select_split / report_split: split names (see :func:`~hf_soups.evaluation.split_names`) that share no
            row (:func:`~hf_soups.evaluation.data.check_splits_apart`), or their rows already loaded
            (``GlueSplit``s of ``task``: :class:`~hf_soups.recipes.dataset_judge.DatasetJudge` gives a user's dataset
            so).
        glue_dir: a local GLUE tsv folder, else the Hub's ``nyu-mll/glue``.
        batch_size: rows a batch and process (``None``: 32 on the CPU, a token budget on an accelerator; see
            :class:`~hf_soups.evaluation.GlueScorer`).
        accelerator: an ``accelerate.Accelerator`` (one is made when ``None``).
        rule: the seed and fractions of the ``:select``/``:report`` parts.
        progress: progress bars (main process only).
    """

    def __init__(
        self,
        task: str | TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        select_split: str | GlueSplit = "train:heldout",
        report_split: str | GlueSplit = "validation",
        glue_dir: str | Path | None = None,
        batch_size: int | None = None,
        accelerator: Any = None,
        rule: SplitRule | None = None,
        progress: bool = True,
    ) -> None:
        self.spec = get_task(task)
        self.task, self.metric = self.spec.name, self.spec.main_metric
        splits = {"select": select_split, "report": report_split}
        self.split_names = {part: split if isinstance(split, str) else split.name for part, split in splits.items()}
        check_splits_apart(self.split_names["select"], self.split_names["report"])
        accelerator = accelerator or Accelerator()
        self.scorers = {
            part: GlueScorer(
                self.spec, tokenizer, split, glue_dir, batch_size, accelerator, rule=rule, progress=progress
            )
            for part, split in splits.items()
        }
        self.accelerator = accelerator
        self.split_rule = {part: scorer.data.rule for part, scorer in self.scorers.items()} | {
            "rows": {part: scorer.data.dataset.num_rows for part, scorer in self.scorers.items()}
        }

    def score(self, model: PreTrainedModel, split: str, return_predictions: bool = False) -> EvalResult:
        return self.scorers[split].score(model, return_predictions=return_predictions)

    def precision(self, text_to_text: bool) -> Precision:
        """The precision models are scored in on the accelerator's device (see
        :func:`~hf_soups.evaluation.scoring.scoring_precision`)."""
        return scoring_precision(self.accelerator.device, text_to_text)

    def main_metric(self, predictions: np.ndarray, labels: np.ndarray) -> float:
        return glue_metrics(self.spec, predictions, labels)[self.metric]

    def ensemble(self, results: list[EvalResult]) -> EvalResult:
        first = results[0]
        predictions = ensemble_predictions(self.spec, [r.logits for r in results])
        return EvalResult(
            task=first.task,
            split=first.split,
            metrics=glue_metrics(self.spec, predictions, first.labels),
            main_metric=first.main_metric,
            num_examples=first.num_examples,
            split_rule=first.split_rule,
            predictions=predictions,
            labels=first.labels,
        )

    def train_batches(self, model: PreTrainedModel) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        if is_text_to_text(model):
            raise SoupError("learned soup: needs an encoder classifier or regressor; use greedy or uniform for T5")
        scorer = self.scorers["select"]
        for batch in scorer.loader("encoder", scorer.max_length_for(model)):
            rows = batch.pop("row")
            yield batch, torch.as_tensor(scorer.labels[rows.cpu().numpy()])

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return soup_loss(logits, labels, regression=self.spec.is_regression)


def scoring_target(judge: Judge, text_to_text: bool) -> tuple[torch.device, Precision]:
    """Where and in what precision ``judge`` scores models: its ``accelerator``'s device and its ``precision``
    where it has them, else the CPU in fp32."""
    accelerator = getattr(judge, "accelerator", None)
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    precision = judge.precision(text_to_text) if callable(getattr(judge, "precision", None)) else Precision()
    return device, precision


def soup_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The learned recipe's loss: mean squared error of a one-output regressor, else cross-entropy."""
    if regression:
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
    return torch.nn.functional.cross_entropy(logits, labels.long())


def ensemble_predictions(spec: Any, logits: list[np.ndarray]) -> np.ndarray:
    """Predictions of the logit ensemble: the mean output of an encoder regressor (STS-B: one output column), else
    the best class of the mean of the models' class probabilities (softmax of their logits, or of T5's label-word
    log-likelihoods; for T5 on STS-B, the score its best label word stands for)."""
    if spec.is_regression and logits[0].shape[-1] == 1:
        return FORMATS["encoder"].predict(spec, np.mean(logits, axis=0))
    kind = "text_to_text" if spec.is_regression else "encoder"  # the same argmax for classes, either kind
    return FORMATS[kind].predict(spec, mean_probabilities(logits))


def mean_probabilities(logits: list[np.ndarray]) -> np.ndarray:
    """The mean over models of the class probabilities (softmax over the last axis) of their logits."""
    probabilities = [np.exp(x - x.max(-1, keepdims=True)) for x in logits]
    return np.mean([p / p.sum(-1, keepdims=True) for p in probabilities], axis=0)
