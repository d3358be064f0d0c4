"""hf_soups: model soups (Wortsman et al. 2022, arXiv 2203.05482) for the Hugging Face stack.

Example:
    >>> from hf_soups import merge_models
    >>> merge_models(["runs/lr2e-5", "runs/lr3e-5"], output_dir="soup")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from hf_soups.errors import SoupError  # noqa: E402
from hf_soups.ingredients import Ingredient, resolve_ingredients, validate  # noqa: E402
from hf_soups.merge import load_model, merge_models  # noqa: E402

__all__ = ["Ingredient", "SoupError", "__version__", "load_model", "merge_models", "resolve_ingredients", "validate"]
