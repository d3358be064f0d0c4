"""Every docstring example in hf_soups runs (issue 31): each module's examples, offline, in a fresh working folder.

An example that needs the Hub, a GPU, real data or a trained model says ``# doctest: +SKIP``; the others build what
they need (tiny models from a config) where the reader can see it.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import hf_soups

MODULES = ["hf_soups", *sorted(module.name for module in pkgutil.walk_packages(hf_soups.__path__, "hf_soups."))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write their runs and soups here
    monkeypatch.setenv("HF_SOUPS_HASH_CACHE", str(tmp_path / "sha256.json"))  # not the user's cache
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in doctest.DocTestFinder().find(importlib.import_module(name)):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
