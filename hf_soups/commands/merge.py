"""``hf-soups merge``: average checkpoints into one model folder (a uniform or weighted soup)."""

from __future__ import annotations

import argparse

from hf_soups.dtypes import DTYPE_NAMES
from hf_soups.record import SoupRecord
from hf_soups.validation import cli_type, output_folder, positive_int, shard_size, weight_list


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
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=cli_type(output_folder, "--output"),
        help="the soup folder to write (must not exist)",
    )
    parser.add_argument(
        "--weights", type=cli_type(weight_list, "--weights"), metavar="W1,W2,...",
        help="one mixing weight per ingredient, comma-separated, normalised to sum 1 (default: uniform)",
    )
    parser.add_argument("--dtype", choices=list(DTYPE_NAMES), help="dtype to write (default: the ingredients' dtype)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    parser.add_argument("--allow-single", action="store_true", help="accept a single ingredient (writes a copy)")
    parser.add_argument(
        "--checkpoints", choices=["all", "last", "best"],
        help="for Trainer output folders: take all checkpoint-* subfolders, the last, or the best "
        "(default: the folder's own model if it has one, else all checkpoints)",
    )
    parser.add_argument(
        "--max-shard-size",
        default="50GB",
        type=cli_type(shard_size, "--max-shard-size"),
        help="shard the output above this size (default 50GB)",
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the soup (with a generated card) when done")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    adapters = parser.add_argument_group("PEFT LoRA adapters (ingredients with adapter_config.json)")
    adapters.add_argument(
        "--base", help="base model of the adapters (default: the base_model_name_or_path each adapter's config names)"
    )
    adapters.add_argument(
        "--adapter-output", choices=["full", "exact", "svd"], default="full",
        help="full: the merged model base + Σ wᵢΔWᵢ (default; adapters and full models may be mixed); exact: a PEFT "
        "adapter of rank Σrᵢ with the same weights; svd: a rank --adapter-rank adapter by truncated SVD",
    )
    adapters.add_argument(
        "--adapter-rank",
        type=cli_type(positive_int, "--adapter-rank"),
        metavar="R",
        help="rank of the --adapter-output svd adapter",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.merge import merge_models

    path = merge_models(
        args.ingredients, output_dir=args.output, weights=args.weights, dtype=args.dtype, overwrite=args.overwrite,
        allow_single=args.allow_single, checkpoints=args.checkpoints, max_shard_size=args.max_shard_size,
        base=args.base, adapter_output=args.adapter_output, adapter_rank=args.adapter_rank,
    )
    print(f"soup written to {path}")
    adapter = SoupRecord.load(path).adapter
    if adapter is not None:
        print(
            f"{adapter['output']} LoRA adapter of rank {adapter['r']}: relative error {adapter['relative_error']:.4g} "
            f"(Frobenius, over all target weights; worst weight {adapter['max_module_relative_error']:.4g})"
        )
    if args.push_to_hub:
        from hf_soups.hub import push_soup

        print(f"pushed: {push_soup(path, args.push_to_hub, private=args.private)}")
    return 0
