"""A judge on your own text-classification or regression dataset: a Hub dataset or local csv / json / jsonl /
parquet files (:class:`~hf_soups.evaluation.dataset.TextDataset`), split and scored exactly as a GLUE task is.

Example:
    >>> judge = DatasetJudge("reviews/", tokenizer, model.config.id2label, metric="f1_macro")  # doctest: +SKIP
    >>> greedy_soup(["runs/a", "runs/b", "runs/c"], judge=judge, output_dir="soup")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hf_soups.evaluation import EvalResult, SplitRule
from hf_soups.evaluation.data import check_splits_apart
from hf_soups.evaluation.dataset import TextDataset
from hf_soups.options import DatasetOptions, JudgeOptions
from hf_soups.recipes.judge import GlueJudge


class DatasetJudge(GlueJudge):
    """A :class:`~hf_soups.recipes.judge.Judge` that scores sequence classifiers and regressors on a dataset of
    yours, selecting on one split and reporting on another, with the GLUE judge's split names, held-out parts,
    overlap check, scoring and ensemble (:class:`~hf_soups.recipes.judge.GlueJudge`).

    ``hf-soups soup --dataset ...``, ``greedy_soup(..., dataset=...)`` and the other ``*_soup`` functions make one
    from their ingredients' ``id2label``; make one yourself to reuse it across recipes (``judge=``).

    Args:
        dataset: a Hub dataset id, a local folder or data file, ``train=a.csv,validation=b.csv``, or a
            :class:`~hf_soups.evaluation.dataset.TextDataset` (the options below are then its own).
        tokenizer: the ingredients' tokenizer.
        id2label: the ingredients' ``config.id2label``: the classes labels are matched to (one entry: a
            regressor, scored on numeric labels).
        dataset_config / text_columns / label_column / metric: which Hub configuration, which columns, which
            metric (:class:`~hf_soups.options.DatasetOptions`).
        select_split / report_split / heldout_fraction / batch_size: as the GLUE judge's
            (:class:`~hf_soups.options.JudgeOptions`): the defaults select on ``train:heldout`` and report on
            ``validation``.
        accelerator: an ``accelerate.Accelerator`` (one is made when ``None``).
        progress: progress bars (main process only).

    Raises:
        SoupError: overlapping splits, an unknown or unfitting metric, a missing file, split or column, a label the
            models do not know (see :meth:`~hf_soups.evaluation.dataset.TextDataset.splits`).

    Example:
        >>> judge = DatasetJudge("data/", tokenizer, {0: "negative", 1: "positive"})  # doctest: +SKIP
        >>> judge.split_rule["rows"]  # doctest: +SKIP
        {'select': 673, 'report': 872}
    """

    def __init__(
        self,
        dataset: str | TextDataset,
        tokenizer: PreTrainedTokenizerBase,
        id2label: Mapping[int, str],
        dataset_config: str | None = DatasetOptions.dataset_config,
        text_columns: str | Sequence[str] = DatasetOptions.text_columns,
        label_column: str = DatasetOptions.label_column,
        metric: str | None = DatasetOptions.metric,
        select_split: str = JudgeOptions.select_split,
        report_split: str = JudgeOptions.report_split,
        heldout_fraction: float = JudgeOptions.heldout_fraction,
        batch_size: int | None = JudgeOptions.batch_size,
        accelerator: Any = None,
        progress: bool = True,
    ) -> None:
        data = (
            dataset
            if isinstance(dataset, TextDataset)
            else TextDataset(
                dataset,
                dataset_config=dataset_config,
                text_columns=text_columns,
                label_column=label_column,
                metric=metric,
            )
        )
        check_splits_apart(select_split, report_split)  # before any data is read
        select, report = data.splits(
            [select_split, report_split], id2label, SplitRule(heldout_fraction=heldout_fraction)
        )
        super().__init__(
            select.task, tokenizer, select, report, batch_size=batch_size, accelerator=accelerator, progress=progress
        )
        self.task = None  # not a GLUE task: the record and the card name the dataset instead
        self.data = data
        self.split_rule["dataset"] = data.record()

    def score(self, model: PreTrainedModel, split: str, return_predictions: bool = False) -> EvalResult:
        self.data.check_model(model)
        return super().score(model, split, return_predictions)


__all__ = ["DatasetJudge"]
