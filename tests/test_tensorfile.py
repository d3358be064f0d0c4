"""Byte-range reads of single tensors from safetensors files, hashed on background threads."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_soups.errors import SoupError
from hf_soups.tensorfile import (
    BackgroundHasher,
    RangeReader,
    read_header,
    read_tensor_range,
    spare_cores,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64])
def test_ranges_are_the_tensors_elements(tmp_path, dtype):
    tensors = {
        "a": torch.arange(5).to(dtype),
        "b": (torch.randn(7, 9) * 100).to(dtype),
        "c": torch.ones(3, dtype=dtype),
    }
    save_file(tensors, tmp_path / "x.safetensors")
    header = read_header(tmp_path / "x.safetensors")
    flat = tensors["b"].reshape(-1)
    with open(tmp_path / "x.safetensors", "rb") as f:
        for start, count in [(0, 63), (0, 1), (62, 1), (10, 20), (63, 0)]:
            torch.testing.assert_close(
                read_tensor_range(f, header["b"], start, count), flat[start : start + count], rtol=0, atol=0
            )
        chunks = [read_tensor_range(f, header["b"], start, min(8, 63 - start)) for start in range(0, 63, 8)]
        assert torch.equal(torch.cat(chunks), flat)  # reads in any order from one open file
        assert torch.equal(read_tensor_range(f, header["c"], 1, 2), tensors["c"][1:])


def test_range_outside_the_tensor_is_refused(tmp_path):
    save_file({"w": torch.zeros(4, 4)}, tmp_path / "x.safetensors")
    info = read_header(tmp_path / "x.safetensors")["w"]
    with open(tmp_path / "x.safetensors", "rb") as f:
        with pytest.raises(SoupError, match=r"tensor 'w': elements 10\.\.17 are outside its 16 elements"):
            read_tensor_range(f, info, 10, 7)
        with pytest.raises(SoupError, match="outside"):
            read_tensor_range(f, info, -1, 2)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(100)}, path)
    info = read_header(path)["w"]
    path.write_bytes(path.read_bytes()[:-40])  # the file lost its last 10 elements after the header was read
    with open(path, "rb") as f:
        assert torch.equal(read_tensor_range(f, info, 0, 90), torch.zeros(90))
        with pytest.raises(SoupError, match=r"x\.safetensors: truncated while reading tensor 'w'"):
            read_tensor_range(f, info, 80, 20)


@pytest.mark.parametrize("order", ["forward", "forward with gaps", "backward"])
def test_range_reader_hashes_the_whole_file_whatever_the_read_order(tmp_path, order):
    import hashlib

    path = tmp_path / "x.safetensors"
    tensors = {f"t{i}": torch.randn(50 + i) for i in range(6)}
    save_file(tensors, path)
    header = read_header(path)
    names = {"forward": list(header), "forward with gaps": list(header)[1:5:2], "backward": list(header)[::-1]}[order]
    with BackgroundHasher(depth=2) as background, RangeReader(path, hashlib.sha256(), background) as reader:
        for name in names:
            pieces = [
                reader.read(header[name], start, min(7, header[name].shape[0] - start)).clone()
                for start in range(0, header[name].shape[0], 7)
            ]
            assert torch.equal(torch.cat(pieces), tensors[name])
        assert reader.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_range_reader_reports_a_file_truncated_after_its_header_was_read(tmp_path):
    import hashlib

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(100)}, path)
    info = read_header(path)["w"]
    path.write_bytes(path.read_bytes()[:-40])
    with BackgroundHasher() as background, RangeReader(path, hashlib.sha256(), background) as reader:
        with pytest.raises(SoupError, match=r"x\.safetensors: truncated while reading tensor 'w'"):
            reader.read(info, 0, 100)


class ThreadRecordingSha256:
    """sha256 that remembers which threads hashed it."""

    def __init__(self):
        self._hash, self.name, self.threads = hashlib.sha256(), "sha256", set()

    def update(self, data):
        self.threads.add(threading.current_thread().name)
        self._hash.update(data)

    def hexdigest(self):
        return self._hash.hexdigest()


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("order", ["file by file", "interleaved", "backward"])
def test_hasher_threads_give_hashlibs_digests_for_several_files(tmp_path, workers, order):
    """Files are dealt to up to `workers` threads (never more than files); each keeps to one thread, in order."""
    paths = []
    for f in range(4):
        paths.append(tmp_path / f"x{f}.safetensors")
        save_file({f"t{i}": torch.randn(40 + 3 * i + f) for i in range(5)}, paths[-1])
    headers = [read_header(path) for path in paths]
    pieces = [
        (f, name, start)
        for f, header in enumerate(headers)
        for name in header
        for start in range(0, header[name].shape[0], 9)
    ]
    if order == "interleaved":  # the way add_all reads: the same piece of every file in turn
        pieces.sort(key=lambda piece: (piece[1], piece[2], piece[0]))
    elif order == "backward":
        pieces.reverse()
    hashers = [ThreadRecordingSha256() for _ in paths]
    with BackgroundHasher(workers, depth=2) as background:
        readers = [RangeReader(path, hasher, background) for path, hasher in zip(paths, hashers, strict=True)]
        for f, name, start in pieces:
            info = headers[f][name]
            reader = readers[f]
            count = min(9, info.shape[0] - start)
            assert torch.equal(reader.read(info, start, count), load_file(paths[f])[name][start : start + count])
        digests = [reader.hexdigest() for reader in readers]
        for reader in readers:
            reader.close()
    assert digests == [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    assert all(len(hasher.threads) == 1 for hasher in hashers)
    assert len(set().union(*(hasher.threads for hasher in hashers))) == min(workers, len(paths))


@pytest.mark.parametrize(("cpus", "busy", "expected"), [(2, 1, 1), (1, 1, 1), (4, 1, 3), (4, 2, 2), (64, 1, 8)])
def test_hash_threads_are_the_spare_cores_bounded(monkeypatch, cpus, busy, expected):
    monkeypatch.setattr("hf_soups.tensorfile.cpu_count", lambda: cpus)
    assert spare_cores(busy) == expected


@pytest.mark.parametrize(
    ("shape", "nbytes"),
    [([-2, 2], 16), ([-2, -2], 16), ([-1, -1, 4], 16), ([0, -3], 0), ([3, -1, -1], 12)],
)
def test_a_negative_dimension_is_refused_by_name(tmp_path, shape, nbytes):
    header = json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(nbytes))
    message = f"model.safetensors: tensor 'w' has a negative dimension in its shape {shape}"
    with pytest.raises(SoupError, match=re.escape(message)):
        read_header(path)
