"""A linear-probed classifier head: the shared start that makes fine-tuned runs soupable (LP-FT, DiWA).

A new classifier head initialised at random pushes runs apart early; fitting the head's last linear layer on the
frozen encoder's features first (logistic regression for classification, ridge regression for a one-output
regressor such as STS-B, both from scikit-learn) gives every run of a sweep one good start (Kumar et al. 2022,
arXiv 2202.10054; Ramé et al. 2022, arXiv 2205.09739).

Example:
    >>> from hf_soups.probe import probe_head
    >>> fitted = probe_head(model, trainer.get_train_dataloader())  # doctest: +SKIP
    >>> sorted(fitted)  # doctest: +SKIP
    ['classifier.bias', 'classifier.weight']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from safetensors import SafetensorError, safe_open
from tqdm import tqdm  # not tqdm.auto, whose bar starts one more iterator over a DataLoader: a seed draw
from transformers import PreTrainedModel

from hf_soups.errors import SoupError
from hf_soups.tensorfile import read_header

logger = logging.getLogger(__name__)
LABEL_KEYS = ("labels", "label")
FSDP1_WRAPPED = "_fsdp_wrapped_module."  # in the module names of a model FSDP1 wraps


def plain_model(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model itself: a PEFT model's base model (with PEFT's layers in it), else ``model``."""
    return model.get_base_model() if hasattr(model, "peft_config") else model


def _plain_names(model: PreTrainedModel) -> dict[str, str | None]:
    """Each state-dict name of :func:`plain_model` → the name the plain transformers model gives the tensor the
    model computes with, or ``None`` for PEFT's own: a wrapped head module's active copy
    (``classifier.modules_to_save.default.weight``) and a LoRA layer's ``base_layer`` weight under the wrapped
    module's name, LoRA factors and the wrapped originals left out."""
    plain = plain_model(model)
    wrappers: dict[str, str] = {}  # wrapper module name + "." → the prefix of its tensors that compute
    if hasattr(model, "peft_config"):
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import ModulesToSaveWrapper

        for name, module in plain.named_modules():
            if isinstance(module, ModulesToSaveWrapper):
                wrappers[f"{name}."] = f"{name}.modules_to_save.{module.active_adapter}."
            elif isinstance(module, LoraLayer):
                wrappers[f"{name}."] = f"{name}.base_layer."
    names: dict[str, str | None] = {}
    for key in plain.state_dict():
        wrapper = max((w for w in wrappers if key.startswith(w)), key=len, default=None)
        if wrapper is None:
            names[key] = key
        else:
            names[key] = wrapper + key.removeprefix(wrappers[wrapper]) if key.startswith(wrappers[wrapper]) else None
    return names


def live_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The tensors a model computes with (sharing its storage), by the names of the plain transformers model: for a
    PEFT model, those of its base model with PEFT's wrapping undone (see ``_plain_names``). A head pinned or probed
    on a PEFT model is the one its ``modules_to_save`` copy trains.

    Example:
        >>> sorted(n for n in live_state(get_peft_model(model, lora)) if "classifier" in n)  # doctest: +SKIP
        ['classifier.bias', 'classifier.weight']
    """
    state = plain_model(model).state_dict()
    return {plain: state[key] for key, plain in _plain_names(model).items() if plain is not None}


def head_names(model: PreTrainedModel, names: Iterable[str] | None = None) -> set[str]:
    """The names of :func:`live_state` (or ``names``: a sharded model's, from its gathered weights) outside the base
    model (``classifier.*`` for BERT, also under PEFT); empty for models without a head of their own (T5)."""
    names = set(live_state(model) if names is None else names)
    prefix = f"{plain_model(model).base_model_prefix}."
    head = {name for name in names if not name.startswith(prefix)}
    return head if head != names else set()


def read_start_head(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a start-head file (a pantry's ``start-head.safetensors``, ``--start-head``).

    Raises:
        SoupError: not a regular file, or not a whole safetensors file (truncated, damaged, another format).

    Example:
        >>> head, metadata = read_start_head(Path("pantry/start-head.safetensors"))  # doctest: +SKIP
        >>> metadata["start_head"]  # doctest: +SKIP
        'probe'
    """
    if not path.is_file():
        what = "no such file" if not path.exists() else "not a regular file"
        raise SoupError(f"start head {path}: {what} (give a safetensors file of the head's tensors)")
    try:
        read_header(path)
        with safe_open(str(path), "pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}  # noqa: SIM118 (no dict)
    except SoupError as err:
        raise SoupError(f"start head {err}") from None
    except (OSError, SafetensorError) as err:
        raise SoupError(f"start head {path}: not a safetensors file ({err})") from None


def output_layer(model: PreTrainedModel, head: set[str] | None = None) -> tuple[str, torch.nn.Linear]:
    """The head's last linear layer and its name in the plain model (``classifier`` for BERT,
    ``classifier.out_proj`` for RoBERTa).

    Args:
        model: the model.
        head: its head's names when training shards it (:func:`head_names` of its gathered weights); its modules are
            then matched by name, FSDP1's wrappers left out, without reading its state dict.

    Raises:
        SoupError: the model has no head of its own, or its head ends in no linear layer.
    """
    plain = _plain_names(model) if head is None else None
    head = head_names(model) if head is None else head
    linears = []
    for name, module in plain_model(model).named_modules():
        key = plain.get(f"{name}.weight") if plain is not None else f"{name}.weight".replace(FSDP1_WRAPPED, "")
        if isinstance(module, torch.nn.Linear) and key in head:
            linears.append((key.removesuffix(".weight"), module))
    if not linears:
        raise SoupError(f"pin_head='probe': {type(model).__name__} has no linear classifier head to probe")
    return linears[-1]


@torch.no_grad()
def probe_features(
    model: torch.nn.Module, batches: Iterable[dict[str, Any]], layer: torch.nn.Linear | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of the head's output layer (eval mode: no dropout) and the labels, for every training example.

    Args:
        model: what runs the batches (under FSDP1, its wrapper).
        batches: model-input batches with a ``labels`` column.
        layer: the layer whose inputs are the features (default: :func:`output_layer`).
    """
    layer = output_layer(model)[1] if layer is None else layer
    features: list[torch.Tensor] = []
    handle = layer.register_forward_hook(
        lambda module, inputs, output: features.append(inputs[0].detach().float().cpu())
    )
    labels = []
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    try:
        for batch in batches:
            batch = dict(batch)
            key = next((k for k in LABEL_KEYS if k in batch), None)
            if key is None:
                raise SoupError("pin_head='probe': the training batches carry no 'labels' column")
            labels.append(batch.pop(key).detach().cpu())
            model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    finally:
        handle.remove()
        model.train(was_training)
    if not features:
        raise SoupError("pin_head='probe': the training set is empty")
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def fit_linear(
    features: np.ndarray, labels: np.ndarray, num_outputs: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Weight (``num_outputs × d``) and bias of a linear map fitted to the features: multinomial logistic regression
    for classes, ridge regression for one output.

    Raises:
        SoupError: a classification set with fewer than two classes.
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    if num_outputs == 1:
        ridge = Ridge(alpha=1.0).fit(features, labels.astype(np.float64))
        return ridge.coef_.reshape(1, -1), np.atleast_1d(ridge.intercept_)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise SoupError(f"pin_head='probe': the training labels hold {len(classes)} class; a probe needs two or more")
    logistic = LogisticRegression(max_iter=2000, random_state=seed).fit(features, labels.astype(np.int64))
    weight = np.zeros((num_outputs, features.shape[1]))
    bias = np.zeros(num_outputs)
    if len(logistic.classes_) == 2:  # one decision function w·x + b: logits (0, f) give the same softmax
        weight[logistic.classes_[1]], bias[logistic.classes_[1]] = logistic.coef_[0], logistic.intercept_[0]
    else:
        weight[logistic.classes_], bias[logistic.classes_] = logistic.coef_, logistic.intercept_
    return weight, bias


def probe_head(
    model: PreTrainedModel, batches: Iterable[dict[str, Any]], seed: int = 0, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Fit the head's output layer on the frozen model's features of ``batches`` and set it in ``model``; logs that
    it does (a forward pass over the whole training set: minutes on a large one).

    Args:
        model: a sequence classifier (BERT, RoBERTa, ...) with its new head; the rest of the head (RoBERTa's dense
            layer) keeps its initialisation.
        batches: the training set as model-input batches with a ``labels`` column (a Trainer's train dataloader).
        seed: the solver's seed.
        progress: a progress bar over the batches (draw it in one process only).

    Returns:
        The head's tensors after the fit (state-dict name → CPU tensor), to save as the sweep's start head.

    Example:
        >>> head = probe_head(model, trainer.get_train_dataloader())  # doctest: +SKIP
    """
    logger.info("pin_head='probe': fitting the start head on the frozen model's features of the training set")
    name, layer = output_layer(model)
    # Iterating a DataLoader draws its worker seed from torch's global generator: fork it, so that a run trains the
    # same model whether its process fitted the start head or loaded it from the pantry.
    with torch.random.fork_rng(devices=[]):
        bar = tqdm(batches, desc="probe head: features", disable=not progress)
        features, labels = probe_features(model, bar, layer)
    state = live_state(model)
    head = {key: state[key].detach().to("cpu").contiguous() for key in sorted(head_names(model))}
    fitted = fit_head(head, name, features, labels, seed)
    with torch.no_grad():
        for key, tensor in fitted.items():
            state[key].copy_(tensor)
    return fitted


def fit_head(
    head: dict[str, torch.Tensor], layer: str, features: np.ndarray, labels: np.ndarray, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``head`` with its output layer (the module ``layer``, see :func:`output_layer`) fitted to the features by
    :func:`fit_linear`, each tensor in its dtype."""
    weight, bias = fit_linear(features, labels, head[f"{layer}.weight"].shape[0], seed)
    fitted = dict(head)
    for key, value in ((f"{layer}.weight", weight), (f"{layer}.bias", bias)):
        if key in head:
            fitted[key] = torch.from_numpy(value).to(head[key].dtype)
    return fitted


def shared_probe_features(
    model: torch.nn.Module, layer: torch.nn.Linear, batches: Iterable[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`probe_features` with every process taking part, as a sharded model's forward needs.

    Every process is given all the batches, in order; process ``i`` of ``n`` computes the features of batches ``i``,
    ``i + n``, ..., and for each round it has no batch of its own runs one more forward on a batch it has seen, so
    that all run as many (each forward is a collective). The main process gets every example's features in the
    batches' order, exactly as :func:`probe_features` computes them in one process; the others get ``None``.

    Raises:
        SoupError: the batches are empty or carry no labels (on every process).
    """
    state = PartialState()
    processes, index = state.num_processes, state.process_index
    mine: list[tuple[int, tuple[np.ndarray, np.ndarray]]] = []
    first, count = None, 0
    with torch.random.fork_rng(devices=[]):  # as in probe_head
        for count, batch in enumerate(batches, start=1):
            first = batch if first is None else first
            if (count - 1) % processes == index:
                mine.append((count - 1, probe_features(model, [batch], layer)))
        if first is None:
            raise SoupError("pin_head='probe': the training set is empty")
        for _ in range(-(-count // processes) - len(mine)):
            probe_features(model, [first], layer)
    parts: list[Any] | None = [mine]
    if processes > 1:
        parts = [None] * processes if state.is_main_process else None
        torch.distributed.gather_object(mine, parts, dst=0)
    if parts is None:
        return None
    ordered = sorted((part for process in parts for part in process), key=lambda part: part[0])
    return np.concatenate([f for _, (f, _) in ordered]), np.concatenate([y for _, (_, y) in ordered])


__all__ = [
    "fit_head",
    "fit_linear",
    "head_names",
    "live_state",
    "output_layer",
    "plain_model",
    "probe_features",
    "probe_head",
    "read_start_head",
    "shared_probe_features",
]
