"""Score models on a GLUE split, in one process or many under ``accelerate launch``.

:class:`GlueScorer` loads and tokenises a split once (per input format) and scores any number of models on it;
:func:`evaluate_glue` is the one-shot form. Batches are sorted by length (longest first) and padded per batch; the
dataloader is ``accelerator.prepare``-d and outputs are collected with ``gather_for_metrics``, so each example counts
exactly once whatever the number of processes. Models run under ``torch.inference_mode`` and, on GPU, bf16 autocast
(fp16 where bf16 is not supported). The model is only moved to ``accelerator.device``, never wrapped for DDP.

Encoder classifiers give one logit per class (one score for STS-B). Text-to-text models (T5) get T5's GLUE input
(``"rte sentence1: … sentence2: …"``) and each label word is scored by its summed token log-likelihood, teacher
forced (no free generation): the prediction is the best-scoring word. For STS-B the candidates are the 26
strings ``"0.0"``, ``"0.2"``, … ``"5.0"`` and the prediction is the value of the best-scoring one: what T5's decoding
would give, restricted to valid outputs (not the probability-weighted mean, which T5 never produces).

Example:
    >>> scorer = GlueScorer("rte", tokenizer, "validation:select", glue_dir="glue_data")  # doctest: +SKIP
    >>> [scorer.score(model).main for model in ingredients]  # doctest: +SKIP
    [0.659, 0.681, 0.645]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from hf_soups.errors import SoupError
from hf_soups.evaluation.data import SplitRule, load_glue_split
from hf_soups.evaluation.metrics import glue_metrics, predictions_from_logits
from hf_soups.evaluation.models import check_head, is_text_to_text
from hf_soups.evaluation.tasks import STSB_T5_VALUES, TaskSpec, get_task, t5_input

DEFAULT_MAX_LENGTH = 512


@dataclass
class EvalResult:
    """Scores of one model on one split.

    Attributes:
        task: the task name.
        split: the split name (``"validation:select"``).
        metrics: metric name → value.
        main_metric: the name of the task's main metric.
        num_examples: the number of examples scored (each exactly once).
        split_rule: what reproduces the split (see :func:`~hf_soups.evaluation.data.load_glue_split`).
        predictions: class ids (or STS-B scores) in the split's row order, when asked for.
        logits: per-class logits, or per-class label-word log-likelihoods for T5, in row order, when asked for.
        labels: gold labels in row order, when asked for.
    """

    task: str
    split: str
    metrics: dict[str, float]
    main_metric: str
    num_examples: int
    split_rule: dict[str, Any] = field(default_factory=dict)
    predictions: np.ndarray | None = None
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def main(self) -> float:
        """The value of the task's main metric."""
        return self.metrics[self.main_metric]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly part: everything but the arrays."""
        return {
            "task": self.task, "split": self.split, "num_examples": self.num_examples,
            "main_metric": self.main_metric, "metrics": self.metrics, "split_rule": self.split_rule,
        }


def _encoder_forward(model: PreTrainedModel, batch: dict[str, torch.Tensor], targets: Any) -> torch.Tensor:
    return model(**batch).logits


def _t5_forward(model: PreTrainedModel, batch: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Summed log-likelihood of each target given each input, in one teacher-forced decoder pass.

    Args:
        targets: (num_targets, length) token ids, padded with -100.

    Returns:
        (batch, num_targets) scores.
    """
    batch_size, num_targets = len(batch["input_ids"]), len(targets)
    encoded = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    labels = targets.to(batch["input_ids"].device).repeat(batch_size, 1)
    logits = model(
        encoder_outputs=(encoded.last_hidden_state.repeat_interleave(num_targets, dim=0),),
        attention_mask=batch["attention_mask"].repeat_interleave(num_targets, dim=0),
        decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels),
    ).logits
    token_scores = logits.float().log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return token_scores.masked_fill(labels < 0, 0.0).sum(-1).view(batch_size, num_targets)


@dataclass(frozen=True)
class _Format:
    """How one kind of model sees a split: its input texts, its forward pass and its predictions."""

    texts: Callable[[TaskSpec, Any], list[list[str]]]
    forward: Callable[[PreTrainedModel, dict[str, torch.Tensor], Any], torch.Tensor]
    predict: Callable[[TaskSpec, np.ndarray], np.ndarray]


FORMATS: dict[str, _Format] = {
    "encoder": _Format(
        texts=lambda spec, data: [list(data[column]) for column in spec.text_columns],
        forward=_encoder_forward,
        predict=predictions_from_logits,
    ),
    "text_to_text": _Format(
        texts=lambda spec, data: [[t5_input(spec, row) for row in data]],
        forward=_t5_forward,
        predict=lambda spec, scores: (
            np.asarray(STSB_T5_VALUES)[scores.argmax(-1)] if spec.is_regression else scores.argmax(-1)
        ),
    ),
}


def gather_outputs(
    model: PreTrainedModel,
    loader: Any,
    accelerator: Accelerator,
    forward: Callable[[PreTrainedModel, dict[str, torch.Tensor]], torch.Tensor],
    key: str,
    rows: int,
    desc: str,
    progress: bool = True,
    autocast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over a prepared ``loader`` and gather every process's outputs (``gather_for_metrics``).

    Each batch's ``key`` column (row ids, labels) is popped and gathered with the float logits ``forward(model,
    batch)`` returns. The model is moved to ``accelerator.device`` and run in eval mode under
    ``torch.inference_mode`` (with ``autocast``, bf16/fp16 autocast on GPU); its train/eval mode is restored after.

    Returns:
        The gathered ``key`` values and logits, on the CPU, in the loader's order (every process gets all of them).

    Raises:
        SoupError: the number of gathered outputs is not ``rows`` (a dataloader dropping or repeating rows).

    Example:
        >>> keys, logits = gather_outputs(model, loader, accelerator, lambda m, b: m(**b).logits, "labels", 277,
        ...                               "rte validation")  # doctest: +SKIP
    """
    device = accelerator.device
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    was_training = model.training
    model.to(device).eval()
    keys, outputs = [], []
    bar = tqdm(loader, desc=desc, leave=False, disable=not (progress and accelerator.is_main_process))
    mixed = torch.autocast(device.type, dtype=dtype, enabled=autocast and device.type == "cuda")
    try:
        with torch.inference_mode(), mixed:
            for batch in bar:
                batch_keys = batch.pop(key)
                logits = forward(model, batch).float()
                batch_keys, logits = accelerator.gather_for_metrics((batch_keys, logits))
                keys.append(batch_keys.cpu())
                outputs.append(logits.cpu())
    finally:
        model.train(was_training)
    gathered = sum(len(batch) for batch in keys)
    if gathered != rows:
        raise SoupError(f"{desc}: gathered {gathered} outputs for {rows} rows (dataloader_drop_last?)")
    return torch.cat(keys), torch.cat(outputs)


class GlueScorer:
    """A GLUE split, tokenised and batched once, that scores any number of models.

    Args:
        task: a GLUE task name or spec.
        tokenizer: the tokenizer shared by the models to score.
        split: a split name (see :func:`~hf_soups.evaluation.data.split_names`); ``None`` is the validation split.
        glue_dir: a local GLUE tsv folder; ``None`` loads ``nyu-mll/glue`` from the Hub.
        batch_size: examples per batch and process. A T5 batch runs its decoder on ``batch_size`` times the number
            of label words (26 for STS-B), so lower it for large T5 models on STS-B.
        accelerator: the :class:`accelerate.Accelerator` to run under; a default one is made when ``None``.
        max_length: truncation length; ``None`` is the smallest of the tokenizer's maximum, the model's
            ``max_position_embeddings`` and 512.
        rule: seed and fractions for ``BASE:PART`` splits.
        progress: show a progress bar (on the main process only).

    Example:
        >>> scorer = GlueScorer("sst2", tokenizer, glue_dir="glue_data", batch_size=64)  # doctest: +SKIP
        >>> result = scorer.score(model, return_predictions=True)  # doctest: +SKIP
        >>> result.main, result.predictions[:5]  # doctest: +SKIP
        (0.912, array([1, 0, 1, 0, 0]))
    """

    def __init__(
        self,
        task: str | TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        split: str | None = None,
        glue_dir: str | Path | None = None,
        batch_size: int = 32,
        accelerator: Accelerator | None = None,
        max_length: int | None = None,
        rule: SplitRule | None = None,
        progress: bool = True,
    ) -> None:
        self.task = get_task(task)
        self.data = load_glue_split(self.task, split, glue_dir, rule)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.accelerator = accelerator or Accelerator()
        self.max_length = max_length
        self.progress = progress
        self.labels = np.asarray(list(self.data.dataset["label"]))
        self._loaders: dict[tuple[str, int], DataLoader] = {}
        self._targets: torch.Tensor | None = None

    @property
    def split(self) -> str:
        return self.data.name

    def loader(self, kind: str, max_length: int) -> DataLoader:
        """The prepared dataloader of length-sorted, dynamically padded batches for ``"encoder"`` or
        ``"text_to_text"`` models, built on first use. Each batch carries a ``row`` tensor of split row indices."""
        if (kind, max_length) not in self._loaders:
            texts = FORMATS[kind].texts(self.task, self.data.dataset)
            encoded = self.tokenizer(*texts, truncation=True, max_length=max_length)
            features = [
                {name: values[row] for name, values in encoded.items()} | {"row": row}
                for row in range(self.data.dataset.num_rows)
            ]
            features.sort(key=lambda feature: -len(feature["input_ids"]))
            loader = DataLoader(
                features, batch_size=self.batch_size, shuffle=False, collate_fn=DataCollatorWithPadding(self.tokenizer)
            )
            self._loaders[kind, max_length] = self.accelerator.prepare(loader)
        return self._loaders[kind, max_length]

    def max_length_for(self, model: PreTrainedModel) -> int:
        """The truncation length used for a model (see ``max_length``)."""
        positions = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
        return self.max_length or min(self.tokenizer.model_max_length, positions, DEFAULT_MAX_LENGTH)

    def _t5_targets(self) -> torch.Tensor:
        """The task's label words as T5 targets (with EOS), one row each, padded with -100."""
        if self._targets is None:
            ids = self.tokenizer(text_target=list(self.task.t5_label_words))["input_ids"]
            self._targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in ids], True, -100)
        return self._targets

    def score(self, model: PreTrainedModel, return_predictions: bool = False) -> EvalResult:
        """Score one model on the split.

        The model is moved to ``accelerator.device`` and put in eval mode for the run (its train/eval mode is
        restored after). Every process must call this; each gets the full result.

        Args:
            model: an encoder classifier/regressor whose head fits the task, or a text-to-text model (T5).
            return_predictions: also return predictions, logits and labels (numpy, in the split's row order).

        Returns:
            An :class:`EvalResult`.

        Raises:
            SoupError: the model's head does not fit the task.
        """
        check_head(model, self.task)
        kind = "text_to_text" if is_text_to_text(model) else "encoder"
        fmt, targets = FORMATS[kind], self._t5_targets() if kind == "text_to_text" else None
        rows, logits = gather_outputs(
            model, self.loader(kind, self.max_length_for(model)), self.accelerator,
            lambda model, batch: fmt.forward(model, batch, targets), "row", len(self.labels),
            f"{self.task.name} {self.split}", self.progress, autocast=True,
        )
        row_ids = rows.numpy()
        if not np.array_equal(np.sort(row_ids), np.arange(len(self.labels))):
            raise RuntimeError(
                f"gathered {len(row_ids)} outputs for {len(self.labels)} examples: rows were lost or repeated"
            )
        logits = logits.numpy()[np.argsort(row_ids)]
        predictions = fmt.predict(self.task, logits)
        result = EvalResult(
            task=self.task.name, split=self.split, metrics=glue_metrics(self.task, predictions, self.labels),
            main_metric=self.task.main_metric, num_examples=len(self.labels), split_rule=self.data.rule,
        )
        if return_predictions:
            result.predictions, result.logits, result.labels = predictions, logits, self.labels
        return result


def evaluate_glue(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | TaskSpec,
    split: str | None = None,
    accelerator: Accelerator | None = None,
    batch_size: int = 32,
    glue_dir: str | Path | None = None,
    return_predictions: bool = False,
    **scorer_kwargs: Any,
) -> EvalResult:
    """Score one model on a GLUE split: a one-shot :class:`GlueScorer` (use the scorer for many models).

    Args:
        model: an encoder classifier/regressor or a text-to-text model (T5).
        tokenizer: its tokenizer.
        task: a GLUE task name (``"rte"``).
        split: a split name; ``None`` is the validation split (``validation_matched`` for MNLI).
        accelerator: an :class:`accelerate.Accelerator`; a default one when ``None``.
        batch_size: examples per batch and process.
        glue_dir: a local GLUE tsv folder; ``None`` loads ``nyu-mll/glue`` from the Hub.
        return_predictions: also return predictions, logits and labels.
        **scorer_kwargs: ``max_length``, ``rule``, ``progress`` for :class:`GlueScorer`.

    Returns:
        An :class:`EvalResult`: ``.metrics``, ``.main`` and, if asked, ``.predictions`` / ``.logits``.

    Example:
        >>> evaluate_glue(model, tokenizer, "rte", glue_dir="glue_data").metrics  # doctest: +SKIP
        {'accuracy': 0.6606}
    """
    scorer = GlueScorer(task, tokenizer, split, glue_dir, batch_size, accelerator, **scorer_kwargs)
    return scorer.score(model, return_predictions=return_predictions)
