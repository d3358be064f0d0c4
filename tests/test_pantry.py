"""The pantry's own reading: damaged entries and start heads refused with one message naming the file."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from helpers import tiny_bert

import hf_soups.pantry as pantry_module
from hf_soups.atomic_folder import NAME_MAX
from hf_soups.errors import SoupError
from hf_soups.pantry import ENTRY_FILE, HEAD_FILE, Pantry, fingerprint

START = {"weights": "a" * 64, "body": "b" * 64, "head": "c" * 64}
INFO = {
    "run_name": "lr2e-05",
    "kind": "final",
    "step": 4,
    "epoch": 1.0,
    "created": 1.0,
    "training_args": {},
    "start": START,
    "start_model": "base",
    "heldout": None,
}


def write_entry(pantry, name, content):
    (pantry / name).mkdir(parents=True)
    (pantry / name / ENTRY_FILE).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())


def test_a_whole_entry_is_read(tmp_path):
    write_entry(tmp_path, "a", INFO)
    optional_left_out = {k: v for k, v in INFO.items() if k not in ("heldout", "start_model")}
    write_entry(tmp_path, "b", optional_left_out | {"epoch": None})
    assert [e.name for e in Pantry(tmp_path).entries()] == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "cannot be read as JSON"),
        (b'{"run_name": "\xff"}', "cannot be read as JSON"),
        ([INFO], "is a JSON list, not an object"),
        ({k: v for k, v in INFO.items() if k != "kind"}, "lacks 'kind'"),
        (INFO | {"step": "4"}, "'step' must be a whole number, got '4'"),
        (INFO | {"step": True}, "'step' must be a whole number, got True"),
        (INFO | {"training_args": []}, "'training_args' must be a JSON object, got []"),
        (INFO | {"start": {"weights": "a"}}, "lacks 'start.body'"),
        (INFO | {"start_model": ["base"]}, "'start_model' must be a string or null"),
    ],
    ids=[
        "invalid JSON",
        "not UTF-8",
        "a list",
        "missing key",
        "string step",
        "bool step",
        "list args",
        "partial start",
        "list start model",
    ],
)
def test_a_damaged_entry_is_one_message_naming_its_file(tmp_path, content, message):
    write_entry(tmp_path, "good", INFO)
    write_entry(tmp_path, "bad", content)
    with pytest.raises(SoupError, match="pantry entry .*bad/ingredient.json") as caught:
        Pantry(tmp_path).entries()
    assert message in str(caught.value) and "move the folder out of the pantry" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "truncated safetensors file"), (b"not a safetensors file", "corrupt or truncated safetensors file")],
    ids=["empty", "another format"],
)
def test_a_damaged_start_head_is_one_message_naming_it(tmp_path, content, message):
    pantry = Pantry(tmp_path)
    (tmp_path / HEAD_FILE).write_bytes(content)
    for read in (pantry.head_mode, lambda: pantry.pin_head(tiny_bert())):
        with pytest.raises(SoupError, match=f"start head {tmp_path / HEAD_FILE}: {message}"):
            read()


def test_a_truncated_start_head_is_one_message_naming_it(tmp_path):
    pantry = Pantry(tmp_path)
    assert pantry.pin_head(tiny_bert()) == "random" and pantry.head_mode() == "random"
    whole = (tmp_path / HEAD_FILE).read_bytes()
    (tmp_path / HEAD_FILE).write_bytes(whole[:-8])
    with pytest.raises(SoupError, match=f"start head {tmp_path / HEAD_FILE}: truncated safetensors file"):
        pantry.pin_head(tiny_bert())


def test_a_run_of_the_longest_name_is_averaged(tmp_path):
    pantry, model, run = Pantry(tmp_path), tiny_bert(), "r" * NAME_MAX
    for step in (1, 2):
        info = INFO | {"run_name": run, "kind": "checkpoint", "step": step, "start": fingerprint(model)}
        pantry.add(f"step{step}", model, None, info)
    [average] = pantry.run_averages(2)
    assert average.path.parent == tmp_path / ".averages" and average.path.name.endswith(".last2")
    assert len(average.path.name) == NAME_MAX


def test_an_entry_of_a_run_name_longer_than_the_name_limit_is_added_under_a_fitted_name(tmp_path):
    pantry, model, run = Pantry(tmp_path), tiny_bert(), "é" * NAME_MAX  # 2 bytes a character
    info = INFO | {"run_name": run, "kind": "final", "start": fingerprint(model)}
    first, second = (pantry.add(f"{run}.checkpoint-10.ema-0.999", model, None, info) for _ in range(2))
    assert len(second.name.encode()) <= NAME_MAX and second.name == first.name + "-2"
    assert [e.path for e in pantry.entries("final")] == [first, second]


def test_only_the_temporaries_of_writers_that_are_gone_are_removed(tmp_path):
    pantry, host, hexes = Pantry(tmp_path), pantry_module._HOST, uuid.uuid4().hex
    ended = [tmp_path / f".tmp-{host}-{2**22 + 1}-{hexes}", tmp_path / f".tmp-{host}-{2**22 + 1}-{hexes}.safetensors"]
    old = [tmp_path / f".tmp-{'0' * 8}-1-{hexes}", tmp_path / f".tmp-{hexes}"]  # another machine's; an older name
    kept = [
        tmp_path / f".tmp-{host}-{os.getpid()}-{hexes}",  # a writer still running here
        tmp_path / f".tmp-{'0' * 8}-1-{'1' * 32}",
        tmp_path / f".tmp-{'1' * 32}",  # recent: their writers may run
        tmp_path / ".tmp-notes",
        tmp_path / f".tmp-{hexes}.bak",
        tmp_path / "lr2e-05",  # not ours
    ]
    for path in ended + old + kept:
        if path.name.endswith(".safetensors") or path.name.endswith(".bak"):
            path.write_bytes(b"x")
        else:
            (path / "sub").mkdir(parents=True)
            (path / "sub" / "model.safetensors").write_bytes(b"x")
    day_ago = time.time() - pantry_module.STALE_AFTER - 60
    for path in [*old, tmp_path / ".tmp-notes", tmp_path / f".tmp-{hexes}.bak", tmp_path / "lr2e-05"]:
        for touched in [path, *path.rglob("*")]:
            os.utime(touched, (day_ago, day_ago))
    (tmp_path / f".tmp-{'2' * 32}").symlink_to(tmp_path / "lr2e-05")  # a link of that name: never followed
    os.utime(tmp_path / f".tmp-{'2' * 32}", (day_ago, day_ago), follow_symlinks=False)
    assert sorted(pantry.remove_stale_temporaries()) == sorted(ended + old)
    assert not any(path.exists() for path in ended + old)
    assert all(path.exists() for path in kept) and (tmp_path / "lr2e-05" / "sub" / "model.safetensors").exists()


def test_a_write_removes_what_a_killed_write_left(tmp_path):
    pantry = Pantry(tmp_path)
    left = tmp_path / f".tmp-{pantry_module._HOST}-{2**22 + 1}-{uuid.uuid4().hex}"
    left.mkdir()
    pantry.add("run", tiny_bert(), None, INFO)
    assert not left.exists() and [p.name for p in tmp_path.iterdir()] == ["run"]
