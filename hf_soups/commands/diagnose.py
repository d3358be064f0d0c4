"""``hf-soups diagnose``: why a soup of these ingredients helps or not (weight space, loss barriers, verdicts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_soups.options import DatasetOptions, JudgeOptions, ReportFileOptions, add_flags, values
from hf_soups.validation import cli_type, writable_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="check whether ingredients can be souped, and why not",
        description="Compare the ingredients' task vectors (θᵢ − θ₀, centred on --base or else on their mean) per "
        "layer group, and with --task (or --dataset) the selection-split score along the line from the best "
        "ingredient to each other one. Prints a verdict per ingredient (soup-compatible, different head, different "
        "basin, off-base) with what to change.",
    )
    parser.add_argument(
        "ingredients", nargs="+", metavar="ING", help="Hub repo (owner/name[@revision]) or local folder"
    )
    parser.add_argument(
        "--base", help="the pretrained model the ingredients were fine-tuned from (default: use their mean as centre)"
    )
    source = parser.add_mutually_exclusive_group()
    add_flags(source, JudgeOptions, only=("task",))
    add_flags(source, DatasetOptions, only=("dataset",))
    add_flags(parser, DatasetOptions, exclude=("dataset",))
    parser.add_argument(
        "--split", default="validation:select", help="split the landscape is scored on (default validation:select)"
    )
    add_flags(parser, JudgeOptions, only=("glue_dir", "batch_size"))
    add_flags(parser, ReportFileOptions)
    parser.add_argument(
        "--plots",
        metavar="DIR",
        type=cli_type(writable_folder, "--plots"),
        help="write cosine_heatmap.png (and interpolation.png) here",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.diagnostics import (
        diagnose,
        format_report,
        plot_cosines,
        plot_interpolation,
    )
    from hf_soups.evaluation.dataset import text_dataset

    data = text_dataset(**values(args, DatasetOptions))
    diagnosis = diagnose(
        args.ingredients,
        base=args.base,
        task=data or args.task,
        glue_dir=args.glue_dir,
        split=args.split,
        batch_size=args.batch_size,
    )
    print(f"\n{format_report(diagnosis)}")  # after the progress bars' unended line
    if args.output:
        Path(args.output).write_text(json.dumps(diagnosis.to_dict(), indent=2) + "\n")
    if args.plots:
        folder = Path(args.plots)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        if diagnosis.weights is not None:
            written.append(plot_cosines(diagnosis.weights, folder / "cosine_heatmap.png"))
        if diagnosis.landscape is not None:
            written.append(plot_interpolation(diagnosis.landscape, folder / "interpolation.png"))
        print("plots: " + ", ".join(str(p) for p in written))
    return 0
