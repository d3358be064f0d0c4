"""sha256 of weight files, remembered across runs the way git's index remembers blob ids.

A merge hashes each weight file while it streams it (sha256 runs at about 1.2 GB/s on one core, slower than
reading from the page cache). The digest is stored with the file's size, mtime and inode, so the next merge or
recipe that reads an unchanged file takes the digest from here instead of hashing again; any change to the file
changes its mtime or size and the digest is computed afresh. Hub files need neither: their cache blob is already
named by its sha256.

The cache is one JSON file, ``$HF_HOME/hf_soups/sha256.json`` (override with ``HF_SOUPS_HASH_CACHE``).

Example:
    >>> cache = HashCache()
    >>> cache.get(Path("runs/a/model.safetensors")) is None  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def default_cache_path() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_SOUPS_HASH_CACHE") or Path(constants.HF_HOME) / "hf_soups" / "sha256.json")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read now (no cache)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class HashCache:
    """File path → sha256, valid while the file's size, mtime and inode are unchanged."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            entries = {}
        # a damaged cache is only a lost shortcut: such entries are dropped and their files hashed again
        self.entries: dict[str, list] = {
            path: entry
            for path, entry in (entries.items() if isinstance(entries, dict) else [])
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)
        }

    @staticmethod
    def _stamp(file: Path) -> list[int]:
        stat = file.stat()
        return [stat.st_size, stat.st_mtime_ns, stat.st_ino]

    def get(self, file: Path) -> str | None:
        entry = self.entries.get(str(file.resolve()))
        return entry[1] if entry and entry[0] == self._stamp(file) else None

    def put(self, file: Path, sha256: str) -> None:
        self.entries[str(file.resolve())] = [self._stamp(file), sha256]

    def save(self) -> None:
        """Write the cache atomically; a cache that cannot be written is skipped (it is only a shortcut)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False, suffix=".tmp") as f:
                json.dump(self.entries, f)
            os.replace(f.name, self.path)
        except OSError:
            pass
