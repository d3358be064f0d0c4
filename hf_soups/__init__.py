"""hf_soups: model soups (Wortsman et al. 2022, arXiv 2203.05482) for the Hugging Face stack.

Example:
    >>> from hf_soups import merge_models
    >>> merge_models(["runs/lr2e-5", "runs/lr3e-5"], output_dir="soup")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from hf_soups.errors import SoupError  # noqa: E402
from hf_soups.ingredients import Ingredient, resolve_ingredients, validate  # noqa: E402
from hf_soups.merge import load_model, merge_models  # noqa: E402

_RECIPES = {"cook", "ensemble_scores", "greedy_soup", "learned_soup", "uniform_soup"}
_CALLBACK = {"SoupCallback", "SoupTrainer"}


def __getattr__(name: str):
    """Recipes and the Trainer callback import transformers, datasets and accelerate: load them only when asked for."""
    if name in _RECIPES:
        import hf_soups.recipes

        return getattr(hf_soups.recipes, name)
    if name in _CALLBACK:
        import hf_soups.callback

        return getattr(hf_soups.callback, name)
    raise AttributeError(f"module 'hf_soups' has no attribute {name!r}")


__all__ = [
    "Ingredient", "SoupCallback", "SoupError", "SoupTrainer", "__version__", "cook", "ensemble_scores", "greedy_soup",
    "learned_soup", "load_model", "merge_models", "resolve_ingredients", "uniform_soup", "validate",
]
