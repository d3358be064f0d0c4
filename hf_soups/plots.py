"""PNG plots of a soup folder, drawn on ``matplotlib.figure.Figure`` objects (the user's pyplot backend is never
touched, so notebooks keep their inline plots). Scores are in points (×100), as the card and the results table
give them.

Example:
    >>> plot_soups(Path("soup"), report.tastings, report.soups)  # doctest: +SKIP
    PosixPath('soup/ingredients_vs_soups.png')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib loads when a plot is drawn: a merge, which draws none, does not import it
    from matplotlib.figure import Figure

TRAJECTORY_PLOT = "greedy_trajectory.png"
SOUPS_PLOT = "ingredients_vs_soups.png"
POINTS = 100  # a score of 0.6594 is drawn at 65.94, as the card's tables give it (65.9)


def plot_trajectory(folder: Path, trajectory: list[dict[str, Any]], metric: str) -> Path:
    """The greedy trajectory (see :func:`trajectory_figure`)."""
    return _save(trajectory_figure(trajectory, metric), folder / TRAJECTORY_PLOT)


def trajectory_figure(trajectory: list[dict[str, Any]], metric: str) -> Figure:
    """The greedy trajectory: the selection score of the soup with each candidate, kept ones marked, in points."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    steps = range(1, len(trajectory) + 1)
    ax.plot(steps, [POINTS * t["soup_score"] for t in trajectory], color="0.5", lw=1, label="soup after the step")
    for step, t in zip(steps, trajectory, strict=True):
        ax.scatter(
            step,
            POINTS * t["score"],
            marker="o" if t["kept"] else "x",
            color="tab:green" if t["kept"] else "tab:red",
            zorder=3,
        )
        ax.scatter(step, POINTS * t["ingredient_score"], marker=".", color="0.6", zorder=2)
    ax.scatter([], [], marker="o", color="tab:green", label="candidate kept")
    ax.scatter([], [], marker="x", color="tab:red", label="candidate rejected")
    ax.scatter([], [], marker=".", color="0.6", label="candidate alone")
    ax.set(
        xlabel="greedy step (ingredients by selection score)",
        ylabel=f"selection {metric} (points)",
        title="Greedy soup",
    )
    ax.set_xticks(list(steps))
    ax.legend(fontsize=8)
    return figure


def plot_soups(folder: Path, tastings: Sequence[Any], soups: Sequence[Any]) -> Path:
    """Ingredients and soups: selection score against report score (see :func:`soups_figure`)."""
    return _save(soups_figure(tastings, soups), folder / SOUPS_PLOT)


def soups_figure(tastings: Sequence[Any], soups: Sequence[Any]) -> Figure:
    """Every soup (stars) and every ingredient (white dots drawn over the stars, so a soup that sits on one hides
    none, each labelled with its number in the card's table), selection score against report score, in points; a
    soup that sits on an ingredient (greedy keeping only the best run) also says so in the legend.

    Example:
        >>> figure = soups_figure(report.tastings, report.soups)  # doctest: +SKIP
        >>> figure.axes[0].get_legend_handles_labels()[1]  # doctest: +SKIP
        ['greedy = ingredient 2 (a tie)', 'uniform', 'ensemble', 'ingredients (numbered as in the card)']
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5))
    ax = figure.subplots()
    points = [(POINTS * t.select.main, POINTS * t.report.main) for t in tastings]
    for soup in soups:
        point = (POINTS * soup.select.main, POINTS * soup.report.main)
        ties = [str(n) for n, ingredient in enumerate(points, 1) if _same(ingredient, point)]
        label = f"{soup.name} = ingredient {', '.join(ties)} (a tie)" if ties else soup.name
        ax.scatter(*point, marker="*", s=250, label=label, zorder=3)
    ax.scatter(
        *zip(*points, strict=True),
        s=30,
        facecolors="white",
        edgecolors="0.2",
        linewidths=1.2,
        label="ingredients (numbered as in the card)",
        zorder=4,
    )
    for number, point in enumerate(points, 1):
        ax.annotate(str(number), point, xytext=(5, 4), textcoords="offset points", fontsize=8, zorder=5)
    metric = tastings[0].select.main_metric
    ax.set(xlabel=f"selection {metric} (points)", ylabel=f"report {metric} (points)", title="Ingredients vs soups")
    ax.legend(fontsize=8)
    return figure


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=0, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
