"""The nine GLUE tasks as data: text columns, labels, metrics, splits, tsv layout and T5 format.

Each :class:`TaskSpec` mirrors the Hub dataset ``nyu-mll/glue`` (feature names, label ids, split names) and says how
the same rows are read from the original GLUE tsv download (``<glue_dir>/<TASK>/{train,dev}.tsv``).

Example:
    >>> spec = get_task("rte")
    >>> spec.main_metric, spec.label_names
    ('accuracy', ('entailment', 'not_entailment'))
    >>> spec.t5_label_words
    ('entailment', 'not_entailment')
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_soups.errors import SoupError

# T5 casts STS-B as text-to-text by rounding scores to steps of 0.2 and writing them with one decimal.
STSB_STEP = 0.2
STSB_T5_VALUES: tuple[float, ...] = tuple(round(i * STSB_STEP, 1) for i in range(26))

# Split name → tsv file name in the GLUE download layout.
TSV_FILES = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
}


@dataclass(frozen=True)
class TsvLayout:
    """How one task's rows are read from the GLUE tsv files.

    Attributes:
        columns: feature name → tsv column (a header name, or a 0-based index when ``header`` is False).
        label_column: the tsv column holding the label.
        header: whether the first line is a header.
        labels_as_names: True when the tsv writes labels as names (``entailment``), False for ids/scores.
    """

    columns: dict[str, str | int]
    label_column: str | int
    header: bool = True
    labels_as_names: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task.

    Attributes:
        name: the Hub config name (``"rte"``).
        folder: the task's folder in the GLUE download (``"RTE"``).
        text_columns: the one or two text features, in model input order (Hub names).
        label_names: class names in label-id order (empty for the regression task STS-B).
        metrics: metric names the task reports (see :mod:`hf_soups.evaluation.metrics`).
        main_metric: the metric recipes select on.
        splits: labelled splits (the test splits have hidden labels and are not scored).
        tsv: the local tsv layout.
        t5_prefix: the task word T5 puts before its inputs (``"rte"`` → ``"rte sentence1: … sentence2: …"``).
        t5_input_keys: the field names T5 writes, in T5's order (MNLI writes the hypothesis first).
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str
    splits: tuple[str, ...]
    tsv: TsvLayout
    t5_prefix: str
    t5_input_keys: tuple[str, ...]

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def score_range(self) -> tuple[float, float]:
        """The scores a regression task's labels take (STS-B's similarity: 0 to 5, which T5's values span)."""
        return STSB_T5_VALUES[0], STSB_T5_VALUES[-1]

    @property
    def num_labels(self) -> int:
        """Width of a classifier head: the number of classes, 1 for regression."""
        return len(self.label_names) or 1

    @property
    def validation_split(self) -> str:
        """The default split to score on: ``validation`` (``validation_matched`` for MNLI)."""
        return self.splits[1]

    @property
    def t5_label_words(self) -> tuple[str, ...]:
        """The target strings T5 scores, one per class (STS-B: ``"0.0"``, ``"0.2"``, … ``"5.0"``)."""
        if self.is_regression:
            return tuple(f"{value:.1f}" for value in STSB_T5_VALUES)
        return self.label_names


_PAIR = ("sentence1", "sentence2")
_ACC = ("accuracy",)
_TRAIN_VAL = ("train", "validation")

GLUE_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            "cola",
            "CoLA",
            ("sentence",),
            ("unacceptable", "acceptable"),
            ("matthews_correlation",),
            "matthews_correlation",
            _TRAIN_VAL,
            TsvLayout({"sentence": 3}, label_column=1, header=False),
            "cola",
            ("sentence",),
        ),
        TaskSpec(
            "sst2",
            "SST-2",
            ("sentence",),
            ("negative", "positive"),
            _ACC,
            "accuracy",
            _TRAIN_VAL,
            TsvLayout({"sentence": "sentence"}, label_column="label"),
            "sst2",
            ("sentence",),
        ),
        TaskSpec(
            "mrpc",
            "MRPC",
            _PAIR,
            ("not_equivalent", "equivalent"),
            ("f1", "accuracy"),
            "f1",
            _TRAIN_VAL,
            TsvLayout({"sentence1": "#1 String", "sentence2": "#2 String"}, label_column="Quality"),
            "mrpc",
            _PAIR,
        ),
        TaskSpec(
            "stsb",
            "STS-B",
            _PAIR,
            (),
            ("pearson", "spearmanr"),
            "pearson",
            _TRAIN_VAL,
            TsvLayout({"sentence1": "sentence1", "sentence2": "sentence2"}, label_column="score"),
            "stsb",
            _PAIR,
        ),
        TaskSpec(
            "qqp",
            "QQP",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            ("f1", "accuracy"),
            "f1",
            _TRAIN_VAL,
            TsvLayout({"question1": "question1", "question2": "question2"}, label_column="is_duplicate"),
            "qqp",
            ("question1", "question2"),
        ),
        TaskSpec(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            _ACC,
            "accuracy",
            ("train", "validation_matched", "validation_mismatched"),
            TsvLayout({"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label", labels_as_names=True),
            "mnli",
            ("hypothesis", "premise"),
        ),
        TaskSpec(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
            _ACC,
            "accuracy",
            _TRAIN_VAL,
            TsvLayout({"question": "question", "sentence": "sentence"}, "label", labels_as_names=True),
            "qnli",
            ("question", "sentence"),
        ),
        TaskSpec(
            "rte",
            "RTE",
            _PAIR,
            ("entailment", "not_entailment"),
            _ACC,
            "accuracy",
            _TRAIN_VAL,
            TsvLayout({"sentence1": "sentence1", "sentence2": "sentence2"}, "label", labels_as_names=True),
            "rte",
            _PAIR,
        ),
        TaskSpec(
            "wnli",
            "WNLI",
            _PAIR,
            ("not_entailment", "entailment"),
            _ACC,
            "accuracy",
            _TRAIN_VAL,
            TsvLayout({"sentence1": "sentence1", "sentence2": "sentence2"}, label_column="label"),
            "wnli",
            _PAIR,
        ),
    ]
}


def get_task(task: str | TaskSpec) -> TaskSpec:
    """Look a task up by its Hub name (case-insensitive); a :class:`TaskSpec` passes through.

    Raises:
        SoupError: the name is not a GLUE task; the message lists the valid ones.
    """
    if isinstance(task, TaskSpec):
        return task
    spec = GLUE_TASKS.get(str(task).lower())
    if spec is None:
        raise SoupError(f"unknown GLUE task {task!r}; valid tasks: {', '.join(GLUE_TASKS)}")
    return spec


def t5_input(spec: TaskSpec, row: dict[str, str]) -> str:
    """Write one row the way T5's GLUE preprocessor does.

    Example:
        >>> t5_input(get_task("mnli"), {"premise": "A man sleeps.", "hypothesis": "A person rests."})
        'mnli hypothesis: A person rests. premise: A man sleeps.'
    """
    return " ".join([spec.t5_prefix] + [f"{key}: {row[key]}" for key in spec.t5_input_keys])
