"""``hf-soups push``: upload a soup folder to a Hub model repo in one commit (card generated when missing)."""

from __future__ import annotations

import argparse

from hf_soups.options import CardOptions, add_flags, values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a soup folder to a Hub model repo in one commit",
        description="Upload a soup folder (weights, config, tokenizer, README.md card, recipe.yaml, soup.json, plots) "
        "to a Hugging Face Hub model repo as one commit. The repo is created if missing; the endpoint is HF_ENDPOINT. "
        "Without a README.md in the folder, the card is generated from soup.json.",
    )
    parser.add_argument("soup_dir", metavar="DIR", help="the soup folder (holding soup.json)")
    parser.add_argument(
        "repo_id", metavar="REPO_ID", help="owner/name of the model repo (a bare name: under the token's user)"
    )
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", metavar="R", help="branch to commit to, created from main if missing")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("-m", "--commit-message", help="the commit message")
    parser.add_argument(
        "--token",
        help="Hub token with write access (default: HF_TOKEN, then `hf auth login`; prefer those: a "
        "token on the command line shows in the process list)",
    )
    add_flags(parser, CardOptions)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.hub import push_soup

    url = push_soup(
        args.soup_dir,
        args.repo_id,
        token=args.token,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        **values(args, CardOptions),
    )
    print(f"pushed {args.soup_dir}: {url}")  # the commit URL names the repo (a bare name's namespace too)
    return 0
