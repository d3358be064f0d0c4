"""Score models on a GLUE split, in one process or many under ``accelerate launch``.

:class:`GlueScorer` loads, tokenises and collates a split once (per input format) and scores any number of models
on it; :func:`evaluate_glue` is the one-shot form. Rows are sorted by length (longest first) and cut into batches,
padded per batch: ``batch_size`` rows each, or by default 32 rows on the CPU and up to :data:`TOKEN_BUDGET` padded
tokens on an accelerator. The batches are collated once into tensors (pinned on a GPU machine) and reused for every
model. A model is scored in its *scoring precision* (:func:`scoring_precision`): fp32 on the CPU; on a GPU a bf16
copy of its weights (not fp32 weights under autocast), or where bf16 is missing fp32 weights, under fp16 autocast
for encoders and never in fp16 for T5 (it overflows). Logits stay on the device and cross to the host once a split.

Under ``accelerate launch`` the batches are dealt out whole, round robin (batch ``b`` to process ``b mod N``), and
the logits are gathered once a split: no row is repeated or topped up, so every row is scored in the same batch,
with the same padding, as in one process. N processes therefore give the same logits as one **bit for bit** on
the same kind of device (tested on the CPU with two processes; on GPUs this also needs kernels that are
deterministic for a given shape, which cuBLAS and torch's attention kernels are by default for inference), and a
greedy decision cannot flip between one process and several.

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

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterator, Sequence
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
from hf_soups.evaluation.data import GlueSplit, SplitRule, load_glue_split
from hf_soups.evaluation.metrics import glue_metrics, predictions_from_logits
from hf_soups.evaluation.models import check_head, is_text_to_text
from hf_soups.evaluation.tasks import STSB_T5_VALUES, TaskSpec, get_task, t5_input

DEFAULT_MAX_LENGTH = 512
DEFAULT_BATCH_SIZE = 32  # rows a batch when no batch size is given, on the CPU
TOKEN_BUDGET = 16_384  # padded input tokens a batch when no batch size is given, on an accelerator (T5: ÷ label words)
MAX_ROWS = 1024  # rows a token-budget batch holds at most


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
            "task": self.task,
            "split": self.split,
            "num_examples": self.num_examples,
            "main_metric": self.main_metric,
            "metrics": self.metrics,
            "split_rule": self.split_rule,
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


@dataclass(frozen=True)
class Precision:
    """How a model is scored: the dtype of the weights it runs with, and the autocast dtype (``None``: none)."""

    dtype: torch.dtype = torch.float32
    autocast: torch.dtype | None = None


def scoring_precision(device: torch.device, text_to_text: bool) -> Precision:
    """The precision models are scored in on ``device``: bf16 weights on a GPU with bf16; on a GPU without it, fp32
    weights under fp16 autocast for encoders and plain fp32 for T5 (T5 overflows in fp16); fp32 elsewhere.

    Example:
        >>> scoring_precision(torch.device("cpu"), text_to_text=False)
        Precision(dtype=torch.float32, autocast=None)
    """
    if device.type != "cuda":
        return Precision()
    if torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16)
    return Precision(torch.float32, None if text_to_text else torch.float16)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (``cuda`` and ``cuda:0`` are, when 0 is the current device)."""
    index = torch.cuda.current_device() if "cuda" in (a.type, b.type) and torch.cuda.is_available() else 0
    return a.type == b.type and (index if a.index is None else a.index) == (index if b.index is None else b.index)


def float_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype of a model's first floating-point parameter (``None`` if it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


@contextlib.contextmanager
def scoring_model(model: PreTrainedModel, device: torch.device, dtype: torch.dtype) -> Iterator[PreTrainedModel]:
    """The model on ``device`` with ``dtype`` weights, in eval mode, for a ``with`` block.

    A model already there (a kitchen's scoring model) is used as it is, its train/eval mode restored after;
    otherwise a copy is made on the device in that dtype, tensor by tensor (tied weights stay tied; the original
    is neither moved nor cast), and dropped after the block.
    """
    params = list(model.parameters())
    if all(same_device(p.device, device) for p in params) and float_dtype(model) in (dtype, None):
        was_training = model.training
        try:
            yield model.eval()
        finally:
            model.train(was_training)
        return
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(params, model.buffers()):
        if id(tensor) not in memo:
            data = tensor.detach().to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
            memo[id(tensor)] = torch.nn.Parameter(data, False) if isinstance(tensor, torch.nn.Parameter) else data
    yield copy.deepcopy(model, memo).eval()


def batch_spans(lengths: Sequence[int], batch_size: int | None, token_budget: int = TOKEN_BUDGET) -> list[range]:
    """Cut rows sorted longest first into batches: ``batch_size`` rows each, or (``None``) as many rows as fit
    ``token_budget`` padded tokens (at least one, at most :data:`MAX_ROWS`).

    Example:
        >>> batch_spans([8, 5, 4, 2, 2], None, token_budget=10)
        [range(0, 1), range(1, 3), range(3, 5)]
    """
    spans, start = [], 0
    while start < len(lengths):
        rows = batch_size or max(1, min(MAX_ROWS, token_budget // max(1, lengths[start])))
        spans.append(range(start, min(start + rows, len(lengths))))
        start = spans[-1].stop
    return spans


@dataclass
class Shard:
    """This process's share of a split, collated once: whole batches dealt out round robin.

    Attributes:
        spans: every batch of the split (positions in the split's batch order), whichever process scores it.
        batches: this process's collated batches (``spans[process::processes]``), pinned on a GPU machine.
        process / processes: this process's index and the number of processes.
    """

    spans: list[range]
    batches: list[dict[str, torch.Tensor]]
    process: int = 0
    processes: int = 1

    @classmethod
    def collate(
        cls, spans: list[range], collate: Callable[[range], dict[str, torch.Tensor]], accelerator: Accelerator
    ) -> Shard:
        """Collate this process's batches (``collate(span)`` gives a batch) once, pinned when the device is a GPU."""
        process, processes = accelerator.process_index, accelerator.num_processes
        pin = accelerator.device.type == "cuda"
        batches = [
            {name: tensor.pin_memory() if pin else tensor for name, tensor in collate(span).items()}
            for span in spans[process::processes]
        ]
        return cls(spans, batches, process, processes)

    @property
    def rows(self) -> int:
        return sum(len(span) for span in self.spans)

    def run(
        self,
        model: PreTrainedModel,
        forward: Callable[[PreTrainedModel, dict[str, torch.Tensor]], torch.Tensor],
        device: torch.device,
        width: int,
        autocast: torch.dtype | None = None,
        bar: tqdm | None = None,
    ) -> torch.Tensor:
        """This process's float logits (``width`` wide), left on ``device``, its batches' rows in order."""
        outputs = [torch.empty(0, width, device=device)]
        mixed = torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None)
        with torch.inference_mode(), mixed:
            for batch in self.batches:
                inputs = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
                outputs.append(forward(model, inputs).float())
                if bar is not None:
                    bar.update()
        return torch.cat(outputs)

    def gather(self, accelerator: Accelerator, logits: torch.Tensor) -> torch.Tensor:
        """Every process's logits on the CPU, in the split's batch order: one gather and one copy to the host."""
        if self.processes == 1:
            return logits.cpu()
        counts = [sum(len(span) for span in self.spans[p :: self.processes]) for p in range(self.processes)]
        longest = max(counts)
        padded = torch.nn.functional.pad(logits, (0, 0, 0, longest - len(logits)))
        gathered = accelerator.gather(padded).cpu().view(self.processes, longest, -1)
        full = torch.empty(self.rows, gathered.shape[-1])
        for p in range(self.processes):
            offset = 0
            for span in self.spans[p :: self.processes]:
                full[span.start : span.stop] = gathered[p, offset : offset + len(span)]
                offset += len(span)
        return full


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
    """Run ``model`` over an ``accelerator.prepare``-d ``loader`` and gather every process's outputs
    (``gather_for_metrics``): a model over any prepared dataloader, in fp32 unless ``autocast`` (the GPU check's
    fp32 reference); :class:`GlueScorer` scores from its own collated batches instead.

    Each batch's ``key`` column (row ids, labels) is popped and gathered with the float logits ``forward(model,
    batch)`` returns. The model is moved to ``accelerator.device`` (where it is not already) and run in eval mode
    under ``torch.inference_mode`` (with ``autocast``, bf16/fp16 autocast on GPU); its train/eval mode is restored
    after. The outputs stay on the device until the end.

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
    if not all(same_device(p.device, device) for p in model.parameters()):
        model.to(device)
    model.eval()
    keys, outputs = [], []
    bar = tqdm(loader, desc=desc, leave=False, disable=not (progress and accelerator.is_main_process))
    mixed = torch.autocast(device.type, dtype=dtype, enabled=autocast and device.type == "cuda")
    try:
        with torch.inference_mode(), mixed:
            for batch in bar:
                batch_keys = batch.pop(key)
                logits = forward(model, batch).float()
                batch_keys, logits = accelerator.gather_for_metrics((batch_keys, logits))
                keys.append(batch_keys)
                outputs.append(logits)
    finally:
        model.train(was_training)
    gathered = sum(len(batch) for batch in keys)
    if gathered != rows:
        raise SoupError(f"{desc}: gathered {gathered} outputs for {rows} rows (dataloader_drop_last?)")
    return torch.cat(keys).cpu(), torch.cat(outputs).cpu()


class GlueScorer:
    """A GLUE split, tokenised and collated once, that scores any number of models.

    Args:
        task: a GLUE task name or spec.
        tokenizer: the tokenizer shared by the models to score.
        split: a split name (see :func:`~hf_soups.evaluation.data.split_names`); ``None`` is the validation split;
            or rows already loaded (a :class:`~hf_soups.evaluation.data.GlueSplit` of ``task``, e.g. of a user's
            dataset: :mod:`hf_soups.evaluation.dataset`).
        glue_dir: a local GLUE tsv folder; ``None`` loads ``nyu-mll/glue`` from the Hub.
        batch_size: rows a batch and process; ``None``: 32 on the CPU, up to :data:`TOKEN_BUDGET` padded tokens
            on an accelerator. A T5 batch runs its decoder on the rows times the number of label words (26 for
            STS-B): the token budget is divided by that number; lower an explicit batch size for large T5 models.
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
        split: str | GlueSplit | None = None,
        glue_dir: str | Path | None = None,
        batch_size: int | None = None,
        accelerator: Accelerator | None = None,
        max_length: int | None = None,
        rule: SplitRule | None = None,
        progress: bool = True,
    ) -> None:
        self.task = get_task(task)
        self.data = split if isinstance(split, GlueSplit) else load_glue_split(self.task, split, glue_dir, rule)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.accelerator = accelerator or Accelerator()
        self.max_length = max_length
        self.progress = progress
        self.labels = np.asarray(list(self.data.dataset["label"]))
        self._features: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._largest_ids: dict[tuple[str, int], int] = {}
        self._loaders: dict[tuple[str, int], DataLoader] = {}
        self._shards: dict[tuple[str, int], Shard] = {}
        self._targets: torch.Tensor | None = None

    @property
    def split(self) -> str:
        return self.data.name

    def features(self, kind: str, max_length: int) -> list[dict[str, Any]]:
        """The split tokenised for ``"encoder"`` or ``"text_to_text"`` models, longest first, each row with its
        ``row`` index in the split (tokenised once)."""
        if (kind, max_length) not in self._features:
            texts = FORMATS[kind].texts(self.task, self.data.dataset)
            encoded = self.tokenizer(*texts, truncation=True, max_length=max_length)
            features = [
                {name: values[row] for name, values in encoded.items()} | {"row": row}
                for row in range(self.data.dataset.num_rows)
            ]
            features.sort(key=lambda feature: -len(feature["input_ids"]))
            self._features[kind, max_length] = features
        return self._features[kind, max_length]

    def loader(self, kind: str, max_length: int) -> DataLoader:
        """An ``accelerator.prepare``-d dataloader of the length-sorted rows in batches of ``batch_size`` (32 when
        ``None``), padded per batch, each with a ``row`` tensor of split row indices: for training on the split
        (the learned recipe) and for bare loops over the scorer's batches; :meth:`score` uses :meth:`shard`."""
        if (kind, max_length) not in self._loaders:
            loader = DataLoader(
                self.features(kind, max_length),
                batch_size=self.batch_size or DEFAULT_BATCH_SIZE,
                shuffle=False,
                collate_fn=DataCollatorWithPadding(self.tokenizer),
            )
            self._loaders[kind, max_length] = self.accelerator.prepare(loader)
        return self._loaders[kind, max_length]

    def shard(self, kind: str, max_length: int) -> Shard:
        """This process's batches of the split, collated once (see the module docstring), without ``row``."""
        if (kind, max_length) not in self._shards:
            features = self.features(kind, max_length)
            batch_size = self.batch_size
            if batch_size is None and self.accelerator.device.type == "cpu":
                batch_size = DEFAULT_BATCH_SIZE
            targets = len(self.task.t5_label_words) if kind == "text_to_text" else 1
            spans = batch_spans([len(f["input_ids"]) for f in features], batch_size, TOKEN_BUDGET // targets)
            collator = DataCollatorWithPadding(self.tokenizer)

            def collate(span: range) -> dict[str, torch.Tensor]:
                return collator([{k: v for k, v in features[i].items() if k != "row"} for i in span])

            self._shards[kind, max_length] = Shard.collate(spans, collate, self.accelerator)
        return self._shards[kind, max_length]

    def max_length_for(self, model: PreTrainedModel) -> int:
        """The truncation length used for a model (see ``max_length``)."""
        positions = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
        return self.max_length or min(self.tokenizer.model_max_length, positions, DEFAULT_MAX_LENGTH)

    def _check_token_ids(self, model: PreTrainedModel, kind: str, max_length: int) -> None:
        """Refuse a model whose input embedding has no row for a token id the tokenizer gives on the split.

        Raises:
            SoupError: naming the model, the largest id and the embedding's rows (a tokenizer of another model, or
                tokens added without ``resize_token_embeddings``), instead of an index error inside the forward pass.
        """
        rows = getattr(model.get_input_embeddings(), "num_embeddings", None)
        if (kind, max_length) not in self._largest_ids:
            ids = [max(feature["input_ids"], default=0) for feature in self.features(kind, max_length)]
            if kind == "text_to_text":
                ids.append(int(self._t5_targets().max()))
            self._largest_ids[kind, max_length] = max(ids, default=0)
        largest = self._largest_ids[kind, max_length]
        if rows is not None and largest >= rows:
            name = getattr(model.config, "_name_or_path", "") or type(model).__name__
            raise SoupError(
                f"model {name!r}: its tokenizer gives token id {largest} on {self.task.name} {self.split}, but its "
                f"input embedding has {rows} rows (a tokenizer of another model, or tokens added without "
                "model.resize_token_embeddings)"
            )

    def _t5_targets(self) -> torch.Tensor:
        """The task's label words as T5 targets (with EOS), one row each, padded with -100."""
        if self._targets is None:
            ids = self.tokenizer(text_target=list(self.task.t5_label_words))["input_ids"]
            self._targets = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in ids], True, -100)
        return self._targets

    def score(
        self, model: PreTrainedModel, return_predictions: bool = False, precision: Precision | None = None
    ) -> EvalResult:
        """Score one model on the split.

        The model runs on ``accelerator.device`` in eval mode, in ``precision`` (default
        :func:`scoring_precision`): a model already there in that dtype is used as it is, otherwise a copy is
        scored (see :func:`scoring_model`); its train/eval mode is restored after. Every process must call this;
        each gets the full result.

        Args:
            model: an encoder classifier/regressor whose head fits the task, or a text-to-text model (T5).
            return_predictions: also return predictions, logits and labels (numpy, in the split's row order).
            precision: the weights' dtype and autocast.

        Returns:
            An :class:`EvalResult`.

        Raises:
            SoupError: the model's head does not fit the task, or its embedding has no row for a token id of the
                split.
        """
        check_head(model, self.task)
        kind = "text_to_text" if is_text_to_text(model) else "encoder"
        device = self.accelerator.device
        precision = precision or scoring_precision(device, kind == "text_to_text")
        fmt = FORMATS[kind]
        targets = self._t5_targets().to(device) if kind == "text_to_text" else None
        max_length = self.max_length_for(model)
        self._check_token_ids(model, kind, max_length)
        shard = self.shard(kind, max_length)
        width = len(targets) if targets is not None else self.task.num_labels
        show, desc = self.progress and self.accelerator.is_main_process, f"{self.task.name} {self.split}"
        with (
            scoring_model(model, device, precision.dtype) as scored,
            tqdm(total=len(shard.batches), desc=desc, leave=False, disable=not show) as bar,
        ):
            local = shard.run(
                scored, lambda m, batch: fmt.forward(m, batch, targets), device, width, precision.autocast, bar
            )
        logits = np.empty((len(self.labels), width), dtype=np.float32)
        rows = [feature["row"] for feature in self.features(kind, max_length)]
        logits[rows] = shard.gather(self.accelerator, local).numpy()
        predictions = fmt.predict(self.task, logits)
        result = EvalResult(
            task=self.task.name,
            split=self.split,
            metrics=glue_metrics(self.task, predictions, self.labels),
            main_metric=self.task.main_metric,
            num_examples=len(self.labels),
            split_rule=self.data.rule,
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
    batch_size: int | None = None,
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
        batch_size: examples per batch and process (``None``: see :class:`GlueScorer`).
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
