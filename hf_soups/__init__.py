"""hf_soups: model soups (Wortsman et al. 2022, arXiv 2203.05482) for the Hugging Face stack.

Names are imported on first use, so ``hf-soups --help`` and ``import hf_soups`` stay fast (torch, transformers and
accelerate load only when a function that needs them is asked for).

Example:
    >>> from hf_soups import merge_models
    >>> merge_models(["runs/lr2e-5", "runs/lr3e-5"], output_dir="soup")  # two fine-tuned runs  # doctest: +SKIP
    PosixPath('soup')

    :mod:`hf_soups.merge` shows the same with two tiny runs built from a config.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hf_soups.version import __version__

# Public name → the module that defines it.
_EXPORTS = {
    "SoupError": "hf_soups.errors",
    "Ingredient": "hf_soups.ingredient",
    "resolve_ingredients": "hf_soups.ingredients",
    "validate_ingredients": "hf_soups.ingredients",
    "validate": "hf_soups.ingredients",  # deprecated: validate_ingredients
    "load_model": "hf_soups.model_folder",
    "merge_models": "hf_soups.merge",
    "merge_into_model": "hf_soups.merge",
    "replay_recipe": "hf_soups.replay",
    "cook": "hf_soups.replay",  # deprecated: replay_recipe
    "Judge": "hf_soups.recipes",
    "GlueJudge": "hf_soups.recipes",
    "DatasetJudge": "hf_soups.recipes",
    "TrainerJudge": "hf_soups.recipes.trainer_judge",
    "SoupReport": "hf_soups.recipes",
    "ensemble_scores": "hf_soups.recipes",
    "bagged_soup": "hf_soups.soups",
    "greedy_soup": "hf_soups.soups",
    "learned_soup": "hf_soups.soups",
    "uniform_soup": "hf_soups.soups",
    "stock_soup": "hf_soups.soups",
    "evaluate_glue": "hf_soups.evaluation",
    "push_soup": "hf_soups.hub",
    "Pantry": "hf_soups.pantry",
    "probe_head": "hf_soups.probe",
    "SoupCallback": "hf_soups.callback",
    "SoupTrainer": "hf_soups.callback",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from hf_soups.callback import SoupCallback, SoupTrainer
    from hf_soups.errors import SoupError
    from hf_soups.evaluation import evaluate_glue
    from hf_soups.hub import push_soup
    from hf_soups.ingredient import Ingredient
    from hf_soups.ingredients import resolve_ingredients, validate, validate_ingredients
    from hf_soups.merge import merge_into_model, merge_models
    from hf_soups.model_folder import load_model
    from hf_soups.pantry import Pantry
    from hf_soups.probe import probe_head
    from hf_soups.recipes import DatasetJudge, GlueJudge, Judge, SoupReport, ensemble_scores
    from hf_soups.recipes.trainer_judge import TrainerJudge
    from hf_soups.replay import cook, replay_recipe
    from hf_soups.soups import bagged_soup, greedy_soup, learned_soup, stock_soup, uniform_soup


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hf_soups' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = [  # the names of _EXPORTS, spelled out for linters and IDEs
    "DatasetJudge",
    "GlueJudge",
    "Ingredient",
    "Judge",
    "Pantry",
    "SoupCallback",
    "SoupError",
    "SoupReport",
    "SoupTrainer",
    "TrainerJudge",
    "__version__",
    "bagged_soup",
    "cook",
    "ensemble_scores",
    "evaluate_glue",
    "greedy_soup",
    "learned_soup",
    "load_model",
    "merge_into_model",
    "merge_models",
    "probe_head",
    "push_soup",
    "replay_recipe",
    "resolve_ingredients",
    "stock_soup",
    "uniform_soup",
    "validate",
    "validate_ingredients",
]
