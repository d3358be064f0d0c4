"""The dtype names a soup can be written in, without importing torch (the command line lists them in ``--help``).

:data:`hf_soups.model_folder.DTYPES` maps each to its ``torch.dtype``.

Example:
    >>> DTYPE_NAMES["bf16"]
    'bfloat16'
"""

from __future__ import annotations

# name → torch attribute
DTYPE_NAMES: dict[str, str] = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}
