"""A user's own text-classification or regression dataset, read the way a GLUE task is: the same split names and
held-out parts (``train:heldout``, ``validation:select``, see :mod:`hf_soups.evaluation.data`), scored by
:class:`~hf_soups.evaluation.scoring.GlueScorer` with a metric of :data:`~hf_soups.evaluation.metrics.METRICS`.

The rows come from the Hub (a dataset id and configuration) or from local csv / json / jsonl / parquet files, read
by ``datasets``' own loaders (``load_dataset("csv", data_files=...)``): a data file is the split ``train``; a folder's
files are split by their names as ``datasets`` splits them (``train.csv``; ``validation.csv`` or ``dev.csv``;
``test.csv``); ``train=a.csv,validation=b.csv`` names each split's file. Csv cells are kept as text (``null`` and
``NA`` stay text). Labels are matched to the models' ``id2label``: class names by name (case-insensitive when that
is unambiguous), integers as class ids, numbers for a regressor (a model with one output).

Example:
    >>> data = TextDataset("reviews/", text_columns="text", label_column="stars", metric="f1_macro")  # doctest: +SKIP
    >>> select, report = data.splits(["train:heldout", "validation"], model.config.id2label)  # doctest: +SKIP
    >>> select.rule["rows"], report.dataset.column_names  # doctest: +SKIP
    (500, ['text', 'label', 'idx'])
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets.data_files import DataFilesDict, get_data_patterns
from transformers import PreTrainedModel

from hf_soups.errors import SoupError
from hf_soups.evaluation.data import GlueSplit, SplitRule, part_split, split_names
from hf_soups.evaluation.metrics import METRICS, REGRESSION_METRICS
from hf_soups.evaluation.models import is_text_to_text
from hf_soups.evaluation.scoring import GlueScorer
from hf_soups.evaluation.tasks import TaskSpec, TsvLayout
from hf_soups.options import DatasetOptions

# Data file suffix → the ``datasets`` loader that reads it.
DATA_FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_GENERIC_LABEL = re.compile(r"LABEL_\d+")


@dataclass(frozen=True)
class TextDataset:
    """A text-classification or regression dataset to judge models on, instead of a GLUE task.

    Attributes:
        dataset: a Hub dataset id; a local folder (its files split by name); a local data file (``.csv``,
            ``.json``, ``.jsonl``, ``.parquet``: the split ``train``); or one file per split,
            ``train=a.csv,validation=b.csv``.
        dataset_config: the Hub dataset's configuration (subset) name.
        text_columns: the column(s) the model reads, in the model's input order (two for sentence pairs); a string
            is split at commas (``"sentence1,sentence2"``).
        label_column: the column holding the gold label: a class name or id of the models' ``id2label``, or a
            number for a regressor.
        metric: a metric of :data:`~hf_soups.evaluation.metrics.METRICS` (``accuracy``, ``f1`` (binary),
            ``f1_macro``, ``matthews_correlation``, ``pearson``, ``spearmanr``); default ``accuracy`` for
            classifiers, ``pearson`` for regressors.
    """

    dataset: str
    dataset_config: str | None = DatasetOptions.dataset_config
    text_columns: str | Sequence[str] = DatasetOptions.text_columns
    label_column: str = DatasetOptions.label_column
    metric: str | None = DatasetOptions.metric

    @property
    def columns(self) -> tuple[str, ...]:
        """The text columns, as a tuple."""
        if isinstance(self.text_columns, str):
            return tuple(column.strip() for column in self.text_columns.split(","))
        return tuple(self.text_columns)

    @property
    def name(self) -> str:
        """What the dataset is called: its Hub id, else the local folder's name (a data file's: its stem)."""
        files = self._split_files()
        if files is None:
            return Path(self.dataset).resolve().name if Path(self.dataset).is_dir() else self.dataset
        paths = [Path(path) for paths in files.values() for path in paths]
        return paths[0].stem if len(paths) == 1 else paths[0].resolve().parent.name

    def spec(self, id2label: Mapping[int, str], splits: Sequence[str] = ()) -> TaskSpec:
        """The dataset as a task for models with this ``id2label`` (one entry: a regressor): its text columns, its
        classes (the models', lower-cased as :func:`~hf_soups.evaluation.check_head` compares them), its metric.

        Raises:
            SoupError: the metric is unknown, or does not fit the models (Pearson on classes, binary F1 on three).
        """
        regression = len(id2label) == 1
        metric = self.metric or ("pearson" if regression else "accuracy")
        if metric not in METRICS:
            raise SoupError(f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
        fitting = [name for name in METRICS if (name in REGRESSION_METRICS) == regression]
        if metric not in fitting:
            what = "a regressor (models with one output)" if regression else f"a classifier of {len(id2label)} classes"
            raise SoupError(f"metric {metric!r} does not fit {what}; metrics that do: {', '.join(fitting)}")
        if metric == "f1" and len(id2label) != 2:
            raise SoupError(f"metric 'f1' is binary F1 (of class 1): for {len(id2label)} classes use f1_macro")
        labels = () if regression else tuple(id2label[i].lower() for i in range(len(id2label)))
        return TaskSpec(
            name=self.name,
            folder="",
            text_columns=self.columns,
            label_names=labels,
            metrics=(metric,),
            main_metric=metric,
            splits=tuple(splits),
            tsv=TsvLayout({}, ""),
            t5_prefix="",
            t5_input_keys=self.columns,
        )

    def splits(
        self, names: Sequence[str], id2label: Mapping[int, str], rule: SplitRule | None = None
    ) -> list[GlueSplit]:
        """Load the dataset once and cut the splits ``names`` from it (``BASE`` or ``BASE:PART``, as GLUE splits).

        Each split holds the text columns, ``label`` (class ids of ``id2label``, or float scores for a regressor)
        and ``idx`` (row positions in its base split), in the file's row order.

        Raises:
            SoupError: an unknown or unfitting metric; a missing file, folder or Hub dataset; unreadable data; a
                split, text or label column that is not there; a text cell that is not text; a label the models
                do not know.
        """
        id2label = {int(i): str(label) for i, label in id2label.items()}
        columns = self.columns
        if not all(columns) or self.label_column in columns:
            raise SoupError(
                f"text_columns {','.join(columns)!r}: give the column(s) the model reads, without the label column"
            )
        self.spec(id2label)  # the metric, before any data is read
        loaded = self._load()
        spec = self.spec(id2label, list(loaded))
        valid = split_names(spec)
        missing = [name for name in names if name not in valid]
        if missing:
            raise SoupError(f"dataset {self.name!r} has no split {missing[0]!r}; its splits: {', '.join(valid)}")
        bases: dict[str, datasets.Dataset] = {}
        for name in names:
            base = name.partition(":")[0]
            if base not in bases:
                bases[base] = self._rows(loaded[base], base, id2label)
        return [part_split(spec, name, bases[name.partition(":")[0]], self._source(name), rule) for name in names]

    def scorer(
        self, tokenizer: Any, split: str, model: PreTrainedModel, rule: SplitRule | None = None, **kwargs: Any
    ) -> GlueScorer:
        """A :class:`~hf_soups.evaluation.GlueScorer` of one split for ``model`` (its labels matched to the
        model's ``id2label``; ``kwargs``: the scorer's ``batch_size``, ``accelerator``, ``max_length``,
        ``progress``).

        Raises:
            SoupError: as :meth:`splits`, or the model is not a sequence classifier or regressor
                (:meth:`check_model`).
        """
        self.check_model(model)
        (rows,) = self.splits([split], model.config.id2label, rule)
        return GlueScorer(rows.task, tokenizer, rows, **kwargs)

    def check_model(self, model: PreTrainedModel) -> None:
        """Refuse a text-to-text model (T5): a dataset is scored on a classifier's or regressor's outputs.

        Raises:
            SoupError: naming the dataset and what to do instead.
        """
        if is_text_to_text(model):
            raise SoupError(
                f"dataset {self.name!r}: a dataset is scored on sequence classifiers and regressors, not on "
                "text-to-text models (T5); judge a T5 sweep with SoupCallback and a Seq2SeqTrainer"
            )

    def record(self) -> dict[str, Any]:
        """What ``soup.json`` and the card say of the dataset (local paths left out: ``source`` of each split's
        rule has them)."""
        return {
            "name": self.name,
            "config": self.dataset_config,
            "text_columns": list(self.columns),
            "label_column": self.label_column,
        }

    # -- reading

    def _split_files(self) -> dict[str, list[str]] | None:
        """Local data files by split, or ``None`` for a folder or a Hub id."""
        if "=" in self.dataset:
            files: dict[str, list[str]] = {}
            for item in self.dataset.split(","):
                split, sep, path = (part.strip() for part in item.partition("="))
                if not (sep and split and path):
                    raise SoupError(f"dataset {self.dataset!r}: {item!r} is not SPLIT=FILE")
                files.setdefault(split, []).append(path)
            return files
        if Path(self.dataset).suffix.lower() in DATA_FILE_FORMATS and not Path(self.dataset).is_dir():
            return {"train": [self.dataset]}
        return None

    def _local_files(self) -> dict[str, list[str]] | None:
        """Data files by split for a local dataset (a folder's as ``datasets`` splits them), else ``None``."""
        files = self._split_files()
        if files is None and Path(self.dataset).is_dir():
            patterns = get_data_patterns(self.dataset)
            found = DataFilesDict.from_patterns(patterns, base_path=self.dataset)
            files = {str(split): list(paths) for split, paths in found.items()}
        return files

    def _load(self) -> datasets.DatasetDict:
        files = self._local_files()
        try:
            with _quiet():
                if files is None:
                    return datasets.load_dataset(self.dataset, self.dataset_config)
                return self._load_files(files)
        except SoupError:
            raise
        except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
            where = "no such local file or folder, and the Hub gave none" if files is None else "not readable"
            raise SoupError(f"dataset {self.dataset!r}: {where} ({_first_line(err)})") from None

    def _load_files(self, files: dict[str, list[str]]) -> datasets.DatasetDict:
        formats = set()
        for paths in files.values():
            for path in paths:
                suffix = Path(path).suffix.lower()
                if suffix not in DATA_FILE_FORMATS:
                    raise SoupError(f"dataset file {path!r}: not a {', '.join(DATA_FILE_FORMATS)} file")
                if not Path(path).is_file():
                    raise SoupError(f"dataset file {path!r}: no such file")
                formats.add(DATA_FILE_FORMATS[suffix])
        if len(formats) > 1:
            raise SoupError(f"dataset {self.dataset!r}: files of one format please, not {', '.join(sorted(formats))}")
        builder = formats.pop()
        options = {"keep_default_na": False} if builder == "csv" else {}  # text cells stay text ("null", "NA")
        return datasets.load_dataset(builder, data_files=files, **options)

    def _source(self, split: str) -> str:
        files = self._local_files()
        if files is None:
            return f"hub:{self.dataset}" + (f"/{self.dataset_config}" if self.dataset_config else "")
        return "local:" + ",".join(str(Path(path).resolve()) for path in files[split.partition(":")[0]])

    def _rows(self, rows: datasets.Dataset, split: str, id2label: dict[int, str]) -> datasets.Dataset:
        """The text columns, the labels as the models' ids (or floats) and ``idx``, checked."""
        for column in (*self.columns, self.label_column):
            if column not in rows.column_names:
                raise SoupError(
                    f"dataset {self.name!r} split {split!r}: no column {column!r}; its columns: "
                    f"{', '.join(rows.column_names)}"
                )
        for column in self.columns:
            values = rows[column]
            bad = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
            if bad is not None:
                raise SoupError(
                    f"dataset {self.name!r} split {split!r} row {bad}: column {column!r} holds {values[bad]!r}, "
                    "not text"
                )
        labels = label_ids(
            rows[self.label_column],
            rows.features[self.label_column],
            id2label,
            f"dataset {self.name!r} split {split!r} column {self.label_column!r}",
        )
        label = datasets.Value("float32") if len(id2label) == 1 else datasets.Value("int64")
        features = datasets.Features(
            {**{c: rows.features[c] for c in self.columns}, "label": label, "idx": datasets.Value("int32")}
        )
        return datasets.Dataset.from_dict(
            {**{c: rows[c] for c in self.columns}, "label": labels, "idx": list(range(rows.num_rows))},
            features=features,
        )


def text_dataset(dataset: str | None, **options: Any) -> TextDataset | None:
    """The dataset of :class:`~hf_soups.options.DatasetOptions`' values, or ``None`` when none is named.

    Raises:
        SoupError: a dataset option (``metric``, ``text_columns``, ...) set without a dataset.

    Example:
        >>> text_dataset(None) is None, text_dataset("data.csv", metric="f1").metric
        (True, 'f1')
    """
    stray = [name for name, value in options.items() if value != getattr(DatasetOptions, name)]
    if dataset is None:
        if stray:
            raise SoupError(
                f"{stray[0]}={options[stray[0]]!r} is an option of a dataset (dataset=, --dataset), not of a GLUE task"
            )
        return None
    return TextDataset(dataset, **options)


def label_ids(values: Sequence[Any], feature: Any, id2label: Mapping[int, str], where: str) -> list[int] | list[float]:
    """Labels as the models read them: class ids of ``id2label`` (names matched by name, exactly or else
    case-insensitively when that is unambiguous; integers as ids), or floats for a regressor (one entry).

    Raises:
        SoupError: a missing label, a name or id the models do not know, text for a regressor.

    Example:
        >>> label_ids(["Positive", "negative"], None, {0: "negative", 1: "positive"}, "labels")
        [1, 0]
    """
    if isinstance(feature, datasets.ClassLabel):
        names = [id2label[i] for i in range(len(id2label))]
        if not all(_GENERIC_LABEL.fullmatch(name) for name in names):
            values = [None if value is None or value < 0 else feature.names[value] for value in values]
    missing = next((i for i, value in enumerate(values) if value is None), None)
    if missing is not None:
        raise SoupError(f"{where}: row {missing} has no label")
    if len(id2label) == 1:
        if any(isinstance(value, str | bool) for value in values):
            text = next(value for value in values if isinstance(value, str | bool))
            raise SoupError(f"{where}: label {text!r} is not a number, and the models are regressors (one output)")
        return [float(value) for value in values]
    ids = {name: i for i, name in id2label.items()}
    folded: dict[str, int | None] = {}
    for name, i in ids.items():
        folded[name.lower()] = None if name.lower() in folded else i
    known = ", ".join(f"{i}: {id2label[i]}" for i in sorted(id2label))
    generic = all(_GENERIC_LABEL.fullmatch(name) for name in ids)
    hint = " (their config.json names no classes: give ids, or set id2label and label2id there)" if generic else ""
    converted = []
    for value in values:
        if isinstance(value, str):
            label = ids.get(value, folded.get(value.lower()))
        elif isinstance(value, int) and not isinstance(value, bool):
            label = value if value in id2label else None
        else:
            raise SoupError(f"{where}: label {value!r} is neither a class name nor a class id of the models ({known})")
        if label is None:
            raise SoupError(f"{where}: label {value!r} is not a class of the models ({known}){hint}")
        converted.append(label)
    return converted


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No ``datasets`` progress bars while a dataset loads (a refusal stays one line)."""
    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def _first_line(err: BaseException) -> str:
    """The first line of the error that caused ``err`` (``datasets`` wraps a parser's error in its own)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


__all__ = ["DATA_FILE_FORMATS", "TextDataset", "label_ids", "text_dataset"]
