"""The names of the files a model folder holds that hf_soups reads, copies or uploads, without importing torch (the
card and the Hub push name them too).

Example:
    >>> "vocab.txt" in VOCABULARY_FILES and "tokenizer_config.json" not in VOCABULARY_FILES
    True
"""

from __future__ import annotations

# What save_pretrained writes of a tokenizer (and a chat template): copied into a soup from its first member.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
)
# The tokenizer files that decide the token ids (tokenizer_config.json and chat templates do not).
VOCABULARY_FILES = tuple(
    name for name in TOKENIZER_FILES if name not in ("tokenizer_config.json", "chat_template.jinja")
)

__all__ = ["TOKENIZER_FILES", "VOCABULARY_FILES"]
