"""``hf-soups merge``: average checkpoints into one model folder (a uniform or weighted soup), with ``recipe.yaml``
and a card."""

from __future__ import annotations

import argparse
import sys

from hf_soups.options import ADAPTER_FLAGS, MergeOptions, PushOptions, SoupFolderOptions, add_flags, from_flags, values
from hf_soups.record import SoupRecord


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="average checkpoints of one base model into one model folder",
        description="Average fine-tuned checkpoints of one base model, tensor by tensor in fp32, into a folder that "
        "from_pretrained loads, with its recipe.yaml (hf-soups cook re-cooks it) and a model card. Memory stays at "
        "about one model whatever the number of ingredients.",
    )
    parser.add_argument(
        "ingredients",
        nargs="+",
        metavar="ING",
        help="Hub repo (owner/name or owner/name@revision), local save_pretrained folder, or Trainer output folder",
    )
    add_flags(parser, SoupFolderOptions)
    add_flags(parser, MergeOptions, exclude=ADAPTER_FLAGS)
    add_flags(parser, PushOptions)
    adapters = parser.add_argument_group("PEFT LoRA adapters (ingredients with adapter_config.json)")
    add_flags(adapters, MergeOptions, only=ADAPTER_FLAGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.merge import merge_models

    push = from_flags(args, PushOptions)
    # transformers' modeling code, which a merge builds on the meta device to read loading rules, imports
    # scipy.optimize (object-detection losses) whenever scipy is installed: a second of imports the merge never uses.
    # None in sys.modules reads as "not installed" (to transformers too) until the merge ends; a loaded scipy stays.
    hide = "scipy" not in sys.modules
    if hide:
        sys.modules["scipy"] = None  # type: ignore[assignment]
    try:
        path = merge_models(
            args.ingredients, args.output, repo_id=push.push_to_hub, token=push.token, **values(args, MergeOptions)
        )
    finally:
        if hide and sys.modules.get("scipy", False) is None:
            del sys.modules["scipy"]
    print(f"soup written to {path}")
    adapter = SoupRecord.load(path).adapter
    if adapter is not None:
        print(
            f"{adapter['output']} LoRA adapter of rank {adapter['r']}: relative error {adapter['relative_error']:.4g} "
            f"(Frobenius, over all target weights; worst weight {adapter['max_module_relative_error']:.4g})"
        )
    if push.push_to_hub:
        from hf_soups.hub import push_soup

        url = push_soup(path, push.push_to_hub, token=push.token, private=push.private, license=push.license)
        print(f"pushed: {url}")
    return 0
