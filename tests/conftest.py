"""Shared fixtures: tiny models built from config (no network), saved as ingredients of one base model."""

from __future__ import annotations

pytest_plugins = ["hf_soups.testing.fixtures"]  # the local test Hub: fixture `hub_server`

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, T5Config, T5ForConditionalGeneration

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the real Hub; the test Hub fixture lifts this
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(40)), "the", "a", "cat", "dog"]


@pytest.fixture(autouse=True, scope="session")
def _isolated_hash_cache(tmp_path_factory):
    """Each test session starts with an empty weight-file hash cache of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_SOUPS_HASH_CACHE", str(tmp_path_factory.mktemp("hash-cache") / "sha256.json"))
        yield


def tiny_bert_config(**overrides) -> BertConfig:
    """A 2-layer BERT classifier config small enough for unit tests."""
    values = dict(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=2,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_t5_config(**overrides) -> T5Config:
    """A 1-layer T5 config (tied `shared`/`embed_tokens`/`lm_head`) for unit tests."""
    values = dict(
        vocab_size=len(VOCAB), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=3,
    )
    values.update(overrides)
    return T5Config(**values)


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Play "fine-tuning": add seeded noise to every float parameter (tied ones stay tied)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


@pytest.fixture
def tiny_tokenizer(tmp_path_factory) -> BertTokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer(vocab_file=str(vocab))


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

    def make(n: int = 3, arch: str = "bert", dtype: torch.dtype = torch.float32, name: str = "ing", save=None, **config):
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
