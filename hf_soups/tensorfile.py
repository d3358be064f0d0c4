"""Streaming reads and writes of weight files, one tensor at a time.

Safetensors files are read with plain sequential file reads (no ``mmap``): every byte is read once, hashed on the
way, and released after it was added to the soup, so a merge's memory stays at about one model whatever the number
of ingredients (memory-mapping N inputs would keep N models' pages in the process). The header layout is the
documented safetensors format (8-byte little-endian length, JSON header, data); writing uses the same layout so that
the soup streams out tensor by tensor too. ``pytorch_model.bin`` files are only ever opened with
``torch.load(weights_only=True)``: no pickled code runs.

Example:
    >>> from safetensors.torch import save_file
    >>> save_file({"bias": torch.zeros(2), "weight": torch.ones(2, 3)}, "model.safetensors")
    >>> header = read_header(Path("model.safetensors"))
    >>> for name, tensor in stream_tensors(Path("model.safetensors"), header, hashlib.sha256()):
    ...     print(name, tuple(tensor.shape), header[name].dtype)
    bias (2,) torch.float32
    weight (2, 3) torch.float32
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import pickle
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

import torch

from hf_soups.errors import SoupError

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SAFETENSORS_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}  # torch dtype → header code
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
_CHUNK = 16 * 1024 * 1024
_HASH_CHUNK = 1024 * 1024  # gaps between ranges (headers, unread tensors) are hashed in pieces this size


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a weight file: dtype, shape and absolute byte offsets."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Read and check the header of a safetensors file, without reading its tensors.

    Args:
        path: a ``.safetensors`` file.

    Returns:
        Tensor name → :class:`TensorInfo`, in file order.

    Raises:
        SoupError: the file is truncated, its header is not valid JSON, a shape has a negative dimension, or its
            offsets do not fit the shape or the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SoupError(f"{path}: truncated safetensors file ({size} bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_MAX_HEADER, size - 8):
            raise SoupError(f"{path}: corrupt or truncated safetensors file (header of {length} bytes in {size})")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SoupError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise SoupError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    data_start = 8 + length
    infos = []
    for name, entry in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SoupError(f"{path}: tensor '{name}' has a corrupt or unsupported header entry {entry!r}") from None
        if any(d < 0 for d in shape):
            raise SoupError(f"{path}: tensor '{name}' has a negative dimension in its shape {list(shape)}")
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * dtype.itemsize or begin < 0:
            raise SoupError(f"{path}: tensor '{name}' has offsets {begin}..{end} that do not fit shape {list(shape)}")
        if data_start + end > size:
            raise SoupError(f"{path}: truncated safetensors file (tensor '{name}' ends past byte {size})")
        infos.append(TensorInfo(name, dtype, shape, data_start + begin, data_start + end))
    infos.sort(key=lambda i: i.start)
    for previous, current in itertools.pairwise(infos):
        if current.start < previous.end:
            raise SoupError(f"{path}: tensors '{previous.name}' and '{current.name}' overlap")
    return {info.name: info for info in infos}


def stream_tensors(
    path: Path, header: dict[str, TensorInfo], hasher: hashlib._Hash | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every tensor of a safetensors file in file order, reading the file once from start to end.

    A reader thread reads (and hashes) the next tensor into the other of two alternating buffers (each the size of
    the largest tensor) while the caller works on the current one: file reads, ``hashlib`` and torch ops all
    release the GIL, so reading overlaps the caller's arithmetic. A yielded tensor is valid until the next one is
    yielded: a caller that keeps a tensor must copy it.

    Args:
        path: the file.
        header: its :func:`read_header`, or the part of it to yield (the rest is still read and hashed).
        hasher: when given, every byte of the file goes through it (``hasher.hexdigest()`` is the file's sha256
            once the iterator is exhausted).

    Yields:
        ``(name, tensor)``, a view of one of the read buffers.
    """
    infos = sorted(header.values(), key=lambda i: i.start)
    size = max((info.nbytes for info in infos), default=0)
    buffers = [bytearray(size), bytearray(size)]
    update = hasher.update if hasher is not None else None
    with open(path, "rb") as f, ThreadPoolExecutor(max_workers=1) as reader:

        def read(index: int) -> None:  # runs on the reader thread, one call at a time, in file order
            info = infos[index]
            _skip(f, info.start - (infos[index - 1].end if index else 0), update)
            data = memoryview(buffers[index % 2])[: info.nbytes]
            if f.readinto(data) != info.nbytes:
                raise SoupError(f"{path}: truncated while reading tensor '{info.name}'")
            if update is not None:
                update(data)

        pending = reader.submit(read, 0) if infos else None
        for index, info in enumerate(infos):
            pending.result()  # type: ignore[union-attr]
            if index + 1 < len(infos):  # the caller is done with the other buffer: fill it meanwhile
                pending = reader.submit(read, index + 1)
            numel = info.nbytes // info.dtype.itemsize
            buffer = buffers[index % 2]
            tensor = (
                torch.frombuffer(buffer, dtype=info.dtype, count=numel) if numel else torch.empty(0, dtype=info.dtype)
            )
            yield info.name, tensor.view(info.shape)
        if update is not None:
            _skip(f, None, update)


MAX_HASH_THREADS = 8  # sha256 threads a merge starts at most (each hashes whole files, about 1.2 GB/s)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def spare_cores(busy: int) -> int:
    """How many sha256 threads to run beside ``busy`` computing threads: the other CPUs, at least 1, at most
    ``MAX_HASH_THREADS``."""
    return max(1, min(MAX_HASH_THREADS, cpu_count() - busy))


class BackgroundHasher:
    """Hashes chunks on up to ``workers`` background threads, through a small ring of reused buffers.

    sha256 (about 1.2 GB/s on one core) is slower than reading from the page cache, so a merge reads each chunk
    into the next buffer of the ring (:meth:`buffer`), queues it (:meth:`hash`) and goes on averaging while the
    threads hash. Each hasher (one file) keeps to one thread, so its chunks are hashed in the order given, and
    hashers are dealt to threads in turn (a thread is started when a hasher needs it): with ``k`` workers, ``k``
    files are hashed at once. A buffer is handed out again only once its hash is done, which bounds memory at
    ``depth`` buffers per worker and allocates nothing per chunk. ``hashlib`` releases the GIL while it hashes.

    Args:
        workers: the most threads to hash on (see :func:`spare_cores`).
        depth: buffers in the ring per worker.

    Example:
        >>> with BackgroundHasher() as background:
        ...     digest = hashlib.sha256()
        ...     background.buffer(7)[:] = b"weights"
        ...     background.hash(digest)
        ...     background.wait()
        >>> digest.hexdigest()[:8]
        '9a129038'
    """

    def __init__(self, workers: int = 1, depth: int = 4) -> None:
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self._threads: list[ThreadPoolExecutor] = []
        self._thread_of: dict[hashlib._Hash, ThreadPoolExecutor] = {}
        self._buffers = [bytearray() for _ in range(depth * workers)]
        self._hashing: list[Future[None] | None] = [None] * len(self._buffers)
        self._next = 0
        self._view: memoryview | None = None

    def buffer(self, nbytes: int) -> memoryview:
        """The next buffer of the ring, ``nbytes`` long, once it is free: read a chunk into it, then :meth:`hash`."""
        slot = self._next
        if self._hashing[slot] is not None:
            self._hashing[slot].result()  # type: ignore[union-attr]
        if len(self._buffers[slot]) < nbytes:
            self._buffers[slot] = bytearray(nbytes)
        self._view = memoryview(self._buffers[slot])[:nbytes]
        return self._view

    def hash(self, hasher: hashlib._Hash) -> None:
        """Queue ``hasher.update`` of the chunk last read into :meth:`buffer`, on the thread ``hasher`` keeps to."""
        thread = self._thread_of.get(hasher)
        if thread is None:
            if len(self._threads) < self.workers:
                name = f"hf-soups-sha256-{len(self._threads)}"
                self._threads.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix=name))
            thread = self._thread_of[hasher] = self._threads[len(self._thread_of) % self.workers]
        self._hashing[self._next] = thread.submit(hasher.update, self._view)
        self._next = (self._next + 1) % len(self._buffers)

    def wait(self) -> None:
        """Return once every queued chunk is hashed (a chunk no longer in the ring was waited for to free its slot)."""
        for future in self._hashing:
            if future is not None:
                future.result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.shutdown(wait=True, cancel_futures=True)


class RangeReader:
    """A safetensors file opened once and read in element ranges of its tensors, in any order.

    Reads are ``os.preadv`` calls into a reused buffer (the ring of ``background`` when hashing). With a ``hasher``,
    every byte of the file goes through it in file order: while reads move forward, the bytes read (and any gap
    before them) are hashed on the way, on a ``background`` thread; a read behind an earlier one leaves the hash to
    :meth:`hexdigest`, which then hashes the file in one more sequential pass (only files laid out unlike the soup's
    order pay that).

    Args:
        path: the file.
        hasher: e.g. ``hashlib.sha256()``, or ``None`` not to hash.
        background: the thread that hashes (required with ``hasher``).

    Example:
        >>> from safetensors.torch import save_file
        >>> save_file({"weight": torch.arange(6.0).reshape(2, 3)}, "model.safetensors")
        >>> header = read_header(Path("model.safetensors"))
        >>> with RangeReader(Path("model.safetensors")) as reader:
        ...     reader.read(header["weight"], 3, 3)  # the second row
        tensor([3., 4., 5.])
    """

    def __init__(self, path: Path, hasher: hashlib._Hash | None = None, background: BackgroundHasher | None = None):
        if hasher is not None and background is None:
            raise ValueError("a hasher needs a BackgroundHasher")
        self.path = Path(path)
        self.hasher = hasher
        self.background = background
        self._fd = os.open(self.path, os.O_RDONLY)
        self._buffer = bytearray()
        self._hashed = 0  # bytes of the file hashed (or queued) so far, from its start
        self._in_order = True

    def read(self, info: TensorInfo, start: int, count: int) -> torch.Tensor:
        """Elements ``start .. start + count`` of a tensor (flattened), a view valid until the next :meth:`read`.

        Raises:
            SoupError: the file ends before the range.
        """
        offset, nbytes = info.start + start * info.dtype.itemsize, count * info.dtype.itemsize
        hashing = self.hasher is not None and self._in_order
        if hashing and offset < self._hashed:
            self._in_order = hashing = False
        if hashing:
            self._hash_until(offset)
            data = self.background.buffer(nbytes)  # type: ignore[union-attr]
        else:
            if len(self._buffer) < nbytes:
                self._buffer = bytearray(nbytes)
            data = memoryview(self._buffer)[:nbytes]
        if os.preadv(self._fd, [data], offset) != nbytes:
            raise SoupError(f"{self.path}: truncated while reading tensor '{info.name}'")
        if hashing:
            self.background.hash(self.hasher)  # type: ignore[union-attr,arg-type]
            self._hashed = offset + nbytes
        return torch.frombuffer(data, dtype=info.dtype, count=count) if count else torch.empty(0, dtype=info.dtype)

    def hexdigest(self) -> str:
        """The file's hash, once every range was read: the rest of the file is hashed here."""
        if self.hasher is None:
            raise ValueError("this reader does not hash")
        if not self._in_order:
            self.hasher = hashlib.new(self.hasher.name)
            self._hashed = 0
        self._hash_until(os.fstat(self._fd).st_size)
        self.background.wait()  # type: ignore[union-attr]
        return self.hasher.hexdigest()

    def _hash_until(self, offset: int) -> None:
        while self._hashed < offset:
            data = self.background.buffer(min(_HASH_CHUNK, offset - self._hashed))  # type: ignore[union-attr]
            if os.preadv(self._fd, [data], self._hashed) != len(data):
                raise SoupError(f"{self.path}: truncated (ends before byte {self._hashed + len(data)})")
            self.background.hash(self.hasher)  # type: ignore[union-attr,arg-type]
            self._hashed += len(data)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_tensor_range(f: BinaryIO, info: TensorInfo, start: int, count: int) -> torch.Tensor:
    """Read elements ``start .. start + count`` of a tensor (flattened) from an open safetensors file.

    One ``seek`` and one ``readinto`` into a fresh tensor: memory is the range read, whatever the tensor's size.

    Args:
        f: the file, opened in binary mode (its position is moved).
        info: the tensor, from :func:`read_header` of that file.
        start: the first element.
        count: how many elements.

    Returns:
        A 1-D tensor of ``count`` elements of ``info.dtype``.

    Raises:
        SoupError: the range lies outside the tensor, or the file ends before it.

    Example:
        >>> from safetensors.torch import save_file
        >>> save_file({"weight": torch.arange(6.0).reshape(2, 3)}, "model.safetensors")
        >>> header = read_header(Path("model.safetensors"))
        >>> with open("model.safetensors", "rb") as f:
        ...     read_tensor_range(f, header["weight"], 3, 3)  # the second row
        tensor([3., 4., 5.])
    """
    numel = info.nbytes // info.dtype.itemsize
    if start < 0 or count < 0 or start + count > numel:
        raise SoupError(f"tensor '{info.name}': elements {start}..{start + count} are outside its {numel} elements")
    tensor = torch.empty(count, dtype=info.dtype)
    f.seek(info.start + start * info.dtype.itemsize)
    if f.readinto(tensor.view(torch.uint8).numpy()) != count * info.dtype.itemsize:
        raise SoupError(f"{f.name}: truncated while reading tensor '{info.name}'")
    return tensor


def _skip(f: io.BufferedReader, count: int | None, update: Callable[[bytes], object] | None) -> None:
    """Move ``count`` bytes on (``None``: to the end), hashing them when there is a hasher."""
    if update is None:
        f.seek(count or 0, io.SEEK_CUR)
        return
    while count is None or count > 0:
        chunk = f.read(_CHUNK if count is None else min(count, _CHUNK))
        if not chunk:
            return
        update(chunk)
        if count is not None:
            count -= len(chunk)


def torch_bin_header(path: Path) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of a ``pytorch_model.bin`` (``torch.load(weights_only=True)`` on the meta device)."""
    state = _load_bin(path, map_location="meta")
    return {name: TensorInfo(name, t.dtype, tuple(t.shape), 0, 0) for name, t in state.items()}


def stream_bin_tensors(path: Path, hasher: hashlib._Hash | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the tensors of a ``pytorch_model.bin``, read once (and hashed) with ``torch.load(weights_only=True)``."""
    data = path.read_bytes()
    if hasher is not None:
        hasher.update(data)
    yield from _load_bin(io.BytesIO(data), map_location="cpu", name=str(path)).items()


def _load_bin(source: Path | io.BytesIO, map_location: str, name: str | None = None) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise SoupError(
            f"{name or source}: refused by weights-only loading: it pickles objects other than tensors, which could "
            "run code (convert it to safetensors where it was made)"
        ) from None
    except Exception as err:  # torch raises zipfile and runtime errors alike for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SoupError(f"{name or source}: cannot be read as a PyTorch checkpoint ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise SoupError(f"{name or source}: is not a state dict of tensors")
    return state


def write_safetensors(path: Path, tensors: Iterable[tuple[str, torch.Tensor]], infos: list[TensorInfo]) -> None:
    """Write a safetensors file tensor by tensor, so only one converted tensor is in memory at a time.

    Args:
        path: the file to write.
        tensors: ``(name, tensor)`` in the order of ``infos``, each already of the dtype and shape ``infos`` says.
        infos: the layout, from :func:`plan_layout`.
    """
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for info in infos:
        header[info.name] = {
            "dtype": SAFETENSORS_CODES[info.dtype],
            "shape": list(info.shape),
            "data_offsets": [info.start, info.end],
        }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for info, (name, tensor) in zip(infos, tensors, strict=True):
            if name != info.name or tensor.dtype != info.dtype or tuple(tensor.shape) != info.shape:
                raise RuntimeError(f"tensor '{name}' does not match the planned layout of '{info.name}'")
            if info.nbytes:
                f.write(tensor.contiguous().view(-1).view(torch.uint8).numpy().data)


def plan_layout(specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]]) -> list[TensorInfo]:
    """Offsets (relative to the data section) for tensors written back to back in the given order."""
    infos, offset = [], 0
    for name, dtype, shape in specs:
        numel = 1
        for d in shape:
            numel *= d
        infos.append(TensorInfo(name, dtype, tuple(shape), offset, offset + numel * dtype.itemsize))
        offset += numel * dtype.itemsize
    return infos
