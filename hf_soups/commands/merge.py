"""``hf-soups merge``: average checkpoints into one model folder (a uniform or weighted soup), with ``recipe.yaml``
and a card."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from hf_soups.options import ADAPTER_FLAGS, CardOptions, MergeOptions, SoupFolderOptions, add_flags, values
from hf_soups.record import SoupRecord

if TYPE_CHECKING:
    from hf_soups.ingredient import Ingredient  # imports torch: not for `hf-soups --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="average checkpoints of one base model into one model folder",
        description="Average fine-tuned checkpoints of one base model, tensor by tensor in fp32, into a folder that "
        "from_pretrained loads, with its recipe.yaml (hf-soups cook re-cooks it) and a model card. Memory stays at "
        "about one model whatever the number of ingredients.",
    )
    parser.add_argument(
        "ingredients", nargs="+", metavar="ING",
        help="Hub repo (owner/name or owner/name@revision), local save_pretrained folder, or Trainer output folder",
    )
    add_flags(parser, SoupFolderOptions)
    add_flags(parser, MergeOptions, exclude=ADAPTER_FLAGS)
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the soup (with a generated card) when done")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_flags(parser, CardOptions)
    adapters = parser.add_argument_group("PEFT LoRA adapters (ingredients with adapter_config.json)")
    add_flags(adapters, MergeOptions, only=ADAPTER_FLAGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.merge import merge_models

    extras = partial(write_merge_files, repo_id=args.push_to_hub, destination=Path(args.output))
    path = merge_models(args.ingredients, output_dir=args.output, extras=extras, **values(args, MergeOptions))
    print(f"soup written to {path}")
    adapter = SoupRecord.load(path).adapter
    if adapter is not None:
        print(
            f"{adapter['output']} LoRA adapter of rank {adapter['r']}: relative error {adapter['relative_error']:.4g} "
            f"(Frobenius, over all target weights; worst weight {adapter['max_module_relative_error']:.4g})"
        )
    if args.push_to_hub:
        from hf_soups.hub import push_soup

        print(f"pushed: {push_soup(path, args.push_to_hub, private=args.private, **values(args, CardOptions))}")
    return 0


def write_merge_files(
    folder: Path, mix: Sequence[tuple[Ingredient, float]], repo_id: str | None, destination: Path
) -> None:
    """Make a plain merge a soup folder too: add ``recipe.yaml`` (``hf-soups cook`` re-cooks it bit for bit) and the
    model card (as mergekit writes one for every merge) to ``folder``, which holds its weights and ``soup.json``.

    Args:
        folder: the merge's folder (the temporary one, before it is renamed into place).
        mix: each ingredient with its weight (not normalised), in the order they were averaged.
        repo_id: the Hub repo the card's snippets name (``None`` when it is not pushed: they name the folder).
        destination: the soup folder ``folder`` becomes (the card names it).

    Example:
        >>> extras = partial(write_merge_files, repo_id=None, destination=Path("soup"))  # doctest: +SKIP
        >>> merge_models(["runs/a", "runs/b"], "soup", extras=extras)  # doctest: +SKIP
        PosixPath('soup')
    """
    from hf_soups.card import write_card
    from hf_soups.recipes.recipe_file import write_recipe

    write_recipe(folder, SoupRecord.load(folder), mix)
    write_card(folder, repo_id=repo_id, destination=destination)
