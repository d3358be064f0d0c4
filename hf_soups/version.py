"""The installed hf-soups version, read once from the package metadata.

Modules that record or print the version import it from here, not from the package ``__init__`` (which sits above
every other module: it names the public API).

Example:
    >>> from hf_soups.version import __version__
    >>> __version__ == importlib.metadata.version("hf-soups")
    True
"""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("hf-soups")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
