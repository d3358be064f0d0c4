"""``hf-soups evaluate``: score a checkpoint (an ingredient or a soup) on a GLUE task or a dataset of yours and print
a table."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from hf_soups.options import DatasetOptions, JudgeOptions, ReportFileOptions, add_flags, from_flags

# The JudgeOptions a single model is scored with
JUDGE_FLAGS = ("task", "glue_dir", "batch_size")

if TYPE_CHECKING:
    from hf_soups.evaluation import EvalResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on a GLUE task or a dataset of yours",
        description="Score an encoder classifier or a T5 model on a GLUE task, or a classifier or regressor on a "
        "dataset of yours (--dataset), on one process or many (run it under `accelerate launch`). Split names: "
        "train, validation (MNLI: validation_matched, validation_mismatched; a dataset: its own splits), optionally "
        "with a seeded part, e.g. validation:select, validation:report, train:heldout.",
    )
    parser.add_argument("model", metavar="MODEL", help="Hub repo id or local folder (e.g. a soup)")
    source = parser.add_mutually_exclusive_group(required=True)
    add_flags(source, JudgeOptions, only=("task",))
    add_flags(source, DatasetOptions, only=("dataset",))
    add_flags(parser, DatasetOptions, exclude=("dataset",))
    parser.add_argument(
        "--split", help="split to score (default: the task's validation split; a dataset's validation split)"
    )
    parser.add_argument("--revision", help="Hub revision of MODEL")
    add_flags(parser, JudgeOptions, only=JUDGE_FLAGS[1:])
    add_flags(parser, ReportFileOptions)
    parser.set_defaults(func=run)


def format_table(model: str, result: EvalResult) -> str:
    """The result as a two-column text table, main metric marked.

    Example:
        >>> from hf_soups.evaluation import EvalResult
        >>> result = EvalResult("rte", "validation", {"accuracy": 0.6606}, "accuracy", 277)
        >>> print(format_table("runs/a", result))
        model        runs/a
        task         rte
        split        validation
        examples     277
        accuracy *   0.6606
    """
    rows = [("model", model), ("task", result.task), ("split", result.split), ("examples", str(result.num_examples))]
    for name, value in result.metrics.items():
        rows.append((name + (" *" if name == result.main_metric else ""), f"{value:.4f}"))
    width = max(len(name) for name, _ in rows) + 3
    return "\n".join(f"{name:<{width}}{value}" for name, value in rows)


def run(args: argparse.Namespace) -> int:
    from accelerate import Accelerator

    from hf_soups.evaluation import GlueScorer, evaluate_glue, get_task, load_glue_model
    from hf_soups.evaluation.dataset import text_dataset
    from hf_soups.ingredient import label_map
    from hf_soups.ingredients import resolve_ingredients
    from hf_soups.validation import vocabulary_files

    judge = from_flags(args, JudgeOptions, only=JUDGE_FLAGS)
    data = text_dataset(**dataclasses.asdict(from_flags(args, DatasetOptions)))
    task = get_task(judge.task) if data is None else None
    spec = args.model if args.revision is None else f"{args.model}@{args.revision}"
    for ingredient in resolve_ingredients([spec]):  # a missing, mistyped or corrupt model is one message
        ingredient.layout  # noqa: B018 (reads and checks every weight file's header)
        vocabulary_files(ingredient.vocabulary, ingredient.label, "save its tokenizer beside the weights")
    if data is not None:  # its rows and labels are checked before the model loads
        (rows,) = data.splits([args.split or "validation"], label_map(ingredient.config))
    model, tokenizer = load_glue_model(args.model, revision=args.revision)
    accelerator = Accelerator()
    if data is None:
        result = evaluate_glue(
            model,
            tokenizer,
            task,
            args.split,
            accelerator=accelerator,
            batch_size=judge.batch_size,
            glue_dir=judge.glue_dir,
        )
    else:
        data.check_model(model)
        scorer = GlueScorer(rows.task, tokenizer, rows, batch_size=judge.batch_size, accelerator=accelerator)
        result = scorer.score(model)
    if not accelerator.is_main_process:
        return 0
    print(f"\n{format_table(args.model, result)}")  # after the progress bars' unended line
    if args.output:
        Path(args.output).write_text(json.dumps({"model": args.model, **result.to_dict()}, indent=2) + "\n")
    return 0
