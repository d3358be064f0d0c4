"""``hf-soups push``: upload a soup folder to a Hub model repo in one commit (card generated when missing)."""

from __future__ import annotations

import argparse

from hf_soups.options import PushOptions, add_flags, from_flags

PUSH_FLAGS = ("license", "private", "token")  # the repo is the second argument


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
    parser.add_argument("--revision", metavar="R", help="branch to commit to, created from main if missing")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("-m", "--commit-message", help="the commit message")
    add_flags(parser, PushOptions, only=PUSH_FLAGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_soups.hub import push_soup

    push = from_flags(args, PushOptions, only=PUSH_FLAGS)
    url = push_soup(
        args.soup_dir,
        args.repo_id,
        token=push.token,
        private=push.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        license=push.license,
    )
    print(f"pushed {args.soup_dir}: {url}")  # the commit URL names the repo (a bare name's namespace too)
    return 0
