"""GLUE evaluation: the nine tasks, their data and metrics, and scoring of encoder and T5 models; a dataset of your
own read as a GLUE task is (:class:`~hf_soups.evaluation.dataset.TextDataset`)."""

from hf_soups.evaluation.data import (
    GlueSplit,
    SplitRule,
    heldout_rule,
    hold_out,
    load_glue_split,
    read_glue_tsv,
    rows_digest,
    split_names,
)
from hf_soups.evaluation.dataset import TextDataset
from hf_soups.evaluation.metrics import compute_metrics, glue_metrics, predictions_from_logits
from hf_soups.evaluation.models import check_head, is_text_to_text, load_glue_model
from hf_soups.evaluation.scoring import EvalResult, GlueScorer, evaluate_glue
from hf_soups.evaluation.tasks import GLUE_TASKS, TaskSpec, get_task

__all__ = [
    "GLUE_TASKS",
    "EvalResult",
    "GlueScorer",
    "GlueSplit",
    "SplitRule",
    "TaskSpec",
    "TextDataset",
    "check_head",
    "compute_metrics",
    "evaluate_glue",
    "get_task",
    "glue_metrics",
    "heldout_rule",
    "hold_out",
    "is_text_to_text",
    "load_glue_model",
    "load_glue_split",
    "predictions_from_logits",
    "read_glue_tsv",
    "rows_digest",
    "split_names",
]
