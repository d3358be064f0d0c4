"""The whole weights of a model that training shards, gathered the way ``Trainer.save_model`` gathers them.

Under FSDP (``FullyShardedDataParallel``, "FSDP1"), ``fully_shard`` ("FSDP2"), tensor parallelism (DTensor) and
DeepSpeed ZeRO-3 each process holds a shard of the parameters: saving, hashing or editing the whole model needs every
process to take part, and the main process to do the work while the others wait. :func:`whole_state` gathers (every
process calls it; the main process gets the tensors), :func:`load_whole` writes whole tensors back (each process
keeps its shard), and :func:`on_main` runs a step on the main process and hands its result, or its error, to every
process, so that none is left waiting in a collective the others have left.

FSDP and DTensor models are gathered with ``torch.distributed.checkpoint.state_dict`` (full state dict, moved to the
CPU where the model is not on it already): the call ``Accelerator.get_state_dict`` makes under FSDP2, and the
``FULL_STATE_DICT`` gather it makes under FSDP1. ZeRO-3 models are gathered module by module with
``deepspeed.zero.GatheredParameters``, as DeepSpeed's own 16-bit consolidation does.

Example:
    >>> tensors = whole_state(model)  # every process; the main one gets the tensors  # doctest: +SKIP
    >>> digest = on_main(lambda: fingerprint(model, tensors))  # the same on every process  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from hf_soups.errors import SoupError

T = TypeVar("T")
FSDP1 = "FSDP (FullyShardedDataParallel)"
ZERO3 = "DeepSpeed ZeRO-3"


def sharding(model: torch.nn.Module) -> str | None:
    """How training shards ``model``'s parameters: ``"FSDP (FullyShardedDataParallel)"``, ``"FSDP2 (fully_shard)"``,
    ``"DTensor (tensor parallel)"``, ``"DeepSpeed ZeRO-3"``, or ``None`` when every process holds them whole (one
    process, DDP, ZeRO-1/2). ``model`` may be an FSDP1 wrapper or the model inside one."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    modules, params = list(model.modules()), list(model.parameters())
    if any(isinstance(m, FullyShardedDataParallel) for m in modules) or any(
        getattr(p, "_fsdp_flattened", False)
        for p in params  # FSDP1's mark on the parameters it manages
    ):
        return FSDP1
    if any(isinstance(m, FSDPModule) for m in modules):
        return "FSDP2 (fully_shard)"
    if any(isinstance(p, DTensor) for p in params):
        return "DTensor (tensor parallel)"
    if any(hasattr(p, "ds_id") for p in params):
        return ZERO3
    return None


def check_gatherable(model: torch.nn.Module, what: str) -> None:
    """Refuse a sharded model whose whole weights :func:`whole_state` cannot gather.

    Args:
        model: what :func:`whole_state` would be given.
        what: how the message names the caller (``"SoupCallback"``).

    Raises:
        SoupError: the model inside an FSDP1 wrapper (the gather needs the wrapper), or a PEFT model under sharding,
            naming the setting.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    setting = sharding(model)
    if setting == FSDP1 and not isinstance(model, FullyShardedDataParallel):
        raise SoupError(
            f"{what} under {setting}: the Trainer gives callbacks the model inside the FSDP wrapper, and its whole "
            "weights are gathered through the wrapper only: use SoupTrainer (or set callback.trainer = trainer), or "
            "shard with FSDP2 (fsdp_version: 2)"
        )
    if setting is not None and hasattr(model, "peft_config"):
        raise SoupError(
            f"{what} with a PEFT model under {setting}: its whole weights are not gathered; train it "
            "under DDP or in one process"
        )


def wrapper_of(model: torch.nn.Module, wrapped: torch.nn.Module | None) -> torch.nn.Module:
    """``wrapped`` (a Trainer's ``model_wrapped``) when it is the FSDP1 wrapper of ``model``, which the gather
    needs; else ``model``."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return wrapped if isinstance(wrapped, FullyShardedDataParallel) and wrapped.module is model else model


@torch.no_grad()
def whole_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with whole tensors on the CPU, by the names ``save_pretrained`` writes.

    Every process must call it: the main process gets the tensors, the others an empty dict.

    Args:
        model: the model; under FSDP1 its wrapper (:func:`check_gatherable`).
    """
    main = PartialState().is_main_process
    if sharding(model) == ZERO3:
        return _zero3_state(model, main)
    _reshard(model)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    offload = any(p.device.type != "cpu" for p in model.parameters())  # FSDP1 cannot offload tensors on the CPU
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    return state if main else {}


def _zero3_state(model: torch.nn.Module, main: bool) -> dict[str, torch.Tensor]:
    """ZeRO-3: each module's own parameters gathered in turn and copied to the CPU on the main process.

    Raises:
        SoupError: a gathered parameter is not of its whole shape (``ds_shape``): never an empty entry.
    """
    import deepspeed

    names = list(model.state_dict())  # every name; a partitioned parameter's tensor is empty here
    state: dict[str, torch.Tensor] = {}
    short: list[str] = []
    for prefix, module in model.named_modules():
        own = [*module.named_parameters(prefix, recurse=False), *module.named_buffers(prefix, recurse=False)]
        with deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False)), modifier_rank=None):
            if main:
                state.update((name, tensor.detach().to("cpu", copy=True)) for name, tensor in own)
        if main:
            short += [
                f"'{name}' gathered as {tuple(state[name].shape)}, not {tuple(t.ds_shape)}"
                for name, t in own
                if hasattr(t, "ds_shape") and tuple(state[name].shape) != tuple(t.ds_shape)
            ]
    error = on_main(lambda: short[0] if short else None)  # every process raises, none waits
    if error is not None:
        raise SoupError(f"{ZERO3}: parameter {error}: no entry is written from partial weights")
    return {name: state[name] for name in names} if main else {}


@torch.no_grad()
def load_whole(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy whole tensors (some of the model's, by state-dict name) into the model.

    Every process must call it with the same tensors; each keeps its shard.
    """
    if sharding(model) == ZERO3:
        import deepspeed

        params = dict(model.named_parameters())
        chosen = [params[name] for name in tensors if name in params]
        with deepspeed.zero.GatheredParameters(chosen, modifier_rank=0):  # the main process's copy is kept
            state = model.state_dict()
            for name, tensor in tensors.items():
                state[name].copy_(tensor)
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        _reshard(model)
        # set_model_state_dict replaces the values of the dict it is given by sharded ones: give it a copy
        set_model_state_dict(model, dict(tensors), options=StateDictOptions(full_state_dict=True, strict=False))


def _reshard(model: torch.nn.Module) -> None:
    """Shard again the FSDP2 parameters a forward left whole (the root's are after every forward), as the
    Trainer does before it builds its optimizer: the state-dict functions expect them sharded."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def on_main(step: Callable[[], T]) -> T:
    """Run ``step`` on the main process and return its value on every process.

    An error of ``step`` is raised on every process (a :class:`SoupError` as itself, another as a SoupError naming
    it on the processes that did not run it), so that no process waits in a collective the main one has left.
    """
    state = PartialState()
    if state.num_processes == 1:
        return step()
    outcome: list[tuple[T | None, str | None] | None] = [None]
    failure: BaseException | None = None
    if state.is_main_process:
        try:
            outcome = [(step(), None)]
        except Exception as err:  # noqa: BLE001 (handed to every process, then raised)
            failure = err
            text = str(err) if isinstance(err, SoupError) else f"the main process failed: {type(err).__name__}: {err}"
            outcome = [(None, text)]
    value, error = broadcast_object_list(outcome)[0]  # type: ignore[misc]
    if failure is not None:
        raise failure
    if error is not None:
        raise SoupError(error)
    return value  # type: ignore[return-value]


__all__ = ["check_gatherable", "load_whole", "on_main", "sharding", "whole_state", "wrapper_of"]
