"""A local stand-in for the Hugging Face Hub, so tests can run the real ``huggingface_hub`` client offline.

:class:`HubServer` is a small HTTP server on ``127.0.0.1`` (random free port) that speaks the part of the Hub API
that ``huggingface_hub`` and ``transformers``' ``from_pretrained`` use:

- ``POST /api/repos/create``, ``GET /api/whoami-v2``, ``POST /api/validate-yaml``;
- ``GET /api/{type}s/{repo}[/revision/{rev}]`` (repo info with ``siblings`` and ``cardData``),
  ``/tree/{rev}[/{path}]``, ``/refs``, ``/commits/{rev}``;
- ``POST /api/{type}s/{repo}/branch/{name}``, ``POST /api/{type}s/{repo}/tag/{rev}``;
- ``POST /api/{type}s/{repo}/preupload/{rev}`` and ``/commit/{rev}`` (the NDJSON payload: ``file``, ``lfsFile``,
  ``deletedFile``, ``deletedFolder``; ``?create_pr=1`` opens ``refs/pr/N``);
- ``POST /{repo}.git/info/lfs/objects/batch`` (basic transfer) and the ``PUT`` it points to;
- ``GET|HEAD /{repo}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``, ``X-Linked-Size``.

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the client
raises its usual exceptions. Writes need ``Authorization: Bearer <token>``; an unknown token gets 401 on any request;
a private repo answers 404 to anyone but its owner. It never advertises Xet, so clients with ``HF_HUB_DISABLE_XET=1``
use the plain LFS protocol. Revisions are branch names, tags, ``refs/pr/N`` or commit shas (40 hex, or a unique
prefix of at least 7). File contents live in a temporary folder, addressed by sha256; refs and commits in memory.

Example:
    >>> from huggingface_hub import HfApi
    >>> with HubServer() as hub:                                  # doctest: +SKIP
    ...     api = HfApi(endpoint=hub.endpoint, token=hub.token)
    ...     api.create_repo("tester/demo")
    ...     api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="tester/demo")
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# URL segment (``/api/{segment}/...``) → repo type, and repo type → prefix of its web and resolve URLs.
API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Files the Hub stores with LFS: the patterns of its default ``.gitattributes``, or anything of 10 MiB and more.
LFS_PATTERNS = (
    "*.bin",
    "*.ckpt",
    "*.gz",
    "*.h5",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.pkl",
    "*.png",
    "*.pt",
    "*.pth",
    "*.safetensors",
    "*.tar",
    "*.zip",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)
DEFAULT_USER = "soup-tester"


class HubHTTPError(Exception):
    """An error answer: status, message, the Hub's ``X-Error-Code``, extra headers and extra JSON body fields."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.body = headers or {}, body or {}


@dataclass(frozen=True)
class Blob:
    """One file version: its git object id, size, sha256 (the storage key) and whether it is stored with LFS."""

    oid: str
    size: int
    sha256: str
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return _lfs_pointer(self.sha256, self.size)


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, str] = field(default_factory=dict)

    @property
    def url_path(self) -> str:
        return URL_PREFIXES[self.repo_type] + self.repo_id

    def resolve(self, revision: str) -> str | None:
        """Commit sha of a branch, tag, ``refs/heads|tags|pr/...`` ref, full sha or unique sha prefix."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix):
                return refs.get(revision[len(prefix) :])
        if match := re.fullmatch(r"refs/pr/(\d+)", revision):
            return self.pulls.get(int(match[1]))
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            found = [sha for sha in self.commits if sha.startswith(revision)]
            return found[0] if len(found) == 1 else None
        return None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _card_metadata(text: str) -> dict[str, Any]:
    """The YAML header of a ``README.md`` ({} when there is none); raises ``yaml.YAMLError`` when it does not parse."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    data = yaml.safe_load(match[1]) if match else None
    return data if isinstance(data, dict) else {}


class HubServer:
    """A local Hub on ``127.0.0.1``; start it with ``with HubServer() as hub:`` or :meth:`start`/:meth:`stop`.

    Args:
        root: folder for file contents (a temporary folder, removed on stop, when not given).

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``, to use as ``HF_ENDPOINT``.
        token: the write token of the default user (``soup-tester``).
        requests: ``"METHOD /path"`` of every request received (never headers), for assertions.

    Example:
        >>> hub = HubServer().start()                             # doctest: +SKIP
        >>> other_token = hub.add_user("alice", orgs=["soup-lab"])  # doctest: +SKIP
        >>> hub.fail("/commit/", status=503)                      # doctest: +SKIP
        >>> hub.stop()                                            # doctest: +SKIP
    """

    def __init__(self, root: str | Path | None = None):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="hf-soups-hub-") if root is None else root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []
        self._repos: dict[tuple[str, str], Repo] = {}
        self._tokens: dict[str, str] = {}
        self._orgs: dict[str, set[str]] = {}
        self._tickets: dict[str, tuple[str, int]] = {}
        self._failures: list[list[Any]] = []
        self._counter = itertools.count()
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self.token = self.add_user(DEFAULT_USER)
        self.endpoint = ""

    # ---------------------------------------------------------------- lifecycle and test controls
    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, name="hf-soups-test-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_user(self, name: str, token: str | None = None, orgs: list[str] | tuple[str, ...] = ()) -> str:
        """Register a user (member of ``orgs``) and return its token (``hf_`` + random hex unless given)."""
        token = token or "hf_" + secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = name
            for org in orgs:
                self._orgs.setdefault(org, set()).add(name)
        return token

    def fail(self, pattern: str, status: int = 500, times: int | None = None) -> None:
        """Answer ``status`` to the requests whose ``"METHOD /path"`` matches the regex ``pattern`` (the next
        ``times`` ones, or all)."""
        with self._lock:
            self._failures.append([re.compile(pattern), status, times])

    def _injected_failure(self, request_line: str) -> int | None:
        with self._lock:
            for rule in self._failures:
                pattern, status, times = rule
                if pattern.search(request_line) and (times is None or times > 0):
                    if times is not None:
                        rule[2] = times - 1
                    return status
        return None

    # ---------------------------------------------------------------- storage
    def _object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def _store(self, content: bytes, lfs: bool) -> Blob:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self._object_path(sha256)
        if not path.exists():
            path.write_bytes(content)
        oid = _git_oid(_lfs_pointer(sha256, len(content)) if lfs else content)
        return Blob(oid=oid, size=len(content), sha256=sha256, lfs=lfs)

    def read(self, blob: Blob) -> bytes:
        return self._object_path(blob.sha256).read_bytes()

    def _new_commit(
        self, repo: Repo, parent: str | None, files: dict[str, Blob], title: str, message: str, author: str
    ) -> Commit:
        date = _now()
        tree = sorted((path, blob.oid) for path, blob in files.items())
        payload = json.dumps([repo.repo_id, parent, tree, title, message, author, date, next(self._counter)])
        commit = Commit(hashlib.sha1(payload.encode()).hexdigest(), parent, title, message, author, date, files)
        repo.commits[commit.sha] = commit
        return commit

    # ---------------------------------------------------------------- auth and lookup
    def user_for(self, authorization: str | None) -> str | None:
        """The user a ``Authorization`` header authenticates (None without one; 401 for an unknown token)."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            user = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return user

    def _may_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self._orgs.get(namespace, set()))

    def get_repo(self, repo_type: str, repo_id: str, user: str | None, write: bool = False) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        namespace = repo_id.split("/")[0]
        if repo is None or (repo.private and not self._may_write(user, namespace)):
            raise HubHTTPError(404, f"Repository not found: {repo_type} '{repo_id}'", "RepoNotFound")
        if write and user is None:
            raise HubHTTPError(401, "You must be authenticated to write to this repository")
        if write and not self._may_write(user, namespace):
            raise HubHTTPError(403, f"You don't have the rights to write to {repo_type} '{repo_id}'")
        return repo

    def get_commit(self, repo: Repo, revision: str) -> Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    # ---------------------------------------------------------------- API operations (called by the handler)
    def create_repo(self, user: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repository")
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubHTTPError(400, f"Invalid repo type '{repo_type}'")
        namespace = body.get("organization") or user
        repo_id = f"{namespace}/{body['name']}"
        if not self._may_write(user, namespace):
            raise HubHTTPError(403, f"You don't have the rights to create a repo under '{namespace}'")
        url = f"{self.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self._repos:
            raise HubHTTPError(409, f"You already created this {repo_type} repo", body={"url": url})
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        repo = Repo(repo_type, repo_id, private, _now())
        gitattributes = self._store(GITATTRIBUTES.encode(), lfs=False)
        repo.branches["main"] = self._new_commit(
            repo, None, {".gitattributes": gitattributes}, "initial commit", "", user
        ).sha
        self._repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def whoami(self, user: str | None) -> dict[str, Any]:
        if user is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        orgs = [{"name": org, "type": "org"} for org, members in sorted(self._orgs.items()) if user in members]
        return {
            "type": "user",
            "id": user,
            "name": user,
            "fullname": user,
            "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
        }

    def repo_info(self, repo: Repo, revision: str, blobs: bool) -> dict[str, Any]:
        commit = self.get_commit(repo, revision)
        readme = commit.files.get("README.md")
        try:
            card = _card_metadata(self.read(readme).decode("utf-8", "replace")) if readme else {}
        except yaml.YAMLError:
            card = {}
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=blob.size, blobId=blob.oid)
                if blob.lfs:
                    sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256, "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(card.get("tags") or []),
            "cardData": card or None,
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info.update(library_name=card.get("library_name"), pipeline_tag=card.get("pipeline_tag"))
        return info

    def tree(self, repo: Repo, revision: str, path: str, recursive: bool) -> list[dict[str, Any]]:
        commit = self.get_commit(repo, revision)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        below = {p[len(prefix) :]: blob for p, blob in commit.files.items() if p.startswith(prefix)}
        if prefix and not below:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        folders: dict[str, list[str]] = {}
        entries = []
        for rel, blob in sorted(below.items()):
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                folders.setdefault("/".join(parts[:depth]), []).append(blob.oid)
            if recursive or len(parts) == 1:
                entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": blob.size, "path": prefix + rel}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
                entries.append(entry)
        for folder, oids in sorted(folders.items()):
            if recursive or "/" not in folder:
                oid = hashlib.sha1("".join(oids).encode()).hexdigest()
                entries.append({"type": "directory", "oid": oid, "size": 0, "path": prefix + folder})
        return entries

    def refs(self, repo: Repo, include_prs: bool) -> dict[str, Any]:
        def ref_list(kind: str, refs: dict[Any, str]) -> list[dict[str, str]]:
            return [
                {"name": str(name), "ref": f"refs/{kind}/{name}", "targetCommit": sha}
                for name, sha in sorted(refs.items())
            ]

        answer = {"branches": ref_list("heads", repo.branches), "tags": ref_list("tags", repo.tags), "converts": []}
        if include_prs:
            answer["pullRequests"] = ref_list("pr", repo.pulls)
        return answer

    def commits(self, repo: Repo, revision: str) -> list[dict[str, Any]]:
        commit: Commit | None = self.get_commit(repo, revision)
        history = []
        while commit is not None:
            history.append(
                {
                    "id": commit.sha,
                    "title": commit.title,
                    "message": commit.message,
                    "authors": [{"user": commit.author}],
                    "date": commit.date,
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return history

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        if branch in repo.branches or branch in repo.tags:
            raise HubHTTPError(409, f"Reference already exists: {branch}")
        repo.branches[branch] = self.get_commit(repo, starting_point or "main").sha

    def create_tag(self, repo: Repo, revision: str, tag: str) -> None:
        if tag in repo.tags or tag in repo.branches:
            raise HubHTTPError(409, f"Reference already exists: {tag}")
        repo.tags[tag] = self.get_commit(repo, revision).sha

    def preupload(self, repo: Repo, revision: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        current = self.get_commit(repo, revision).files
        answer = []
        for file in files:
            path = file["path"]
            lfs = file["size"] >= LFS_MIN_SIZE or any(fnmatch.fnmatch(path, p) for p in LFS_PATTERNS)
            blob = current.get(path)
            oid = None if blob is None else (blob.sha256 if blob.lfs else blob.oid)
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": answer, "commitOid": self.get_commit(repo, revision).sha}

    def lfs_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("operation") != "upload" or "basic" not in body.get("transfers", ["basic"]):
            raise HubHTTPError(422, "Only the 'upload' operation with the 'basic' transfer is supported")
        objects = []
        for obj in body["objects"]:
            answer: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self._object_path(obj["oid"]).exists():
                ticket = secrets.token_hex(16)
                self._tickets[ticket] = (obj["oid"], obj["size"])
                href = f"{self.endpoint}/lfs-upload/{obj['oid']}?ticket={ticket}"
                answer["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(answer)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_upload(self, oid: str, ticket: str, content: bytes) -> None:
        if self._tickets.pop(ticket, None) != (oid, len(content)):
            raise HubHTTPError(403, "Invalid or expired upload ticket")
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubHTTPError(400, f"Uploaded content does not match its sha256 {oid}")
        self._store(content, lfs=True)

    def commit(
        self, repo: Repo, revision: str, user: str, lines: list[dict[str, Any]], create_pr: bool
    ) -> dict[str, Any]:
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None or not header.get("summary"):
            raise HubHTTPError(400, "The commit needs a header with a summary")
        pr_match = re.fullmatch(r"refs/pr/(\d+)", revision)
        if revision not in repo.branches and not pr_match:
            raise HubHTTPError(
                400,
                f"Invalid rev id: {revision}: commits go to a branch or a pull request",
                None if repo.resolve(revision) else "RevisionNotFound",
            )
        head = self.get_commit(repo, revision)
        if header.get("parentCommit") and not head.sha.startswith(header["parentCommit"]):
            raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = self._store(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                path = self._object_path(value["oid"])
                if not path.exists():
                    raise HubHTTPError(422, f"LFS object {value['oid']} of '{value['path']}' was never uploaded")
                files[value["path"]] = self._store(path.read_bytes(), lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubHTTPError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(folder)}
            elif key != "header":
                raise HubHTTPError(400, f"Unknown commit operation '{key}'")
        commit = self._new_commit(repo, head.sha, files, header["summary"], header.get("description", ""), user)
        pr_url = None
        if create_pr:
            number = max(repo.pulls, default=0) + 1
            repo.pulls[number] = commit.sha
            pr_url = f"{self.endpoint}/{repo.url_path}/discussions/{number}"
        elif pr_match:
            repo.pulls[int(pr_match[1])] = commit.sha
        else:
            repo.branches[revision] = commit.sha
        return {
            "success": True,
            "commitOid": commit.sha,
            "commitUrl": f"{self.endpoint}/{repo.url_path}/commit/{commit.sha}",
            "hookOutput": "",
            "pullRequestUrl": pr_url,
        }


# Routes: (method, path regex, handler method name). ``{type}`` and ``{repo}`` are expanded below.
_ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", r"/api/{type}/{repo}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ("GET", r"/api/{type}/{repo}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
    ("GET", r"/api/{type}/{repo}/refs", "refs"),
    ("GET", r"/api/{type}/{repo}/commits/(?P<rev>[^/]+)", "commits"),
    ("POST", r"/api/{type}/{repo}/branch/(?P<rev>[^/]+)", "create_branch"),
    ("POST", r"/api/{type}/{repo}/tag/(?P<rev>[^/]+)", "create_tag"),
    ("POST", r"/api/{type}/{repo}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", r"/api/{type}/{repo}/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", r"/{prefix}{repo}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("GET", r"/{prefix}{repo}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("HEAD", r"/{prefix}{repo}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]
_PATTERNS = {
    "type": r"(?P<type>models|datasets|spaces)",
    "repo": r"(?P<repo>[^/]+/[^/]+)",
    "prefix": r"(?:(?P<prefix>datasets|spaces)/)?",
}
_COMPILED = [
    (method, re.compile(re.sub(r"\{(type|repo|prefix)\}", lambda m: _PATTERNS[m[1]], regex)), name)
    for method, regex, name in _ROUTES
]


class _Handler(BaseHTTPRequestHandler):
    """Dispatches each request to a ``route_<name>`` method; :class:`HubHTTPError` becomes a Hub-style error."""

    server_hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the test output stays readable
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # ---------------------------------------------------------------- plumbing
    def _dispatch(self, method: str) -> None:
        hub = self.server_hub
        url = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        request_line = f"{method} {url.path}"
        hub.requests.append(request_line)
        try:
            if (status := hub._injected_failure(request_line)) is not None:
                raise HubHTTPError(status, f"Injected failure {status}")
            for route_method, regex, name in _COMPILED:
                match = regex.fullmatch(url.path)
                if route_method == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with hub._lock:
                        self.user = hub.user_for(self.headers.get("Authorization"))
                        getattr(self, f"route_{name}")(**params)
                    return
            raise HubHTTPError(404, f"No route for {request_line}")
        except HubHTTPError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, {"error": err.message, **err.body}, headers)

    def _send(
        self,
        status: int,
        data: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        size: int | None = None,
    ) -> None:
        """Answer JSON ``data``, or the bytes ``raw``; a HEAD answer gives only the ``size`` of what GET sends."""
        body = raw if raw is not None else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if size is not None else "application/json")
        self.send_header("Content-Length", str(len(body) if size is None else size))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise HubHTTPError(400, f"Invalid JSON body: {err}") from err

    def _repo(self, repo: str, type: str | None = None, prefix: str | None = None, write: bool = False) -> Repo:
        repo_type = API_TYPES[type] if type else {None: "model", "datasets": "dataset", "spaces": "space"}[prefix]
        return self.server_hub.get_repo(repo_type, repo, self.user, write=write)

    # ---------------------------------------------------------------- routes
    def route_whoami(self) -> None:
        self._send(200, self.server_hub.whoami(self.user))

    def route_create_repo(self) -> None:
        self._send(200, self.server_hub.create_repo(self.user, self._json()))

    def route_validate_yaml(self) -> None:
        try:
            _card_metadata(self._json().get("content", ""))
        except yaml.YAMLError as err:
            self._send(400, {"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []})
            return
        self._send(200, {"errors": [], "warnings": []})

    def route_repo_info(self, type: str, repo: str, rev: str = "main") -> None:
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        self._send(200, self.server_hub.repo_info(self._repo(repo, type), rev, blobs))

    def route_tree(self, type: str, repo: str, rev: str, path: str = "") -> None:
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        self._send(200, self.server_hub.tree(self._repo(repo, type), rev, path, recursive))

    def route_refs(self, type: str, repo: str) -> None:
        self._send(200, self.server_hub.refs(self._repo(repo, type), "include_prs" in self.query))

    def route_commits(self, type: str, repo: str, rev: str) -> None:
        self._send(200, self.server_hub.commits(self._repo(repo, type), rev))

    def route_create_branch(self, type: str, repo: str, rev: str) -> None:
        self.server_hub.create_branch(self._repo(repo, type, write=True), rev, self._json().get("startingPoint"))
        self._send(200, {})

    def route_create_tag(self, type: str, repo: str, rev: str) -> None:
        self.server_hub.create_tag(self._repo(repo, type, write=True), rev, self._json()["tag"])
        self._send(200, {})

    def route_preupload(self, type: str, repo: str, rev: str) -> None:
        self._send(200, self.server_hub.preupload(self._repo(repo, type, write=True), rev, self._json()["files"]))

    def route_commit(self, type: str, repo: str, rev: str) -> None:
        target = self._repo(repo, type, write=True)
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise HubHTTPError(400, f"Invalid NDJSON commit payload: {err}") from err
        create_pr = self.query.get("create_pr") == "1"
        self._send(200, self.server_hub.commit(target, rev, self.user or "", lines, create_pr))

    def route_lfs_batch(self, repo: str, prefix: str | None = None) -> None:
        self._repo(repo, prefix=prefix, write=True)
        self._send(200, self.server_hub.lfs_batch(self._json()))

    def route_lfs_upload(self, oid: str) -> None:
        self.server_hub.lfs_upload(oid, self.query.get("ticket", ""), self.body)
        self._send(200, {})

    def route_resolve(self, repo: str, rev: str, path: str, prefix: str | None = None) -> None:
        hub = self.server_hub
        commit = hub.get_commit(self._repo(repo, prefix=prefix), rev)
        blob = commit.files.get(path)
        headers = {"X-Repo-Commit": commit.sha}
        if blob is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        if blob.lfs:
            headers.update(
                {"ETag": f'"{blob.sha256}"', "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)}
            )
        else:
            headers["ETag"] = f'"{blob.oid}"'
        self._send(200, headers=headers, raw=hub.read(blob) if self.command == "GET" else b"", size=blob.size)
