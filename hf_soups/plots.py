"""PNG plots of a soup folder, drawn on ``matplotlib.figure.Figure`` objects (the user's pyplot backend is never
touched, so notebooks keep their inline plots).

Example:
    >>> plot_soups(Path("soup"), report.tastings, report.soups)  # doctest: +SKIP
    PosixPath('soup/ingredients_vs_soups.png')
"""

from __future__ import annotations

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
    """Ingredients and soups: selection score against report score."""
    figure = Figure(figsize=(5, 5))
    ax = figure.subplots()
    ax.scatter([t.select.main for t in tastings], [t.report.main for t in tastings], color="0.5", label="ingredients")
    for soup in soups:
        ax.scatter(soup.select.main, soup.report.main, marker="*", s=150, label=soup.name, zorder=3)
    metric = tastings[0].select.main_metric
    ax.set(xlabel=f"selection {metric}", ylabel=f"report {metric}", title="Ingredients vs soups")
    ax.legend(fontsize=8)
    return _save(figure, folder / SOUPS_PLOT)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
