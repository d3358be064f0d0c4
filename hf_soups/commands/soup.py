"""``hf-soups soup``: cook a greedy, bagged greedy, uniform, learned, Model Stock, Fisher or RegMean soup on a GLUE
task, print the results table, write the folder (weights, soup.json, recipe.yaml, plots, model card), and optionally
push it to the Hub."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from hf_soups.errors import SoupError
from hf_soups.options import (
    BaggedOptions,
    CookOptions,
    DatasetOptions,
    FisherOptions,
    GreedyOptions,
    JudgeOptions,
    LearnedOptions,
    MergeOptions,
    PushOptions,
    RegMeanOptions,
    ResumeOptions,
    SoupFolderOptions,
    StatisticsOptions,
    StockOptions,
    add_flags,
    from_flags,
    values,
)

# The MergeOptions of a soup: which checkpoints of a Trainer folder, and how the soup folder is written
MERGE_FLAGS = ("dtype", "checkpoints", "overwrite")
# The options of one recipe or another (hf_soups.recipes.RECIPES says whose).
RECIPE_OPTIONS = (
    GreedyOptions,
    ResumeOptions,
    BaggedOptions,
    LearnedOptions,
    StockOptions,
    StatisticsOptions,
    FisherOptions,
    RegMeanOptions,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "soup",
        help="cook a greedy, bagged greedy, uniform, learned, Model Stock, Fisher or RegMean soup, scored on GLUE",
        description="Score every ingredient on a selection split (default: train:heldout, a seeded slice of the "
        "train split the runs must not have trained on), cook the soup, and report every model on a separate report "
        "split (default: the whole validation split) with a paired-bootstrap interval for each soup's gain. Runs as "
        "one process or under `accelerate launch` (scoring is sharded; only the main process writes). Judge on a GLUE "
        "task (--task) or on a dataset of yours (--dataset: a Hub dataset, a folder, csv/json/jsonl/parquet files, "
        "with --text-columns, --label-column and --metric).",
    )
    parser.add_argument("ingredients", nargs="+", metavar="ING", help="Hub repo (owner/name[@rev]) or local folder")
    add_flags(parser, CookOptions, only=("recipe",))
    source = parser.add_mutually_exclusive_group(required=True)
    add_flags(source, JudgeOptions, only=("task",))
    add_flags(source, DatasetOptions, only=("dataset",))
    add_flags(parser, DatasetOptions, exclude=("dataset",))
    add_flags(parser, SoupFolderOptions)
    add_flags(parser, JudgeOptions, exclude=("task",))
    add_flags(parser, CookOptions, exclude=("recipe",))
    for options in RECIPE_OPTIONS:
        add_flags(parser, options)
    add_flags(parser, MergeOptions, only=MERGE_FLAGS)
    add_flags(parser, PushOptions)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.soups import run_recipe

    cooking, judge, data, push = (
        from_flags(args, kind) for kind in (CookOptions, JudgeOptions, DatasetOptions, PushOptions)
    )
    report = run_recipe(
        cooking.recipe,
        args.ingredients,
        output_dir=args.output,
        ensemble=cooking.ensemble,
        options=recipe_options(args, cooking.recipe),
        repo_id=push.push_to_hub,  # the card names the repo it will live in
        token=push.token,
        **judge.kitchen_options(),
        **dataclasses.asdict(data),
        **values(args, MergeOptions, only=MERGE_FLAGS),
    )
    if report.output_dir is None:  # not the main process
        return 0
    print(f"\n{report.table}")  # a new line first: progress bars leave theirs unended (a log file holds both)
    print(f"soup written to {report.output_dir}")
    if push.push_to_hub:
        from hf_soups.hub import push_soup

        url = push_soup(
            report.output_dir, push.push_to_hub, token=push.token, private=push.private, license=push.license
        )
        print(f"pushed: {url}")
    return 0


def recipe_options(args: argparse.Namespace, recipe: str) -> dict[str, Any]:
    """The parsed options of ``recipe`` (:attr:`hf_soups.recipes.Recipe.options`).

    Raises:
        SoupError: a flag of another recipe set (it would be ignored).
    """
    from hf_soups.recipes import RECIPES

    for field in (field for options in RECIPE_OPTIONS for field in dataclasses.fields(options)):
        if field.name not in RECIPES[recipe].options and getattr(args, field.name) != field.default:
            owners = [name for name, known in RECIPES.items() if field.name in known.options]
            raise SoupError(
                f"--{field.name.replace('_', '-')}: applies to the recipe {' / '.join(owners)} only, not to "
                f"{recipe!r} (it would be ignored)"
            )
    return {name: getattr(args, name) for name in RECIPES[recipe].options}
