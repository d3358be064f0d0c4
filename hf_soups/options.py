"""Options declared once: typed, frozen dataclasses holding each option's default, help text and check.

The command line builds its flags from them (:func:`add_flags`); the Python API (:func:`~hf_soups.merge.merge_models`,
:func:`~hf_soups.soups.run_recipe`, the ``*_soup`` functions, :class:`~hf_soups.callback.SoupCallback`) takes its
defaults from them, so a default cannot differ between the two. A field's ``metadata`` holds ``help``, optionally
``choices``, ``metavar``, ``short`` (e.g. ``-o``) and ``check`` (a :mod:`hf_soups.validation` check, run as the
flag's ``type=``). A field's flag is ``--`` and its name with ``-`` for ``_``; a ``bool`` field defaulting to ``False``
is a switch; a field without a default is a required flag.

This module imports neither torch nor transformers (``hf-soups --help`` stays fast).

Example:
    >>> MergeOptions.max_shard_size
    '50GB'
    >>> parser = argparse.ArgumentParser()
    >>> add_flags(parser, JudgeOptions)
    >>> parser.parse_args(["--batch-size", "8"]).batch_size
    8
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hf_soups.dtypes import DTYPE_NAMES
from hf_soups.validation import (
    cli_type,
    heldout_fraction,
    non_negative_float,
    non_negative_int,
    output_file,
    output_folder,
    positive_float,
    positive_int,
    shard_size,
    unit_interval,
    weight_list,
)

CHECKPOINT_CHOICES = ("all", "last", "best")
# The recipes of hf_soups.recipes.RECIPES, by name (here too, so `hf-soups --help` needs no torch).
RECIPE_NAMES = ("greedy", "bagged", "uniform", "learned", "stock", "fisher", "regmean")
# When greedy adds a candidate: "strict" when the selection score rises (the authors' code), "ties" when it does not
# drop (the paper's Recipe 1 as printed); by more than --min-gain either way.
GREEDY_RULES = ("strict", "ties")
ADAPTER_OUTPUTS = ("full", "exact", "svd")
GRANULARITIES = ("ingredient", "layer")
FISHER_OVER = ("all", "greedy")


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its default and the flag's ``help`` (plus ``choices``, ``metavar``, ``check``)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class SoupFolderOptions:
    """The soup folder a command writes (``hf-soups merge``, ``soup``, ``cook``): required, ``-o`` for short."""

    output: str = field(
        metadata={"help": "the soup folder to write (must not exist)", "check": output_folder, "short": "-o"}
    )


@dataclass(frozen=True)
class ReportFileOptions:
    """The JSON file a command may also write its result to (``hf-soups evaluate``, ``diagnose``)."""

    output: str | None = option(None, "also write the result as JSON to this file", check=output_file)


@dataclass(frozen=True)
class MergeOptions:
    """How ingredients are averaged and the soup folder written (``hf-soups merge``, :func:`merge_models`)."""

    weights: list[float] | None = option(
        None,
        "one mixing weight per ingredient, comma-separated, normalised to sum 1 (default: uniform)",
        check=weight_list,
        metavar="W1,W2,...",
    )
    dtype: str | None = option(None, "dtype to write (default: the ingredients' dtype)", choices=tuple(DTYPE_NAMES))
    overwrite: bool = option(False, "replace the output folder if it exists")
    allow_single: bool = option(False, "accept a single ingredient (writes a copy)")
    checkpoints: str | None = option(
        None,
        "for Trainer output folders: take all checkpoint-* subfolders, the last, or the best "
        "(default: the folder's own model if it has one, else all checkpoints)",
        choices=CHECKPOINT_CHOICES,
    )
    max_shard_size: str = option("50GB", "shard the output above this size (default 50GB)", check=shard_size)
    threads: int | None = option(
        None,
        "torch threads for the average (default: your OMP_NUM_THREADS or torch.set_num_threads setting, else "
        "1: the average is memory-bound and one thread is fastest beside other jobs; sha256 uses the other cores)",
        check=positive_int,
        metavar="N",
    )
    base: str | None = option(
        None, "base model of the adapters (default: the base_model_name_or_path each adapter's config names)"
    )
    adapter_output: str = option(
        "full",
        "full: the merged model base + Σ wᵢΔWᵢ (default; adapters and full models may be mixed); exact: a "
        "PEFT adapter of rank Σrᵢ with the same weights; svd: a rank --adapter-rank adapter by truncated SVD",
        choices=ADAPTER_OUTPUTS,
    )
    adapter_rank: int | None = option(
        None, "rank of the --adapter-output svd adapter", check=positive_int, metavar="R"
    )


ADAPTER_FLAGS = ("base", "adapter_output", "adapter_rank")


@dataclass(frozen=True)
class JudgeOptions:
    """How a GLUE judge scores models: the two splits, the data and the batch size."""

    select_split: str = option(
        "train:heldout",
        "split the soup is chosen on (default train:heldout, a seeded slice of the train split the "
        "runs must not have trained on, as the authors select; validation:select for half of validation)",
    )
    report_split: str = option("validation", "split the numbers are reported on (default: the whole validation split)")
    heldout_fraction: float = option(
        0.1, "share of the train split in train:heldout, in (0, 0.5] (default 0.1)", check=heldout_fraction
    )
    glue_dir: str | None = option(None, "a local GLUE folder in the original tsv layout (default: the Hub)")
    batch_size: int | None = option(
        None,
        "scoring batch size per process (default: 32 on the CPU; on a GPU, batches of up to 16,384 tokens)",
        check=positive_int,
    )


@dataclass(frozen=True)
class DatasetOptions:
    """A dataset of your own to judge on instead of a GLUE task: which one, which columns, which metric
    (:class:`~hf_soups.evaluation.dataset.TextDataset`; its splits are :class:`JudgeOptions`' ``select_split`` and
    ``report_split``)."""

    dataset: str | None = option(
        None,
        "judge on this dataset instead of a GLUE task: a Hub dataset id, a local folder (files split by name: "
        "train.csv, validation.csv or dev.csv, ...), a .csv/.json/.jsonl/.parquet file (the split train), or "
        "train=FILE,validation=FILE",
        metavar="ID|PATH",
    )
    dataset_config: str | None = option(None, "--dataset: the Hub dataset's configuration (subset)", metavar="NAME")
    text_columns: str = option(
        "text",
        "--dataset: the column(s) the model reads, comma-separated for a pair (default text)",
        metavar="COL[,COL]",
    )
    label_column: str = option(
        "label",
        "--dataset: the gold label's column: class names or ids of the models' id2label, or numbers for a "
        "regressor (default label)",
        metavar="COL",
    )
    metric: str | None = option(
        None,
        "--dataset: the metric to select and report on: accuracy, f1 (binary), f1_macro, "
        "matthews_correlation, pearson, spearmanr (default accuracy; pearson for a regressor)",
        metavar="NAME",
    )


@dataclass(frozen=True)
class CookOptions:
    """What every recipe takes: the logit-ensemble baseline.

    ``ensemble`` is on by default everywhere (``hf-soups soup`` with ``--no-ensemble`` to leave it out,
    :func:`run_recipe`, the ``*_soup`` functions, :class:`~hf_soups.callback.SoupCallback`): it reuses the logits
    the tasting pass already has, so it costs no extra evaluation, and it is the baseline a soup should be read
    against (it is not a soup: N× the inference cost)."""

    ensemble: bool = option(
        True,
        "also score the logit-ensemble baselines: every ingredient's, and the greedy ensemble's (members chosen "
        "by the greedy rule on the ensemble's selection score) (--no-ensemble: leave them out)",
    )


@dataclass(frozen=True)
class GreedyOptions:
    """How greedy (and each bag of bagged greedy) decides that a candidate joins the soup."""

    greedy_rule: str = option(
        "strict",
        "greedy, bagged: a candidate joins when the selection score rises (strict, the authors' code; "
        "default) or does not drop (ties, the paper's Recipe 1 as printed)",
        choices=GREEDY_RULES,
    )
    min_gain: float = option(
        0.0,
        "greedy, bagged: the selection score must change by more than this (strict) or at least this (ties), "
        "in metric units (default 0)",
        check=non_negative_float,
        metavar="X",
    )


@dataclass(frozen=True)
class ResumeOptions:
    resume: bool = option(False, "greedy: continue from <output>.greedy-state")


@dataclass(frozen=True)
class BaggedOptions:
    bags: int = option(
        20,
        "bagged: greedy runs on this many seeded bootstrap resamples of the selection split; an ingredient is "
        "kept when at least half of them keep it (default 20)",
        check=positive_int,
        metavar="B",
    )
    bag_seed: int = option(
        0, "bagged: seed of the bootstrap resamples (default 0)", check=non_negative_int, metavar="N"
    )


@dataclass(frozen=True)
class LearnedOptions:
    granularity: str = option(
        "ingredient", "learned: one mixing weight per ingredient, or per ingredient and tensor", choices=GRANULARITIES
    )
    epochs: int = option(5, "learned: passes over the selection split (default 5)", check=positive_int)
    lr: float = option(0.05, "learned: Adam learning rate of the mixing weights", check=positive_float)


@dataclass(frozen=True)
class StockOptions:
    base: str | None = option(None, "stock: the pretrained model the ingredients were fine-tuned from (θ₀)")
    start_head: str | None = option(None, "stock: a safetensors file of the classifier head every run started from")


@dataclass(frozen=True)
class StatisticsOptions:
    """The rows of the selection split on which fisher and regmean estimate each ingredient's statistic."""

    statistics_rows: int | None = option(
        None,
        "fisher, regmean: estimate each ingredient's Fisher, or its linear layers' input Gram matrices, on this "
        "many rows of the selection split, a seeded choice (default: all of them, one pass); kept in "
        "<output>.<recipe>-state, which recipe.yaml re-cooks from",
        check=positive_int,
        metavar="K",
    )


@dataclass(frozen=True)
class FisherOptions:
    fisher_over: str = option(
        "all",
        "fisher: average all ingredients (default), or the greedy soup's members (chosen with --greedy-rule "
        "and --min-gain)",
        choices=FISHER_OVER,
    )


@dataclass(frozen=True)
class RegMeanOptions:
    regmean_alpha: float = option(
        0.9,
        "regmean: scale of the Gram matrices' off-diagonal entries, in [0, 1] (default 0.9; 1 is RegMean "
        "without the reduction)",
        check=unit_interval,
        metavar="A",
    )


@dataclass(frozen=True)
class CardOptions:
    """What the model card states that no record holds (``hf-soups push``, ``--push-to-hub``, :func:`push_soup`)."""

    license: str | None = option(
        None,
        "the licence the card states, a Hub licence id such as apache-2.0 (default: the base model's, as its "
        "card or config states it, else the one every kept ingredient's card names)",
        metavar="ID",
    )


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: type,
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
) -> None:
    """Add one flag per field of the options dataclass ``options`` (``only`` those named, none of ``exclude``)."""
    for spec in dataclasses.fields(options):
        if (only is not None and spec.name not in only) or spec.name in exclude:
            continue
        flag, meta = "--" + spec.name.replace("_", "-"), spec.metadata
        flags = (meta["short"], flag) if "short" in meta else (flag,)
        if isinstance(spec.default, bool):  # --flag, or --flag / --no-flag when on by default
            action = argparse.BooleanOptionalAction if spec.default else "store_true"
            parser.add_argument(*flags, action=action, default=spec.default, help=meta["help"])
            continue
        kwargs: dict[str, Any] = {"help": meta["help"]}
        if spec.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = spec.default
        if "choices" in meta:
            kwargs["choices"] = list(meta["choices"])
        if "check" in meta:
            kwargs["type"] = cli_type(meta["check"], flag)
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(*flags, **kwargs)


def values(args: argparse.Namespace, options: type, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The parsed values of an options dataclass's flags, by field name."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(options) if only is None or f.name in only}


__all__ = [
    "FISHER_OVER",
    "GREEDY_RULES",
    "RECIPE_NAMES",
    "BaggedOptions",
    "CardOptions",
    "CookOptions",
    "DatasetOptions",
    "FisherOptions",
    "GreedyOptions",
    "JudgeOptions",
    "LearnedOptions",
    "MergeOptions",
    "RegMeanOptions",
    "ReportFileOptions",
    "ResumeOptions",
    "SoupFolderOptions",
    "StatisticsOptions",
    "StockOptions",
    "add_flags",
    "values",
]
