"""The local test Hub, driven by the real ``huggingface_hub`` client."""

from __future__ import annotations

import re

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hf_soups.testing.hub_server import DEFAULT_USER

REPO = f"{DEFAULT_USER}/demo"
WEIGHTS = bytes(range(256)) * 8  # a "*.safetensors" file: stored with LFS


def add(*files: tuple[str, bytes]) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content) for path, content in files]


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


@pytest.fixture
def api(hub_server) -> HfApi:
    return HfApi(token=hub_server.token)


def test_create_commit_and_download_by_branch_tag_and_commit(api, hub_server):
    api.create_repo(REPO)
    first = api.create_commit(
        REPO, add(("config.json", b'{"a": 1}'), ("model.safetensors", WEIGHTS)), commit_message="first"
    )
    assert re.fullmatch(r"[0-9a-f]{40}", first.oid)
    assert first.commit_url == f"{hub_server.endpoint}/{REPO}/commit/{first.oid}"
    api.create_tag(REPO, tag="v1")
    api.create_branch(REPO, branch="dev")
    second = api.create_commit(REPO, add(("config.json", b'{"a": 2}')), commit_message="second", revision="dev")

    assert read(hf_hub_download(REPO, "config.json", token=hub_server.token)) == b'{"a": 1}'
    assert read(hf_hub_download(REPO, "config.json", revision="dev", token=hub_server.token)) == b'{"a": 2}'
    assert read(hf_hub_download(REPO, "config.json", revision="v1", token=hub_server.token)) == b'{"a": 1}'
    assert read(hf_hub_download(REPO, "config.json", revision=second.oid, token=hub_server.token)) == b'{"a": 2}'
    assert read(hf_hub_download(REPO, "model.safetensors", revision="dev")) == WEIGHTS
    assert api.model_info(REPO, revision="dev").sha == second.oid
    assert api.model_info(REPO, revision=first.oid[:7]).sha == first.oid
    refs = api.list_repo_refs(REPO)
    assert {(r.name, r.target_commit) for r in refs.branches} == {("main", first.oid), ("dev", second.oid)}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", first.oid)]
    assert [c.commit_id for c in api.list_repo_commits(REPO, revision="dev")][:2] == [second.oid, first.oid]
    folder = snapshot_download(REPO, revision="v1")
    assert folder.endswith(first.oid)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt")


def test_lfs_files_go_through_the_batch_api_and_resolve_gives_linked_etag(api, hub_server):
    api.create_repo(REPO)
    commit = api.create_commit(REPO, add(("model.safetensors", WEIGHTS), ("notes.txt", b"hi")), commit_message="m")
    assert f"POST /{REPO}.git/info/lfs/objects/batch" in hub_server.requests
    assert any(r.startswith("PUT /lfs-upload/") for r in hub_server.requests)

    lfs = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors"))
    files = {f.path: f for f in api.list_repo_tree(REPO, recursive=True)}
    assert lfs.commit_hash == commit.oid
    assert lfs.etag == files["model.safetensors"].lfs.sha256 and lfs.size == len(WEIGHTS)
    regular = get_hf_file_metadata(hf_hub_url(REPO, "notes.txt"))
    assert regular.etag == files["notes.txt"].blob_id and files["notes.txt"].lfs is None
    # Same content again: preupload reports the remote oid and the client skips the commit.
    again = api.create_commit(REPO, add(("model.safetensors", WEIGHTS)), commit_message="same")
    assert again.oid == commit.oid


def test_private_repo_is_invisible_without_its_owners_token(api, hub_server):
    api.create_repo(REPO, private=True)
    api.create_commit(REPO, add(("config.json", b"{}")), commit_message="m")
    assert api.model_info(REPO).private is True
    alice = hub_server.add_user("alice")
    for token in (False, alice):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=token).model_info(REPO)
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(REPO, "config.json", token=token)
    assert read(hf_hub_download(REPO, "config.json", token=hub_server.token)) == b"{}"


def test_tokens_are_checked(api, hub_server):
    api.create_repo(REPO)
    assert api.whoami()["name"] == DEFAULT_USER
    with pytest.raises(HfHubHTTPError) as wrong:
        HfApi(token="hf_wrong").model_info(REPO)
    assert wrong.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as anonymous:
        HfApi(token=False).create_repo(f"{DEFAULT_USER}/other")
    assert anonymous.value.response.status_code == 401
    alice = hub_server.add_user("alice", orgs=["soup-lab"])
    with pytest.raises(HfHubHTTPError) as forbidden:
        HfApi(token=alice).create_commit(REPO, add(("x.txt", b"x")), commit_message="m")
    assert forbidden.value.response.status_code == 403
    assert HfApi(token=alice).create_repo("soup-lab/shared").repo_id == "soup-lab/shared"


def test_pull_requests_parent_commit_and_injected_failures(api, hub_server):
    api.create_repo(REPO)
    main = api.create_commit(REPO, add(("a.txt", b"a")), commit_message="main")
    pr = api.create_commit(REPO, add(("a.txt", b"pr")), commit_message="proposal", create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_url.endswith(f"/{REPO}/discussions/1")
    assert api.model_info(REPO).sha == main.oid
    assert read(hf_hub_download(REPO, "a.txt", revision="refs/pr/1")) == b"pr"
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit(REPO, add(("a.txt", b"b")), commit_message="m", parent_commit=pr.oid)
    assert stale.value.response.status_code == 412
    hub_server.fail(r"^POST .*/commit/", status=503, times=1)
    with pytest.raises(HfHubHTTPError) as down:
        api.create_commit(REPO, add(("a.txt", b"c")), commit_message="m")
    assert down.value.response.status_code == 503
    assert api.create_commit(REPO, add(("a.txt", b"c")), commit_message="m").oid != main.oid


def test_repo_types_are_separate(api):
    api.create_repo(REPO, repo_type="dataset")
    api.create_commit(REPO, add(("data.csv", b"a,b\n")), commit_message="m", repo_type="dataset")
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes", "data.csv"]
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(REPO)
