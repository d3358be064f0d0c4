"""Cook a soup from fine-tuned checkpoints on the Hub, judged on a GLUE task, and push it back to the Hub.

The checkpoints must be fine-tunings of one starting model (same architecture, labels and classifier-head start).
The soup is chosen on ``validation:select`` and reported on ``validation:report`` beside every ingredient, the
uniform soup and the logit ensemble. Runs as ``python`` or ``accelerate launch`` (scoring is sharded; only the main
process writes and pushes).

Example:
    python examples/glue/soup_from_hub.py me/minilm-sst2-lr5e-5 me/minilm-sst2-lr1e-4@v2 me/minilm-sst2-seed1 \\
        --task sst2 --output-dir minilm-sst2-soup --push-to-hub me/minilm-sst2-soup
"""

from __future__ import annotations

import argparse

from accelerate import PartialState

from hf_soups.hub import push_soup
from hf_soups.recipes import RECIPES
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
    parser.add_argument("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    parser.add_argument(
        "--glue-dir", help="a local GLUE folder in the original tsv layout (default: nyu-mll/glue from the Hub)"
    )
    parser.add_argument("--output-dir", required=True, help="the soup folder to write")
    parser.add_argument("--recipe", default="greedy", choices=sorted(RECIPES), help="default: greedy")
    parser.add_argument("--batch-size", type=int, default=32, help="scoring batch size per process (default 32)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the soup to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the pushed repo private")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run_recipe(
        args.recipe,
        args.ingredients,
        args.task,
        args.output_dir,
        ensemble=True,
        overwrite=args.overwrite,
        glue_dir=args.glue_dir,
        batch_size=args.batch_size,
        token=args.token,
    )
    if PartialState().is_main_process:
        print(f"\n{report.table}\n\nsoup, card and plots written to {report.output_dir}")
        if args.push_to_hub:
            print(f"pushed: {push_soup(report.output_dir, args.push_to_hub, token=args.token, private=args.private)}")


if __name__ == "__main__":
    main()
