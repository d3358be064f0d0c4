"""Model folders as ``from_pretrained`` reads them: written tensor by tensor (sharded like transformers), and loaded.

:func:`write_model_folder` writes safetensors shards, the index, ``config.json`` (with the soup's dtype) and the
template ingredient's generation config and tokenizer files into an existing folder; :func:`write_soup_weights`
writes a soup's weights so, each tensor checked as it is cast, and :func:`write_adapter_weights` a soup of LoRA
adapters as a PEFT adapter; :func:`output_dtypes` decides each tensor's dtype; :func:`load_model` loads a folder with
the class its config names. The soup folder around them (``soup.json``, ``recipe.yaml``, card) is
:mod:`hf_soups.soup_folder`'s.

Example:
    >>> parse_dtype("bf16")
    torch.bfloat16
    >>> model = load_model("soup")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from huggingface_hub.constants import SAFETENSORS_WEIGHTS_FILE_PATTERN
from huggingface_hub.serialization import split_state_dict_into_shards_factory

from hf_soups.adapter_soup import AdapterSoup
from hf_soups.dtypes import DTYPE_NAMES
from hf_soups.errors import SoupError
from hf_soups.file_names import TOKENIZER_FILES
from hf_soups.ingredient import Ingredient
from hf_soups.ingredients import MergePlan
from hf_soups.mean import SoupWeights
from hf_soups.options import MergeOptions
from hf_soups.tensorfile import plan_layout, write_safetensors
from hf_soups.threads import compute_threads

if TYPE_CHECKING:
    from tqdm import tqdm
    from transformers import PreTrainedModel

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, attribute) for name, attribute in DTYPE_NAMES.items()}
COPIED_FILES = ["generation_config.json", *TOKENIZER_FILES]
DEFAULT_MAX_SHARD_SIZE = MergeOptions.max_shard_size  # transformers' save_pretrained default


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"`` → ``torch.bfloat16`` (also fp16/fp32 and long names); ``None`` and torch dtypes pass through."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise SoupError(f"dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def output_dtypes(plan: MergePlan, dtype: torch.dtype | None) -> dict[str, torch.dtype]:
    """The dtype each tensor is written in: ``dtype`` when given, else the ingredients' (fp32 where they differ)."""
    chosen = {}
    for name, dtypes in plan.dtypes.items():
        if not dtypes[0].is_floating_point:
            chosen[name] = dtypes[0]
        elif dtype is not None:
            chosen[name] = dtype
        else:
            chosen[name] = dtypes[0] if len(set(dtypes)) == 1 else torch.float32
    return chosen


def write_model_folder(
    folder: Path,
    tensors: Callable[[str], torch.Tensor],
    plan: MergePlan,
    dtypes: dict[str, torch.dtype],
    template: Ingredient,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> None:
    """Write a ``from_pretrained`` folder: safetensors (sharded like transformers), config and tokenizer files.

    Args:
        folder: an existing, empty folder.
        tensors: gives each tensor by name, once, in any order; it is converted to ``dtypes[name]`` as it is written.
        plan: the tensor names and shapes.
        dtypes: the output dtype of each tensor.
        template: the ingredient whose config, generation config and tokenizer files are copied.
        max_shard_size: shard above this size, as ``save_pretrained`` does.
    """
    sizes = {name: math.prod(shape) * dtypes[name].itemsize for name, shape in plan.shapes.items()}
    split = split_state_dict_into_shards_factory(
        sizes, get_storage_size=int, filename_pattern=SAFETENSORS_WEIGHTS_FILE_PATTERN, max_shard_size=max_shard_size
    )
    for filename, names in split.filename_to_tensors.items():
        layout = plan_layout((name, dtypes[name], plan.shapes[name]) for name in names)
        write_safetensors(folder / filename, ((name, tensors(name).to(dtypes[name])) for name in names), layout)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = dict(template.config)
    float_dtypes = {d for d in dtypes.values() if d.is_floating_point}
    if len(float_dtypes) == 1:
        config["dtype"] = str(float_dtypes.pop()).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in COPIED_FILES:
        source = (template.tokenizer_path if name in TOKENIZER_FILES else template.path) / name
        if source.is_file():
            shutil.copyfile(source, folder / name)


def write_soup_weights(
    folder: Path,
    soup: SoupWeights,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    threads: int | None = None,
    progress: tqdm | None = None,
) -> str:
    """Write a soup's weights into ``folder`` (:func:`write_model_folder`, config and tokenizer from its first
    member), each tensor refused if it has NaN or Inf values in the dtype it is written in
    (:meth:`~hf_soups.mean.SoupWeights.check_finite`).

    Args:
        folder: an existing, empty folder.
        soup: the soup's weights.
        dtype: the dtype to write (default: the ingredients', :func:`output_dtypes`).
        max_shard_size: shard above this size.
        threads: torch threads to cast and check with (default: :func:`~hf_soups.threads.merge_threads`).
        progress: a bar to advance once per tensor written.

    Returns:
        The float dtypes written, as ``soup.json`` records them (``"bfloat16"``, or ``"bfloat16+float32"``).
    """
    dtypes = output_dtypes(soup.plan, dtype)

    def tensor(name: str) -> torch.Tensor:
        if progress is not None:
            progress.update()
        return soup.check_finite(name, dtypes[name])

    with compute_threads(threads):
        write_model_folder(folder, tensor, soup.plan, dtypes, soup.members[0], max_shard_size)
    return "+".join(sorted({str(d).removeprefix("torch.") for d in dtypes.values() if d.is_floating_point}))


def write_adapter_weights(folder: Path, soup: AdapterSoup, template: Ingredient, dtype: torch.dtype | None) -> str:
    """Write a soup of adapters into ``folder`` as a PEFT adapter (in ``dtype``, default fp32), with the
    ``template`` ingredient's tokenizer files.

    Returns:
        The dtype written, as ``soup.json`` records it.
    """
    chosen = dtype or torch.float32
    soup.save(folder, chosen)
    for name in COPIED_FILES:
        if (template.path / name).is_file():
            shutil.copyfile(template.path / name, folder / name)
    return str(chosen).removeprefix("torch.")


def load_model(folder: str | Path, **kwargs) -> PreTrainedModel:
    """Load a soup (or ingredient) folder with the model class its config names.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(
        ...     vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
        ... )
        >>> BertForSequenceClassification(config).save_pretrained("run")  # a tiny run, built from a config
        >>> type(load_model("run")).__name__
        'BertForSequenceClassification'
    """
    import transformers

    config = json.loads((Path(folder) / "config.json").read_text())
    architecture = (config.get("architectures") or ["AutoModel"])[0]
    model_class = getattr(transformers, architecture, transformers.AutoModel)
    return model_class.from_pretrained(folder, **kwargs)
