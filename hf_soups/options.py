"""Options declared once: typed, frozen dataclasses holding each option's default, help text and check.

The command line builds its flags from them (:func:`add_flags`); the Python API (:func:`~hf_soups.merge.merge_models`,
:func:`~hf_soups.soups.run_recipe`, the ``*_soup`` functions, :class:`~hf_soups.callback.SoupCallback`) takes its
defaults from them, so a default cannot differ between the two. A field's ``metadata`` holds ``help``, optionally
``choices``, ``metavar``, ``short`` (e.g. ``-o``) and ``check`` (a :mod:`hf_soups.validation` check, run as the
flag's ``type=``). A field's flag is ``--`` and its name with ``-`` for ``_``; a ``bool`` field defaulting to ``False``
is a switch; a field without a default is a required flag.

The options a front takes as objects (:class:`CollectOptions`, :class:`CookOptions`, :class:`JudgeOptions`,
:class:`DatasetOptions`, :class:`PublishOptions`) check their values when they are built (``__post_init__``: each
field's ``check`` and ``choices``), so a bad value is one :class:`~hf_soups.errors.SoupError` naming the argument,
from the command line and from Python alike. A field marked ``callback_only`` (:func:`callback_option`: a dataset
object, a Hub token, when to cook) has no ``hf-soups`` flag; a script may still add it by naming it in ``only``.

This module imports neither torch nor transformers (``hf-soups --help`` stays fast).

Example:
    >>> MergeOptions.max_shard_size
    '50GB'
    >>> parser = argparse.ArgumentParser()
    >>> add_flags(parser, JudgeOptions)
    >>> parser.parse_args(["--batch-size", "8"]).batch_size
    8
    >>> JudgeOptions(task="rte", batch_size="8").batch_size
    8
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hf_soups.dtypes import DTYPE_NAMES
from hf_soups.errors import SoupError
from hf_soups.validation import (
    cli_type,
    ema_decays,
    heldout_fraction,
    non_negative_float,
    non_negative_int,
    open_unit_interval,
    output_file,
    output_folder,
    positive_float,
    positive_int,
    shard_size,
    sweep_size,
    unit_interval,
    weight_list,
)

T = TypeVar("T")
CHECKPOINT_CHOICES = ("all", "last", "best")
# The recipes of hf_soups.recipes.RECIPES, by name (here too, so `hf-soups --help` needs no torch).
RECIPE_NAMES = ("greedy", "bagged", "uniform", "learned", "stock", "fisher", "regmean")
# When greedy adds a candidate: "strict" when the selection score rises (the authors' code), "ties" when it does not
# drop (the paper's Recipe 1 as printed); by more than --min-gain either way.
GREEDY_RULES = ("strict", "ties")
ADAPTER_OUTPUTS = ("full", "exact", "svd")
GRANULARITIES = ("ingredient", "layer")
FISHER_OVER = ("all", "greedy", "ensemble")


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its default and the flag's ``help`` (plus ``choices``, ``metavar``, ``check``)."""
    return field(default=default, metadata={"help": help, **metadata})


def callback_option(default: Any, help: str, **metadata: Any) -> Any:
    """An :func:`option` of the Python fronts only (:class:`~hf_soups.callback.SoupCallback`): no ``hf-soups``
    flag."""
    return option(default, help, callback_only=True, **metadata)


class Options:
    """Base of the options a front builds as an object: each field's ``check`` and ``choices`` run when it is built.

    Raises:
        SoupError: naming the field, e.g. ``batch_size: must be a whole number ≥ 1, got 0``.
    """

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):  # type: ignore[arg-type]
            value, meta = getattr(self, spec.name), spec.metadata
            if value is None:
                continue
            if "check" in meta:
                value = meta["check"](value, spec.name)
                object.__setattr__(self, spec.name, value)  # the parsed value: "8" → 8, [0.9] → (0.9,)
            if "choices" in meta and value not in meta["choices"]:
                raise SoupError(
                    f"{spec.name}: unknown value {value!r}; choose one of {', '.join(map(repr, meta['choices']))}"
                )


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
class JudgeOptions(Options):
    """How a soup is judged: a GLUE task with its two splits, its data and the batch size; in the callback also
    the Trainer's ``eval_dataset`` (``select_dataset``, ``heldout``, ``seed``, ``select_fraction``).

    Example:
        >>> JudgeOptions(task="rte", select_split="validation:select", report_split="validation:report").task
        'rte'
    """

    task: str | None = option(None, "GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
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
    select_dataset: Any = callback_option(
        None,
        "without a task: rows your training data leaves out, in the eval dataset's format, to select on (the soup "
        "is reported on the whole eval_dataset); no run may train on a row that reads like one of them",
    )
    heldout: dict[str, Any] | None = callback_option(
        None,
        "the held-out rule hf_soups.evaluation.hold_out returns with select_dataset: recorded by every entry and "
        "checked when cooking",
    )
    seed: int = callback_option(
        0,
        "without select_dataset: seed of the split of eval_dataset into selection and report parts",
        check=non_negative_int,
    )
    select_fraction: float = callback_option(
        0.5,
        "without select_dataset: the share of eval_dataset the soup is selected on, in (0, 1)",
        check=open_unit_interval,
    )

    def kitchen_options(self) -> dict[str, Any]:
        """The options a GLUE kitchen takes (:func:`~hf_soups.recipes.make_kitchen`): the fields with a flag."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("callback_only")}


@dataclass(frozen=True)
class DatasetOptions(Options):
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
class CookOptions(Options):
    """Which soup is cooked: the recipe and the logit-ensemble baseline; in the callback also from which pantry
    entries and when.

    ``ensemble`` is on by default everywhere (``hf-soups soup`` with ``--no-ensemble`` to leave it out,
    :func:`run_recipe`, the ``*_soup`` functions, :class:`~hf_soups.callback.SoupCallback`): it reuses the logits
    the tasting pass already has, so it costs no extra evaluation, and it is the baseline a soup should be read
    against (it is not a soup: N× the inference cost).

    Example:
        >>> CookOptions(recipe="bagged", cook_on_end=True, sweep_size=4).sweep_size
        4
    """

    recipe: str = option("greedy", "the recipe (default greedy)", choices=RECIPE_NAMES)
    ensemble: bool = option(
        True,
        "also score the logit-ensemble baselines: every ingredient's, and the greedy ensemble's (members chosen "
        "by the greedy rule on the ensemble's selection score) (--no-ensemble: leave them out)",
    )
    entries: str | None = callback_option(
        None,
        "which pantry entries to cook: final, all (every checkpoint), last:K, average:K (each run's last K "
        "checkpoints averaged, then the recipe across runs), ema:DECAY (each run's EMA), or several joined by + "
        "(final+ema:0.999); default: all with checkpoints, else final",
    )
    cook_on_end: bool = callback_option(
        False,
        "cook at the end of a run once the pantry holds sweep_size final models (without sweep_size: at the end "
        "of every run from the second on)",
    )
    sweep_size: int | None = callback_option(
        None, "with cook_on_end: the number of runs of the sweep, a whole number ≥ 2", check=sweep_size
    )


@dataclass(frozen=True)
class CollectOptions(Options):
    """What every run of a sweep adds to the pantry (:class:`~hf_soups.callback.SoupCallback`).

    Example:
        >>> CollectOptions(pin_head="probe", ema=[0.999]).ema
        (0.999,)
    """

    checkpoints: bool = callback_option(
        False,
        "also add each checkpoint-* the Trainer saves (its save_strategy), by hard links to its files, not only "
        "each run's final model",
    )
    pin_head: bool | str = callback_option(
        False,
        "give every run the same starting classifier head: True (the first run's random head) or 'probe' (a "
        "linear probe fitted on the frozen model's features first); needed when runs create their models under "
        "different seeds",
        choices=(False, True, "probe"),
    )
    ema: tuple[float, ...] = callback_option(
        (),
        "decays, e.g. (0.99, 0.999): keep an fp32 EMA of every run's trainable weights per decay, added beside "
        "each final model and checkpoint",
        check=ema_decays,
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
        "ensemble",
        "fisher: average the greedy ensemble's members (default: the runs whose outputs the soup stands in for; "
        "best on the GLUE re-run), the greedy soup's members (both chosen with --greedy-rule and --min-gain), "
        "or all ingredients",
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
class CardOptions(Options):
    """What the model card states that no record holds (``hf-soups push``, ``--push-to-hub``, :func:`push_soup`)."""

    license: str | None = option(
        None,
        "the licence the card states, a Hub licence id such as apache-2.0 (default: the base model's, as its "
        "card or config states it, else the one every kept ingredient's card names)",
        metavar="ID",
    )


@dataclass(frozen=True)
class PushOptions(CardOptions):
    """Where a command pushes the soup it writes (``hf-soups merge``, ``soup``, ``push``), with the card's
    :class:`CardOptions`.

    Example:
        >>> PushOptions(push_to_hub="me/minilm-rte-soup", private=True).license is None
        True
    """

    push_to_hub: str | None = option(None, "push the soup to this Hub repo when done", metavar="REPO_ID")
    private: bool = option(False, "create the repo private when the push creates it")
    token: str | None = option(
        None,
        "Hub token, to read private ingredients and to push (default: HF_TOKEN, then `hf auth login`; prefer those: "
        "a token on the command line shows in the process list)",
    )


@dataclass(frozen=True)
class PublishOptions(CardOptions):
    """Where the callback's soup goes: its folder and, when pushed, its Hub repo (the card's :class:`CardOptions`
    too). Each Hub setting left ``None`` is the Trainer's.

    Example:
        >>> PublishOptions(output_dir="sweep/soup", push_to_hub=True, license="apache-2.0").hub_model_id is None
        True
    """

    output_dir: str | Path | None = callback_option(
        None, "the soup folder (default: soup beside the pantry, <pantry>/../soup)"
    )
    push_to_hub: bool | None = callback_option(None, "push the soup (default: the Trainer's push_to_hub)")
    hub_model_id: str | None = callback_option(
        None, "the soup's repo (default: the Trainer's hub_model_id, or output folder name, + -soup)"
    )
    hub_token: str | None = callback_option(None, "the Hub token (default: the Trainer's)")
    hub_private_repo: bool | None = callback_option(
        None, "create the soup's repo private (default: the Trainer's hub_private_repo)"
    )


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: type,
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
) -> None:
    """Add one flag per field of the options dataclass ``options`` (``only`` those named, none of ``exclude``;
    a ``callback_only`` field only when named in ``only``). A field without a default, or named in ``required``,
    is a required flag."""
    for spec in _fields(options, only):
        if spec.name in exclude:
            continue
        flag, meta = "--" + spec.name.replace("_", "-"), spec.metadata
        flags = (meta["short"], flag) if "short" in meta else (flag,)
        if isinstance(spec.default, bool):  # --flag, or --flag / --no-flag when on by default
            action = argparse.BooleanOptionalAction if spec.default else "store_true"
            parser.add_argument(*flags, action=action, default=spec.default, help=meta["help"])
            continue
        kwargs: dict[str, Any] = {"help": meta["help"]}
        if spec.default is dataclasses.MISSING or spec.name in required:
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
    return {f.name: getattr(args, f.name) for f in _fields(options, only)}


def from_flags(args: argparse.Namespace, options: type[T], only: tuple[str, ...] | None = None) -> T:
    """The options object of the parsed flags (:func:`add_flags`); the fields without a flag keep their default."""
    return options(**values(args, options, only))


def _fields(options: type, only: tuple[str, ...] | None) -> list[dataclasses.Field]:
    """The fields named in ``only``, else every field with a flag (not ``callback_only``)."""
    return [
        f
        for f in dataclasses.fields(options)
        if (f.name in only if only is not None else not f.metadata.get("callback_only"))
    ]


__all__ = [
    "FISHER_OVER",
    "GREEDY_RULES",
    "RECIPE_NAMES",
    "BaggedOptions",
    "CardOptions",
    "PushOptions",
    "CollectOptions",
    "CookOptions",
    "DatasetOptions",
    "FisherOptions",
    "GreedyOptions",
    "JudgeOptions",
    "LearnedOptions",
    "MergeOptions",
    "Options",
    "PublishOptions",
    "RegMeanOptions",
    "ReportFileOptions",
    "ResumeOptions",
    "SoupFolderOptions",
    "StatisticsOptions",
    "StockOptions",
    "add_flags",
    "callback_option",
    "from_flags",
    "values",
]
