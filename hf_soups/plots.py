"""PNG plots of a soup folder, drawn on ``matplotlib.figure.Figure`` objects (the user's pyplot backend is never
touched, so notebooks keep their inline plots).

Example:
    >>> plot_soups(Path("soup"), report.tastings, report.soups)  # doctest: +SKIP
    PosixPath('soup/ingredients_vs_soups.png')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

TRAJECTORY_PLOT = "greedy_trajectory.png"
SOUPS_PLOT = "ingredients_vs_soups.png"


def plot_trajectory(folder: Path, trajectory: list[dict[str, Any]], metric: str) -> Path:
    """The greedy trajectory: the selection score of the soup with each candidate, kept ones marked."""
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    steps = range(1, len(trajectory) + 1)
    ax.plot(steps, [t["soup_score"] for t in trajectory], color="0.5", lw=1, label="soup after the step")
    for step, t in zip(steps, trajectory, strict=True):
        ax.scatter(step, t["score"], marker="o" if t["kept"] else "x", color="tab:green" if t["kept"] else "tab:red",
                   zorder=3)
        ax.scatter(step, t["ingredient_score"], marker=".", color="0.6", zorder=2)
    ax.scatter([], [], marker="o", color="tab:green", label="candidate kept")
    ax.scatter([], [], marker="x", color="tab:red", label="candidate rejected")
    ax.scatter([], [], marker=".", color="0.6", label="candidate alone")
    ax.set(xlabel="greedy step (ingredients by selection score)", ylabel=f"selection {metric}", title="Greedy soup")
    ax.set_xticks(list(steps))
    ax.legend(fontsize=8)
    return _save(figure, folder / TRAJECTORY_PLOT)


def plot_soups(folder: Path, tastings: Sequence[Any], soups: Sequence[Any]) -> Path:
    """Ingredients and soups: selection score against report score (see :func:`soups_figure`)."""
    return _save(soups_figure(tastings, soups), folder / SOUPS_PLOT)


def soups_figure(tastings: Sequence[Any], soups: Sequence[Any]) -> Figure:
    """Every ingredient (open circles, drawn over the soups so none is hidden) and every soup (stars), selection
    score against report score; a soup that sits on an ingredient (greedy keeping only the best run) says so in the
    legend, by the ingredient's number in the card's table.

    Example:
        >>> figure = soups_figure(report.tastings, report.soups)  # doctest: +SKIP
        >>> figure.axes[0].get_legend_handles_labels()[1]  # doctest: +SKIP
        ['greedy = ingredient 2 (a tie)', 'uniform', 'ensemble', 'ingredients']
    """
    figure = Figure(figsize=(5, 5))
    ax = figure.subplots()
    points = [(t.select.main, t.report.main) for t in tastings]
    for soup in soups:
        ties = [str(n) for n, point in enumerate(points, 1) if _same(point, (soup.select.main, soup.report.main))]
        label = f"{soup.name} = ingredient {', '.join(ties)} (a tie)" if ties else soup.name
        ax.scatter(soup.select.main, soup.report.main, marker="*", s=150, label=label, zorder=3)
    ax.scatter(*zip(*points, strict=True), facecolors="none", edgecolors="0.3", label="ingredients", zorder=4)
    metric = tastings[0].select.main_metric
    ax.set(xlabel=f"selection {metric}", ylabel=f"report {metric}", title="Ingredients vs soups")
    ax.legend(fontsize=8)
    return figure


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=0, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
