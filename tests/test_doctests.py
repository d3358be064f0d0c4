"""Every docstring example in hf_soups runs (issue 31): each module's examples, offline, in a fresh working folder.

An example that needs the Hub, a GPU, real data or a trained model says ``# doctest: +SKIP``; the others build what
they need (tiny models from a config) where the reader can see it, except the two runs ``runs/lr2e-5`` and
``runs/lr3e-5`` that several examples soup: :mod:`hf_soups.merge`'s example shows how they are made, and the others
find them made here.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import hf_soups

MODULES = ["hf_soups", *sorted(module.name for module in pkgutil.walk_packages(hf_soups.__path__, "hf_soups."))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write their runs and soups here
    monkeypatch.setenv("HF_SOUPS_HASH_CACHE", str(tmp_path / "sha256.json"))  # not the user's cache
    tests = doctest.DocTestFinder().find(importlib.import_module(name))
    if name != "hf_soups.merge" and any("runs/lr2e-5" in (test.docstring or "") for test in tests):
        make_two_runs()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


def make_two_runs() -> None:
    """``runs/lr2e-5`` and ``runs/lr3e-5``, made as :mod:`hf_soups.merge`'s example makes them."""
    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    model = BertForSequenceClassification(config)
    model.save_pretrained("runs/lr2e-5")
    torch.nn.init.normal_(model.classifier.weight)
    model.save_pretrained("runs/lr3e-5")
