"""Weight-file hashes: streamed sha256 equals hashlib's, cached while the file is unchanged."""

from __future__ import annotations

import hashlib
import json
import os

from hf_soups import merge_models
from hf_soups.hashing import HashCache


def recorded(soup):
    return [i["files"]["model.safetensors"] for i in json.loads((soup / "soup.json").read_text())["ingredients"]]


def test_streamed_hash_is_the_file_sha256_and_is_cached(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    expected = [hashlib.sha256((f / "model.safetensors").read_bytes()).hexdigest() for f in folders]
    assert recorded(merge_models(folders, tmp_path / "a", progress=False)) == expected
    cache = HashCache()
    assert [cache.get(f / "model.safetensors") for f in folders] == expected


def test_a_changed_file_is_hashed_again(make_ingredients, tmp_path):
    folders = make_ingredients(2)
    merge_models(folders, tmp_path / "a", progress=False)
    file = folders[1] / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[-1] ^= 1  # a different last byte: same size, new mtime
    file.write_bytes(bytes(data))
    os.utime(file, ns=(1, 1))
    assert HashCache().get(file) is None
    assert (
        recorded(merge_models(folders, tmp_path / "b", progress=False))[1] == hashlib.sha256(bytes(data)).hexdigest()
    )


def test_sharded_files_are_hashed_each(make_ingredients, tmp_path):
    folders = make_ingredients(2, save={"max_shard_size": "20KB"})
    soup = merge_models(folders, tmp_path / "a", progress=False)
    files = json.loads((soup / "soup.json").read_text())["ingredients"][0]["files"]
    assert len(files) > 1
    assert all(files[name] == hashlib.sha256((folders[0] / name).read_bytes()).hexdigest() for name in files)
