"""GLUE rows from the Hub (``nyu-mll/glue``) or a local GLUE tsv folder, and seeded select/report splits.

Split names are a task's labelled splits (``train``, ``validation``; MNLI: ``validation_matched`` and
``validation_mismatched``), optionally followed by a part, ``BASE:PART``:

* ``validation:select`` / ``validation:report``: a seeded split of ``validation`` into a part a soup is *selected*
  on (``select_fraction`` of the rows) and the rest, where it is *reported*;
* ``train:heldout`` / ``train:rest``: a seeded held-out slice of ``train`` (``heldout_fraction`` of the rows) and
  the rows to fine-tune on.

Any part works on any base split. Rows keep their original order inside a part. :attr:`GlueSplit.rule` records
everything needed to rebuild the split.

Example:
    >>> split = load_glue_split("rte", "validation:select", glue_dir="glue_data")  # doctest: +SKIP
    >>> split.dataset.num_rows, split.rule["seed"]  # doctest: +SKIP
    (138, 0)
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from hf_soups.errors import SoupError
from hf_soups.evaluation.tasks import TSV_FILES, TaskSpec, get_task
from hf_soups.validation import heldout_fraction

HUB_DATASET = "nyu-mll/glue"
SPLIT_METHOD = (
    "perm = numpy.random.default_rng(seed).permutation(base_rows); k = floor(fraction * base_rows); "
    "select/heldout = sorted(perm[:k]), report/rest = sorted(perm[k:])"
)

# Part name → (the SplitRule field holding its fraction, whether it is the first `fraction` of the permutation).
PARTS: dict[str, tuple[str, bool]] = {
    "select": ("select_fraction", True),
    "report": ("select_fraction", False),
    "heldout": ("heldout_fraction", True),
    "rest": ("heldout_fraction", False),
}


@dataclass(frozen=True)
class SplitRule:
    """How ``BASE:PART`` splits are drawn.

    Attributes:
        seed: seed of the row permutation.
        select_fraction: share of the base split in ``:select`` (the rest is ``:report``).
        heldout_fraction: share of the base split in ``:heldout`` (the rest is ``:rest``).
    """

    seed: int = 0
    select_fraction: float = 0.5
    heldout_fraction: float = 0.1

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SplitRule:
        """The rule stored in :attr:`GlueSplit.rule` (extra keys such as ``task`` are ignored)."""
        return cls(
            **{name: record[name] for name in ("seed", "select_fraction", "heldout_fraction") if name in record}
        )


@dataclass
class GlueSplit:
    """The rows of one split, with the Hub's features (text columns, ``label``, ``idx``) in the Hub's row order.

    Attributes:
        task: the task spec.
        name: the split name asked for (``"validation:select"``).
        dataset: the rows.
        rule: what reproduces the rows: task, split, base split, part, seed, fraction, source, row counts.
    """

    task: TaskSpec
    name: str
    dataset: datasets.Dataset
    rule: dict[str, Any]


def split_names(task: str | TaskSpec) -> list[str]:
    """Every split name a task accepts.

    Example:
        >>> split_names("rte")[:4]
        ['train', 'validation', 'train:select', 'train:report']
    """
    spec = get_task(task)
    return list(spec.splits) + [f"{base}:{part}" for base in spec.splits for part in PARTS]


def glue_features(task: str | TaskSpec) -> datasets.Features:
    """The Hub's features for a task: its text columns, ``label`` (ClassLabel, or float32 for STS-B), ``idx``."""
    spec = get_task(task)
    label = datasets.Value("float32") if spec.is_regression else datasets.ClassLabel(names=list(spec.label_names))
    return datasets.Features(
        {
            **{column: datasets.Value("string") for column in spec.text_columns},
            "label": label,
            "idx": datasets.Value("int32"),
        }
    )


def read_glue_tsv(glue_dir: str | Path, task: str | TaskSpec, split: str) -> datasets.Dataset:
    """Read one split of the original GLUE tsv download into the Hub's features and row order.

    Files are read with tab separators and no quote handling (GLUE text holds bare ``"``), as UTF-8 after an
    optional byte-order mark (MRPC's header has one), keeping every string as text (``"null"`` stays ``"null"``).

    Args:
        glue_dir: the folder holding ``CoLA/``, ``SST-2/``, ``MRPC/``, ``STS-B/``, ``QQP/``, ``MNLI/``, ...
        task: the task.
        split: a labelled split of the task (``train``, ``validation``, MNLI's ``validation_matched``, ...).

    Raises:
        SoupError: the file is missing or not UTF-8, a line has the wrong number of fields, a column or label is
            unknown.
    """
    spec = get_task(task)
    layout = spec.tsv
    path = Path(glue_dir) / spec.folder / TSV_FILES[split]
    if not path.is_file():
        raise SoupError(
            f"GLUE folder {str(glue_dir)!r}: missing {spec.folder}/{TSV_FILES[split]} (task {spec.name!r})"
        )
    reader = csv.reader(io.StringIO(_utf8_text(path), newline=None), delimiter="\t", quoting=csv.QUOTE_NONE)
    lines = [(reader.line_num, row) for row in reader]
    wanted = {**layout.columns, "label": layout.label_column}
    if layout.header:
        if not lines:
            raise SoupError(f"{path}: empty file, expected a header line")
        header = lines.pop(0)[1]
        missing = [str(name) for name in wanted.values() if name not in header]
        if missing:
            raise SoupError(f"{path} line 1: header lacks column(s) {', '.join(missing)}; found {header}")
        positions = {feature: header.index(str(name)) for feature, name in wanted.items()}
        width = len(header)
    else:
        positions = {feature: int(index) for feature, index in wanted.items()}
        width = len(lines[0][1]) if lines else 0
    columns: dict[str, list[Any]] = {feature: [] for feature in wanted}
    for line, row in lines:
        if len(row) != width or len(row) <= max(positions.values()):
            raise SoupError(f"{path} line {line}: expected {width} tab-separated fields, found {len(row)}")
        for feature, position in positions.items():
            columns[feature].append(row[position])
        columns["label"][-1] = _parse_label(spec, columns["label"][-1], path, line)
    columns["idx"] = list(range(len(lines)))
    return datasets.Dataset.from_dict(columns, features=glue_features(spec))


def _utf8_text(path: Path) -> str:
    """A tsv file's text (its UTF-8 byte-order mark left out).

    Raises:
        SoupError: a byte that is not UTF-8, naming the line and byte.
    """
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise SoupError(
            f"{path} line {line}: byte {raw[err.start]:#04x} is not UTF-8 text; GLUE tsv files are UTF-8 (re-save "
            "it as UTF-8)"
        ) from None


def _parse_label(spec: TaskSpec, value: str, path: Path, line: int) -> float | int:
    if spec.is_regression:
        low, high = spec.score_range
        try:
            score = float(value)
        except ValueError:
            score = float("nan")
        if not low <= score <= high:  # NaN too
            raise SoupError(f"{path} line {line}: score {value!r} is not a number from {low:g} to {high:g}")
        return score
    try:
        label = spec.label_names.index(value) if spec.tsv.labels_as_names else int(value)
    except ValueError:
        label = -1
    if not 0 <= label < spec.num_labels:
        expected = spec.label_names if spec.tsv.labels_as_names else range(spec.num_labels)
        raise SoupError(f"{path} line {line}: label {value!r} is not one of {', '.join(map(str, expected))}")
    return label


def split_rows(num_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split rule (:data:`SPLIT_METHOD`): a seeded permutation of ``num_rows`` rows cut after ``floor(fraction *
    num_rows)``; both parts keep the original row order.

    Example:
        >>> [part.tolist() for part in split_rows(5, 0.4, seed=0)]
        [[2, 4], [0, 1, 3]]
    """
    order = np.random.default_rng(seed).permutation(num_rows)
    cut = int(np.floor(fraction * num_rows))
    return np.sort(order[:cut]), np.sort(order[cut:])


def rows_digest(ids: Iterable[int]) -> str:
    """sha256 of row ids written ``"3,17,42"``: names a set of rows (a held-out slice) without listing it.

    Example:
        >>> rows_digest([3, 17, 42])[:12]
        '31771f390aca'
    """
    return hashlib.sha256(",".join(str(int(i)) for i in ids).encode()).hexdigest()


def content_digest(dataset: datasets.Dataset, columns: Sequence[str]) -> str:
    """sha256 of what the rows hold in ``columns``, row by row in order (one JSON list per row): rows reordered,
    edited or relabelled give another digest, where :func:`rows_digest` names positions only.

    Raises:
        SoupError: a column the dataset lacks.

    Example:
        >>> rows = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
        >>> content_digest(rows, ["text", "label"]) == content_digest(rows.select([1, 0]), ["text", "label"])
        False
    """
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise SoupError(
            f"the held-out rows lack the column {missing[0]!r} their rule records (they have "
            f"{', '.join(dataset.column_names)})"
        )
    plain = dataset.with_format(None)
    hasher = hashlib.sha256()
    for row in zip(*(plain[column] for column in columns), strict=True):
        hasher.update(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
    return hasher.hexdigest()


# Columns that hold a row's label, not what the model reads.
LABEL_COLUMNS = ("label", "labels", "label_ids")


def input_keys(dataset: datasets.Dataset) -> list[tuple[Any, ...]]:
    """What each row gives the model to read, to tell rows apart by content whatever their position or label: its
    ``input_ids`` less padding (the positions ``attention_mask`` masks), else its values in every column but ``idx``
    and the label.

    Example:
        >>> input_keys(datasets.Dataset.from_dict({"input_ids": [[2, 7, 0]], "attention_mask": [[1, 1, 0]]}))
        [(2, 7)]
    """
    plain = dataset.with_format(None)
    if "input_ids" in dataset.column_names:
        ids = plain["input_ids"]
        if "attention_mask" not in dataset.column_names:
            return [tuple(row) for row in ids]
        return [
            tuple(i for i, kept in zip(row, mask, strict=True) if kept)
            for row, mask in zip(ids, plain["attention_mask"], strict=True)
        ]
    columns = [column for column in dataset.column_names if column not in ("idx", *LABEL_COLUMNS)]
    return [
        tuple(json.dumps(value, default=str) for value in row)
        for row in zip(*(plain[column] for column in columns), strict=True)
    ]


TOKENIZE_ROWS = 10_000  # rows tokenized at once by trained_heldout_rows


def trained_heldout_rows(
    train: datasets.Dataset, heldout: GlueSplit, tokenizer: Any, glue_dir: str | Path | None = None
) -> int:
    """How many rows of a tokenized training set read like a row of a held-out GLUE part, compared by content.

    Each row of the held-out part's base split is tokenized the way GLUE rows are tokenized for training,
    ``tokenizer(*text_columns, truncation=True, max_length=L)``, with ``L`` the longest training row: a row trained
    on is its tokenization at the run's own max length, and rows longer than ``L`` were cut at ``L``. Labels are
    not compared (a relabelled copy is still a held-out row). Held-out rows that read like a row outside the part
    are left out: GLUE holds duplicates, and training on one is training on a row of the rest. Rows tokenized
    another way (a T5 prompt, another truncation strategy for rows that were cut) are not recognised.

    Args:
        train: the training rows (``input_ids``, padding masked by ``attention_mask``), e.g. the Trainer's.
        heldout: the held-out part (``train:heldout``).
        tokenizer: the tokenizer the training rows were made with.
        glue_dir: where the part was loaded from (``None``: the Hub).
    """
    trained = input_keys(train)
    if not trained:
        return 0
    base = load_glue_split(heldout.task, heldout.rule["base"], glue_dir).dataset
    texts = [list(base[column]) for column in heldout.task.text_columns]
    longest, encoded = max(map(len, trained)), []
    for start in range(0, base.num_rows, TOKENIZE_ROWS):  # in parts: MNLI's train split holds 393k pairs
        part = [column[start : start + TOKENIZE_ROWS] for column in texts]
        encoded += tokenizer(*part, truncation=True, max_length=longest)["input_ids"]
    held = set(heldout.dataset["idx"])
    inside, outside = set(), set()
    for ids, idx in zip(encoded, base["idx"], strict=True):
        (inside if idx in held else outside).add(tuple(ids))
    only_held = inside - outside
    return sum(key in only_held for key in trained)


def heldout_rule(task: str | TaskSpec, glue_dir: str | Path | None = None, rule: SplitRule | None = None) -> dict:
    """What identifies the held-out slice of a task's train split (``train:heldout``) that the runs must not train
    on and the soup is selected on: task, split, seed, fraction, row count, :func:`rows_digest` of its row ids and
    :func:`content_digest` of its text and label columns (``columns``). The pantry records it and refuses runs
    trained under another rule, or on rows that changed since.

    Example:
        >>> heldout_rule("mrpc", glue_dir="glue_data")["rows"]  # doctest: +SKIP
        366
    """
    return heldout_record(load_glue_split(task, "train:heldout", glue_dir, rule))


def heldout_record(split: GlueSplit) -> dict[str, Any]:
    """The held-out rule of a loaded part split (what :func:`heldout_rule` returns for ``train:heldout``)."""
    columns = [*split.task.text_columns, "label"]
    return {key: split.rule[key] for key in HELDOUT_KEYS} | {
        "columns": columns,
        "content": content_digest(split.dataset, columns),
    }


# What a held-out rule records from its split's rule (:func:`heldout_record` adds ``columns`` and ``content``).
HELDOUT_KEYS = ("task", "split", "seed", "fraction", "rows", "digest")


def hold_out(
    dataset: datasets.Dataset, fraction: float = 0.1, seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset, dict[str, Any]]:
    """Hold out a seeded slice of your own training dataset to select a soup on, by the rule of ``train:heldout``.

    The rows to train on are the rest less every row that reads like a held-out row (:func:`input_keys`: a
    duplicate), so that training on them trains on no held-out row; ``SoupCallback`` checks that by content.

    Returns:
        The rows to train on, the held-out rows (``SoupCallback(select_dataset=...)``) and the held-out rule
        (``SoupCallback(heldout=...)``: seed, fraction, row count, :func:`rows_digest` of the held-out rows' ``idx``
        column, or of their positions when there is none, and :func:`content_digest` of their ``columns``, every
        column but ``idx``).

    Raises:
        SoupError: a fraction outside (0, 0.5] (naming ``heldout_fraction``), or a held-out slice with no rows.

    Example:
        >>> rest, heldout, rule = hold_out(datasets.Dataset.from_dict({"x": list(range(10))}), 0.2)
        >>> rest.num_rows, heldout.num_rows, rule["rows"]
        (8, 2, 2)
    """
    fraction = heldout_fraction(fraction, "heldout_fraction")
    held, kept = split_rows(dataset.num_rows, fraction, seed)
    if len(held) == 0:
        raise SoupError(f"heldout_fraction={fraction} of {dataset.num_rows} rows holds out no row")
    keys = input_keys(dataset)
    held_keys = {keys[i] for i in held}
    rows = dataset.select(held)
    ids = rows["idx"] if "idx" in dataset.column_names else held
    columns = [column for column in dataset.column_names if column != "idx"]
    rule = {
        "task": None,
        "split": "train:heldout",
        "seed": seed,
        "fraction": fraction,
        "rows": len(held),
        "digest": rows_digest(ids),
        "columns": columns,
        "content": content_digest(rows, columns),
    }
    return dataset.select([i for i in kept if keys[i] not in held_keys]), rows, rule


def check_splits_apart(select_split: str, report_split: str) -> None:
    """Refuse a selection split that shares rows with the report split: they must be different base splits or the
    two parts of one (``validation:select`` / ``validation:report``, ``train:heldout`` / ``train:rest``).

    Raises:
        SoupError: naming both splits.

    Example:
        >>> check_splits_apart("train:heldout", "validation")
        >>> check_splits_apart("validation:select", "validation")
        Traceback (most recent call last):
        ...
        hf_soups.errors.SoupError: select_split 'validation:select' overlaps report_split 'validation': ...
    """
    (select_base, _, select_part), (report_base, _, report_part) = (
        split.partition(":") for split in (select_split, report_split)
    )
    apart = select_base != report_base or (
        select_part in PARTS
        and report_part in PARTS
        and select_part != report_part
        and PARTS[select_part][0] == PARTS[report_part][0]
    )
    if not apart:
        raise SoupError(
            f"select_split {select_split!r} overlaps report_split {report_split!r}: the reported numbers would not be "
            "held out; select on train:heldout or validation:select and report on validation or validation:report"
        )


def load_glue_split(
    task: str | TaskSpec, split: str | None = None, glue_dir: str | Path | None = None, rule: SplitRule | None = None
) -> GlueSplit:
    """Load the rows of a split, from a local GLUE folder when ``glue_dir`` is given, else from the Hub.

    Args:
        task: a GLUE task name or spec.
        split: a name from :func:`split_names`; ``None`` is the task's validation split.
        glue_dir: a folder in the GLUE tsv layout; ``None`` loads ``nyu-mll/glue`` with :func:`datasets.load_dataset`.
        rule: seed and fractions for ``BASE:PART`` splits (default :class:`SplitRule`).

    Returns:
        The rows and the rule that reproduces them.

    Raises:
        SoupError: unknown split (the message lists the valid ones), an empty split, unreadable data.

    Example:
        >>> rule = SplitRule(seed=1)
        >>> split = load_glue_split("mrpc", "train:heldout", glue_dir="glue_data", rule=rule)  # doctest: +SKIP
        >>> split.rule["rows"]  # doctest: +SKIP
        366
    """
    spec = get_task(task)
    split = split or spec.validation_split
    if split not in split_names(spec):
        valid = ", ".join(split_names(spec))
        raise SoupError(f"unknown split {split!r} for task {spec.name!r}; valid splits: {valid}")
    base = split.partition(":")[0]
    if glue_dir is not None:
        dataset, source = read_glue_tsv(glue_dir, spec, base), f"local:{Path(glue_dir).resolve()}"
    else:
        dataset, source = _load_from_hub(spec, base), f"hub:{HUB_DATASET}"
    return part_split(spec, split, dataset, source, rule)


def part_split(
    spec: TaskSpec, split: str, base_rows: datasets.Dataset, source: str, rule: SplitRule | None = None
) -> GlueSplit:
    """The rows of ``split`` (a name from :func:`split_names`: ``BASE`` or ``BASE:PART``) cut from the rows of its
    base split, and the rule that reproduces them: what :func:`load_glue_split` returns once it has read the base
    split, and what a user's own dataset is split by (:mod:`hf_soups.evaluation.dataset`).

    Args:
        spec: the task (or the task a user's dataset is read as).
        split: the split's name.
        base_rows: every row of the base split, with an ``idx`` column of row ids.
        source: where the rows were read (``"hub:nyu-mll/glue"``, ``"local:/data/glue"``).
        rule: seed and fractions for ``BASE:PART`` splits (default :class:`SplitRule`).

    Raises:
        SoupError: a fraction out of range, or a split with no rows.
    """
    rule = rule or SplitRule()
    base, _, part = split.partition(":")
    dataset = base_rows
    record: dict[str, Any] = {
        "task": spec.name,
        "split": split,
        "base": base,
        "source": source,
        "base_rows": dataset.num_rows,
    }
    if part:
        fraction_field, first = PARTS[part]
        fraction = getattr(rule, fraction_field)
        if fraction_field == "heldout_fraction":
            heldout_fraction(fraction, fraction_field)
        elif not 0.0 < fraction < 1.0:
            raise SoupError(f"split rule: {fraction_field}={fraction} must be strictly between 0 and 1")
        head, tail = split_rows(dataset.num_rows, fraction, rule.seed)
        dataset = dataset.select(head if first else tail)
        record.update(part=part, fraction=fraction, **asdict(rule), method=SPLIT_METHOD)
    if dataset.num_rows == 0:
        raise SoupError(f"split {split!r} of task {spec.name!r} ({source}) has no rows")
    record.update(rows=dataset.num_rows, digest=rows_digest(dataset["idx"]))
    return GlueSplit(task=spec, name=split, dataset=dataset, rule=record)


def _load_from_hub(spec: TaskSpec, split: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(HUB_DATASET, spec.name, split=split)
    except OSError as err:
        raise SoupError(
            f"could not load {HUB_DATASET} ({spec.name}, {split}) from the Hub: {err}; pass a local GLUE folder "
            "with glue_dir= (CLI: --glue-dir)"
        ) from err
