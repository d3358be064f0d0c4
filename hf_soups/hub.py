"""Push a soup folder to the Hugging Face Hub: weights, config, tokenizer, card, recipe and record in one commit.

The commit also deletes what an earlier model left in the repo that the soup does not have (weights, shard index,
configs, tokenizer files, hf-soups' files: :func:`stale_files`), so ``from_pretrained`` loads the soup; the repo's
other files stay.

The Hub endpoint is ``huggingface_hub``'s (``HF_ENDPOINT``); the token comes from the argument, ``HF_TOKEN`` or the
saved login (``hf auth login``) and is never written to a log, an error message, the card or a file. A failed push
raises one :class:`~hf_soups.errors.SoupError` saying what went wrong, and never touches the local folder.

Example:
    >>> push_soup("my-soup", "me/bert-rte-soup", private=True)  # doctest: +SKIP
    'https://huggingface.co/me/bert-rte-soup/commit/4f1c0e...'
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HfUriError, OfflineModeIsEnabled
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, parse_hf_uri

from hf_soups.card import (
    CARD_FILE,
    CONFIG_FILE,
    build_card,
    card_text,
    is_generated,
    load_record,
    public_data,
)
from hf_soups.errors import SoupError
from hf_soups.file_names import TOKENIZER_FILES
from hf_soups.options import CardOptions
from hf_soups.plots import SOUPS_PLOT, TRAJECTORY_PLOT
from hf_soups.record import SOUP_FILE, WEIGHT_FILES, SoupRecord
from hf_soups.version import __version__

logger = logging.getLogger(__name__)
# What a soup folder may hold besides its card, by kind: a push deletes those the soup lacks (see stale_files).
MODEL_FILES = (*WEIGHT_FILES, CONFIG_FILE, "adapter_config.json", "generation_config.json")
SOUP_FILES = (SOUP_FILE, "recipe.yaml", TRAJECTORY_PLOT, SOUPS_PLOT)
BARE_NAMESPACE = "namespace"  # stands in for the token's user while a bare repo name is checked

# HTTP status → what it means for a push (anything else: the server's own message).
STATUS_REASONS = {
    401: "the Hub rejected the token (401): check HF_TOKEN or run `hf auth login`",
    403: "the token may not write to this repo (403 Forbidden)",
    404: "the repo or revision was not found (404), or the token may not see it",
    409: "the Hub refused the change (409 Conflict)",
    412: "the branch moved while pushing (412): push again",
}


def push_soup(
    soup_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    license: str | None = CardOptions.license,
) -> str:
    """Upload a soup folder to a Hub model repo as one commit, creating the repo (and branch) when missing.

    Every file of the folder goes in (weights, ``config.json``, tokenizer files, ``recipe.yaml``, ``soup.json``,
    plots). The card is generated from ``soup.json`` for ``repo_id`` (see :func:`~hf_soups.card.build_card`), so its
    usage and re-cook snippets name the Hub repo, and uploaded without writing it to the folder; a ``README.md`` of
    your own (or a generated one you edited) is pushed as it is. The same commit deletes what an earlier model left in
    the repo that the soup does not have (:func:`stale_files`), so ``from_pretrained`` loads the soup.

    Args:
        soup_dir: the soup folder (it must hold ``soup.json``).
        repo_id: ``owner/name`` of the model repo (``owner/name@branch`` is the same as passing ``revision``); a bare
            ``name`` goes to the token's user, as ``huggingface_hub`` and the Trainer read it.
        token: a Hub token with write access; default: ``HF_TOKEN``, then the saved login.
        private: create the repo private (an existing repo keeps its visibility).
        revision: the branch to commit to (created from ``main`` when missing); default: ``main``.
        create_pr: open a pull request (against ``revision``, or ``main``) instead of committing to the branch.
        commit_message: default: ``"Upload model soup with hf-soups <version>"``.
        license: the licence the generated card states (see :func:`~hf_soups.card.build_card`).

    Returns:
        The URL of the commit.

    Raises:
        SoupError: no ``soup.json``, a symbolic link out of the folder, a weight file that is not the one
            ``soup.json`` records, no token, a repo id that is not a model repo, or a failed push (server down, token
            rejected, server error); the message never contains the token. Nothing is uploaded before the folder is
            checked.

    Example:
        >>> push_soup("my-soup", "me/bert-rte-soup", revision="greedy", create_pr=True)  # doctest: +SKIP
        'https://huggingface.co/me/bert-rte-soup/commit/9b2d...'
    """
    folder = Path(soup_dir)
    repo_id, revision = parse_repo_id(repo_id, revision)
    record, files = file_operations(folder)
    token = token or get_token()
    if not token:
        raise SoupError("no Hub token: pass --token / token=, set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    where = repo_id
    try:
        if "/" not in repo_id:  # a bare name: the token's user is the namespace, as in huggingface_hub and the Trainer
            repo_id = f"{api.whoami()['name']}/{repo_id}"
        where = f"{repo_id}@{revision}" if revision else repo_id
        operations = files + soup_operations(folder, record, repo_id, license)
        logger.info("pushing %d files from %s to %s on %s", len(operations), folder, where, api.endpoint)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != constants.DEFAULT_REVISION and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        head = api.model_info(repo_id, revision=revision or constants.DEFAULT_REVISION)
        stale = stale_files([s.rfilename for s in head.siblings or []], [op.path_in_repo for op in operations])
        if stale:
            logger.info("deleting from %s what the soup does not have: %s", where, ", ".join(stale))
        info = api.create_commit(
            repo_id,
            [*operations, *(CommitOperationDelete(path_in_repo=path) for path in stale)],
            commit_message=commit_message or f"Upload model soup with hf-soups {__version__}",
            revision=revision,
            create_pr=create_pr,
            parent_commit=head.sha,  # the files listed are the ones deleted: a branch that moved meanwhile is a 412
        )
    except SoupError:  # the folder's own fault (its soup.json), not the push's
        raise
    except (httpx2.HTTPError, OSError, ValueError, RuntimeError) as err:
        message = f"push of {folder} to {where} failed: {_reason(err, api.endpoint)}; the local folder is unchanged"
        raise SoupError(message.replace(token, "<token>")) from None
    logger.info("pushed %s: %s", where, info.commit_url)
    return info.commit_url


def parse_repo_id(repo_id: str, revision: str | None = None) -> tuple[str, str | None]:
    """``[owner/]name[@revision]`` (or a Hub URL) → ``(repo id, revision)``; other repo types are refused. A bare
    ``name`` stays bare: :func:`push_soup` gives it the token's user as namespace.

    Example:
        >>> parse_repo_id("me/soup@dev"), parse_repo_id("soup")
        (('me/soup', 'dev'), ('soup', None))
    """
    bare = "/" not in repo_id.partition("@")[0]
    url = repo_id.startswith(("hf://", "http://", "https://"))
    uri_text = repo_id if url else f"hf://{BARE_NAMESPACE}/{repo_id}" if bare else f"hf://{repo_id}"
    try:
        uri = parse_hf_uri(uri_text, endpoint=constants.ENDPOINT)
    except HfUriError as err:
        raise SoupError(f"repo id {repo_id!r}: {err}") from None
    if uri.type != "model":
        raise SoupError(f"repo id {repo_id!r} names a {uri.type} repo; a soup is pushed to a model repo")
    if uri.path_in_repo:
        raise SoupError(f"repo id {repo_id!r} names a file in a repo; give the repo as owner/name")
    if uri.revision and revision and uri.revision != revision:
        raise SoupError(f"repo id {repo_id!r} names revision {uri.revision!r} but revision={revision!r} was given")
    return uri.id.removeprefix(f"{BARE_NAMESPACE}/") if bare else uri.id, uri.revision or revision


def file_operations(folder: Path) -> tuple[SoupRecord, list[CommitOperationAdd]]:
    """The soup folder's record, and one addition per file to upload as it is (``.git``/cache folders, ``soup.json``
    and a ``README.md`` that :func:`soup_operations` renders left out), after checking that no symbolic link leaves
    the folder (before anything in it is read) and that the weight files are the ones ``soup.json`` records
    (:attr:`~hf_soups.record.SoupRecord.files`; the additions hash every file anyway).

    Raises:
        SoupError: a symbolic link that leads out of the folder; no or a damaged ``soup.json``; a weight file that
            differs from the record, is missing or is not in it.
    """
    own = _own_files(folder)
    record = load_record(folder)
    render = _renders_card(folder)
    files = [path for path in own if not (render and path == CARD_FILE) and path != SOUP_FILE]
    try:
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path)) for path in files]
    except OSError as err:
        raise SoupError(f"soup folder {folder}: {err.filename} cannot be read ({err.strerror})") from None
    if record.files is None:
        logger.warning(
            "%s/%s records no sha256 of the weight files (written by an older hf-soups): pushing them unchecked",
            folder,
            SOUP_FILE,
        )
        return record, operations
    digests = {op.path_in_repo: op.upload_info.sha256.hex() for op in operations if _is_weight(op.path_in_repo)}
    for name in sorted(set(digests) | set(record.files)):
        if digests.get(name) != record.files.get(name):
            what = (
                "is missing"
                if name not in digests
                else f"is not one of the weight files {SOUP_FILE} records"
                if name not in record.files
                else f"differs from the file {SOUP_FILE} records (its sha256)"
            )
            raise SoupError(
                f"soup folder {folder}: {name} {what}: the folder no longer holds the soup {SOUP_FILE} "
                "describes; nothing was pushed"
            )
    return record, operations


def soup_operations(
    folder: Path, record: SoupRecord, repo_id: str, license: str | None = None
) -> list[CommitOperationAdd]:
    """The additions of ``soup.json`` with its local paths cut to their names (:func:`~hf_soups.card.public_data`)
    and of the card rendered for ``repo_id`` (with ``license``), unless the folder holds a ``README.md`` hf_soups did
    not generate (or one edited since)."""
    published = json.dumps(public_data(record.to_dict()), indent=2) + "\n"
    operations = [CommitOperationAdd(path_in_repo=SOUP_FILE, path_or_fileobj=published.encode())]
    if _renders_card(folder):
        text = card_text(build_card(folder, repo_id=repo_id, license=license)).encode()
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=text))
    return operations


def stale_files(repo_files: Sequence[str], uploaded: Sequence[str]) -> list[str]:
    """The files of the repo that a push of ``uploaded`` deletes, so that the repo serves the soup and only the soup:
    at the repo's top, the model files (weights, shard index, model and adapter configs) and hf-soups' own files that
    the soup does not have, and the tokenizer files too when the soup brings a tokenizer. Every other file stays.

    Example:
        >>> stale_files(["model.safetensors", "notes.txt", "README.md"], ["model-00001-of-00002.safetensors"])
        ['model.safetensors']
    """
    kinds = [*MODEL_FILES, *SOUP_FILES, *(TOKENIZER_FILES if set(TOKENIZER_FILES) & set(uploaded) else ())]
    return sorted(
        path
        for path in set(repo_files) - set(uploaded)
        if "/" not in path and any(fnmatch.fnmatch(path, kind) for kind in kinds)
    )


def _own_files(folder: Path) -> list[str]:
    """The folder's files to upload (``.git``/cache folders left out), as paths relative to it; a symbolic link to a
    file inside the folder counts as a file.

    Raises:
        SoupError: a symbolic link (to a file or a folder) that leads out of the folder.
    """
    root = folder.resolve()
    entries = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    files = []
    for path in filter_repo_objects(sorted(entries), ignore_patterns=DEFAULT_IGNORE_PATTERNS):
        entry = entries[path]
        if entry.is_symlink() and not entry.resolve().is_relative_to(root):
            raise SoupError(
                f"soup folder {folder}: {path} is a symbolic link to {entry.resolve()}, outside the folder; a push "
                "uploads only the folder's own files (replace the link by a copy, or remove it): nothing was pushed"
            )
        if entry.is_file():
            files.append(path)
    return files


def _renders_card(folder: Path) -> bool:
    card = folder / CARD_FILE
    return not card.is_file() or is_generated(card.read_text(encoding="utf-8", errors="replace"))


def _is_weight(path: str) -> bool:
    return "/" not in path and any(fnmatch.fnmatch(path, pattern) for pattern in WEIGHT_FILES)


def _reason(err: Exception, endpoint: str) -> str:
    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so the Hub is not contacted"
    if isinstance(err, httpx2.TransportError):
        return f"cannot reach the Hub at {endpoint} ({type(err).__name__})"
    response = err.response if isinstance(err, HfHubHTTPError) else None
    if response is not None:
        if response.status_code >= 500:
            return f"the Hub answered {response.status_code} (server error); nothing was committed"
        server = response.headers.get("X-Error-Message") or ""
        reason = STATUS_REASONS.get(response.status_code, f"the Hub answered {response.status_code}")
        return f"{reason}{': ' + server if server else ''}"
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
