"""hf_soups.gather in one process (the two-process FSDP runs are in test_callback_sharded.py)."""

from __future__ import annotations

import sys
import types

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


class _Partitioned:
    """``deepspeed.zero.GatheredParameters`` as ZeRO-3 behaves in one process: a partitioned parameter holds an
    empty tensor (its whole shape in ``ds_shape``) and its whole value only inside the context, where the value the
    ``modifier_rank`` process leaves is kept."""

    def __init__(self, params, modifier_rank=None):
        self.params, self.modifier_rank = [p for p in params if hasattr(p, "ds_id")], modifier_rank

    def __enter__(self):
        for p in self.params:
            p.data = p.ds_whole

    def __exit__(self, *exc):
        for p in self.params:
            if self.modifier_rank is not None:
                p.ds_whole = p.data.clone()
            p.data = torch.empty(0)


def test_a_zero3_model_is_gathered_module_by_module_and_written_back(monkeypatch):
    deepspeed = types.ModuleType("deepspeed")
    deepspeed.zero = types.SimpleNamespace(GatheredParameters=_Partitioned)
    monkeypatch.setitem(sys.modules, "deepspeed", deepspeed)
    model, expected = tiny_bert(), tiny_bert().state_dict()
    for index, param in enumerate(model.parameters()):  # partitioned as ZeRO-3 leaves them between steps
        param.ds_id, param.ds_shape, param.ds_whole = index, param.shape, param.data
        param.data = torch.empty(0)
    assert sharding(model) == "DeepSpeed ZeRO-3"
    whole = whole_state(model)
    assert sorted(whole) == sorted(expected) and all(torch.equal(whole[n], t) for n, t in expected.items())
    load_whole(model, {"classifier.bias": torch.tensor([1.0, 2.0])})
    assert model.classifier.bias.ds_whole.tolist() == [1.0, 2.0] and model.classifier.bias.numel() == 0
    assert torch.equal(whole_state(model)["classifier.weight"], expected["classifier.weight"])
