"""Shared fixtures: tiny models built from config (no network), saved as ingredients of one base model (helpers that
are not fixtures live in ``helpers.py``)."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub or datasets, which read these once, at import: the tests never reach the
# real Hub (the test Hub fixture lifts this). Set after those imports, an in-process lookup of a name that is not a
# local folder went to huggingface.co (23 s of connection timeouts here, where there is no network).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from helpers import VOCAB, perturbed, tiny_bert_config, tiny_t5_config
from transformers import BertForSequenceClassification, BertTokenizer, T5ForConditionalGeneration

pytest_plugins = ["hf_soups.testing.fixtures"]  # the local test Hub: fixture `hub_server`


@pytest.fixture(autouse=True, scope="session")
def private_hash_cache(tmp_path_factory) -> Iterator[Path]:
    """The sha256 digests and loading rules the tests' merges remember go to the session's temporary folder, not
    the user's ``$HF_HOME/hf_soups`` (subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("hash-cache") / "sha256.json"
    before = os.environ.get("HF_SOUPS_HASH_CACHE")
    os.environ["HF_SOUPS_HASH_CACHE"] = str(path)
    yield path
    if before is None:
        del os.environ["HF_SOUPS_HASH_CACHE"]
    else:
        os.environ["HF_SOUPS_HASH_CACHE"] = before


@pytest.fixture
def tiny_tokenizer(tmp_path_factory) -> BertTokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer(vocab=str(vocab))  # transformers 5 ignores vocab_file=: every word was [UNK]


@pytest.fixture
def make_ingredients(tmp_path, tiny_tokenizer) -> Callable[..., list[Path]]:
    """Save ``n`` fine-tuned-looking copies of one tiny base model; returns their folders.

    Args (of the returned function):
        n: how many.
        arch: ``"bert"`` (sequence classifier) or ``"t5"``.
        dtype: the dtype to save in.
        config: overrides for the tiny config.
        save: extra ``save_pretrained`` keyword arguments (``max_shard_size``...).
    """

    def make(
        n: int = 3, arch: str = "bert", dtype: torch.dtype = torch.float32, name: str = "ing", save=None, **config
    ):
        torch.manual_seed(0)
        if arch == "bert":
            base = BertForSequenceClassification(tiny_bert_config(**config))
        else:
            base = T5ForConditionalGeneration(tiny_t5_config(**config))
        state = {k: v.clone() for k, v in base.state_dict().items()}
        folders = []
        for i in range(n):
            base.load_state_dict(state)
            model = perturbed(base, seed=i + 1).to(dtype)
            folder = tmp_path / f"{name}{i}"
            model.save_pretrained(folder, **(save or {}))
            tiny_tokenizer.save_pretrained(folder)
            base.to(torch.float32)
            folders.append(folder)
        return folders

    return make
