"""``hf-soups soup``: cook a uniform, greedy or learned soup on a GLUE task, print the results table, write the
folder (weights, soup.json, recipe.yaml, plots, model card), and optionally push it to the Hub."""

from __future__ import annotations

import argparse

from hf_soups.dtypes import DTYPE_NAMES
from hf_soups.validation import cli_type, output_folder, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "soup",
        help="cook a greedy, uniform, learned or Model Stock soup scored on a GLUE task",
        description="Score every ingredient on a selection split, cook the soup, and report every model on a "
        "separate report split with a paired-bootstrap interval for each soup's gain. Runs as one process or under "
        "`accelerate launch` (scoring is sharded; only the main process writes).",
    )
    parser.add_argument("ingredients", nargs="+", metavar="ING", help="Hub repo (owner/name[@rev]) or local folder")
    parser.add_argument(
        "--recipe", default="greedy", choices=["greedy", "uniform", "learned", "stock"], help="default: greedy"
    )
    parser.add_argument("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=cli_type(output_folder, "--output"),
        help="the soup folder to write (must not exist)",
    )
    parser.add_argument("--select-split", default="validation:select", help="split the soup is chosen on")
    parser.add_argument("--report-split", default="validation:report", help="split the numbers are reported on")
    parser.add_argument("--glue-dir", help="a local GLUE folder in the original tsv layout (default: the Hub)")
    parser.add_argument(
        "--batch-size",
        type=cli_type(positive_int, "--batch-size"),
        default=32,
        help="scoring batch size per process (default 32)",
    )
    parser.add_argument("--ensemble", action="store_true", help="also score the logit ensemble baseline")
    parser.add_argument("--resume", action="store_true", help="greedy: continue from <output>.greedy-state")
    parser.add_argument("--granularity", default="ingredient", choices=["ingredient", "layer"],
                        help="learned: one mixing weight per ingredient, or per ingredient and tensor")
    parser.add_argument(
        "--epochs",
        type=cli_type(positive_int, "--epochs"),
        default=5,
        help="learned: passes over the selection split (default 5)",
    )
    parser.add_argument(
        "--lr",
        type=cli_type(positive_float, "--lr"),
        default=0.05,
        help="learned: Adam learning rate of the mixing weights",
    )
    parser.add_argument("--base", help="stock: the pretrained model the ingredients were fine-tuned from (θ₀)")
    parser.add_argument("--start-head", help="stock: a safetensors file of the classifier head every run started from")
    parser.add_argument("--dtype", choices=list(DTYPE_NAMES), help="dtype to write (default: the ingredients')")
    parser.add_argument("--checkpoints", choices=["all", "last", "best"], help="for Trainer output folders")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the soup to this Hub repo when done")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.recipes import RECIPES, run_recipe

    options = {name: getattr(args, name) for name in RECIPES[args.recipe].options}
    report = run_recipe(
        args.recipe, args.ingredients, args.task, args.output, ensemble=args.ensemble, dtype=args.dtype,
        overwrite=args.overwrite, options=options, glue_dir=args.glue_dir, select_split=args.select_split,
        report_split=args.report_split, batch_size=args.batch_size, checkpoints=args.checkpoints,
        repo_id=args.push_to_hub,  # the card names the repo it will live in
    )
    if report.output_dir is None:  # not the main process
        return 0
    print(report.table)
    print(f"soup written to {report.output_dir}")
    if args.push_to_hub:
        from hf_soups.hub import push_soup

        print(f"pushed: {push_soup(report.output_dir, args.push_to_hub, private=args.private)}")
    return 0
