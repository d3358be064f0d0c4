"""The one exception type that hf_soups raises for bad input.

Every message names the ingredient, file, tensor or argument at fault. The CLI prints it on one line and exits
with status 2; Python callers can catch :class:`SoupError` (a ``ValueError``).
"""


class SoupError(ValueError):
    """Bad input to hf_soups: the message says what and where.

    Example:
        >>> raise SoupError("ingredient 'runs/a': no weights found (model.safetensors, pytorch_model.bin)")
        Traceback (most recent call last):
        ...
        hf_soups.errors.SoupError: ingredient 'runs/a': no weights found (model.safetensors, pytorch_model.bin)
    """
