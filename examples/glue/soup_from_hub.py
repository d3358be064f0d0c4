"""Cook a soup from fine-tuned checkpoints on the Hub, judged on a GLUE task, and push it back to the Hub.

The checkpoints must be fine-tunings of one starting model (same architecture, labels and classifier-head start).
The soup is chosen on ``train:heldout`` and reported on the whole validation split beside every ingredient, the
uniform soup and the logit ensemble, as ``hf-soups soup`` does; checkpoints that trained on all of train are judged
with ``--select-split validation:select --report-split validation:report``. Runs as ``python`` or ``accelerate
launch`` (scoring is sharded; only the main process writes and pushes).

Example:
    python examples/glue/soup_from_hub.py me/minilm-sst2-lr5e-5 me/minilm-sst2-lr1e-4@v2 me/minilm-sst2-seed1 \\
        --task sst2 --output-dir minilm-sst2-soup --push-to-hub me/minilm-sst2-soup
"""

from __future__ import annotations

import argparse

from accelerate import PartialState

from hf_soups.hub import push_soup
from hf_soups.options import CookOptions, JudgeOptions, MergeOptions, PushOptions, add_flags, from_flags
from hf_soups.soups import run_recipe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --learning-rate is not --learning-rates
    )
    parser.add_argument(
        "ingredients", nargs="+", metavar="REPO", help="Hub repos (owner/name[@revision]) or local folders"
    )
    add_flags(parser, JudgeOptions, required=("task",))
    parser.add_argument("--output-dir", required=True, help="the soup folder to write")
    add_flags(parser, CookOptions, only=("recipe",))
    add_flags(parser, PushOptions)
    add_flags(parser, MergeOptions, only=("overwrite",))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    judge, push = from_flags(args, JudgeOptions), from_flags(args, PushOptions)
    report = run_recipe(
        args.recipe,
        args.ingredients,
        output_dir=args.output_dir,
        ensemble=True,
        overwrite=args.overwrite,
        repo_id=push.push_to_hub,
        token=push.token,
        **judge.kitchen_options(),
    )
    if PartialState().is_main_process:
        print(f"\n{report.table}\n\nsoup, card and plots written to {report.output_dir}")
        if push.push_to_hub:
            url = push_soup(
                report.output_dir, push.push_to_hub, token=push.token, private=push.private, license=push.license
            )
            print(f"pushed: {url}")


if __name__ == "__main__":
    main()
