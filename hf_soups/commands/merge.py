"""``hf-soups merge``: average checkpoints into one model folder (a uniform or weighted soup)."""

from __future__ import annotations

import argparse

from hf_soups.merge import DTYPES, merge_models


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="average checkpoints of one base model into one model folder",
        description="Average fine-tuned checkpoints of one base model, tensor by tensor in fp32, into a folder that "
        "from_pretrained loads. Memory stays at about one model whatever the number of ingredients.",
    )
    parser.add_argument(
        "ingredients", nargs="+", metavar="ING",
        help="Hub repo (owner/name or owner/name@revision), local save_pretrained folder, or Trainer output folder",
    )
    parser.add_argument("-o", "--output", required=True, help="the soup folder to write (must not exist)")
    parser.add_argument(
        "--weights", type=lambda s: [float(w) for w in s.split(",")], metavar="W1,W2,...",
        help="one mixing weight per ingredient, comma-separated, normalised to sum 1 (default: uniform)",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="dtype to write (default: the ingredients' dtype)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--allow-single", action="store_true", help="accept a single ingredient (writes a copy)")
    parser.add_argument(
        "--checkpoints", choices=["all", "last", "best"],
        help="for Trainer output folders: take all checkpoint-* subfolders, the last, or the best "
        "(default: the folder's own model if it has one, else all checkpoints)",
    )
    parser.add_argument("--max-shard-size", default="50GB", help="shard the output above this size (default 50GB)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = merge_models(
        args.ingredients, output_dir=args.output, weights=args.weights, dtype=args.dtype, overwrite=args.overwrite,
        allow_single=args.allow_single, checkpoints=args.checkpoints, max_shard_size=args.max_shard_size,
    )
    print(f"soup written to {path}")
    return 0
