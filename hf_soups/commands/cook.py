"""``hf-soups cook``: re-cook a soup bit for bit from its ``recipe.yaml``."""

from __future__ import annotations

import argparse

from hf_soups.options import MergeOptions, SoupFolderOptions, add_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cook",
        help="re-cook a soup from its recipe.yaml (same sha256 of the weights)",
        description="Replay a recipe file: the same ingredients (checked by sha256), mixed in the same order with "
        "the same weights and the same fp32 arithmetic, so the weights come out bit-identical.",
    )
    parser.add_argument("recipe", help="a recipe.yaml, or a soup folder holding one")
    add_flags(parser, SoupFolderOptions)
    add_flags(parser, MergeOptions, only=("overwrite",))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.replay import replay_recipe

    print(f"soup written to {replay_recipe(args.recipe, args.output, overwrite=args.overwrite)}")
    return 0
