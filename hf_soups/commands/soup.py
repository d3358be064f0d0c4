"""``hf-soups soup``: cook a greedy, bagged greedy, uniform, learned, Model Stock, Fisher or RegMean soup on a GLUE
task, print the results table, write the folder (weights, soup.json, recipe.yaml, plots, model card), and optionally
push it to the Hub."""

from __future__ import annotations

import argparse
import dataclasses

from hf_soups.errors import SoupError
from hf_soups.options import (
    RECIPE_NAMES,
    BaggedOptions,
    CardOptions,
    CookOptions,
    DatasetOptions,
    FisherOptions,
    GreedyOptions,
    JudgeOptions,
    LearnedOptions,
    MergeOptions,
    RegMeanOptions,
    ResumeOptions,
    SoupFolderOptions,
    StatisticsOptions,
    StockOptions,
    add_flags,
    values,
)

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
    parser.add_argument("--recipe", default="greedy", choices=RECIPE_NAMES, help="default: greedy")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    add_flags(source, DatasetOptions, only=("dataset",))
    add_flags(parser, DatasetOptions, exclude=("dataset",))
    add_flags(parser, SoupFolderOptions)
    add_flags(parser, JudgeOptions)
    add_flags(parser, CookOptions)
    for options in RECIPE_OPTIONS:
        add_flags(parser, options)
    add_flags(parser, MergeOptions, only=("dtype", "checkpoints", "overwrite"))
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the soup to this Hub repo when done")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_flags(parser, CardOptions)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.recipes import RECIPES
    from hf_soups.soups import run_recipe

    for field in (field for options in RECIPE_OPTIONS for field in dataclasses.fields(options)):
        if field.name not in RECIPES[args.recipe].options and getattr(args, field.name) != field.default:
            owners = [name for name, recipe in RECIPES.items() if field.name in recipe.options]
            raise SoupError(
                f"--{field.name.replace('_', '-')}: applies to the recipe {' / '.join(owners)} only, not to "
                f"{args.recipe!r} (it would be ignored)"
            )
    options = {name: getattr(args, name) for name in RECIPES[args.recipe].options}
    report = run_recipe(
        args.recipe,
        args.ingredients,
        args.task,
        args.output,
        options=options,
        **values(args, CookOptions),
        **values(args, JudgeOptions),
        **values(args, DatasetOptions),
        **values(args, MergeOptions, only=("dtype", "checkpoints", "overwrite")),
        repo_id=args.push_to_hub,  # the card names the repo it will live in
    )
    if report.output_dir is None:  # not the main process
        return 0
    print(f"\n{report.table}")  # a new line first: progress bars leave theirs unended (a log file holds both)
    print(f"soup written to {report.output_dir}")
    if args.push_to_hub:
        from hf_soups.hub import push_soup

        url = push_soup(report.output_dir, args.push_to_hub, private=args.private, **values(args, CardOptions))
        print(f"pushed: {url}")
    return 0
