"""Soup diagnostics: why a soup of some ingredients helps or not, and what to change.

Two views, then a verdict per ingredient; the measures are apart from their report:

- :mod:`~hf_soups.diagnostics.task_vectors`: the weight space. Task vectors τᵢ = θᵢ − θ₀ (from the base model, or
  the ingredients' mean) per layer group: norms, pairwise cosines and distances, exact, in one streaming pass;
- :mod:`~hf_soups.diagnostics.landscape`: the loss landscape, when a GLUE task is given. Scores along the line from
  the best ingredient to each other one, and the loss barrier at the midpoint;
- :mod:`~hf_soups.diagnostics.verdicts`: :func:`diagnose` runs both and gives each ingredient a verdict
  (:data:`VERDICTS`: soup-compatible, different head, different basin, off-base) with what to change;
- :mod:`~hf_soups.diagnostics.report`: the diagnosis as text and as PNG plots.

Example:
    >>> diagnosis = diagnose(["runs/lr2e-5", "runs/lr3e-5", "runs/lr5e-5"], base="bert-base-uncased",
    ...                      task="rte", glue_dir="glue_data")  # doctest: +SKIP
    >>> [(v.spec, v.verdict) for v in diagnosis.verdicts]  # doctest: +SKIP
    [('runs/lr2e-5', 'soup-compatible'), ('runs/lr3e-5', 'soup-compatible'), ('runs/lr5e-5', 'different basin')]
    >>> print(format_report(diagnosis))  # doctest: +SKIP
"""

from hf_soups.diagnostics.landscape import ALPHAS, BARRIER_THRESHOLD, Curve, Landscape, loss_landscape
from hf_soups.diagnostics.report import format_report, plot_cosines, plot_interpolation
from hf_soups.diagnostics.task_vectors import GroupSums, WeightSpace, layer_group, weight_space
from hf_soups.diagnostics.verdicts import HEAD_COSINE, OFF_BASE_RATIO, VERDICTS, Diagnosis, Verdict, diagnose

__all__ = [
    "ALPHAS",
    "BARRIER_THRESHOLD",
    "HEAD_COSINE",
    "OFF_BASE_RATIO",
    "VERDICTS",
    "Curve",
    "Diagnosis",
    "GroupSums",
    "Landscape",
    "Verdict",
    "WeightSpace",
    "diagnose",
    "format_report",
    "layer_group",
    "loss_landscape",
    "plot_cosines",
    "plot_interpolation",
    "weight_space",
]
