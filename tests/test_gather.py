"""hf_soups.gather in one process (the two-process FSDP runs are in test_callback_sharded.py)."""

from __future__ import annotations

import torch
from helpers import tiny_bert

from hf_soups.gather import load_whole, sharding, whole_state
from hf_soups.pantry import fingerprint


def test_a_whole_model_is_read_and_written_by_its_state_dict_names():
    model = tiny_bert()
    assert sharding(model) is None
    whole = whole_state(model)
    assert sorted(whole) == sorted(model.state_dict())
    assert all(torch.equal(whole[name], tensor) for name, tensor in model.state_dict().items())
    assert fingerprint(model, whole) == fingerprint(model)  # the sharded path hashes what the unsharded one does
    load_whole(model, {"classifier.bias": torch.tensor([1.0, 2.0])})
    assert model.classifier.bias.tolist() == [1.0, 2.0]
