"""Pulling ingredients from and pushing soups to the local test Hub with the real huggingface_hub client."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
import socket
from pathlib import Path

import pytest
import torch
from helpers import GLUE_DIR, needs_glue
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoModelForSequenceClassification

from hf_soups.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from hf_soups.card import write_card
from hf_soups.cli import main
from hf_soups.errors import SoupError
from hf_soups.file_names import TOKENIZER_FILES
from hf_soups.hub import MODEL_FILES, SOUP_FILES, parse_repo_id, push_soup, stale_files
from hf_soups.merge import merge_models
from hf_soups.model_folder import COPIED_FILES
from hf_soups.recipe_file import RECIPE_FILE
from hf_soups.record import RecipeRecord, SoupRecord, SoupResult
from hf_soups.testing.hub_server import DEFAULT_USER

SOUP_REPO = f"{DEFAULT_USER}/rte-soup"


def upload(api: HfApi, folder: Path, repo_id: str, revision: str | None = None, private: bool = False) -> str:
    """Push an ingredient folder (creating repo and branch) and return the commit sha."""
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, commit_message="train").oid


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def soup(make_ingredients, tmp_path) -> Path:
    """A merged soup of two local tiny BERT classifiers (plain merge: no recipe, no results)."""
    return merge_models(make_ingredients(2), output_dir=tmp_path / "soup", progress=False)


def test_soup_of_hub_ingredients_is_pushed_in_one_commit_and_loads_back(
    hub_server, make_ingredients, tmp_path, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    api = HfApi()
    first, second, third = make_ingredients(3)
    upload(api, first, f"{DEFAULT_USER}/bert-rte")
    upload(api, second, f"{DEFAULT_USER}/bert-rte", revision="lr3e-5")  # the same repo at a second revision
    pinned = upload(api, third, f"{DEFAULT_USER}/bert-rte-seed2", private=True)
    specs = [f"{DEFAULT_USER}/bert-rte", f"{DEFAULT_USER}/bert-rte@lr3e-5", f"{DEFAULT_USER}/bert-rte-seed2@{pinned}"]
    folder = merge_models(specs, output_dir=tmp_path / "soup", progress=False)

    record = SoupRecord.load(folder)
    assert [i.revision for i in record.ingredients][2] == pinned
    record.recipe = RecipeRecord(
        name="uniform",
        task="rte",
        metric="accuracy",
        select_split="validation:select",
        report_split="validation:report",
        split_rule={"rows": {"select": 8, "report": 9}},
    )
    record.results = [
        SoupResult("best individual", {"select": {"accuracy": 0.5}, "report": {"accuracy": 5 / 9}}),
        SoupResult(
            "uniform",
            {"select": {"accuracy": 0.625}, "report": {"accuracy": 6 / 9}},
            {"delta": 0.111, "low": -0.111, "high": 0.333, "resamples": 1000},
        ),
    ]
    record.save(folder)
    before = snapshot(folder)

    url = push_soup(folder, SOUP_REPO)
    commits = api.list_repo_commits(SOUP_REPO)
    assert len(commits) == 2 and url == f"{hub_server.endpoint}/{SOUP_REPO}/commit/{commits[0].commit_id}"
    assert set(before) | {"README.md", ".gitattributes"} == set(api.list_repo_files(SOUP_REPO))
    assert snapshot(folder) == before  # the card went up without being written here

    pushed = AutoModelForSequenceClassification.from_pretrained(SOUP_REPO)
    local = AutoModelForSequenceClassification.from_pretrained(folder)
    assert all(torch.equal(v, state(local)[k]) for k, v in state(pushed).items())
    card = ModelCard.load(SOUP_REPO)
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("accuracy", 6 / 9)]
    # a merge of its Hub ingredients for the Hub's model tree (issue 14, defect 10; was None)
    assert card.data.base_model == [f"{DEFAULT_USER}/bert-rte", f"{DEFAULT_USER}/bert-rte-seed2"]
    assert "+11.1 (95% CI −11.1 … +33.3)" in card.text

    token = hub_server.token.encode()
    out = capsys.readouterr()
    assert hub_server.token not in caplog.text + out.out + out.err
    stored = [p for root in (folder, Path(constants.HF_HOME), hub_server.root) for p in root.rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if token in p.read_bytes()]


def test_push_to_a_branch_and_as_a_pull_request(hub_server, soup):
    api = HfApi(token=hub_server.token)
    push_soup(soup, f"{SOUP_REPO}@greedy", token=hub_server.token)
    assert "config.json" not in api.list_repo_files(SOUP_REPO)
    dev = AutoModelForSequenceClassification.from_pretrained(SOUP_REPO, revision="greedy", token=hub_server.token)
    assert dev.config.num_labels == 2

    url = push_soup(soup, SOUP_REPO, token=hub_server.token, create_pr=True, commit_message="Add the soup")
    pr = api.list_repo_refs(SOUP_REPO, include_pull_requests=True).pull_requests
    assert [(ref.ref, url.endswith(ref.target_commit)) for ref in pr] == [("refs/pr/1", True)]
    assert api.list_repo_commits(SOUP_REPO, revision="refs/pr/1")[0].title == "Add the soup"


def test_token_from_saved_login_and_missing_token_and_own_card(hub_server, soup):
    with pytest.raises(SoupError, match="no Hub token"):
        push_soup(soup, SOUP_REPO)
    Path(constants.HF_TOKEN_PATH).write_text(hub_server.token)
    (soup / "README.md").write_text("---\nlicense: mit\n---\nMy own card.\n")  # a card in the folder goes as is
    assert push_soup(soup, SOUP_REPO, private=True).startswith(f"{hub_server.endpoint}/{SOUP_REPO}/commit/")
    assert HfApi(token=hub_server.token).model_info(SOUP_REPO).private is True
    assert Path(hf_hub_download(SOUP_REPO, "README.md", token=hub_server.token)).read_text().endswith("My own card.\n")


def test_a_generated_card_is_rendered_again_for_the_repo_it_is_pushed_to(hub_server, soup):
    write_card(soup)  # as a recipe writes it, before the repo is known: it names the folder
    local = (soup / "README.md").read_text()
    assert 'from_pretrained("soup")' in local
    push_soup(soup, SOUP_REPO, token=hub_server.token)
    pushed = Path(hf_hub_download(SOUP_REPO, "README.md", token=hub_server.token)).read_text()
    assert f'from_pretrained("{SOUP_REPO}")' in pushed and 'from_pretrained("soup")' not in pushed
    assert (soup / "README.md").read_text() == local  # the local folder is unchanged
    (soup / "README.md").write_text(local.replace("## Usage", "## Usage\n\nMy note."))  # an edited card goes as is
    push_soup(soup, SOUP_REPO, token=hub_server.token)
    pushed = Path(hf_hub_download(SOUP_REPO, "README.md", token=hub_server.token)).read_text()
    assert "My note." in pushed and 'from_pretrained("soup")' in pushed


def test_the_pushed_soup_json_names_local_paths_by_their_last_part(hub_server, soup, tmp_path):
    record = SoupRecord.load(soup)
    record.recipe = RecipeRecord(name="uniform", split_rule={"source": f"local:{tmp_path / 'glue'}", "seed": 0})
    record.save(soup)
    before = snapshot(soup)
    push_soup(soup, SOUP_REPO, token=hub_server.token)
    pushed = Path(hf_hub_download(SOUP_REPO, "soup.json", token=hub_server.token))
    assert str(tmp_path) not in pushed.read_text()
    published = SoupRecord.load(pushed.parent)
    assert published.recipe.split_rule == {"source": "local:glue", "seed": 0}
    assert [i.spec for i in published.ingredients] == ["ing0", "ing1"]
    assert snapshot(soup) == before  # the local record keeps its paths


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("edited", "model.safetensors differs from the file soup.json records (its sha256)"),
        ("missing", "model.safetensors is missing"),
        ("added", "extra.safetensors is not one of the weight files soup.json records"),
    ],
)
def test_a_push_refuses_weights_that_are_not_the_ones_soup_json_records(hub_server, soup, capsys, change, message):
    weights = soup / "model.safetensors"
    assert SoupRecord.load(soup).files == {"model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    if change == "edited":
        content = bytearray(weights.read_bytes())
        content[-1] ^= 1
        weights.write_bytes(bytes(content))
    elif change == "missing":
        weights.unlink()
    else:
        (soup / "extra.safetensors").write_bytes(weights.read_bytes())
    with pytest.raises(SoupError, match=re.escape(f"soup folder {soup}: {message}")):
        push_soup(soup, SOUP_REPO, token=hub_server.token)
    assert main(["push", str(soup), SOUP_REPO, "--token", hub_server.token]) == 2
    assert message in capsys.readouterr().err
    assert not HfApi(token=hub_server.token).repo_exists(SOUP_REPO)  # nothing was uploaded


@pytest.mark.parametrize("target", ["file", "folder"])
def test_a_push_refuses_a_link_out_of_the_folder_and_uploads_one_within(hub_server, soup, tmp_path, capsys, target):
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the soup's")
    link = soup / ("notes.txt" if target == "file" else "data")
    link.symlink_to(outside / "secret.txt" if target == "file" else outside)
    message = f"soup folder {soup}: {link.name} is a symbolic link to {link.resolve()}, outside the folder"
    with pytest.raises(SoupError, match=re.escape(message)):
        push_soup(soup, SOUP_REPO, token=hub_server.token)
    assert main(["push", str(soup), SOUP_REPO, "--token", hub_server.token]) == 2
    [error] = capsys.readouterr().err.strip().splitlines()
    assert message in error
    assert not HfApi(token=hub_server.token).repo_exists(SOUP_REPO)  # nothing was uploaded

    link.unlink()
    (soup / "config-link.json").symlink_to("config.json")  # a link within the folder goes up as the file it names
    push_soup(soup, SOUP_REPO, token=hub_server.token)
    pushed = Path(hf_hub_download(SOUP_REPO, "config-link.json", token=hub_server.token))
    assert pushed.read_bytes() == (soup / "config.json").read_bytes()


@pytest.mark.parametrize("soup_shards", ["sharded soup over a single file", "single-file soup over shards"])
def test_a_push_leaves_the_repo_serving_the_soup_and_keeps_the_users_other_files(
    hub_server, make_ingredients, tmp_path, soup_shards
):
    api = HfApi(token=hub_server.token)
    sharded_soup = soup_shards.startswith("sharded")
    earlier = make_ingredients(1, name="earlier", save=None if sharded_soup else {"max_shard_size": "20KB"})[0]
    (earlier / "merges.txt").write_text("#version: 0.2\n")  # a tokenizer file the soup's tokenizer lacks
    torch.save({}, earlier / "pytorch_model.bin")
    (earlier / "notes.txt").write_text("mine")
    (earlier / "onnx").mkdir()
    (earlier / "onnx" / "model.safetensors").write_bytes(b"mine too")  # not at the top: from_pretrained skips it
    upload(api, earlier, SOUP_REPO)
    before = set(api.list_repo_files(SOUP_REPO))
    assert ({"model.safetensors"} if sharded_soup else {"model.safetensors.index.json"}) <= before

    soup = merge_models(
        make_ingredients(2), tmp_path / "soup", max_shard_size="20KB" if sharded_soup else "5GB", progress=False
    )
    assert (soup / "model.safetensors.index.json").is_file() is sharded_soup
    push_soup(soup, SOUP_REPO, token=hub_server.token)

    files = set(api.list_repo_files(SOUP_REPO))
    assert files == set(snapshot(soup)) | {"README.md", ".gitattributes", "notes.txt", "onnx/model.safetensors"}
    assert len(api.list_repo_commits(SOUP_REPO)) == 3  # created, the earlier model, the soup: one commit
    pushed = AutoModelForSequenceClassification.from_pretrained(SOUP_REPO, token=hub_server.token)
    local = AutoModelForSequenceClassification.from_pretrained(soup)
    assert all(torch.equal(v, state(local)[k]) for k, v in state(pushed).items())


def test_stale_files_knows_every_file_a_soup_folder_may_hold():
    kinds = [*MODEL_FILES, *SOUP_FILES, *TOKENIZER_FILES]
    names = [RECIPE_FILE, ADAPTER_CONFIG, *ADAPTER_WEIGHTS, *COPIED_FILES, "model-00001-of-00002.safetensors"]
    assert all(any(fnmatch.fnmatch(name, kind) for kind in kinds) for name in names)
    repo = ["config.json", "vocab.txt", "notes.txt", "adapter_config.json", "adapter_model.safetensors"]
    assert stale_files(repo, ["config.json", "model.safetensors"]) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert stale_files(repo, ["config.json", "tokenizer.json"])[-1] == "vocab.txt"  # the soup's tokenizer replaces


def _closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("server down", "cannot reach the Hub"),
        ("wrong token", "rejected the token"),
        ("server error", "answered 500 (server error)"),
        ("dataset repo", "names a dataset repo"),
    ],
)
def test_failed_push_is_one_clear_error_and_leaves_the_folder_intact(
    hub_server, soup, monkeypatch, capsys, case, expected
):
    repo, token = SOUP_REPO, hub_server.token
    if case == "server down":
        monkeypatch.setattr(constants, "ENDPOINT", _closed_port_endpoint())
    elif case == "wrong token":
        token = "hf_" + "x" * 32
    elif case == "server error":
        hub_server.fail(r"^POST /api/models/.*/commit/", status=500)
    else:
        repo = f"datasets/{SOUP_REPO}"
    before = snapshot(soup)

    with pytest.raises(SoupError, match=re.escape(expected)) as err:
        push_soup(soup, repo, token=token)
    assert token not in str(err.value)
    assert main(["push", str(soup), repo, "--token", token]) == 2
    out = capsys.readouterr()
    [error] = [line for line in out.err.splitlines() if line.startswith("hf-soups push: error:")]
    assert expected in error and token not in out.out + out.err
    assert snapshot(soup) == before
    if case == "server error":
        assert len(HfApi(token=hub_server.token).list_repo_commits(SOUP_REPO)) == 1  # nothing committed


def test_cli_push(hub_server, soup, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(soup), SOUP_REPO, "--revision", "v1"]) == 0
    assert f"{hub_server.endpoint}/{SOUP_REPO}/commit/" in capsys.readouterr().out
    card = ModelCard.load(snapshot_download(SOUP_REPO, revision="v1") + "/README.md")
    assert card.data.tags == ["model-soup", "merge", "hf-soups"] and "no evaluation was run" in card.text


def test_cli_push_states_the_license_given(hub_server, soup, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(soup), SOUP_REPO, "--license", "apache-2.0"]) == 0
    assert ModelCard.load(SOUP_REPO).data.license == "apache-2.0"


def test_offline_mode_uses_cached_ingredients_and_fails_clearly_without_them(
    hub_server, make_ingredients, tmp_path, monkeypatch, soup
):
    api = HfApi(token=hub_server.token)
    first, second, third = make_ingredients(3, name="hub")
    for name, folder in (("a", first), ("b", second), ("uncached", third)):
        upload(api, folder, f"{DEFAULT_USER}/{name}")
    online = merge_models([f"{DEFAULT_USER}/a", f"{DEFAULT_USER}/b"], tmp_path / "online" / "ab", progress=False)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = merge_models([f"{DEFAULT_USER}/a", f"{DEFAULT_USER}/b"], tmp_path / "offline" / "ab", progress=False)
    assert snapshot(offline) == snapshot(online)  # the card too: it names the folder, "ab" in both
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download(f"{DEFAULT_USER}/uncached")
    with pytest.raises(SoupError, match="not in the local Hub cache"):
        merge_models([f"{DEFAULT_USER}/a", f"{DEFAULT_USER}/uncached"], output_dir=tmp_path / "no", progress=False)
    with pytest.raises(SoupError, match="HF_HUB_OFFLINE is set"):
        push_soup(soup, SOUP_REPO, token=hub_server.token)


def test_parse_repo_id():
    assert parse_repo_id("me/soup") == ("me/soup", None)
    assert parse_repo_id("me/soup@dev") == ("me/soup", "dev")
    with pytest.raises(SoupError, match="names a space repo"):
        parse_repo_id("spaces/me/soup")
    with pytest.raises(SoupError, match="names revision 'dev' but revision='main'"):
        parse_repo_id("me/soup@dev", revision="main")
    assert parse_repo_id("soup@dev") == ("soup", "dev")  # a bare name: push_soup adds the token's user
    with pytest.raises(SoupError, match="namespace/name"):
        parse_repo_id("hf://soup")


@pytest.mark.parametrize("how", ["push_soup", "hf-soups push"])
def test_a_bare_repo_name_goes_to_the_tokens_user(hub_server, soup, monkeypatch, capsys, how):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    if how == "push_soup":
        url = push_soup(soup, "rte-soup@v1")
    else:
        assert main(["push", str(soup), "rte-soup", "--revision", "v1"]) == 0
        url = capsys.readouterr().out
    assert f"{hub_server.endpoint}/{SOUP_REPO}/commit/" in url
    card = Path(hf_hub_download(SOUP_REPO, "README.md", revision="v1")).read_text()
    assert f'from_pretrained("{SOUP_REPO}")' in card


@pytest.mark.slow
@needs_glue
def test_soup_command_with_hub_revisions_pushes_a_card_with_the_run_numbers(
    hub_server, make_ingredients, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    api = HfApi()
    first, second, third = make_ingredients(3)
    upload(api, first, f"{DEFAULT_USER}/bert-rte")
    upload(api, second, f"{DEFAULT_USER}/bert-rte", revision="lr3e-5")
    upload(api, third, f"{DEFAULT_USER}/bert-rte", revision="seed2")
    specs = [f"{DEFAULT_USER}/bert-rte", f"{DEFAULT_USER}/bert-rte@lr3e-5", f"{DEFAULT_USER}/bert-rte@seed2"]
    out = tmp_path / "soup"
    argv = ["soup", "--task", "rte", *specs, "-o", str(out), "--glue-dir", str(GLUE_DIR), "--push-to-hub", SOUP_REPO]
    assert main(argv) == 0
    record = SoupRecord.load(out)
    assert all(i.revision and len(i.revision) == 40 for i in record.ingredients)
    greedy = next(r for r in record.results if r.name == "greedy")
    card = ModelCard.load(SOUP_REPO)
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("accuracy", greedy.scores["report"]["accuracy"])
    ]
    pushed = AutoModelForSequenceClassification.from_pretrained(SOUP_REPO)
    local = AutoModelForSequenceClassification.from_pretrained(out)
    assert all(torch.equal(v, state(local)[k]) for k, v in state(pushed).items())
    recipe = (out / "recipe.yaml").read_text()
    kept = [i for i in record.ingredients if i.kept]
    assert kept and all(f"{DEFAULT_USER}/bert-rte@{i.revision}" in recipe for i in kept)  # pinned to its commit


@pytest.mark.parametrize("token_from", ["HF_TOKEN", "--token"])
def test_merge_command_pushes_to_the_hub(token_from, hub_server, make_ingredients, tmp_path, monkeypatch, capsys):
    argv = ["merge", *map(str, make_ingredients(2)), "-o", str(tmp_path / "soup"), "--push-to-hub", SOUP_REPO]
    if token_from == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", hub_server.token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        argv += ["--token", hub_server.token]
    assert main(argv) == 0
    assert f"{hub_server.endpoint}/{SOUP_REPO}/commit/" in capsys.readouterr().out
    assert "model-soup" in ModelCard.load(SOUP_REPO).data.tags


def test_missing_hub_repo_and_revision_are_named(hub_server, make_ingredients, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    upload(HfApi(), make_ingredients(1)[0], f"{DEFAULT_USER}/bert-rte")
    for spec, message in [
        (f"{DEFAULT_USER}/nope", "no Hub repo"),
        (f"{DEFAULT_USER}/bert-rte@nope", "has no revision 'nope'"),
    ]:
        with pytest.raises(SoupError, match=f"ingredient '{re.escape(spec)}': .*{message}"):
            merge_models([f"{DEFAULT_USER}/bert-rte", spec], tmp_path / "soup", progress=False)
        assert not (tmp_path / "soup").exists()
