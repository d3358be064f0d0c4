"""A judge built on a ``transformers.Trainer``: its ``eval_dataset``, split like a GLUE split, and its
``compute_metrics``; the :class:`~hf_soups.callback.SoupCallback` cooks with it when no GLUE ``task`` is given.

It shares the GLUE judge's pieces: the split rule (:func:`hf_soups.evaluation.data.split_rows`), the collated,
round-robin batches scored once per model (:class:`hf_soups.evaluation.scoring.Shard`), the ensemble's mean class
probabilities and the learned recipe's loss (:mod:`hf_soups.recipes.judge`).

Example:
    >>> judge = TrainerJudge(trainer, seed=3)  # doctest: +SKIP
    >>> judge.split_rule["rows"]  # doctest: +SKIP
    {'select': 138, 'report': 139}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import EvalPrediction, PreTrainedModel, ProgressCallback, Trainer

from hf_soups.errors import SoupError
from hf_soups.evaluation import EvalResult
from hf_soups.evaluation.data import SPLIT_METHOD, split_rows
from hf_soups.evaluation.scoring import Precision, Shard, batch_spans, same_device, scoring_model
from hf_soups.options import JudgeOptions
from hf_soups.recipes.judge import mean_probabilities, soup_loss
from hf_soups.validation import non_negative_int, open_unit_interval


class TrainerJudge:
    """A :class:`~hf_soups.recipes.judge.Judge` built on a Trainer's ``eval_dataset`` and ``compute_metrics``.

    With ``select_dataset`` (rows held out of the training data, e.g. by :func:`hf_soups.evaluation.hold_out`)
    recipes select on it and report on the whole eval dataset; without, the eval dataset is split once into a seeded
    *selection* part (``select_fraction`` of the rows) and a *report* part, the same way GLUE splits are (see
    :mod:`hf_soups.evaluation.data`). Batches are collated once per part, as the Trainer's own eval dataloader
    collates them (its collator, column removal and ``per_device_eval_batch_size``), and dealt out whole to the
    processes, round robin: every example counts once, in the same batch as in one process, whatever the number of
    processes (see :mod:`hf_soups.evaluation.scoring`). Models are scored in the Trainer's precision
    (:meth:`precision`): bf16 weights with ``bf16=True``, fp16 autocast with ``fp16=True``, else fp32.

    Predictions handed to ``compute_metrics`` are the logits, as in ``Trainer.evaluate``. The main metric is
    ``args.metric_for_best_model`` (without ``eval_``) or the first metric ``compute_metrics`` returns; recipes
    maximise it.

    Any other Trainer task is scored by the Trainer's own evaluation loop (:meth:`predict`: ``Trainer.predict`` on
    the model to score, under the Trainer's autocast): labels of many values a row (token classification, whose
    logits the loop pads with -100), a ``Seq2SeqTrainer`` with ``predict_with_generate`` (its generated ids), or a
    ``preprocess_logits_for_metrics``. The scores are then what ``trainer.evaluate()`` gives for the same weights on
    the same rows. What such a judge gives recipes beyond scores is in :attr:`provides`: the logit ensemble needs
    logits (not generated ids), the learned soup one label a row.

    Args:
        trainer: a Trainer with ``eval_dataset`` and ``compute_metrics``.
        seed: seed of the row permutation.
        select_fraction: the selection part's share of the rows.
        select_dataset: rows to select on (in the eval dataset's format), instead of a part of the eval dataset.
        progress: progress bars (main process only).

    Example:
        >>> judge = TrainerJudge(trainer)  # doctest: +SKIP
        >>> judge.score(model, "select").metrics  # doctest: +SKIP
        {'accuracy': 0.71}
    """

    task = None

    def __init__(
        self,
        trainer: Trainer,
        seed: int = JudgeOptions.seed,
        select_fraction: float = JudgeOptions.select_fraction,
        select_dataset: Any = None,
        progress: bool = True,
    ) -> None:
        if trainer.eval_dataset is None or isinstance(trainer.eval_dataset, dict):
            raise SoupError("soup judged by the Trainer: give the Trainer one eval_dataset, or cook with a GLUE task=")
        if trainer.compute_metrics is None:
            raise SoupError(
                "soup judged by the Trainer: give the Trainer a compute_metrics, or cook with a GLUE task="
            )
        if len(trainer.label_names) != 1:
            raise SoupError(
                f"soup judged by the Trainer: needs one label column, the Trainer has {trainer.label_names}"
            )
        if trainer.args.greater_is_better is False:
            raise SoupError(
                f"soup judged by the Trainer: recipes maximise their metric, but metric_for_best_model="
                f"{trainer.args.metric_for_best_model!r} is lower-is-better; choose a metric to maximise"
            )
        seed, select_fraction = non_negative_int(seed, "seed"), open_unit_interval(select_fraction, "select_fraction")
        self.trainer, self.accelerator, self.progress = trainer, trainer.accelerator, progress
        self.label_name = trainer.label_names[0]
        dataset = trainer.eval_dataset
        if select_dataset is not None:
            if len(select_dataset) == 0:
                raise SoupError("soup judged by the Trainer: select_dataset has no rows")
            self.parts = {"select": select_dataset, "report": dataset}
            self.split_names = {"select": "select_dataset", "report": "eval_dataset"}
            self.split_rule = {"source": "SoupCallback select_dataset / Trainer eval_dataset"}
        else:
            select, report = split_rows(len(dataset), select_fraction, seed)
            if min(len(select), len(report)) == 0:
                raise SoupError(f"soup judged by the Trainer: eval_dataset has {len(dataset)} rows, too few to split")
            self.parts = {"select": _subset(dataset, select), "report": _subset(dataset, report)}
            self.split_names = {split: f"eval_dataset:{split}" for split in self.parts}
            self.split_rule = {
                "source": "Trainer eval_dataset",
                "base_rows": len(dataset),
                "seed": seed,
                "select_fraction": select_fraction,
                "method": SPLIT_METHOD,
            }
        self.split_rule["rows"] = {split: len(part) for split, part in self.parts.items()}
        wanted = trainer.args.metric_for_best_model
        self.metric: str | None = wanted.removeprefix("eval_") if wanted else None
        first = self.parts["select"][0]
        per_row = not isinstance(first, Mapping) or np.ndim(first.get(self.label_name, 0)) == 0
        generates = bool(getattr(trainer.args, "predict_with_generate", False))
        processed = trainer.preprocess_logits_for_metrics is not None
        self.trainer_loop = generates or processed or not per_row  # scored by Trainer.predict (see predict)
        self.provides = (  # what recipes may need beyond scores (hf_soups.recipes.NEEDS)
            set() if generates or processed else {"logits"} if not per_row else {"logits", "loss"}
        )
        self.scores_from = (
            "generated ids (a Seq2SeqTrainer with predict_with_generate)"
            if generates
            else "what preprocess_logits_for_metrics makes of the logits"
            if processed
            else "logits of many labels a row"
            if not per_row
            else "logits of one label a row"
        )
        self._shards: dict[str, tuple[Shard, np.ndarray]] = {}

    def precision(self, text_to_text: bool = False) -> Precision:
        """The Trainer's precision: bf16 weights under ``bf16=True``, fp32 weights under fp16 autocast with
        ``fp16=True``, else fp32. Where the Trainer's own loop scores (:meth:`predict`, under the Trainer's autocast),
        fp32 weights, or the dtype of ``bf16_full_eval``/``fp16_full_eval``, which the loop would cast them to: as
        ``trainer.evaluate()`` scores, with the model's tensors left where the kitchen writes the weights."""
        if self.trainer_loop:
            args = self.trainer.args
            return Precision(
                torch.bfloat16 if args.bf16_full_eval else torch.float16 if args.fp16_full_eval else torch.float32
            )
        if self.trainer.args.bf16:
            return Precision(torch.bfloat16)
        return Precision(torch.float32, torch.float16 if self.trainer.args.fp16 else None)

    def shard(self, split: str) -> tuple[Shard, np.ndarray]:
        """This process's batches of one part, collated once as the Trainer collates them, and all of the part's
        labels in row order."""
        if split not in self._shards:
            loader = self.trainer.get_eval_dataloader(self.parts[split])  # the Trainer's columns and collator
            dataset, collate = loader.dataset, loader.collate_fn
            spans = batch_spans([0] * len(dataset), self.trainer.args.per_device_eval_batch_size)
            batches = {span.start: collate([dataset[i] for i in span]) for span in spans}
            labels = np.concatenate([batch.pop(self.label_name).numpy() for batch in batches.values()])
            shard = Shard.collate(spans, lambda span: batches[span.start], self.accelerator)
            self._shards[split] = shard, labels
        return self._shards[split]

    def outputs(self, model: PreTrainedModel, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The model's logits and the labels on one part, in row order (every process gets all of them)."""
        shard, labels = self.shard(split)
        device, precision = self.accelerator.device, self.precision()
        show = self.progress and self.accelerator.is_main_process
        with (
            scoring_model(model, device, precision.dtype) as scored,
            tqdm(total=len(shard.batches), desc=f"eval_dataset:{split}", leave=False, disable=not show) as bar,
        ):
            local = shard.run(
                scored, lambda m, batch: m(**batch).logits, device, model.config.num_labels, precision.autocast, bar
            )
        return shard.gather(self.accelerator, local).numpy(), labels

    def predict(self, model: PreTrainedModel, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``model``'s predictions and the labels on one part, from the Trainer's own evaluation loop
        (``Trainer.predict``: its dataloader, ``prediction_step`` (generation for a ``Seq2SeqTrainer`` with
        ``predict_with_generate``), padding with -100, gathering and ``preprocess_logits_for_metrics``), run on
        ``model`` in place of the Trainer's model under the Trainer's autocast. Only the progress bar of the
        Trainer's callbacks sees it (the run's loggers see no prediction), and ``compute_metrics`` runs once, in
        :meth:`metrics`. A model that returns more than its logits is scored on its first output.

        Raises:
            SoupError: the loop gives another number of predictions than the part has rows (a ``Seq2SeqTrainer``
                under several processes repeats rows to fill the last batch).
        """
        trainer = self.trainer
        if not trainer.accelerator._models:
            # what the loop does first in a Trainer that has prepared no model (no training yet), done here on the
            # Trainer's own model: prepared in the loop, the model to score would be moved (on a multi-process CPU,
            # copied), and a kitchen writing weights into its tensors would write them into tensors left behind
            prepared = trainer.accelerator.prepare_model(trainer.model, evaluation_mode=True)
            trainer.model_wrapped = prepared if prepared is not trainer.model else trainer.model_wrapped
        saved = trainer.model, trainer.model_wrapped, trainer.compute_metrics, trainer.callback_handler.callbacks
        device = trainer.args.device
        if not all(same_device(p.device, device) for p in model.parameters()):
            model.to(device)
        generation = getattr(trainer.accelerator.unwrap_model(trainer.model), "generation_config", None)
        own_generation = getattr(model, "generation_config", None)
        trainer.model = trainer.model_wrapped = model
        trainer.compute_metrics = None
        trainer.callback_handler.callbacks = [
            callback for callback in saved[3] if isinstance(callback, ProgressCallback) and self.progress
        ]
        if generation is not None and own_generation is not None:
            model.generation_config = generation  # it generates as the Trainer's model does
        try:
            with self.accelerator.autocast():
                output = trainer.predict(self.parts[split], metric_key_prefix="eval")
        finally:
            trainer.model, trainer.model_wrapped, trainer.compute_metrics, trainer.callback_handler.callbacks = saved
            if own_generation is not None:
                model.generation_config = own_generation
        predictions = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        if len(output.label_ids) != len(self.parts[split]) or len(predictions) != len(self.parts[split]):
            raise SoupError(
                f"eval_dataset:{split}: the Trainer's evaluation gave {len(predictions)} predictions for "
                f"{len(self.parts[split])} rows (a Seq2SeqTrainer under several processes repeats rows to fill "
                "the last batch: give the part a multiple of processes × per_device_eval_batch_size rows)"
            )
        return predictions, output.label_ids

    def metrics(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        values = self.trainer.compute_metrics(EvalPrediction(predictions=predictions, label_ids=labels))
        metrics = {k.removeprefix("eval_"): float(v) for k, v in values.items() if np.isscalar(v)}
        if self.metric is None:
            self.metric = next(iter(metrics))
        if self.metric not in metrics:
            raise SoupError(f"compute_metrics returns {sorted(metrics)}, not metric_for_best_model {self.metric!r}")
        return metrics

    def _result(self, split: str, predictions: np.ndarray, labels: np.ndarray) -> EvalResult:
        metrics = self.metrics(predictions, labels)
        return EvalResult(
            task=self.task,
            split=self.split_names[split],
            metrics=metrics,
            main_metric=self.metric,
            num_examples=len(labels),
            split_rule=self.split_rule,
            predictions=predictions,
            logits=predictions,
            labels=labels,
        )

    def score(self, model: PreTrainedModel, split: str, return_predictions: bool = False) -> EvalResult:
        scored = self.predict(model, split) if self.trainer_loop else self.outputs(model, split)
        result = self._result(split, *scored)
        if not return_predictions:
            result.predictions = result.logits = result.labels = None
        return result

    def main_metric(self, predictions: np.ndarray, labels: np.ndarray) -> float:
        return self.metrics(predictions, labels)[self.metric]

    def ensemble(self, results: list[EvalResult]) -> EvalResult:
        """Mean class probabilities, given to ``compute_metrics`` as log-probabilities (the mean output for a
        one-output regressor)."""
        logits = [r.logits for r in results]
        mixed = np.mean(logits, axis=0) if logits[0].shape[-1] == 1 else np.log(mean_probabilities(logits))
        split = next(s for s, name in self.split_names.items() if name == results[0].split)
        return self._result(split, mixed, results[0].labels)

    def train_batches(self, model: PreTrainedModel):
        for batch in self.trainer.get_eval_dataloader(self.parts["select"]):
            labels = batch.pop(self.label_name)
            yield batch, labels

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return soup_loss(logits, labels, regression=logits.shape[-1] == 1)


def _subset(dataset: Any, rows: np.ndarray) -> Any:
    if hasattr(dataset, "select"):  # datasets.Dataset: keeps column removal by the Trainer
        return dataset.select(rows)
    return torch.utils.data.Subset(dataset, rows.tolist())


__all__ = ["TrainerJudge"]
