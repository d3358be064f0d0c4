"""Which kind of GLUE model a checkpoint is, and whether its head fits a task.

Two kinds are scored: encoder classifiers/regressors (``AutoModelForSequenceClassification``, one logit per class)
and text-to-text models (``AutoModelForSeq2SeqLM`` such as T5, scored by the likelihood of each label word).

Example:
    >>> model, tokenizer = load_glue_model("runs/rte-lr2e-5")  # doctest: +SKIP
    >>> check_head(model, "rte")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hf_soups.errors import SoupError
from hf_soups.evaluation.tasks import TaskSpec, get_task

_GENERIC_LABEL = re.compile(r"LABEL_\d+")


def is_text_to_text(model: PreTrainedModel | type[PreTrainedModel], config: PretrainedConfig | None = None) -> bool:
    """True for encoder-decoder language models (T5), scored by label-word likelihood.

    Args:
        model: a model, or a model class with its ``config`` (before the model is built).
    """
    config = config if config is not None else model.config
    return bool(getattr(config, "is_encoder_decoder", False)) and model.can_generate()


def check_head(model: PreTrainedModel, task: str | TaskSpec) -> None:
    """Raise unless an encoder model's classification head fits the task.

    The head must have ``task.num_labels`` outputs (1 for STS-B) and its ``id2label`` must name the task's classes
    in the task's order (case-insensitive); generic names ``LABEL_0``, ``LABEL_1``, ... are accepted. Text-to-text
    models have no head to check.

    Raises:
        SoupError: the number of labels or the label map does not match the task.
    """
    spec = get_task(task)
    if is_text_to_text(model):
        return
    config = model.config
    name = getattr(config, "_name_or_path", "") or type(model).__name__
    if config.num_labels != spec.num_labels:
        raise SoupError(
            f"model {name!r} has a head with {config.num_labels} output(s), task {spec.name!r} needs "
            f"{spec.num_labels} ({', '.join(spec.label_names) or 'regression'})"
        )
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if spec.is_regression or all(_GENERIC_LABEL.fullmatch(label) for label in labels):
        return
    if [label.lower() for label in labels] != list(spec.label_names):
        raise SoupError(
            f"model {name!r} has id2label {dict(enumerate(labels))}, task {spec.name!r} has "
            f"{dict(enumerate(spec.label_names))}: scoring would compare different classes"
        )


def load_glue_model(
    name_or_path: str | Path, revision: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint and its tokenizer as a text-to-text model (T5) or a sequence classifier.

    Args:
        name_or_path: a Hub repo id or a local folder.
        revision: a Hub revision.

    Returns:
        ``(model, tokenizer)``.
    """
    config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    seq2seq = getattr(config, "is_encoder_decoder", False) and any(
        arch.endswith("ForConditionalGeneration") for arch in config.architectures or []
    )
    auto_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForSequenceClassification
    model = auto_class.from_pretrained(name_or_path, revision=revision)
    return model, AutoTokenizer.from_pretrained(name_or_path, revision=revision)
