"""Soup-folder plots: drawn without touching the user's matplotlib backend; every ingredient shown, ties marked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hf_soups.plots import soups_figure, trajectory_figure

SCRIPT = """
import matplotlib
matplotlib.use("svg")
from pathlib import Path
from types import SimpleNamespace
import hf_soups.recipes, hf_soups.soup_folder
from hf_soups.plots import plot_soups, plot_trajectory
score = SimpleNamespace(main=0.5, main_metric="accuracy")
plot_soups(
    Path(r"{folder}"),
    [SimpleNamespace(select=score, report=score)],
    [SimpleNamespace(select=score, report=score, name="uniform")],
)
plot_trajectory(Path(r"{folder}"), [dict(soup_score=0.5, score=0.5, ingredient_score=0.5, kept=True)], "accuracy")
print(matplotlib.get_backend())
"""


@pytest.mark.slow  # a subprocess
def test_recipes_and_plots_leave_the_matplotlib_backend_alone(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(folder=tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        check=True,
    )
    assert done.stdout.strip() == "svg"
    assert (tmp_path / "ingredients_vs_soups.png").stat().st_size > 0
    assert (tmp_path / "greedy_trajectory.png").stat().st_size > 0


INGREDIENTS = "ingredients (numbered as in the card)"


def scores(select: float, report: float, name: str = "run") -> SimpleNamespace:
    return SimpleNamespace(
        name=name, select=SimpleNamespace(main=select, main_metric="accuracy"), report=SimpleNamespace(main=report)
    )


@pytest.mark.parametrize(
    ("soups", "labels"),
    [
        ([scores(0.7, 0.6, "greedy")], ["greedy = ingredient 2 (a tie)"]),  # greedy kept only the best run
        ([scores(0.7, 0.65, "greedy"), scores(0.5, 0.5, "uniform")], ["greedy", "uniform = ingredient 1, 3 (a tie)"]),
        ([scores(0.8, 0.7, "greedy")], ["greedy"]),
    ],
)
def test_every_ingredient_shows_and_a_soup_on_one_is_marked_a_tie(soups, labels):
    ax = soups_figure([scores(0.5, 0.5), scores(0.7, 0.6), scores(0.5, 0.5)], soups).axes[0]
    assert ax.get_legend_handles_labels()[1] == [*labels, INGREDIENTS]
    [ingredients] = [c for c in ax.collections if c.get_label() == INGREDIENTS]
    assert np.allclose(ingredients.get_offsets(), [[50, 50], [70, 60], [50, 50]])  # points, as the card's tables
    # drawn over the stars and filled (an open ring vanished on a star), each numbered as in the card's table
    assert all(ingredients.get_zorder() > c.get_zorder() for c in ax.collections if c is not ingredients)
    assert ingredients.get_facecolors().tolist() == [[1, 1, 1, 1]]
    assert [text.get_text() for text in ax.texts] == ["1", "2", "3"]
    assert np.allclose([text.xy for text in ax.texts], [(50, 50), (70, 60), (50, 50)])
    assert all(text.get_zorder() > ingredients.get_zorder() for text in ax.texts)
    assert ax.get_xlabel() == "selection accuracy (points)"


def test_the_greedy_trajectory_is_in_points():
    trajectory = [
        dict(soup_score=0.6, score=0.6, ingredient_score=0.6, kept=True),
        dict(soup_score=0.6, score=0.55, ingredient_score=0.5, kept=False),
    ]
    ax = trajectory_figure(trajectory, "accuracy").axes[0]
    assert ax.lines[0].get_ydata().tolist() == pytest.approx([60, 60])
    assert sorted(y for c in ax.collections for _, y in c.get_offsets().tolist()) == pytest.approx([50, 55, 60, 60])
    assert ax.get_ylabel() == "selection accuracy (points)"
